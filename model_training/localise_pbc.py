"""Does the localiser find the cell on another laboratory's single-cell images?

PBC's images (CellaVision DM96, 360x363) hold one white cell centred in the field, larger
than Kaggle's, with red cells around it, and come with no boxes. The cell counts as found
when the first box is localised, contains the image centre, and its side is between
``MIN_SIDE`` and ``MAX_SIDE`` of the image's (not a lobe, not the whole field). Every
image is measured, through the service's own preprocessing (white balance first), as it
is and with its colours turned to another stain's hue (``OTHER_STAINS``).

    python -m model_training.localise_pbc --data ../shared/data/pbc --out reports/localisation
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from model_training.data import list_samples
from wbc_core.classes import CLASSES
from wbc_core.preprocessing import decode, locate_cells

MIN_SIDE, MAX_SIDE = 0.2, 0.95  # box side / image side of a plausible single white cell
OTHER_STAINS = (0.15, -0.15, 0.3, -0.3, 0.5)  # hue turns: stains that colour the nucleus
# other than violet (+0.3: brown-red; 0.5: the opposite hue)
STAIN_STRIDE = 5  # every fifth image for each turn


def measure(path: Path, look: Callable[[Image.Image], Image.Image] | None = None) -> dict:
    image = decode(path.read_bytes())
    if look is not None:
        image = look(image)
    return measure_image(image) | {"file": f"{path.parent.name}/{path.name}"}


def measure_image(image: Image.Image) -> dict:
    """Where the localiser puts the first cell of ``image``, and whether it is the centred
    single cell (``found``)."""
    boxes, _ = locate_cells(image)
    box, (w, h) = boxes[0], image.size
    side = max(box.x1 - box.x0, box.y1 - box.y0) / max(w, h)
    centred = box.x0 <= w / 2 <= box.x1 and box.y0 <= h / 2 <= box.y1
    return {
        "localised": box.localised,
        "centred": bool(centred),
        "side": round(float(side), 3),
        "cells": len(boxes),
        "found": bool(box.localised and centred and MIN_SIDE <= side <= MAX_SIDE),
        "box": box.as_list(),
    }


def other_stains(paths: list[Path]) -> dict[str, dict[str, float]]:
    """Found and localised shares with the images' hue turned by each of ``OTHER_STAINS``."""
    from model_training.robustness import hue_turn

    table = {}
    for shift in OTHER_STAINS:
        rows = [measure(p, hue_turn(shift)) for p in paths]
        table[f"{shift:+g}"] = {
            "n": len(rows),
            "found": float(np.mean([r["found"] for r in rows])),
            "localised": float(np.mean([r["localised"] for r in rows])),
        }
    return table


def framed_stains(paths: list[Path]) -> dict[str, dict[str, float]]:
    """The cell filling a ``SMALL_FRAME`` square (``robustness.fills_small_frame``: 1.1 x the
    box found on the clean image, resized), as another laboratory's analyser exports it,
    in its own stain and in others' (``robustness.site_stains``): the shares localised and
    localised on the centre (the box may fill the frame, so its side is not checked)."""
    from model_training.robustness import fills_small_frame, site_stains

    frames = [fills_small_frame(decode(p.read_bytes())) for p in paths]
    table = {}
    for name, stain in site_stains().items():
        rows = [measure_image(stain(f)) for f in frames]
        table[name] = {
            "n": len(rows),
            "localised": float(np.mean([r["localised"] for r in rows])),
            "centred": float(np.mean([r["localised"] and r["centred"] for r in rows])),
        }
    return table


