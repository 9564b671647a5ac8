"""The service finds the white cell in real smear fields (BCCD test list), white-balanced
or not: every field's box overlaps a true white-cell box."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_training.localise_eval import bccd_fields, evaluate_fields, every_cell, summary
from model_training.robustness import PERTURBATIONS


@pytest.mark.parametrize("balance", ["white", "none"])
def test_white_cell_found_in_every_test_field(bccd_dir: Path, balance: str) -> None:
    names = (bccd_dir / "ImageSets/Main/test.txt").read_text().split()
    result = summary(evaluate_fields(bccd_dir, names, balance))
    assert result["fields"] >= 60
    assert result["iou_ge_0.5"] >= 0.97, result
    assert result["localised"] == 1.0, result


@pytest.mark.parametrize("cast", [n for n in PERTURBATIONS if n.startswith("cast")])
def test_white_balance_keeps_finding_the_cell_under_a_colour_cast(
    bccd_dir: Path, cast: str
) -> None:
    """Without white balance a warm cast loses the cell in 9 of 68 test fields."""
    names = (bccd_dir / "ImageSets/Main/test.txt").read_text().split()
    result = summary(evaluate_fields(bccd_dir, names, "white", PERTURBATIONS[cast]))
    assert result["iou_ge_0.5"] >= 0.97, result


def test_a_paler_stain_does_not_lose_the_cell(bccd_dir: Path) -> None:
    """Saturation x0.6: the localiser before nucleus_threshold found 63 of 68 test fields."""
    names = (bccd_dir / "ImageSets/Main/test.txt").read_text().split()
    result = summary(evaluate_fields(bccd_dir, names, "white", PERTURBATIONS["saturation x0.6"]))
    assert result["iou_ge_0.5"] >= 0.95, result


def test_every_white_cell_of_the_test_fields(bccd_dir: Path) -> None:
    """``find_cells`` on the test list: no one-cell field gets a further cell, and the
    two-cell fields get both (OTHER_CELL_REL was chosen on trainval only)."""
    names = (bccd_dir / "ImageSets/Main/test.txt").read_text().split()
    result = every_cell(bccd_fields(bccd_dir, names))
    assert result["one_cell_fields"] >= 60 and result["false_other_cell"] <= 1, result
    assert result["two_cell_fields"] == 3 and result["both_found"] >= 2, result
