"""Image folders -> samples -> cached arrays, and the two split protocols.

A data folder holds one subfolder per class (names case-insensitive). Unreadable
files are skipped with a logged warning and counted (``Dataset.skipped``), so that
one bad file among twelve thousand does not stop a run, yet is never silent.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model_training.bccd import read_table
from wbc_core import localise, preprocessing
from wbc_core.classes import CLASSES
from wbc_core.preprocessing import IMAGE_SIZE, ImageError, preprocess_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
_VIEW_NAME = re.compile(r"^_(\d+)_\d+$")  # _<k>_<n>.jpeg: k named the cell (not in Kaggle)


class DataError(ValueError):
    """The data folder is not a usable class-folder tree."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int
    group: str  # views of the same source cell share a group


@dataclass
class Dataset:
    x: np.ndarray  # uint8 [N, IMAGE_SIZE, IMAGE_SIZE, 3]
    y: np.ndarray  # int64 [N]
    groups: np.ndarray  # str [N]
    paths: list[str]
    skipped: list[str] = field(default_factory=list)

    def fingerprint(self) -> dict[str, int | str]:
        """Size and hash of (file name, source cell) pairs: which exact images were used."""
        rows = sorted(
            f"{Path(p).parent.name}/{Path(p).name}|{g}"
            for p, g in zip(self.paths, self.groups, strict=True)
        )
        return {"n": len(rows), "sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest()[:16]}

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(
            self.x[index], self.y[index], self.groups[index], [self.paths[i] for i in index]
        )


@functools.cache
def _source_fields() -> dict[tuple[str, str, str, int], str]:
    return read_table()


def group_of(path: Path, label: int) -> str:
    """Source-cell id, class first. A Kaggle image: the BCCD photograph it was made from
    (``model_training/source_fields.csv.gz``; the ``k`` of its name does not name its cell,
    see ``model_training.source_fields``). Other ``_<k>_<n>`` names (the synthetic test
    trees): ``k``. Anything else: the file itself."""
    name = CLASSES[label]
    photograph = _source_fields().get(
        (path.parent.parent.name, name, path.name, path.stat().st_size)
    )
    if photograph:
        return f"{name}/{photograph}"
    match = _VIEW_NAME.match(path.stem)
    return f"{name}/{match.group(1)}" if match else f"{name}/{path.name}"


def list_samples(root: Path) -> list[Sample]:
    """All images under ``root/<class>/``, class order alphabetical, files sorted."""
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    samples: list[Sample] = []
    seen: set[str] = set()
    subs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    for sub in sorted(subs, key=lambda p: p.name.lower()):
        name = sub.name.lower()
        if name not in CLASSES:
            raise DataError(f"unknown class folder {sub}: expected one of {', '.join(CLASSES)}")
        if name in seen:
            raise DataError(f"class {name} appears twice in {root} (folder names differ in case)")
        seen.add(name)
        label = CLASSES.index(name)
        for path in sorted(sub.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path, label, group_of(path, label)))
    if not samples:
        raise DataError(f"no images found under {root}")
    return samples


