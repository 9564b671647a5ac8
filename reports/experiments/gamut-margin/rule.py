"""Conditions 2 and 3 of this experiment's rule, version 8 against version 7 (condition 1 is
``ood-filled/noncells.py``'s output):

    python reports/experiments/gamut-margin/rule.py
"""

import json
from pathlib import Path

HERE = Path(__file__).parent
FRAMED_DYES = "cell fills a 120x120 frame, brown-red stain (dyes swapped)"
KAGGLE_V7 = 0.0282  # Kaggle validation, wrong and released, version 7: its evaluate-sites
# (reports/model/kaggle.md of commit 3cf4c00: 2.8%)


def main() -> None:
    before = json.loads((HERE.parent / "ood-filled" / "version7_pbc_validation.json").read_text())
    after = json.loads((HERE / "version8_pbc_validation.json").read_text())
    kaggle = json.loads((HERE / "version8_evaluate_sites.json").read_text())["kaggle"]
    print(
        "| PBC validation look | unknown, version 7 | version 8 "
        "| wrong and released, version 7 | version 8 |"
    )
    print("|---|---|---|---|---|")
    safe = True
    for look, b in before.items():
        a = after[look]
        safe &= a["wrong_and_released_share"] <= b["wrong_and_released_share"] + 0.003 + 1e-9
        print(
            f"| {look} | {b['not_a_cell_share']:.1%} | {a['not_a_cell_share']:.1%} | "
            f"{b['wrong_and_released_share']:.1%} | {a['wrong_and_released_share']:.1%} |"
        )
    released = kaggle["validation"]["guard"]["wrong_and_released_share"]
    safe &= released <= KAGGLE_V7 + 0.005
    fall = before[FRAMED_DYES]["not_a_cell_share"] - after[FRAMED_DYES]["not_a_cell_share"]
    print(f"\nKaggle validation, wrong and released: {released:.1%} (version 7: {KAGGLE_V7:.1%})")
    print(
        f"condition 2 (wrong and released within 0.3 / 0.5 points): {'met' if safe else 'not met'}"
    )
    print(
        f"condition 3 (framed dye swap unknown falls by >= 2 points): fell {fall:.1%}, "
        f"{'met' if fall >= 0.02 - 1e-9 else 'not met'}"
    )


if __name__ == "__main__":
    main()
