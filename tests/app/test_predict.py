"""The /predict and /predict/batch contract, every accepted image mode and format."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from model_training.data import CLASSES
from tests.app.conftest import encode
from tests.synthetic import field


def assert_prediction(body: dict) -> None:
    assert list(body["probabilities"]) == list(CLASSES)
    assert math.isclose(sum(body["probabilities"].values()), 1.0, abs_tol=1e-4)
    if body["is_cell"]:
        assert body["label"] in CLASSES
        assert body["confidence"] == max(body["probabilities"].values())
        assert body["probabilities"][body["label"]] == body["confidence"]
    else:
        assert body["label"] == "unknown" and body["needs_review"]
    assert body["model"] == {"name": "wbc-classifier", "version": "1"}
    assert isinstance(body["needs_review"], bool)
    assert len(body["cell_box"]) == 4


def test_predict_multipart(client: TestClient, cell_jpeg: bytes) -> None:
    r = client.post("/predict", files={"file": ("cell.jpg", cell_jpeg, "image/jpeg")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_prediction(body)
    assert body["localised"] is True and body["is_cell"] is True
    x0, y0, x1, y1 = body["cell_box"]
    assert x0 < 100 < x1 and y0 < 90 < y1
    assert r.headers["x-request-id"]


def test_predict_raw_body_matches_multipart(client: TestClient, cell_jpeg: bytes) -> None:
    raw = client.post("/predict", content=cell_jpeg, headers={"content-type": "image/jpeg"})
    multi = client.post("/predict", files={"file": ("c.jpg", cell_jpeg, "image/jpeg")})
    assert raw.status_code == 200
    assert raw.json()["probabilities"] == multi.json()["probabilities"]


BASE = field(cells=[(150, 110, 30)], seed=9)


@pytest.mark.parametrize(
    "fmt,mode",
    [
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
        ("PNG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "P"),
        ("PNG", "L"),
        ("PNG", "LA"),
        ("PNG", "I;16"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
        ("TIFF", "CMYK"),
        ("TIFF", "I;16"),
        ("WEBP", "RGB"),
        ("GIF", "P"),
    ],
)
def test_every_mode_and_format(client: TestClient, fmt: str, mode: str) -> None:
    if mode == "I;16":
        gray = np.asarray(BASE.convert("L"), dtype=np.uint16) * 257
        image = Image.fromarray(gray)
        assert image.mode.startswith("I;16")
    else:
        image = BASE.convert(mode)
    r = client.post(
        "/predict",
        files={"file": (f"x.{fmt.lower()}", encode(image, fmt), "application/octet-stream")},
    )
    assert r.status_code == 200, (fmt, mode, r.text)
    assert_prediction(r.json())


def test_exif_orientation_is_honoured(client: TestClient) -> None:
    image = field(size=(320, 240), cells=[(40, 40, 26)], seed=3)
    rotated = image.transpose(Image.Transpose.ROTATE_90)  # stored rotated, EXIF undoes it
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the viewer rotates 90 degrees clockwise
    upright = client.post("/predict", files={"file": ("a.jpg", encode(image), "image/jpeg")})
    tagged = client.post(
        "/predict", files={"file": ("b.jpg", encode(rotated, exif=exif), "image/jpeg")}
    )
    assert tagged.status_code == 200
    a, b = upright.json()["cell_box"], tagged.json()["cell_box"]
    assert all(abs(p - q) <= 4 for p, q in zip(a, b, strict=True)), (a, b)


def test_batch_in_order_with_a_failing_file(client: TestClient, cell_jpeg: bytes) -> None:
    files = [
        ("files", ("one.jpg", cell_jpeg, "image/jpeg")),
        ("files", ("bad.jpg", b"not an image", "image/jpeg")),
        ("files", ("three.png", encode(BASE, "PNG"), "image/png")),
    ]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["filename"] for x in results] == ["one.jpg", "bad.jpg", "three.png"]
    assert_prediction(results[0])
    assert results[1]["status"] == 400 and "error" in results[1] and "label" not in results[1]
    assert_prediction(results[2])


def test_batch_over_the_limit(client: TestClient, cell_jpeg: bytes) -> None:
    files = [("files", (f"{i}.jpg", cell_jpeg, "image/jpeg")) for i in range(6)]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 413
    assert "limit is 5" in r.json()["detail"]


TWO_CELLS = field(size=(480, 320), cells=[(100, 100, 26), (360, 220, 30)], seed=3)


def several_cells(client: TestClient) -> float:
    found = re.search(
        r"^wbc_images_several_cells_total ([0-9.e+]+)$", client.get("/metrics").text, re.M
    )
    assert found
    return float(found.group(1))


def test_a_field_with_two_white_cells(client: TestClient, cell_jpeg: bytes) -> None:
    """/predict classifies the most prominent cell and names the other's box;
    /predict/cells classifies both, the same first."""
    data = encode(TWO_CELLS)
    before = several_cells(client)
    one = client.post("/predict", files={"file": ("f.jpg", data, "image/jpeg")}).json()
    assert len(one["other_cells"]) == 1
    x0, y0, x1, y1 = one["other_cells"][0]
    assert x0 < 100 < x1 and y0 < 100 < y1  # the smaller nucleus is the other
    r = client.post("/predict/cells", content=data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text
    cells = r.json()["cells"]
    assert [c["cell_box"] for c in cells] == [one["cell_box"], one["other_cells"][0]]
    assert cells[0]["probabilities"] == one["probabilities"]
    for cell in cells:
        assert_prediction(cell)
    assert several_cells(client) == before + 2  # both requests saw a field of two
    single = client.post("/predict", files={"file": ("c.jpg", cell_jpeg, "image/jpeg")}).json()
    assert single["other_cells"] == []
    r = client.post("/predict/cells", files={"file": ("c.jpg", cell_jpeg, "image/jpeg")})
    assert [c["cell_box"] for c in r.json()["cells"]] == [single["cell_box"]]
    bad = client.post(
        "/predict/cells", content=b"not an image", headers={"content-type": "image/jpeg"}
    )
    assert bad.status_code == 400 and "detail" in bad.json()


def test_batch_every_cell(client: TestClient, cell_jpeg: bytes) -> None:
    files = [
        ("files", ("field.jpg", encode(TWO_CELLS), "image/jpeg")),
        ("files", ("bad.jpg", b"not an image", "image/jpeg")),
        ("files", ("one.jpg", cell_jpeg, "image/jpeg")),
    ]
    results = client.post("/predict/batch?cells=all", files=files).json()["results"]
    assert [(x["filename"], x.get("cell")) for x in results] == [
        ("field.jpg", 0),
        ("field.jpg", 1),
        ("bad.jpg", None),
        ("one.jpg", 0),
    ]
    assert results[2]["status"] == 400
    first = client.post("/predict/batch", files=files).json()["results"]
    assert [x["filename"] for x in first] == ["field.jpg", "bad.jpg", "one.jpg"]
    assert first[0]["cell_box"] == results[0]["cell_box"] and "cell" not in first[0]
    assert client.post("/predict/batch?cells=some", files=files).status_code == 422


def test_many_crops_are_classified_in_chunks_as_one_by_one(client: TestClient) -> None:
    from app.classifier import CHUNK
    from wbc_core.preprocessing import prepare

    classifier = client.app.state.classifier
    crops = [prepare(field(cells=[(160, 120, 20 + i % 12)], seed=i)) for i in range(CHUNK + 6)]
    together = classifier.classify(crops)
    for i in (0, CHUNK - 1, CHUNK, CHUNK + 5):
        alone = classifier.classify([crops[i]])[0]
        for c, p in alone["probabilities"].items():
            assert together[i]["probabilities"][c] == pytest.approx(p, abs=1e-5)