def _files_key(samples: Sequence[Sample], root: Path) -> str:
    """Hash of relative paths, sizes and labels: a changed file invalidates the cache."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.path.relative_to(root)}|{s.path.stat().st_size}|{s.label}\n".encode())
    return digest.hexdigest()[:16]


def _preprocessing_version() -> str:
    sources = (Path(localise.__file__).read_bytes(), Path(preprocessing.__file__).read_bytes())
    return hashlib.sha256(b"".join(sources)).hexdigest()[:12]


def _load_one(path: Path, balance: str = "white") -> np.ndarray | str:
    try:
        return preprocess_file(path, balance=balance).array
    except (ImageError, OSError) as exc:
        return f"{path}: {exc}"


def _progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def load_folder(
    root: Path, cache_dir: Path | None = None, workers: int | None = None, balance: str = "white"
) -> Dataset:
    """Preprocess every image of a class-folder tree once; cache the arrays on disk.
    ``balance``: as the model is trained (``preprocessing.BALANCES``; models from v5 on
    white-balance)."""
    preprocessing.check_balance(balance)
    root = Path(root)
    samples = list_samples(root)
    files_key = _files_key(samples, root)
    suffix = {"none": "-unbalanced", "white": "", "stain": "-stain"}[balance]
    variant = f"{IMAGE_SIZE}-context{localise.CROP_CONTEXT:g}{suffix}"
    key = f"{files_key}-{_preprocessing_version()}-{variant}"
    cache = cache_dir / f"{key}.npz" if cache_dir else None
    paths = [str(s.path) for s in samples]
    labels = np.array([s.label for s in samples], dtype=np.int64)
    groups = np.array([s.group for s in samples])
    if cache and cache.exists():
        with np.load(cache) as z:
            keep = z["keep"]
            skipped = [str(p) for p in z["skipped"]]
            x = z["x"]
        log.info("loaded %d cached arrays from %s", len(x), cache)
    else:
        arrays: list[np.ndarray] = []
        keep_list: list[int] = []
        skipped = []
        workers = workers or min(4, os.cpu_count() or 1)
        with ProcessPoolExecutor(workers) as pool:
            for i, result in enumerate(
                pool.map(
                    functools.partial(_load_one, balance=balance),
                    [s.path for s in samples],
                    chunksize=64,
                )
            ):
                if isinstance(result, str):
                    log.warning("skipping unreadable image %s", result)
                    skipped.append(result)
                else:
                    arrays.append(result)
                    keep_list.append(i)
                if (i + 1) % 250 == 0 or i + 1 == len(samples):
                    _progress(i + 1, len(samples), f"preprocessing {root.name}")
        keep = np.array(keep_list, dtype=np.int64)
        x = np.stack(arrays) if arrays else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        if cache:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, x=x, keep=keep, skipped=np.array(skipped, dtype=str))
            # the same folder cached by an older preprocessing will not be read again
            for stale in cache.parent.glob(f"{files_key}-*-{variant}.npz"):
                if stale != cache:
                    stale.unlink(missing_ok=True)
    return Dataset(x, labels[keep], groups[keep], [paths[i] for i in keep], skipped)


def grouped_split(
    groups: np.ndarray, labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rest, held_out): about ``fraction`` of each class's groups held out whole."""
    rng = np.random.default_rng(seed)
    held: list[str] = []
    for label in np.unique(labels):
        class_groups = np.unique(groups[labels == label])
        rng.shuffle(class_groups)
        count = max(1, round(fraction * len(class_groups)))
        held.extend(class_groups[:count].tolist())
    mask = np.isin(groups, held)
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def random_split(
    n: int, seed: int, fractions: tuple[float, float] = (0.8, 0.1)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's split: a random 80/10/10 permutation of all files (leaks views)."""
    order = np.random.default_rng(seed).permutation(n)
    a = int(fractions[0] * n)
    b = a + int(fractions[1] * n)
    return order[:a], order[a:b], order[b:]


def concat(parts: Sequence[Dataset]) -> Dataset:
    return Dataset(
        np.concatenate([p.x for p in parts]),
        np.concatenate([p.y for p in parts]),
        np.concatenate([p.groups for p in parts]),
        [path for p in parts for path in p.paths],
        [s for p in parts for s in p.skipped],
    )


def read_cell_list(path: Path) -> list[str]:
    """Source-cell groups (``<class>/<photograph>``), one per line of ``path``; blank lines
    and ``#`` comments ignored."""
    lines = (line.split("#")[0].strip() for line in Path(path).read_text().splitlines())
    return [line for line in lines if line]


def check_cells(cells: Sequence[str], known: Sequence[str] | np.ndarray) -> None:
    """A listed cell that is not ``known`` is an error: a misspelt name would otherwise
    leave everything in."""
    unknown = set(cells) - set(known)
    if unknown:
        raise DataError(f"cells to exclude not in the data: {sorted(unknown)[:5]}")


def without_cells(ds: Dataset, cells: Sequence[str], known: Sequence[str] | None = None) -> Dataset:
    """``ds`` less every view of ``cells`` (its skipped files kept), which must be among
    ``known`` (default: ``ds``'s own cells)."""
    check_cells(cells, ds.groups if known is None else known)
    kept = ds.subset(np.flatnonzero(~np.isin(ds.groups, list(cells))))
    kept.skipped = list(ds.skipped)
    return kept


def exclusion_record(path: Path | None) -> tuple[list[str], dict[str, Any]]:
    """The cells listed in ``path`` (none without one) and what metadata.json and the
    reports record of them: the list and the file it came from."""
    if path is None:
        return [], {}
    cells = read_cell_list(path)
    return cells, {"excluded_cells": sorted(cells), "excluded_cells_file": str(path)}
