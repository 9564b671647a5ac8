"""How a model holds up when the image looks like another lab's: stain, colour cast,
focus, magnification, noise, JPEG.

Other labs stain more or less strongly, with other hues, light and white-balance their
cameras differently, focus differently, use other magnifications and cameras (more or
fewer pixels per cell, more sensor noise) and compress harder. We
cannot get their cells here, so we perturb the source images of cells the model never
trained on in these ways, run the whole preprocessing on them (white balance when the model
was trained with it, localisation, crop), and measure the accuracy under each. Model
choices are made on the validation cells (inside TRAIN, grouped by source cell), never on
TEST; TEST_SIMPLE is reported beside them, and with ``--bccd`` the original photographs
of TEST's cells (``source_photographs``: twice the pixels per cell, no re-compression).

With ``--site NAME=PATH`` a one-tree site's validation and test splits (PBC's) are put
through another laboratory's looks as the service answers them (``site_looks``): a stain
of another hue, the cell filling a small frame, both; each row gives the accuracy, the
share sent to review and the share **wrong and released without review**, the figure
that matters when a laboratory the model has never seen sends its cells.

    python -m model_training robustness --model models/wbc-classifier/8 \
        --data ../shared/data/kaggle-blood-cells --bccd ../shared/data/bccd \
        --site pbc=../shared/data/pbc --out reports/robustness
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from model_training.bccd import photograph_classes, wbc_boxes
from model_training.data import CLASSES, Dataset, list_samples, load_folder
from model_training.export import SavedModelRunner
from model_training.metrics import classification_report
from model_training.site_eval import answers, guard_stats
from model_training.sites import Site, file_key, read_split, split_path
from wbc_core.cellcheck import CellCheck
from wbc_core.localise import CellBox, square_crop
from wbc_core.ood import OodStats
from wbc_core.preprocessing import (
    BACKGROUND_LEVEL,
    Prepared,
    balance_of,
    decode,
    locate,
    prepare,
    white_balance,
)

Perturb = Callable[[Image.Image], Image.Image]
PHOTOGRAPHS = "TEST photographs"  # the set of source_photographs(bccd, "TEST")
FRAMINGS = (1.5, 1.25, 1.1)  # single-cell images: square side over the cell box's longer side


def hue_turn(shift: float) -> Perturb:
    """Every colour turned by ``shift`` of the hue circle (HSV; lightness and saturation kept):
    a stain of another hue."""

    def apply(im: Image.Image) -> Image.Image:
        h, s, v = im.convert("HSV").split()
        h = h.point(lambda x: (x + round(shift * 255)) % 256)
        return Image.merge("HSV", (h, s, v)).convert("RGB")

    return apply


def _zoom(factor: float) -> Perturb:
    """factor < 1: the cell looks smaller (lower magnification), black around as in TRAIN's
    rotated views; > 1: larger. Both axes by the same factor: a round cell stays round."""

    def apply(im: Image.Image) -> Image.Image:
        w, h = im.size
        dw, dh = w / factor, h / factor
        box = ((w - dw) / 2, (h - dh) / 2, (w + dw) / 2, (h + dh) / 2)
        return im.transform(im.size, Image.Transform.EXTENT, box, Image.Resampling.BILINEAR)

    return apply


def _scale(factor: float) -> Perturb:
    """The whole field resampled: another objective or camera puts more or fewer pixels on
    the same cell, and nothing is cut off (zoom > 1 above also narrows the field of view
    about the image centre, which cuts off-centre cells)."""

    def apply(im: Image.Image) -> Image.Image:
        size = (round(im.width * factor), round(im.height * factor))
        return im.resize(size, Image.Resampling.BILINEAR)

    return apply


def _noise(sigma: float) -> Perturb:
    """Camera sensor noise: Gaussian, the same pattern for every image (reproducible)."""

    def apply(im: Image.Image) -> Image.Image:
        a = np.asarray(im, dtype=np.float32)
        a = a + np.random.default_rng(0).normal(0.0, sigma, a.shape)
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))

    return apply


def _jpeg(quality: int) -> Perturb:
    def apply(im: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    return apply


def _cast(red: float, green: float, blue: float) -> Perturb:
    """A colour cast: each channel scaled, as by another lamp or camera white balance."""
    table = [min(255, round(v * g)) for g in (red, green, blue) for v in range(256)]
    return lambda im: im.point(table)


def _gamma(g: float) -> Perturb:
    table = [round(255 * (i / 255) ** g) for i in range(256)] * 3
    return lambda im: im.point(table)


PERTURBATIONS: dict[str, Perturb] = {
    "none": lambda im: im,
    "hue -0.05": hue_turn(-0.05),
    "hue +0.05": hue_turn(0.05),
    "saturation x0.6": lambda im: ImageEnhance.Color(im).enhance(0.6),
    "saturation x1.5": lambda im: ImageEnhance.Color(im).enhance(1.5),
    "brightness x0.8": lambda im: ImageEnhance.Brightness(im).enhance(0.8),
    "brightness x1.2": lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    "contrast x0.7": lambda im: ImageEnhance.Contrast(im).enhance(0.7),
    "gamma 0.7": _gamma(0.7),
    "gamma 1.4": _gamma(1.4),
    "blur sigma 1.5": lambda im: im.filter(ImageFilter.GaussianBlur(1.5)),
    "zoom x0.8": _zoom(0.8),
    "zoom x1.25": _zoom(1.25),
    "scale x0.65": _scale(0.65),
    "scale x1.5": _scale(1.5),
    "scale x2": _scale(2.0),
    "noise sigma 8": _noise(8.0),
    "jpeg q30": _jpeg(30),
    "cast warm": _cast(1.0, 0.95, 0.8),
    "cast cool": _cast(0.85, 0.95, 1.0),
    "cast magenta": _cast(1.0, 0.85, 1.0),
    "cast green": _cast(0.9, 1.0, 0.9),
}


SMALL_FRAME = 120  # px: a camera and analyser that deliver the cell alone, at low resolution
OTHER_STAIN = 0.15  # hue turned by this share of the colour circle: another stain's hue
FAR_STAIN = 0.3  # a stain that leaves the nucleus brown-red, not violet


def fills_small_frame(image: Image.Image) -> Image.Image:
    """The cell filling a ``SMALL_FRAME`` square: cut to 1.1 x the box the service's
    localiser finds on the clean image (a one-tree site has no annotated boxes), resized."""
    box, _ = locate(image)
    square = image.crop(square_crop(box, *image.size, context=1.1))
    return square.resize((SMALL_FRAME, SMALL_FRAME), Image.BILINEAR)


# Dye colours (RGB on a white-balanced image) for ``dye_swap``: the Romanowsky nucleus dye
# and eosin as they look in these sites' images, and a brown nucleus dye with a red eosin.
ROMANOWSKY_DYES = ((95, 60, 170), (200, 140, 165))
BROWN_RED_DYES = ((150, 80, 50), (215, 120, 100))


def _dye_matrix(dyes: tuple[tuple[int, int, int], ...]) -> np.ndarray:
    """Unit optical-density vectors of two dyes and a third orthogonal to both."""
    rows = [np.log(BACKGROUND_LEVEL / np.asarray(rgb, float)) for rgb in dyes]
    rows = [r / np.linalg.norm(r) for r in rows]
    third = np.cross(rows[0], rows[1])
    return np.stack([*rows, third / np.linalg.norm(third)])


def dye_swap(dyes: tuple[tuple[int, int, int], ...] = BROWN_RED_DYES) -> Perturb:
    """Another stain by optical density, not a hue turn: each pixel of the white-balanced
    image split into amounts of the two Romanowsky dyes (Beer-Lambert, ``ROMANOWSKY_DYES``)
    and put back with ``dyes``' colours: the same cell under another stain's dyes."""
    source = _dye_matrix(ROMANOWSKY_DYES)
    target = _dye_matrix(dyes)
    target[2] = source[2]  # what neither dye explains stays as it was
    mix = np.linalg.inv(source) @ target

    def apply(im: Image.Image) -> Image.Image:
        a = np.asarray(white_balance(im), np.float64)
        od = np.log(BACKGROUND_LEVEL / np.clip(a, 1.0, None))  # ``optical_density`` in float64
        out = BACKGROUND_LEVEL * np.exp(-(od.reshape(-1, 3) @ mix))
        return Image.fromarray(np.clip(out + 0.5, 0, 255).reshape(a.shape).astype(np.uint8))

    return apply


def site_stains() -> dict[str, Perturb]:
    """Other laboratories' stains for a one-tree site's cells (``site_looks``)."""
    return {
        "none": PERTURBATIONS["none"],
        f"stain hue +{OTHER_STAIN:g}": hue_turn(OTHER_STAIN),
        f"stain hue -{OTHER_STAIN:g}": hue_turn(-OTHER_STAIN),
        f"brown-red stain (hue +{FAR_STAIN:g})": hue_turn(FAR_STAIN),
        "brown-red stain (dyes swapped)": dye_swap(),
    }


def site_look_parts() -> list[tuple[str, bool, Perturb]]:
    """Each look of ``site_looks`` as (name, whether the cell is first made to fill a
    ``SMALL_FRAME`` square, the stain then applied): every stain, as the image is and
    filling the small frame."""
    frame = f"cell fills a {SMALL_FRAME}x{SMALL_FRAME} frame"
    stains = site_stains()
    return [(name, False, stain) for name, stain in stains.items()] + [
        (frame if name == "none" else f"{frame}, {name}", True, stain)
        for name, stain in stains.items()
    ]


def site_looks() -> dict[str, Perturb]:
    """Another laboratory's looks for a one-tree site's cells (``site_table``)."""
    return {
        name: (lambda im, stain=stain: stain(fills_small_frame(im))) if framed else stain
        for name, framed, stain in site_look_parts()
    }


SITE_SPLITS = {"val": "validation", "test": "test"}  # split file name -> report name


def site_split(site: Site, split: str = "test") -> LabelledImages:
    """One split of a one-tree site (its committed split file), as source images."""
    table = read_split(split_path(site.name))
    kept = [s for s in list_samples(site.root) if table.get(file_key(s.path)) == split]
    return LabelledImages([str(s.path) for s in kept], np.array([s.label for s in kept]))


def site_table(
    runner: SavedModelRunner, stats: OodStats | None, site: Site, split: str = "test"
) -> dict[str, dict[str, float]]:
    """Each look of ``site_looks`` on a split of the site, answered as the service answers
    (calibrated, with the review flag, the not-a-cell check and the out-of-distribution
    guard ``stats``): accuracy, and the shares sent to review and wrong and released. A
    cell the localiser does not find is answered `unknown` (``cell_not_found``), as by the
    service, and counted with the not-a-cell share."""
    balance = balance_of(runner.metadata)
    cells = site_split(site, split)
    images = sources(cells.paths)
    framed: list[Image.Image] = []  # the cells filling the small frame, made once
    table = {}
    for name, fills, stain in site_look_parts():
        if fills and not framed:
            framed = [fills_small_frame(im) for im in images]
        crops = [prepare(stain(im), balance) for im in (framed if fills else images)]
        ds = Dataset(
            np.stack([p.array for p in crops]), cells.y, np.array(cells.paths), cells.paths
        )
        localised = np.array([p.box.localised for p in crops], dtype=bool)
        guard = guard_stats(answers(runner, ds, runner.metadata, stats, localised))
        table[name] = {
            "n": len(cells.y),
            "accuracy": 1.0 - guard["wrong_share"],
            "review_share": 1.0 - guard["released_share"],
            "wrong_and_released_share": guard["wrong_and_released_share"],
            "out_of_distribution_share": guard["out_of_distribution_share"],
            "not_a_cell_share": guard["not_a_cell_share"],
        }
    return table


def prepared(images: list[Image.Image], name: str, balance: str) -> list[Prepared]:
    """The perturbed source images through the whole preprocessing."""
    fn = PERTURBATIONS[name]
    return [prepare(fn(im), balance) for im in images]


def perturbed(images: list[Image.Image], name: str, balance: str) -> np.ndarray:
    """Network-ready crops of the perturbed source images."""
    return np.stack([p.array for p in prepared(images, name, balance)])


@dataclass
class LabelledImages:
    """Image files and their class indices: a data set's source images, read only to be
    perturbed and preprocessed (no cached arrays); ``boxes``: each one's annotated white
    cell (x0, y0, x1, y1), where known."""

    paths: list[str]
    y: np.ndarray
    boxes: list[tuple[float, ...]] = field(default_factory=list)


def source_photographs(bccd: Path, split: str = "TEST") -> LabelledImages:
    """BCCD's original 640x480 photographs of ``split``'s cells (``source_fields``), each
    with its cell's class and box: the same cells with twice the Kaggle images' pixels on
    them and without their re-compression, whole fields as a lab's camera gives them. Only
    photographs with one white-cell box, so that the cell found is the one labelled."""

    kept = []
    for name, cls in sorted(photograph_classes(split).items()):
        boxes = wbc_boxes(bccd / "Annotations" / f"{name}.xml")
        if len(boxes) == 1:
            kept.append((str(bccd / "JPEGImages" / f"{name}.jpg"), CLASSES.index(cls), boxes[0]))
    return LabelledImages(
        [p for p, _, _ in kept],
        np.array([label for _, label, _ in kept], dtype=np.int64),
        [box for _, _, box in kept],
    )


def framed(
    images: list[Image.Image], boxes: list[tuple[float, ...]], context: float
) -> list[Image.Image]:
    """Each image cut to a square of ``context`` x the longer side of its annotated
    white-cell box (BCCD's, not the service's), as analysers and other labs' single-cell
    data sets deliver a cell: the cell fills more of the frame the smaller ``context``."""
    out = []
    for image, (x0, y0, x1, y1) in zip(images, boxes, strict=True):
        box = CellBox(round(x0), round(y0), round(x1), round(y1), localised=True)
        out.append(image.crop(square_crop(box, *image.size, context=context)))
    return out


def framing_table(
    runner: SavedModelRunner, photographs: LabelledImages
) -> dict[str, dict[str, float]]:
    """``score`` on single-cell framings of the photographs (decoded once), each through
    the whole preprocessing (which has to find the cell again in a frame it fills)."""
    balance = balance_of(runner.metadata)
    check = CellCheck(runner.metadata.get("cell_check"))
    images = sources(photographs.paths)
    return {
        f"cell box x{context:g}": score(
            runner,
            photographs.y,
            [prepare(im, balance) for im in framed(images, photographs.boxes, context)],
            check,
        )
        for context in FRAMINGS
    }


def score(
    predict: Callable[[np.ndarray], np.ndarray],
    y: np.ndarray,
    crops: list[Prepared],
    check: CellCheck,
) -> dict[str, float]:
    """Accuracy and macro-F1 of ``predict`` on prepared crops, and the share the service's
    not-a-cell check would turn away."""
    report = classification_report(y, predict(np.stack([p.array for p in crops])))
    return {
        "accuracy": report["accuracy"],
        "macro_f1": report["macro_f1"],
        "not_a_cell": float(np.mean([not check.is_cell(p.array, p.box.localised) for p in crops])),
    }


def sources(paths: list[str]) -> list[Image.Image]:
    return [decode(Path(path).read_bytes()) for path in paths]


def evaluate(runner: SavedModelRunner, ds: Dataset | LabelledImages) -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of the network under each perturbation, and the share of cells
    the service's not-a-cell check would turn away (answer "unknown") instead."""
    return evaluate_with(
        runner, ds, balance_of(runner.metadata), CellCheck(runner.metadata.get("cell_check"))
    )


