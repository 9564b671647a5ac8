"""The shipped model, posted real images over HTTP: each site's test cells, other labs'
looks, smear fields with two cells, BCCD's original photographs, single-cell cuts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from app.predictor import resolve_version_dir
from model_training.data import CLASSES, list_samples
from tests.conftest import PROJECT, real_data

SHIPPED = PROJECT / "models" / "wbc-classifier"
MARGIN = 0.03


def shipped_metadata() -> dict:
    return json.loads((resolve_version_dir(SHIPPED) / "metadata.json").read_text())


def test_shipped_model_accuracy_on_test_simple(data_dir: Path) -> None:
    metadata = shipped_metadata()
    claimed = metadata["test_metrics"]["kaggle"]["TEST_SIMPLE"]
    samples = list_samples(data_dir / "TEST_SIMPLE")
    assert len(samples) == 71
    app = create_app(Settings(model_dir=SHIPPED))
    correct = 0
    with TestClient(app) as client:
        for s in samples:
            r = client.post(
                "/predict", files={"file": (s.path.name, s.path.read_bytes(), "image/jpeg")}
            )
            assert r.status_code == 200, r.text
            correct += r.json()["label"] == CLASSES[s.label]
        served = client.get("/v1/models/wbc-classifier").json()
    assert served["version"] == metadata["version"]
    assert set(served["sites"]) == {"kaggle", "pbc"}
    assert served["ood_guard"] is True
    accuracy = correct / len(samples)
    assert accuracy >= claimed["accuracy"] - MARGIN, (accuracy, claimed)


def test_shipped_model_on_the_pbc_test_split() -> None:
    """Every PBC test cell (the committed split) over HTTP: as accurate as the model's
    report says, and nearly all released inside the validated domain."""
    from model_training.sites import read_split, split_path

    root = real_data("WBC_PBC_DIR", "pbc", "monocyte")
    claimed = shipped_metadata()["test_metrics"]["pbc"]["test"]
    files = sorted(f for f, part in read_split(split_path("pbc")).items() if part == "test")
    app = create_app(Settings(model_dir=SHIPPED))
    correct = ood = 0
    with TestClient(app) as client:
        for name in files:
            r = client.post(
                "/predict",
                content=(root / name).read_bytes(),
                headers={"content-type": "image/jpeg"},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            correct += body["label"] == name.split("/")[0]
            ood += "out_of_distribution" in body["review_reasons"]
    assert correct / len(files) >= claimed["accuracy"] - MARGIN, (correct, len(files))
    assert ood / len(files) <= 0.05, ood


def framed_pbc_flags(
    model_dir: Path, every: int = 5, stain: Callable[[Image.Image], Image.Image] | None = None
) -> tuple[int, int, int, int]:
    """Every ``every``-th PBC test cell cut to fill a 120x120 frame (as an analyser delivers
    a cell, ``robustness.fills_small_frame``), then ``stain``ed if given, posted to the
    service with ``model_dir``: (cells, named right, flagged out of distribution, answered
    `unknown`)."""
    from model_training.robustness import fills_small_frame
    from model_training.sites import read_split, split_path
    from tests.app.conftest import encode

    root = real_data("WBC_PBC_DIR", "pbc", "monocyte")
    files = sorted(f for f, part in read_split(split_path("pbc")).items() if part == "test")
    files = files[::every]
    correct = ood = unknown = 0
    with TestClient(create_app(Settings(model_dir=model_dir))) as client:
        for name in files:
            image = fills_small_frame(Image.open(root / name).convert("RGB"))
            image = stain(image) if stain else image
            r = client.post(
                "/predict", files={"file": ("cell.png", encode(image, "PNG"), "image/png")}
            )
            assert r.status_code == 200, r.text
            body = r.json()
            correct += body["label"] == name.split("/")[0]
            ood += "out_of_distribution" in body["review_reasons"]
            unknown += body["label"] == "unknown"
    return len(files), correct, ood, unknown


def test_shipped_model_knows_a_cell_that_fills_its_frame() -> None:
    """A cell filling a 120x120 frame is a look the network was trained on (zooms up to
    2.2): named right as often as in a whole image, and rarely flagged as unfamiliar (the
    guard fitted on the crops alone flagged 22% of these: reports/experiments/ood-filled)."""
    n, correct, ood, _ = framed_pbc_flags(SHIPPED)
    claimed = shipped_metadata()["test_metrics"]["pbc"]["test"]
    assert correct / n >= claimed["accuracy"] - MARGIN, (correct, n)
    assert ood / n <= 0.05, (ood, n)


def test_shipped_model_answers_a_framed_cell_in_an_untrained_stain() -> None:
    """The same cells in a brown-red stain no network here was trained on (the Romanowsky
    dyes swapped in optical density): most still get a class, not `unknown` (a floor at
    the gamut's edge turned 5.2% of PBC's framed test cells away, version 8's 1.5%:
    reports/experiments/gamut-margin)."""
    from model_training.robustness import dye_swap

    n, _, _, unknown = framed_pbc_flags(SHIPPED, stain=dye_swap())
    assert unknown / n <= 0.03, (unknown, n)


def test_shipped_model_never_releases_generated_non_cells() -> None:
    """Noise, solid colours, text, a document scan: never a white-cell label released
    without review, and nearly always `unknown`. (The version 2 not-a-cell check, fitted on
    two sites' colours, lets the blue-lined document scan through: it is answered as a
    low-confidence neutrophil and flagged; the Kaggle-only model called it unknown.)"""
    from tests.app.test_lab import not_cells

    unknown = _post_non_cells(not_cells())
    assert len(unknown) >= len(not_cells()) - 1, unknown


def test_shipped_model_never_releases_harder_non_cells() -> None:
    """Smooth colour fields, scenes, coloured pages and pages in other hues: never a label
    released without review; all but one answered `unknown` (a gamut widened for other
    stains' cells must not open to everything: reports/experiments/cell-check-filled; a
    ruled page in another hue passes the gamut, and the localiser finds no nucleus in it:
    reports/experiments/straight-edged-nucleus). The violet-printed pink page is the one
    named, flagged for review."""
    from tests.app.test_lab import more_not_cells

    images = more_not_cells()
    unknown = _post_non_cells(images)
    print(f"harder non-cells answered unknown: {len(unknown)} of {len(images)}")
    assert len(unknown) >= len(images) - 1, sorted(set(images) - set(unknown))


def _post_non_cells(images: dict[str, Image.Image]) -> list[str]:
    """Post each image to the shipped model; assert each is sent to review; return the names
    answered `unknown`."""
    from tests.app.conftest import encode

    app = create_app(Settings(model_dir=SHIPPED))
    unknown = []
    with TestClient(app) as client:
        for name, image in images.items():
            r = client.post(
                "/predict", files={"file": (f"{name}.png", encode(image, "PNG"), "image/png")}
            )
            assert r.status_code == 200
            body = r.json()
            assert body["needs_review"] and body["review_reasons"], (name, body)
            if body["label"] == "unknown":
                unknown.append(name)
    return unknown


@pytest.mark.parametrize(
    "look", ["hue +0.05", "saturation x1.5", "brightness x1.2", "gamma 1.4", "cast warm"]
)
def test_shipped_model_classifies_cells_that_look_like_another_labs(
    data_dir: Path, look: str
) -> None:
    """Another lab's stain, lamp or camera: the service still answers with a cell type,
    not "unknown" (a not-a-cell check fitted too tightly turned away every TEST_SIMPLE cell
    under a 20% brighter lamp, reports/experiments/official-v4/robustness), and mostly the
    right one."""
    from model_training.robustness import PERTURBATIONS
    from tests.app.conftest import encode

    samples = list_samples(data_dir / "TEST_SIMPLE")
    app = create_app(Settings(model_dir=SHIPPED))
    labels = []
    with TestClient(app) as client:
        for s in samples:
            image = PERTURBATIONS[look](Image.open(s.path).convert("RGB"))
            r = client.post(
                "/predict", files={"file": ("cell.png", encode(image, "PNG"), "image/png")}
            )
            assert r.status_code == 200, r.text
            labels.append(r.json()["label"])
    assert labels.count("unknown") <= 1, (look, labels.count("unknown"))
    correct = sum(label == CLASSES[s.label] for label, s in zip(labels, samples, strict=True))
    reported = json.loads((PROJECT / "reports/robustness/robustness.json").read_text())
    claimed = reported["results"]["TEST_SIMPLE"][look]["accuracy"]
    assert reported["version"] == shipped_metadata()["version"]
    assert correct / len(samples) >= claimed - MARGIN, (look, correct, claimed)


def test_shipped_model_classifies_both_white_cells_of_real_smear_fields(bccd_dir: Path) -> None:
    """The BCCD test fields with two white-cell boxes, posted whole to /predict/cells: each
    true box gets its own classified cell. (BCCD has no class per box, so only finding and
    answering is checked; nothing is trained or chosen on these fields.)"""
    from model_training.bccd import wbc_boxes
    from model_training.localise_eval import iou

    names = (bccd_dir / "ImageSets/Main/test.txt").read_text().split()
    fields = [n for n in names if len(wbc_boxes(bccd_dir / "Annotations" / f"{n}.xml")) == 2]
    assert len(fields) == 3
    app = create_app(Settings(model_dir=SHIPPED))
    with TestClient(app) as client:
        for name in fields:
            data = (bccd_dir / "JPEGImages" / f"{name}.jpg").read_bytes()
            cells = client.post(
                "/predict/cells", content=data, headers={"content-type": "image/jpeg"}
            ).json()["cells"]
            one = client.post(
                "/predict", content=data, headers={"content-type": "image/jpeg"}
            ).json()
            assert len(cells) == 2, (name, cells)
            assert one["cell_box"] == cells[0]["cell_box"]
            assert one["other_cells"] == [cells[1]["cell_box"]]
            for truth in wbc_boxes(bccd_dir / "Annotations" / f"{name}.xml"):
                assert max(iou(tuple(c["cell_box"]), truth) for c in cells) >= 0.5, name
            assert all(c["is_cell"] and c["label"] in CLASSES for c in cells), (name, cells)


def test_shipped_model_on_the_original_photographs_of_test_cells(bccd_dir: Path) -> None:
    """BCCD's 640x480 photographs that Kaggle's TEST images were made from, posted whole:
    the cell found is the annotated white cell, and the accuracy is the one the robustness
    report gives for them (the same cells as TEST with twice the pixels each)."""
    from model_training.bccd import wbc_boxes
    from model_training.localise_eval import iou
    from model_training.robustness import PHOTOGRAPHS, source_photographs

    photographs = source_photographs(bccd_dir)
    assert len(photographs.paths) == 71  # every TEST cell's field holds one white cell
    reported = json.loads((PROJECT / "reports/robustness/robustness.json").read_text())
    app = create_app(Settings(model_dir=SHIPPED))
    correct = 0
    with TestClient(app) as client:
        for path, label in zip(photographs.paths, photographs.y, strict=True):
            r = client.post(
                "/predict", content=Path(path).read_bytes(), headers={"content-type": "image/jpeg"}
            )
            assert r.status_code == 200, r.text
            body = r.json()
            truth = wbc_boxes(bccd_dir / "Annotations" / f"{Path(path).stem}.xml")[0]
            assert iou(tuple(body["cell_box"]), truth) >= 0.5, (path, body["cell_box"], truth)
            correct += body["label"] == CLASSES[label]
    accuracy = correct / len(photographs.paths)
    assert accuracy >= reported["results"][PHOTOGRAPHS]["none"]["accuracy"] - MARGIN, accuracy


def test_shipped_model_on_test_cells_cut_as_single_cell_images(bccd_dir: Path) -> None:
    """The same photographs cut to a square of 1.25 x the annotated cell's box, as analysers
    export single cells: still found, still a cell, as accurate as the robustness report
    says."""
    from model_training.robustness import framed, source_photographs, sources
    from tests.app.conftest import encode

    photographs = source_photographs(bccd_dir)
    reported = json.loads((PROJECT / "reports/robustness/robustness.json").read_text())
    app = create_app(Settings(model_dir=SHIPPED))
    correct = 0
    with TestClient(app) as client:
        cut = framed(sources(photographs.paths), photographs.boxes, 1.25)
        for image, label in zip(cut, photographs.y, strict=True):
            assert image.width == image.height
            r = client.post(
                "/predict", files={"file": ("cell.png", encode(image, "PNG"), "image/png")}
            )
            assert r.status_code == 200, r.text
            assert r.json()["is_cell"] and r.json()["localised"], r.json()
            correct += r.json()["label"] == CLASSES[label]
    accuracy = correct / len(photographs.y)
    assert accuracy >= reported["framings"]["cell box x1.25"]["accuracy"] - MARGIN, accuracy
