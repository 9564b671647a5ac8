"""The leave-one-lab-out figures of both recipes and both seeds, one dot a run:
``python reports/experiments/cross-site-randconv08-seed43/seeds.py`` (from the repository
root) reads each run's committed metrics.json and writes seeds.png beside this file."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPORTS = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
OWN = "experiments/" + HERE.name
RUNS = {  # recipe -> seed -> (PBC-only report, Kaggle-only report); None: not run
    "--randconv 0.5 (version 3's recipe)": {
        42: ("cross-site/without-kaggle", "cross-site/without-pbc"),
        43: ("experiments/cross-site-seed/without-kaggle", OWN + "/randconv05-without-pbc"),
    },
    "--randconv 0.8": {
        42: (
            "experiments/cross-site-randconv08/without-kaggle",
            "experiments/cross-site-randconv08/without-pbc",
        ),
        43: (OWN + "/randconv08-without-kaggle", OWN + "/randconv08-without-pbc"),
    },
}
FIGURES = (  # (title, report index, site, set)
    ("PBC only, on Kaggle TEST", 0, "kaggle", "TEST"),
    ("PBC only, on Kaggle TEST_SIMPLE", 0, "kaggle", "TEST_SIMPLE"),
    ("Kaggle only, on PBC test", 1, "pbc", "test"),
)


def accuracy(report: str | None, site: str, split: str) -> float | None:
    if report is None:
        return None
    return json.loads((REPORTS / report / "metrics.json").read_text())["sites"][site]["sets"][
        split
    ]["accuracy"]


def main() -> None:
    fig, axes = plt.subplots(1, len(FIGURES), figsize=(12, 3.6), sharey=True)
    for ax, (title, which, site, split) in zip(axes, FIGURES, strict=True):
        for x, seeds in enumerate(RUNS.values()):
            values = []
            for seed, marker, dx in ((42, "o", -44), (43, "s", 8)):
                value = accuracy(seeds[seed][which], site, split)
                if value is None:
                    continue
                values.append(value)
                ax.plot(x, value, marker, color=f"C{x}", ms=8, label=f"seed {seed}")
                ax.annotate(f"{value:.3f}", (x, value), xytext=(dx, -3), textcoords="offset points")
            if len(values) == 2:
                ax.hlines(sum(values) / 2, x - 0.2, x + 0.2, color=f"C{x}", lw=2)
        ax.set_xticks(range(len(RUNS)), [r.split(" (")[0] for r in RUNS])
        ax.set_xlim(-0.5, len(RUNS) - 0.3)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("accuracy on the unseen lab\n(bar: mean of two seeds)")
    handles = [
        plt.Line2D([], [], marker=m, ls="", color="grey", label=f"seed {s}")
        for s, m in ((42, "o"), (43, "s"))
    ]
    axes[-1].legend(handles=handles, loc="lower right")
    fig.tight_layout()
    fig.savefig(HERE / "seeds.png", dpi=110)


if __name__ == "__main__":
    main()
