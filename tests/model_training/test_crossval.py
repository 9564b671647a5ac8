"""Cross-validation over source cells: folds never split a cell, every image is
classified once by a model that did not train on its cell, the report is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_training.crossval import cross_validate, grouped_folds, write
from model_training.data import load_folder
from model_training.metrics import cell_votes
from model_training.robustness import PERTURBATIONS
from model_training.train import Augmentation


def test_folds_keep_cells_whole_and_spread_classes() -> None:
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1, 2, 3], [400, 200, 80, 320])
    cells_per_class = {0: 20, 1: 10, 2: 4, 3: 16}
    groups = np.array([f"{c}/{rng.integers(cells_per_class[c])}" for c in labels])
    fold = grouped_folds(groups, labels, 4, seed=0)
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1, g  # a cell's views in one fold
    for c in cells_per_class:  # each class's cells spread evenly
        per_fold = [len(np.unique(groups[(labels == c) & (fold == k)])) for k in range(4)]
        assert max(per_fold) - min(per_fold) <= 1, (c, per_fold)
    assert set(fold) == {0, 1, 2, 3}
    assert np.array_equal(fold, grouped_folds(groups, labels, 4, seed=0))  # reproducible


def test_cell_votes_take_the_majority_of_views() -> None:
    y = np.array([2, 2, 2, 0, 0])
    groups = np.array(["a", "a", "a", "b", "b"])
    probs = np.eye(4)[[3, 2, 2, 1, 1]]
    truth, voted = cell_votes(y, groups, probs)
    assert truth.tolist() == [2, 0] and voted.tolist() == [2, 1]


def test_cross_validation_classifies_every_image_once(kaggle_like: Path, tmp_path: Path) -> None:
    record = cross_validate(
        kaggle_like,
        folds=2,
        arch="tiny",
        epochs=1,
        batch_size=8,
        aug=Augmentation(scale=0.1, stain=1.0, gamma=0.3),
        cache_dir=None,
    )
    full = load_folder(kaggle_like / "TRAIN")
    assert record["views"]["n"] == len(full.y)  # every TRAIN image, once
    assert record["cells"]["n"] == len(np.unique(full.groups))
    assert sum(f["images"] for f in record["per_fold"]) == len(full.y)
    assert sum(f["cells"] for f in record["per_fold"]) == record["cells"]["n"]
    assert sum(f["cells_right"] for f in record["per_fold"]) == round(
        record["cells"]["accuracy"] * record["cells"]["n"]
    )
    assert len(record["cells_wrong"]) == round(
        (1 - record["cells"]["accuracy"]) * record["cells"]["n"]
    )
    assert list(record["perturbed"]) == list(PERTURBATIONS)
    assert all(0 <= a <= 1 for a in record["perturbed"].values())
    write(tmp_path, record, "python -m model_training cv --folds 2")
    assert json.loads((tmp_path / "metrics.json").read_text())["folds"] == 2
    text = (tmp_path / "report.md").read_text()
    assert "python -m model_training cv --folds 2" in text and "\n| 2 | " in text
    assert "| noise sigma 8 |" in text and "**mean shifted**" in text
    assert "gamma jitter 0.3," in text
    assert (tmp_path / "confusion_cells.png").stat().st_size > 1000
    with np.load(tmp_path / "out_of_fold.npz") as oof:  # what calibrate fits a refit on
        assert oof["probs"].shape == (len(full.y), 4) and (oof["y"] == full.y).all()
        assert np.allclose(oof["probs"].sum(axis=1), 1, atol=1e-5)


def test_excluded_cells_are_left_out_of_training_but_still_scored(
    kaggle_like: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_training import crossval
    from model_training.data import DataError

    full = load_folder(kaggle_like / "TRAIN")
    cells = sorted(set(full.groups))
    listed = tmp_path / "exclude.txt"
    listed.write_text(f"# disputed\n{cells[0]}\n\n{cells[-1]}  # two\n")
    exclude = [cells[0], cells[-1]]
    trained_on: list[set[str]] = []
    real = crossval.fit_members

    def spy(train_ds, *args, **kwargs):
        trained_on.append(set(train_ds.groups))
        return real(train_ds, *args, **kwargs)

    monkeypatch.setattr(crossval, "fit_members", spy)
    record = cross_validate(
        kaggle_like,
        folds=2,
        arch="tiny",
        epochs=1,
        batch_size=8,
        aug=Augmentation(),
        cache_dir=None,
        exclude=listed,
    )
    assert len(trained_on) == 2 and not any(set(exclude) & t for t in trained_on)
    assert set.union(*trained_on) == set(cells) - set(exclude)  # nothing else left out
    assert record["views"]["n"] == len(full.y)  # the excluded cells are still scored
    assert record["excluded_cells"] == sorted(exclude)  # comments and blank lines ignored
    assert record["excluded_cells_file"] == str(listed)
    write(tmp_path / "report", record, "python -m model_training cv --exclude-cells F")
    assert "2 cells left out of training (scored)" in (tmp_path / "report/report.md").read_text()
    listed.write_text("neutrophil/no-such-cell\n")
    with pytest.raises(DataError, match="not in the data"):
        cross_validate(kaggle_like, folds=2, arch="tiny", epochs=1, cache_dir=None, exclude=listed)


def test_ensemble_is_compared_with_its_first_member(kaggle_like: Path, tmp_path: Path) -> None:
    args = dict(folds=2, arch="tiny", epochs=1, batch_size=8, aug=Augmentation(), cache_dir=None)
    single = cross_validate(kaggle_like, **args)
    pair = cross_validate(kaggle_like, members=2, **args)
    assert "first_member" not in single
    first = pair["first_member"]
    assert first["views"]["n"] == pair["views"]["n"] == single["views"]["n"]
    # the first member is the network a single-model run trains: same seed, same answers
    assert first["views"]["confusion_matrix"] == single["views"]["confusion_matrix"]
    assert list(first["perturbed"]) == list(PERTURBATIONS)
    write(tmp_path, pair, "python -m model_training cv --members 2")
    text = (tmp_path / "report.md").read_text()
    assert "## Ensemble against one network" in text
    assert "| first member alone |" in text and "| mean of 2 networks |" in text
    with np.load(tmp_path / "out_of_fold.npz") as oof:  # each network's own, to combine later
        each = oof["member_probs"]
        assert each.shape == (2, pair["views"]["n"], 4)
        assert np.allclose(each.mean(axis=0), oof["probs"], atol=1e-6)
        assert not np.allclose(each[0], each[1])


def test_cv_compare_lines_up_the_cells_each_report_got_wrong(
    kaggle_like: Path, tmp_path: Path, capsys
) -> None:
    """The cells wrong in every report come first, with the class each report gave them;
    the sheet draws those, each by the view its last report was surest was wrong."""
    from model_training.__main__ import main

    full = load_folder(kaggle_like / "TRAIN", None)
    cells = list(dict.fromkeys(full.groups))  # file order
    probs = np.full((len(full.y), 4), 0.25, np.float32)
    for name, wrong in (
        ("a", {cells[0]: "monocyte", cells[1]: "lymphocyte"}),
        ("b", {cells[0]: "neutrophil", cells[2]: "eosinophil"}),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(
            json.dumps({"cells_wrong": [f"{c} -> {k}" for c, k in wrong.items()]})
        )
        np.savez_compressed(tmp_path / name / "out_of_fold.npz", probs=probs, y=full.y)
    main(
        [
            "cv-compare",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--data",
            str(kaggle_like),
            "--cache",
            str(tmp_path / "cache"),
            "--sheet",
            str(tmp_path / "sheet.png"),
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| cell | a | b | wrong in |"
    assert out[2] == f"| {cells[0]} | monocyte | neutrophil | 2 of 2 |"
    assert sorted(out[3:5]) == sorted(
        [f"| {cells[1]} | lymphocyte |  | 1 of 2 |", f"| {cells[2]} |  | eosinophil | 1 of 2 |"]
    )
    assert (
        out[-1] == "3 cells wrong in at least one report, 1 in all 2; wrong cells per report: 2, 2"
    )
    assert (tmp_path / "sheet.png").stat().st_size > 5000
