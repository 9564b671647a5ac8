"""Class folders, corrupt files, and the two split protocols."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_training.data import (
    CLASSES,
    DataError,
    grouped_split,
    list_samples,
    load_folder,
    random_split,
)
from tests.synthetic import write_class_tree


def test_class_folders_are_case_insensitive_and_ordered(tmp_path: Path) -> None:
    write_class_tree(
        tmp_path, per_class=2, names=("eosinophil", "Lymphocyte", "MONOCYTE", "NeUtRoPhIl")
    )
    samples = list_samples(tmp_path)
    assert sorted({s.label for s in samples}) == [0, 1, 2, 3]
    assert [CLASSES[s.label] for s in samples][::2] == list(CLASSES)


def test_unknown_class_folder_is_an_error(tmp_path: Path) -> None:
    write_class_tree(tmp_path, per_class=1)
    (tmp_path / "BASOPHIL").mkdir()
    with pytest.raises(DataError, match="unknown class folder"):
        list_samples(tmp_path)


def test_groups_come_from_the_source_cell_index(tmp_path: Path) -> None:
    write_class_tree(tmp_path, per_class=4, groups=2)
    groups = {s.group for s in list_samples(tmp_path)}
    assert "eosinophil/0" in groups and "neutrophil/1" in groups
    assert len(groups) == 8


def test_corrupt_file_is_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_class_tree(tmp_path, per_class=2)
    bad = tmp_path / "MONOCYTE" / "_9_1.jpeg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    dataset = load_folder(tmp_path, cache_dir=None, workers=1)
    assert len(dataset.y) == 8
    assert len(dataset.skipped) == 1 and str(bad) in dataset.skipped[0]
    assert "skipping unreadable image" in caplog.text


def test_cache_is_reused(tmp_path: Path) -> None:
    root = write_class_tree(tmp_path / "data", per_class=1)
    first = load_folder(root, cache_dir=tmp_path / "cache", workers=1)
    assert len(list((tmp_path / "cache").iterdir())) == 1
    second = load_folder(root, cache_dir=tmp_path / "cache", workers=1)
    np.testing.assert_array_equal(first.x, second.x)


def test_a_new_cache_replaces_the_same_folders_older_preprocessing(tmp_path: Path) -> None:
    """Each change to the preprocessing re-keys the cache (a TRAIN cache is 0.7 GB); the
    stale file of the same folder and variant goes, other folders and variants stay."""
    from model_training.data import _files_key
    from wbc_core import localise

    root = write_class_tree(tmp_path / "data", per_class=1)
    cache = tmp_path / "cache"
    cache.mkdir()
    files_key = _files_key(list_samples(root), root)
    ctx = f"context{localise.CROP_CONTEXT:g}"
    stale = cache / f"{files_key}-0123456789ab-150-{ctx}.npz"
    unbalanced = cache / f"{files_key}-0123456789ab-150-{ctx}-unbalanced.npz"
    other_crop = cache / f"{files_key}-0123456789ab-150-context{localise.CROP_CONTEXT + 0.3:g}.npz"
    other_folder = cache / f"ffffffffffffffff-0123456789ab-150-{ctx}.npz"
    for path in (stale, unbalanced, other_crop, other_folder):
        path.write_bytes(b"old")
    load_folder(root, cache_dir=cache, workers=1)
    assert not stale.exists()
    assert unbalanced.exists() and other_crop.exists() and other_folder.exists()
    assert len(list(cache.glob(f"{files_key}-*-150-{ctx}.npz"))) == 1


def test_a_wider_crop_context_is_cached_apart_and_shows_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wbc_core import localise

    root = write_class_tree(tmp_path / "data", per_class=1)
    cache = tmp_path / "cache"
    narrow = load_folder(root, cache_dir=cache, workers=1)
    monkeypatch.setattr(localise, "CROP_CONTEXT", localise.CROP_CONTEXT * 1.4)
    wide = load_folder(root, cache_dir=cache, workers=1)
    assert len(list(cache.iterdir())) == 2  # neither replaces the other
    # the same cell smaller in the frame: less of the crop is nucleus violet
    violet = [(localise.violet_score(d.x) > 40).mean() for d in (narrow, wide)]
    assert violet[1] < 0.8 * violet[0]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 30)), min_size=4, max_size=300),
    st.floats(0.05, 0.5),
    st.integers(0, 10_000),
)
def test_grouped_split_never_puts_a_group_on_both_sides(
    pairs: list[tuple[int, int]], fraction: float, seed: int
) -> None:
    labels = np.array([label for label, _ in pairs])
    groups = np.array([f"{CLASSES[label]}/{k}" for label, k in pairs])
    rest, held = grouped_split(groups, labels, fraction, seed)
    assert len(rest) + len(held) == len(pairs)
    assert not set(groups[rest]) & set(groups[held])
    for label in np.unique(labels):  # every class is represented in validation
        assert (labels[held] == label).any()


def test_random_split_is_the_papers_80_10_10() -> None:
    tr, va, te = random_split(1000, seed=1)
    assert (len(tr), len(va), len(te)) == (800, 100, 100)
    assert len(set(tr) | set(va) | set(te)) == 1000


def test_kaggle_views_are_grouped_by_their_source_photograph(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table's photograph names the group, not the ``k`` of the file name; a file of
    the same name but another size (another tree) is not taken for the Kaggle one."""
    from model_training import data

    root = write_class_tree(tmp_path / "TRAIN", per_class=4, groups=2)
    views = sorted((root / "MONOCYTE").iterdir())  # k = 0, 0, 1, 1
    size = [v.stat().st_size for v in views]
    table = {
        ("TRAIN", "monocyte", views[0].name, size[0]): "BloodImage_00042",
        ("TRAIN", "monocyte", views[2].name, size[2]): "BloodImage_00042",
        ("TRAIN", "monocyte", views[1].name, size[1] + 1): "BloodImage_00007",
    }
    monkeypatch.setattr(data, "_source_fields", lambda: table)
    groups = [data.group_of(v, 2) for v in views]
    assert [v.name.split("_")[1] for v in views] == ["0", "0", "1", "1"]
    assert groups[0] == groups[2] == "monocyte/BloodImage_00042"  # k differ, one photograph
    assert groups[1] == "monocyte/0" and groups[3] == "monocyte/1"