def draw(rows: list[dict], root: Path, out: Path, n: int = 40) -> None:
    """A sheet of images with the box found: every miss first, then a sample."""
    misses = [r for r in rows if not r["found"]]
    rng = np.random.default_rng(0)
    hits = [rows[i] for i in rng.choice(len(rows), size=min(n, len(rows)), replace=False)]
    picked = (misses + [r for r in hits if r["found"]])[:n]
    tile, cols = 140, 8
    sheet = Image.new("RGB", (cols * tile, -(-len(picked) // cols) * tile), "white")
    for i, r in enumerate(picked):
        image = decode((root / r["file"]).read_bytes())
        d = ImageDraw.Draw(image)
        d.rectangle(r["box"], outline=(0, 200, 0) if r["found"] else (255, 0, 0), width=4)
        sheet.paste(image.resize((tile - 4, tile - 4)), ((i % cols) * tile, (i // cols) * tile))
    sheet.save(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/pbc"))
    parser.add_argument("--out", type=Path, default=Path("reports/localisation"))
    args = parser.parse_args(argv)
    command = "python -m model_training.localise_pbc " + shlex.join(argv or sys.argv[1:])
    from model_training.robustness import SMALL_FRAME

    samples = list_samples(args.data)
    rows = [measure(s.path) for s in samples]
    by_class = {}
    for c in CLASSES:
        sub = [r for r in rows if r["file"].startswith(c)]
        by_class[c] = {"n": len(sub), "found": float(np.mean([r["found"] for r in sub]))}
    sides = np.array([r["side"] for r in rows])
    record = {
        "command": command,
        "images": len(rows),
        "found": float(np.mean([r["found"] for r in rows])),
        "localised": float(np.mean([r["localised"] for r in rows])),
        "several_cells": float(np.mean([r["cells"] > 1 for r in rows])),
        "box_side_share": {
            q: float(np.percentile(sides, p)) for q, p in (("p5", 5), ("median", 50), ("p95", 95))
        },
        "by_class": by_class,
        "missed": [r for r in rows if not r["found"]],
        "other_stains": other_stains([s.path for s in samples[::STAIN_STRIDE]]),
        "framed": framed_stains([s.path for s in samples[::STAIN_STRIDE]]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pbc.json").write_text(json.dumps(record, indent=2) + "\n")
    draw(rows, args.data, args.out / "pbc_boxes.png")
    lines = [
        "# White-cell localisation on PBC (another laboratory's single-cell images)\n",
        f"Produced by `{command}`.\n",
        "PBC has no boxes; each image holds one white cell centred in its field. A cell counts "
        f"as found when the first box is localised, contains the image centre and its side "
        f"is {MIN_SIDE:g}-{MAX_SIDE:g} of the image's. The Kaggle lab's figure, against "
        "BCCD's annotated boxes, is in [report.md](report.md).\n",
        f"**{record['found']:.1%} of {len(rows)} images found** (localised at all: "
        f"{record['localised']:.1%}; a second white cell reported: "
        f"{record['several_cells']:.1%}). Box side / image side: median "
        f"{record['box_side_share']['median']:.2f} (5-95%: "
        f"{record['box_side_share']['p5']:.2f}-{record['box_side_share']['p95']:.2f}).\n",
        "| class | images | found |",
        "|---|---|---|",
        *[f"| {c} | {v['n']} | {v['found']:.1%} |" for c, v in by_class.items()],
        f"\nWith another stain's hue (the colours of every {STAIN_STRIDE}th image turned round "
        "the hue circle, lightness and saturation kept: `model_training.robustness.hue_turn`). "
        "When no violet nucleus is credible the localiser searches the darkest pixels instead "
        "(`wbc_core/localise.py`):\n",
        "| hue turn | images | found | localised at all |",
        "|---|---|---|---|",
        *[
            f"| {h} | {v['n']} | {v['found']:.1%} | {v['localised']:.1%} |"
            for h, v in record["other_stains"].items()
        ],
        f"\nThe same images with the cell filling a {SMALL_FRAME}x{SMALL_FRAME} frame (cut to "
        "1.1 x the box found on the clean image and resized, as another analyser exports a "
        "cell; `model_training.robustness.fills_small_frame`), in its own stain and others' "
        "(`site_stains`: hue turns and a brown-red stain made by swapping the dyes in optical "
        "density). *Centred*: localised, and the box holds the frame's centre:\n",
        "| stain | images | localised | centred |",
        "|---|---|---|---|",
        *[
            f"| {h} | {v['n']} | {v['localised']:.1%} | {v['centred']:.1%} |"
            for h, v in record["framed"].items()
        ],
        "\nEvery miss (red) first, then a random sample (green):\n",
        "![boxes](pbc_boxes.png)\n",
    ]
    (args.out / "pbc.md").write_text("\n".join(lines))
    print(json.dumps({k: record[k] for k in ("images", "found", "localised", "several_cells")}))


if __name__ == "__main__":
    main()
