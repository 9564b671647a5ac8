"""This experiment's rule applied to each blend against version 6 (validation cells only):

python reports/experiments/blend-v5-v6/rule.py
"""

import json
from pathlib import Path

HERE = Path(__file__).parent
DYES = "brown-red stain (dyes swapped)"
FRAMED_DYES = "cell fills a 120x120 frame, " + DYES


def kaggle_validation(report: Path) -> float:
    for line in report.read_text().splitlines():
        if line.startswith("| [kaggle](kaggle.md) | validation"):
            return float(line.split("|")[5])
    raise SystemExit(f"no Kaggle validation row in {report}")


def main() -> None:
    base = json.loads((HERE.parent / "hue-turns" / "version6_pbc_validation.json").read_text())
    candidates = {"version 6": (base, 0.734)}  # Kaggle validation: reports/model/README.md
    for alpha in ("0.5", "0.75"):
        looks = json.loads((HERE / f"alpha{alpha}_pbc_validation.json").read_text())
        candidates[f"alpha {alpha}"] = (
            looks,
            kaggle_validation(HERE / f"alpha{alpha}" / "README.md"),
        )
    print(
        "| | F1 PBC validation | F2 Kaggle validation | F3 mean of nine looks | dyes swapped | "
        "framed, dyes swapped | wrong and released within 0.3 points | admissible | better |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (looks, f2) in candidates.items():
        f1 = looks["none"]["accuracy"]
        f3 = sum(v["accuracy"] for k, v in looks.items() if k != "none") / (len(looks) - 1)
        dyes, framed = looks[DYES]["accuracy"], looks[FRAMED_DYES]["accuracy"]
        safe = all(
            v["wrong_and_released_share"] <= base[k]["wrong_and_released_share"] + 0.003 + 1e-9
            for k, v in looks.items()
        )
        admissible = (
            f1 >= 0.976
            and f2 >= 0.724
            and f3 >= 0.910
            and safe
            and dyes >= base[DYES]["accuracy"] - 0.01 - 1e-9
            and framed >= base[FRAMED_DYES]["accuracy"] - 0.01 - 1e-9
        )
        better = admissible and (f1 > 0.981 + 0.005 or f2 > 0.734 + 0.010 or f3 > 0.920 + 0.010)
        print(
            f"| {name} | {f1:.3f} | {f2:.3f} | {f3:.3f} | {dyes:.3f} | {framed:.3f} | "
            f"{'yes' if safe else 'no'} | {'yes' if admissible else 'no'} | "
            f"{'yes' if better else 'no'} |"
        )


if __name__ == "__main__":
    main()
