"""Training data from several laboratories ("sites"), each a class-folder tree.

A site is named on the command line as ``NAME=PATH`` (``--data kaggle=../shared/data/
kaggle-blood-cells --data pbc=../shared/data/pbc``). Two layouts are understood:

- split by its publisher (``TRAIN/``, ``TEST/``, optionally ``TEST_SIMPLE/``, each a
  class-folder tree: the Kaggle set). Validation is a share of TRAIN's source cells,
  grouped (``data.grouped_split``); every other top folder is a test set.
- one class-folder tree (``eosinophil/``, ... : the PBC set). Its split into train /
  validation / test is a committed file of file names, ``model_training/splits/NAME.csv``,
  made once by ``python -m model_training split`` (seeded, stratified by class) and never
  changed after first use, so every report on that site's test cells reads the same cells.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model_training.data import (
    DataError,
    Dataset,
    concat,
    grouped_split,
    list_samples,
    load_folder,
)

SPLITS_DIR = Path(__file__).parent / "splits"
SPLIT_NAMES = ("train", "val", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)
VAL_FRACTION = 0.15  # share of a publisher-split site's TRAIN source cells held out


@dataclass(frozen=True)
class Site:
    name: str
    root: Path

    @property
    def publisher_split(self) -> bool:
        return (self.root / "TRAIN").is_dir()


@dataclass
class SiteData:
    """One site's images: training, validation and its named test sets."""

    site: Site
    train: Dataset
    val: Dataset
    tests: dict[str, Dataset] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "train": len(self.train.y),
            "val": len(self.val.y),
            **{name: len(ds.y) for name, ds in self.tests.items()},
        }


def parse_site(spec: str) -> Site:
    """``NAME=PATH`` (a bare path is named after its folder)."""
    name, sep, path = spec.partition("=")
    if not sep:
        name, path = Path(spec).name, spec
    name = name.strip()
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise DataError(f"site name {name!r} in {spec!r}: use letters, digits, - or _")
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"site {name}: data folder {root} does not exist")
    return Site(name, root)


def parse_sites(specs: list[str]) -> list[Site]:
    sites = [parse_site(s) for s in specs]
    names = [s.name for s in sites]
    if len(set(names)) != len(names):
        raise DataError(f"site names must differ: {names}")
    return sites


def split_path(name: str, splits_dir: Path | None = None) -> Path:
    """Where a one-tree site's split file is (``SPLITS_DIR`` unless given)."""
    return Path(splits_dir or SPLITS_DIR) / f"{name}.csv"


def make_split(
    root: Path, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS
) -> list[tuple[str, str]]:
    """(``class/file``, split) for every image under ``root``: each class's files shuffled
    with ``seed`` and cut by ``fractions`` (stratified; the test share rounded up, so each
    class's test part is at least its fraction), sorted by file."""
    samples = list_samples(Path(root))
    rng = np.random.default_rng(seed)
    rows: list[tuple[str, str]] = []
    by_class: dict[int, list[str]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(f"{s.path.parent.name}/{s.path.name}")
    for label in sorted(by_class):
        files = sorted(by_class[label])
        rng.shuffle(files)
        n = len(files)
        n_test = math.ceil(fractions[2] * n - 1e-9)  # at least its share, rounding up
        n_val = round(fractions[1] * n)
        rows += [(f, "test") for f in files[:n_test]]
        rows += [(f, "val") for f in files[n_test : n_test + n_val]]
        rows += [(f, "train") for f in files[n_test + n_val :]]
    return sorted(rows)


def write_split(rows: list[tuple[str, str]], path: Path, seed: int) -> None:
    """Write a split file; an existing one is never replaced (its test cells may have been
    read)."""
    path = Path(path)
    if path.exists():
        raise DataError(f"{path} exists: a site's split is fixed after first use")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        f.write(
            f"# seed {seed}; fractions {'/'.join(f'{x:g}' for x in SPLIT_FRACTIONS)}; "
            "stratified by class; never changed after first use\n"
        )
        writer = csv.writer(f)
        writer.writerow(["file", "split"])
        writer.writerows(rows)


def read_split(path: Path) -> dict[str, str]:
    """``class/file`` -> split name, from a split file."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"no split file {path}: make it once with `python -m model_training "
            "split --data NAME=PATH`"
        )
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    table: dict[str, str] = {}
    for row in csv.DictReader(lines):
        if row["split"] not in SPLIT_NAMES:
            raise DataError(f"{path}: unknown split {row['split']!r} for {row['file']}")
        table[row["file"]] = row["split"]
    return table


def file_key(path: str | Path) -> str:
    path = Path(path)
    return f"{path.parent.name.lower()}/{path.name}"


def load_site(
    site: Site,
    cache: Path | None,
    seed: int = 42,
    balance: str = "white",
    splits_dir: Path | None = None,
) -> SiteData:
    """One site's train / validation / test sets (see the module docstring)."""
    if site.publisher_split:
        full = load_folder(site.root / "TRAIN", cache, balance=balance)
        rest, held = grouped_split(full.groups, full.y, VAL_FRACTION, seed)
        tests = {
            p.name: load_folder(p, cache, balance=balance)
            for p in sorted(site.root.iterdir())
            if p.is_dir() and p.name != "TRAIN" and not p.name.startswith(".")
        }
        train = full.subset(rest)
        train.skipped = full.skipped
        return SiteData(site, train, full.subset(held), tests)
    full = load_folder(site.root, cache, balance=balance)
    table = read_split(split_path(site.name, splits_dir))
    keys = [file_key(p) for p in full.paths]
    missing = [k for k in keys if k not in table]
    if missing:
        raise DataError(
            f"site {site.name}: {len(missing)} images not in "
            f"{split_path(site.name, splits_dir)}, e.g. {missing[:3]}"
        )
    which = np.array([table[k] for k in keys])
    parts = {name: full.subset(np.flatnonzero(which == name)) for name in SPLIT_NAMES}
    parts["train"].skipped = full.skipped
    return SiteData(site, parts["train"], parts["val"], {"test": parts["test"]})


def pooled(parts: list[Dataset]) -> Dataset:
    """Several sites' sets as one (for statistics over all of them, never for a figure)."""
    return concat(parts) if len(parts) > 1 else parts[0]