def perturbed_crops(paths: list[str], balance: str) -> Iterator[tuple[str, list[Prepared]]]:
    """Each perturbation's name and the prepared crops of the images at ``paths`` under it
    (decoded once, perturbed and preprocessed as in serving)."""
    images = sources(paths)
    for name in PERTURBATIONS:
        yield name, prepared(images, name, balance)


def evaluate_with(
    predict: Callable[[np.ndarray], np.ndarray],
    ds: Dataset | LabelledImages,
    balance: str,
    check: CellCheck,
) -> dict[str, dict[str, float]]:
    """``evaluate`` for any function from crops [N,150,150,3] to probabilities (a model
    not exported yet: a cross-validation fold's)."""
    return {
        name: score(predict, ds.y, crops, check)
        for name, crops in perturbed_crops(ds.paths, balance)
    }


def summarise(results: dict[str, dict[str, float]]) -> dict[str, float]:
    shifted = [r["accuracy"] for name, r in results.items() if name != "none"]
    return {
        "clean": results["none"]["accuracy"],
        "mean_shifted": float(np.mean(shifted)),
        "worst_shifted": float(np.min(shifted)),
    }


def run(
    model_dir: Path,
    data_root: Path,
    cache: Path | None,
    out: Path | None,
    command: str,
    bccd: Path | None = None,
    site: Site | None = None,
) -> dict:
    from model_training.train import official_splits

    runner = SavedModelRunner(model_dir)
    seed = int(runner.metadata.get("seed", 42))
    balance = balance_of(runner.metadata)
    sets: dict[str, Dataset | LabelledImages] = {
        "TEST_SIMPLE": load_folder(data_root / "TEST_SIMPLE", cache, balance=balance)
    }
    if bccd:
        sets[PHOTOGRAPHS] = source_photographs(bccd)
    if "refit" not in runner.metadata:  # a refit model trained on the validation cells
        _, val, _ = official_splits(data_root, cache, seed, balance)
        sets = {"validation": val} | sets
    results = {name: evaluate(runner, ds) for name, ds in sets.items()}
    record = {
        "model": str(model_dir),
        "version": runner.metadata.get("version"),
        "white_balance": balance != "none",
        "stain_balance": balance == "stain",
        "command": command,
        "results": results,
        **(
            {
                "photographs": [Path(p).stem for p in sets[PHOTOGRAPHS].paths],
                "framings": framing_table(runner, sets[PHOTOGRAPHS]),
            }
            if bccd
            else {}
        ),
        "summary": {name: summarise(r) for name, r in results.items()},
    }
    if site:
        stats = OodStats.load(model_dir)
        record["site"] = {
            "name": site.name,
            "looks": {
                shown: site_table(runner, stats, site, split)
                for split, shown in SITE_SPLITS.items()
            },
        }
    if out:
        write(out, record)
    return record


