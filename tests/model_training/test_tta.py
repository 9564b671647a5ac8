"""Test-time augmentation measurement: the eight views, the schemes, the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_training.tta import SCHEMES, VIEWS, run


def test_views_are_the_eight_distinct_flips_and_turns() -> None:
    batch = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype(np.float32)
    outs = {name: view(batch) for name, view in VIEWS.items()}
    assert len(outs) == 8
    assert np.array_equal(outs["rot0"], batch)
    keys = {o.tobytes() for o in outs.values()}
    assert len(keys) == 8  # an asymmetric image gives eight different views
    for o in outs.values():  # each is the same pixels rearranged within each image
        assert o.shape == batch.shape
        assert np.array_equal(
            np.sort(o.reshape(2, -1), axis=1), np.sort(batch.reshape(2, -1), axis=1)
        )
    assert np.array_equal(outs["rot90 mirrored"], np.rot90(batch, 1, axes=(1, 2))[:, :, ::-1])


def test_report_on_validation_cells(tiny_model: Path, kaggle_like: Path, tmp_path: Path) -> None:
    record = run(tiny_model / "1", kaggle_like, None, tmp_path, "python -m model_training tta")
    assert list(record["schemes"]) == list(SCHEMES)
    assert list(record["views"]) == list(VIEWS)
    # one view averaged is that view
    assert record["schemes"]["single crop"] == record["views"]["rot0"]
    for scores in [*record["schemes"].values(), *record["views"].values()]:
        assert 0 <= scores["accuracy"] <= 1 and scores["nll"] > 0
    assert record["n"] > 0 and 0 < record["cells"] <= record["n"]
    assert json.loads((tmp_path / "tta.json").read_text())["n"] == record["n"]
    assert "| dihedral (8 views) |" in (tmp_path / "report.md").read_text()


def test_refuses_a_refit_model(tiny_model: Path, kaggle_like: Path, tmp_path: Path) -> None:
    refit = tmp_path / "refit"
    refit.mkdir()
    for f in (tiny_model / "1").iterdir():
        if f.is_dir():
            (refit / f.name).symlink_to(f)
        else:
            (refit / f.name).write_bytes(f.read_bytes())
    meta = json.loads((refit / "metadata.json").read_text())
    (refit / "metadata.json").write_text(json.dumps(meta | {"refit": {"validation": "none"}}))
    with pytest.raises(SystemExit, match="validated run"):
        run(refit, kaggle_like, None, None, "cmd")


def test_cell_accuracy_is_the_plurality_vote_of_the_views() -> None:
    from model_training.tta import cell_accuracy

    eye = np.eye(4)
    # cell a (class 0): two of five views right, the other three split: right by plurality
    # cell b (class 1): two views right, three called class 2: wrong
    y = np.array([0] * 5 + [1] * 5)
    groups = np.array(["a"] * 5 + ["b"] * 5)
    probs = eye[[0, 0, 1, 2, 3, 1, 1, 2, 2, 2]]
    assert cell_accuracy(y, groups, probs) == 0.5