def write(out: Path, record: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "robustness.json").write_text(json.dumps(record, indent=2))
    names = list(PERTURBATIONS)
    fig, ax = plt.subplots(figsize=(12, 4))
    width = 0.8 / len(record["results"])
    for i, (set_name, res) in enumerate(record["results"].items()):
        ax.bar(
            np.arange(len(names)) + i * width,
            [res[n]["accuracy"] for n in names],
            width,
            label=set_name,
        )
    centre = width * (len(record["results"]) - 1) / 2  # ticks under each group of bars
    ax.set_xticks(np.arange(len(names)) + centre, names, rotation=40, ha="right")
    ax.set_ylim(0, 1.15)  # room above the bars for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy under perturbations, model {record['model']}")
    ax.legend(loc="upper center", ncol=len(record["results"]))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "robustness.png", dpi=110)
    plt.close(fig)
    sets = list(record["results"])
    lines = [
        "# Robustness to other-lab looks",
        "",
        f"Produced by `{record['command']}`. Model: `{record['model']}`.",
        "",
        "Source images of cells the model never trained on, perturbed as another "
        "lab's images might look, then preprocessed as in serving "
        f"(white balance: {'yes' if record.get('white_balance') else 'no'}"
        f"{'; stain balance: yes' if record.get('stain_balance') else ''}; see "
        "`model_training/robustness.py`). Validation cells "
        "are the ones model choices may use; TEST_SIMPLE is shown, not used."
        + (
            f" *{PHOTOGRAPHS}*: BCCD's original 640x480 photographs of the "
            f"{len(record['photographs'])} TEST cells whose field holds one white cell "
            "(found by `model_training/source_fields.py`), whole: the same cells as "
            "TEST's with twice the pixels on each and no re-compression, as a lab's "
            "camera gives them; shown, not used."
            if PHOTOGRAPHS in record["results"]
            else ""
        )
        + (
            ""
            if "validation" in record["results"]
            else " This model was refit on all of TRAIN, validation cells included, so only "
            "TEST_SIMPLE is measured."
        ),
        "",
        "Accuracy is the network's; *not a cell* is the share the service's not-a-cell "
        "check would answer `unknown` for instead of a class.",
        "",
        "| perturbation | " + " | ".join(f"{s} accuracy | {s} not a cell" for s in sets) + " |",
        "|---|" + "---|---|" * len(sets),
    ]
    for n in names:
        lines.append(
            f"| {n} | "
            + " | ".join(
                f"{record['results'][s][n]['accuracy']:.3f} | "
                f"{record['results'][s][n].get('not_a_cell', float('nan')):.3f}"
                for s in sets
            )
            + " |"
        )
    for key in ("mean_shifted", "worst_shifted"):
        lines.append(
            f"| **{key.replace('_', ' ')}** | "
            + " | ".join(f"**{record['summary'][s][key]:.3f}** | " for s in sets)
            + " |"
        )
    lines += ["", "![accuracy under perturbations](robustness.png)", ""]
    if "framings" in record:
        whole = record["results"][PHOTOGRAPHS]["none"]
        lines += [
            "## The same cells as single-cell images",
            "",
            f"The {PHOTOGRAPHS} cut to a square around the annotated white cell (BCCD's "
            "box, not the service's) of the given multiple of the box's longer side, as "
            "blood-cell analysers and other labs' single-cell data sets deliver a cell; "
            "the service finds the cell again in each (`framed`):",
            "",
            "| framing | accuracy | not a cell |",
            "|---|---|---|",
            f"| whole field | {whole['accuracy']:.3f} | {whole['not_a_cell']:.3f} |",
            *[
                f"| {n} | {r['accuracy']:.3f} | {r['not_a_cell']:.3f} |"
                for n, r in record["framings"].items()
            ],
            "",
        ]
    if "site" in record:
        name = record["site"]["name"]
        lines += [
            f"## Another laboratory's looks on site {name}'s cells",
            "",
            f"The {name} validation and test splits (its committed split file) with another "
            f"stain's hue (turned by {OTHER_STAIN:g} of the colour circle), a stain that "
            f"leaves the nucleus brown-red (turned by {FAR_STAIN:g}; and made by swapping the "
            "Romanowsky dyes for a brown and a red one in optical density, `dye_swap`), "
            "the cell filling "
            f"a {SMALL_FRAME}x{SMALL_FRAME} frame (1.1 x the box the localiser finds, "
            "resized), and both, answered as the service answers (`site_looks`, "
            "`site_table`). *Accuracy* is the network's most probable class; the service "
            "sends a cell to review when its confidence is under the review threshold, it "
            "is out of distribution, or it fails the not-a-cell check or finds no cell (then "
            "it answers `unknown` instead of a class); *wrong and released* are the cells "
            "it answers wrongly without review. Validation cells are the ones model choices "
            "may use; the test split is shown, not used.",
            "",
            "| set | look | cells | accuracy | sent to review | not a cell (answered "
            "`unknown`) | out of distribution | wrong and released |",
            "|---|---|---|---|---|---|---|---|",
            *[
                f"| {shown} | {look} | {r['n']} | {r['accuracy']:.3f} | "
                f"{r['review_share']:.1%} | {r['not_a_cell_share']:.1%} | "
                f"{r['out_of_distribution_share']:.1%} | {r['wrong_and_released_share']:.1%} |"
                for shown, table in record["site"]["looks"].items()
                for look, r in table.items()
            ],
            "",
        ]
    (out / "report.md").write_text("\n".join(lines))
