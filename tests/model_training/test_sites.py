"""Several laboratories ("sites"): naming, the fixed split of a one-tree site, site-balanced
sampling, multi-site training and the leave-one-lab-out command, on two tiny sites."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_training import sites
from model_training.data import DataError, Dataset
from model_training.sites import make_split, parse_site, read_split, write_split
from tests.synthetic import write_class_tree, write_kaggle_like

LOWER = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A publisher-split site (TRAIN/TEST/TEST_SIMPLE) and a one-tree site with its split."""
    root = tmp_path_factory.mktemp("sites")
    a = write_kaggle_like(root / "alpha")
    b = write_class_tree(root / "beta", per_class=10, groups=10, seed=7, names=LOWER)
    splits = root / "splits"
    write_split(make_split(b, seed=0), splits / "beta.csv", seed=0)
    return {"alpha": a, "beta": b, "splits": splits}


@pytest.fixture
def use_splits(two_sites: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sites, "SPLITS_DIR", two_sites["splits"])


def test_site_names_and_paths(two_sites: dict[str, Path]) -> None:
    site = parse_site(f"lab-1={two_sites['beta']}")
    assert site.name == "lab-1" and not site.publisher_split
    assert parse_site(f"a={two_sites['alpha']}").publisher_split
    with pytest.raises(DataError, match="does not exist"):
        parse_site("x=/nonexistent/folder")
    with pytest.raises(DataError, match="site name"):
        parse_site(f"a b={two_sites['beta']}")
    with pytest.raises(DataError, match="must differ"):
        sites.parse_sites([f"a={two_sites['alpha']}", f"a={two_sites['beta']}"])


def test_split_is_stable_disjoint_stratified_and_fixed(
    two_sites: dict[str, Path], tmp_path: Path
) -> None:
    rows = make_split(two_sites["beta"], seed=0)
    assert rows == make_split(two_sites["beta"], seed=0)  # the same every time
    assert rows != make_split(two_sites["beta"], seed=1)
    files = [f for f, _ in rows]
    assert len(files) == len(set(files)) == 40  # every file once: the parts are disjoint
    for cls in LOWER:
        parts = [s for f, s in rows if f.startswith(cls + "/")]
        assert parts.count("test") / len(parts) >= 0.15 - 1e-9
        assert {"train", "val", "test"} <= set(parts)
    path = tmp_path / "beta.csv"
    write_split(rows, path, seed=0)
    assert read_split(path) == dict(rows)
    with pytest.raises(DataError, match="fixed after first use"):
        write_split(rows, path, seed=0)


def test_unknown_class_folder_in_any_site_is_named(tmp_path: Path) -> None:
    root = write_class_tree(tmp_path / "gamma", per_class=2, groups=2, names=LOWER)
    (root / "basophil").mkdir()
    (root / "basophil" / "x.jpg").write_bytes(b"")
    with pytest.raises(DataError, match="basophil"):
        make_split(root)
    with pytest.raises(DataError, match="basophil"):
        sites.load_site(parse_site(f"gamma={root}"), None)


def test_image_missing_from_the_split_file_is_an_error(
    two_sites: dict[str, Path], tmp_path: Path
) -> None:
    rows = make_split(two_sites["beta"], seed=0)[1:]
    write_split(rows, tmp_path / "beta.csv", seed=0)
    with pytest.raises(DataError, match="not in"):
        sites.load_site(parse_site(f"beta={two_sites['beta']}"), None, splits_dir=tmp_path)


def test_site_balanced_sampling_draws_every_site_equally() -> None:
    from model_training.augment import SiteAugmentation, site_balanced

    def one_class(label: int, n: int) -> Dataset:
        x = np.full((n, 150, 150, 3), 200, np.uint8)
        return Dataset(
            x,
            np.full(n, label),
            np.array([f"g{i}" for i in range(n)]),
            [f"{i}.jpg" for i in range(n)],
        )

    stream = site_balanced([one_class(0, 200), one_class(1, 10)], 50, 0, SiteAugmentation())
    labels = np.concatenate([y.numpy().argmax(axis=1) for _, y in stream.take(8)])
    share = (labels == 1).mean()  # the 10-image site is drawn as often as the 200-image one
    assert 0.35 < share < 0.65, share


def test_train_sites_records_sites_and_reports_each(
    two_sites: dict[str, Path], use_splits: None, tmp_path: Path
) -> None:
    from model_training.multisite import train_sites

    specs = [parse_site(f"alpha={two_sites['alpha']}"), parse_site(f"beta={two_sites['beta']}")]
    summary = train_sites(
        specs,
        tmp_path / "models",
        arch="tiny",
        epochs=1,
        batch_size=8,
        steps_per_epoch=3,
        cache=None,
        report_dir=tmp_path / "report",
        command="test",
    )
    metadata = json.loads((tmp_path / "models" / "1" / "metadata.json").read_text())
    assert set(metadata["sites"]) == {"alpha", "beta"}
    assert (
        metadata["sites"]["beta"]["counts"]["test"]
        == summary["sites"]["beta"]["counts"]["test"]
        > 0
    )
    assert metadata["sites"]["beta"]["split"].endswith("beta.csv")
    assert set(metadata["test_metrics"]) == {"alpha", "beta"}
    assert set(metadata["test_metrics"]["alpha"]) == {"TEST", "TEST_SIMPLE"}
    assert (tmp_path / "models" / "1" / "ood.npz").exists()
    for site in ("alpha", "beta"):
        text = (tmp_path / "report" / f"{site}.md").read_text()
        assert f"Site `{site}`" in text and "macro-F1" in text
        assert (tmp_path / "report" / f"{site}_reliability.png").stat().st_size > 0
        assert f"| [{site}]({site}.md) |" in (tmp_path / "report" / "README.md").read_text()
    from model_training.site_eval import evaluate_model

    again = evaluate_model(tmp_path / "models" / "1", specs, None, tmp_path / "again", "test")
    for site in ("alpha", "beta"):  # the same model, evaluated again: the same figures
        for name, rec in again[site].items():
            assert rec["accuracy"] == summary["sites"][site]["sets"][name]["accuracy"]

    # a network started from this version's weights is this version's network
    from model_training.export import SavedModelRunner
    from model_training.multisite import load_weights
    from wbc_core.network import make_model

    network = make_model("tiny")
    load_weights(network, tmp_path / "models" / "1")
    batch = np.random.default_rng(0).uniform(0, 255, (4, 150, 150, 3)).astype(np.float32)
    np.testing.assert_allclose(
        network(batch, training=False).numpy(),
        SavedModelRunner(tmp_path / "models" / "1")(batch),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="another network"):
        load_weights(make_model("wbc"), tmp_path / "models" / "1")

    # the gamut fitted again by the same recipe is the same gamut, and records its command
    from model_training.postfit import refit_cell_check

    before = metadata["cell_check"]
    refit_cell_check(tmp_path / "models" / "1", specs, None, "refit")
    after = json.loads((tmp_path / "models" / "1" / "metadata.json").read_text())["cell_check"]
    assert after["allowed"] == before["allowed"] and after["command"] == "refit"
    assert after["hues"] == []  # trained without random convolutions: no hue turns
    with pytest.raises(DataError, match="trained on sites"):
        refit_cell_check(tmp_path / "models" / "1", specs[:1], None, "refit")

    # the guard fitted again: on the crops and their centres the cell fills (the default
    # zoom reaches them), written to ood.npz and metadata.json with its command
    from model_training.postfit import refit_ood_guard, trained_on_filled
    from wbc_core.ood import OodStats

    record = refit_ood_guard(tmp_path / "models" / "1", specs, None, "refit-ood")
    assert record["command"] == "refit-ood" and "cell fills" in record["fitted_on"]
    saved = json.loads((tmp_path / "models" / "1" / "metadata.json").read_text())["ood"]
    assert saved == record
    assert OodStats.load(tmp_path / "models" / "1").threshold == pytest.approx(record["threshold"])
    assert not trained_on_filled({"augmentation": {"zoom": [0.8, 1.2]}})
    assert not trained_on_filled({})  # the Kaggle-only recipes recorded no zoom
    # the filled centres are part of the fit: a guard fitted on the crops alone differs
    from model_training.export import SavedModelRunner
    from model_training.postfit import add_ood_guard, trained_sites

    _, data = trained_sites(tmp_path / "models" / "1", specs, None)
    (tmp_path / "plain").mkdir()
    plain = add_ood_guard(
        {},  # no zoom recorded: the crops alone
        tmp_path / "plain",
        SavedModelRunner(tmp_path / "models" / "1"),
        [d.train for d in data],
        [d.val for d in data],
    )
    assert plain is not None
    assert not np.allclose(plain.means, OodStats.load(tmp_path / "models" / "1").means)
    with pytest.raises(DataError, match="trained on sites"):
        refit_ood_guard(tmp_path / "models" / "1", specs[:1], None, "refit-ood")


def test_blend_sites_exports_the_weighted_mean_of_two_versions(
    two_sites: dict[str, Path], use_splits: None, tmp_path: Path
) -> None:
    """A version trained on from another, blended with it: every variable is the weighted
    mean of the two; the result is exported, calibrated and reported as a trained one."""
    import tensorflow as tf

    from model_training.export import SavedModelRunner
    from model_training.multisite import blend_sites, train_sites

    specs = [parse_site(f"alpha={two_sites['alpha']}"), parse_site(f"beta={two_sites['beta']}")]
    run = {"arch": "tiny", "epochs": 1, "batch_size": 8, "steps_per_epoch": 3, "cache": None}
    train_sites(specs, tmp_path / "m", version=1, command="start", **run)
    train_sites(specs, tmp_path / "m", version=2, init=tmp_path / "m" / "1", command="end", **run)
    summary = blend_sites(
        specs,
        tmp_path / "m",
        tmp_path / "m" / "1",
        tmp_path / "m" / "2",
        0.25,
        version=3,
        cache=None,
        report_dir=tmp_path / "report",
        command="blend",
    )
    start, end, blend = (
        tf.saved_model.load(str(tmp_path / "m" / v)).variables for v in ("1", "2", "3")
    )
    assert len(blend) == len(start) > 0
    moved = 0
    for a, b, c in zip(start, end, blend, strict=True):
        np.testing.assert_allclose(c.numpy(), 0.75 * a.numpy() + 0.25 * b.numpy(), atol=1e-6)
        moved += not np.allclose(a.numpy(), b.numpy())
    assert moved > 0  # the two ends differ, so the blend is neither
    metadata = json.loads((tmp_path / "m" / "3" / "metadata.json").read_text())
    assert metadata["blend"]["alpha"] == 0.25 and metadata["blend"]["end"].endswith("2")
    assert metadata["command"] == "blend" and metadata["version"] == "3"
    assert {"temperature", "cell_check", "ood", "test_metrics"} <= set(metadata)
    assert set(summary["sites"]) == {"alpha", "beta"}
    assert "| [beta](beta.md) |" in (tmp_path / "report" / "README.md").read_text()
    batch = np.random.default_rng(1).uniform(0, 255, (2, 150, 150, 3)).astype(np.float32)
    assert SavedModelRunner(tmp_path / "m" / "3")(batch).shape == (2, 4)
    with pytest.raises(ValueError, match="trained on sites"):
        blend_sites(
            specs[:1],
            tmp_path / "m",
            tmp_path / "m" / "1",
            tmp_path / "m" / "2",
            0.5,
            version=4,
            cache=None,
        )
    with pytest.raises(ValueError, match="alpha"):
        blend_sites(
            specs,
            tmp_path / "m",
            tmp_path / "m" / "1",
            tmp_path / "m" / "2",
            1.5,
            version=4,
            cache=None,
        )


# A run of the multi-site commands small enough for a test: the tiny network, two batches.
TINY_RUN = ["--arch", "tiny", "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "8"]


def test_cross_site_runs_end_to_end(
    two_sites: dict[str, Path], use_splits: None, tmp_path: Path
) -> None:
    from model_training.__main__ import main

    main(
        [
            "cross-site",
            "--data",
            f"alpha={two_sites['alpha']}",
            "--data",
            f"beta={two_sites['beta']}",
            *TINY_RUN,
            "--cache",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "cross"),
        ]
    )
    record = json.loads((tmp_path / "cross" / "metrics.json").read_text())
    assert set(record) == {"alpha", "beta"}
    assert record["alpha"]["role"] == "held out"
    assert set(record["alpha"]["sets"]) == {"TEST", "TEST_SIMPLE"}  # its tests only
    assert set(record["beta"]["sets"]) == {"test"}
    assert (tmp_path / "cross" / "without-alpha" / "alpha_TEST_confusion.png").exists()
    assert (tmp_path / "cross" / "without-beta" / "beta_test_confusion.png").exists()
    index = (tmp_path / "cross" / "README.md").read_text()
    assert "| [alpha](without-alpha/alpha.md) | beta | TEST |" in index


def test_train_sites_with_stain_balance_prepares_every_site_so(
    two_sites: dict[str, Path], use_splits: None, tmp_path: Path
) -> None:
    """``--stain-balance`` reaches the model's input contract (the service prepares images
    by it) and every crop the run reads: training, its held-out site, and a later
    evaluation of the exported model, which gives the same figures."""
    from model_training.__main__ import main
    from model_training.site_eval import evaluate_model

    cache = tmp_path / "cache"
    main(
        [
            "train-sites",
            "--data",
            f"beta={two_sites['beta']}",
            "--held-out",
            f"alpha={two_sites['alpha']}",
            "--stain-balance",
            *TINY_RUN,
            "--cache",
            str(cache),
            "--out",
            str(tmp_path / "models"),
            "--version",
            "1",
            "--report",
            str(tmp_path / "report"),
        ]
    )
    metadata = json.loads((tmp_path / "models" / "1" / "metadata.json").read_text())
    assert metadata["input"]["stain_balance"] is True
    cached = sorted(p.name for p in cache.iterdir())
    assert cached and all("-stain" in name for name in cached), cached
    specs = [parse_site(f"beta={two_sites['beta']}"), parse_site(f"alpha={two_sites['alpha']}")]
    again = evaluate_model(tmp_path / "models" / "1", specs, cache, tmp_path / "again", "test")
    summary = json.loads((tmp_path / "report" / "metrics.json").read_text())
    for site in ("alpha", "beta"):
        for name, rec in again[site].items():
            assert rec["accuracy"] == summary["sites"][site]["sets"][name]["accuracy"]


def test_committed_pbc_split_is_the_seeded_one() -> None:
    """The committed PBC split is what its command makes (it is never edited by hand)."""
    from tests.conftest import real_data

    root = real_data("WBC_PBC_DIR", "pbc", "monocyte")
    committed = read_split(sites.split_path("pbc"))
    assert committed == dict(make_split(root, seed=0))


def test_gaussian_blur_is_a_7x7_gaussian_with_mirrored_borders() -> None:
    """The separable matrix form equals the plain 2-D convolution: every output pixel the
    Gaussian-weighted sum of its 7x7 neighbours, the border mirrored (numpy's reflect)."""
    import tensorflow as tf

    from model_training.augment import gaussian_blur

    rng = np.random.default_rng(5)
    image = rng.uniform(0, 255, (150, 150, 3)).astype(np.float32)
    for sigma in (0.3, 1.0, 1.5):
        r = np.arange(-3, 4)
        k = np.exp(-0.5 * (r / sigma) ** 2)
        kernel = np.outer(k, k) / k.sum() ** 2
        padded = np.pad(image, ((3, 3), (3, 3), (0, 0)), mode="reflect")
        want = sum(
            kernel[dy, dx] * padded[dy : dy + 150, dx : dx + 150]
            for dy in range(7)
            for dx in range(7)
        )
        got = gaussian_blur(tf.constant(image), tf.constant(sigma)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-3)
    flat = np.full((150, 150, 3), 200.0, np.float32)
    np.testing.assert_allclose(
        gaussian_blur(tf.constant(flat), tf.constant(1.5)).numpy(), flat, atol=1e-3
    )


def test_low_resolution_keeps_the_crop_size_and_loses_fine_detail() -> None:
    import tensorflow as tf

    from model_training.augment import low_resolution

    stripes = np.zeros((150, 150, 3), np.float32)
    stripes[:, ::2] = 255.0  # detail at the finest scale a camera can record
    out = low_resolution(tf.constant(stripes), tf.constant(3.0)).numpy()
    assert out.shape == (150, 150, 3)
    assert abs(out.mean() - stripes.mean()) < 2  # brightness kept
    assert out.std() < 0.3 * stripes.std()  # stripes mostly averaged away
    same = low_resolution(tf.constant(stripes), tf.constant(1.0)).numpy()
    np.testing.assert_allclose(same, stripes, atol=1e-3)  # factor 1: untouched


def test_random_convolution_at_its_kernel_size_equals_the_7x7_form_with_zeros() -> None:
    """The k x k convolution gives what a 7x7 kernel with zeros outside its k x k centre
    gives for the same random draws (the form it replaced, at up to 49 times the cost)."""
    import tensorflow as tf

    from bench.train_speed import masked_random_convolution
    from model_training.augment import random_convolution

    image = tf.constant(np.random.default_rng(2).uniform(0, 255, (150, 150, 3)), tf.float32)
    for seed in range(12):  # every kernel size is drawn
        tf.random.set_seed(seed)
        got = random_convolution(image).numpy()
        tf.random.set_seed(seed)
        want = masked_random_convolution(image).numpy()
        np.testing.assert_allclose(got, want, atol=1e-3)


def test_random_convolution_changes_colour_and_texture_and_keeps_the_shape() -> None:
    import tensorflow as tf

    from model_training.augment import random_convolution

    tf.random.set_seed(3)
    image = np.full((150, 150, 3), 220.0, np.float32)  # background
    yy, xx = np.mgrid[:150, :150]
    disc = (yy - 75) ** 2 + (xx - 75) ** 2 < 30**2
    image[disc] = (90.0, 60.0, 150.0)  # a violet nucleus
    outs = [random_convolution(tf.constant(image)).numpy() for _ in range(12)]
    for out in outs:
        assert out.shape == image.shape and np.isfinite(out).all()
        assert out.min() >= 0 and out.max() <= 255
    # the nucleus is still told from its background in most draws: the shape is kept (a
    # filter that inverts a channel, blended half and half, can cancel it now and then)
    contrast = [np.abs(o[disc].mean(axis=0) - o[~disc].mean(axis=0)).max() for o in outs]
    assert sum(c > 20 for c in contrast) >= 9
    changed = [np.abs(out - image).mean() for out in outs]
    assert max(changed) > 10  # colours moved in some draws
    assert len({round(float(c), 1) for c in changed}) > 6  # a new filter every call


def test_hue_turn_moves_every_colour_and_keeps_lightness() -> None:
    import tensorflow as tf

    from model_training.augment import hue_turn

    tf.random.set_seed(5)
    image = np.full((150, 150, 3), 220.0, np.float32)
    image[50:100, 50:100] = (90.0, 60.0, 150.0)  # a violet nucleus on the background
    hues = []
    for _ in range(8):
        out = hue_turn(tf.constant(image)).numpy()
        assert out.shape == image.shape and out.min() >= 0 and out.max() <= 255
        nucleus = out[75, 75]
        assert nucleus.max() == pytest.approx(150.0, abs=1) and nucleus.min() == pytest.approx(
            60.0, abs=1
        )  # HSV value and saturation kept: the nucleus stays as dark and as coloured
        hues.append(int(np.argmax(nucleus)) * 3 + int(np.argmin(nucleus)))
    assert len(set(hues)) > 2  # the violet turns to other colours, a new amount each call


def test_answers_treat_a_cell_not_found_as_the_service_does() -> None:
    """A crop whose cell the localiser did not find is answered `unknown`: flagged not a cell
    and never released, however confident the network."""
    from model_training.site_eval import answers, guard_stats

    class Confident:
        def run(self, x: np.ndarray) -> tuple[np.ndarray, None]:
            return np.tile([0.97, 0.01, 0.01, 0.01], (len(x), 1)), None

    x = np.zeros((3, 8, 8, 3), np.uint8)
    ds = Dataset(x, np.zeros(3, int), np.array(["a", "b", "c"]), ["a", "b", "c"])
    meta = {"review_threshold": 0.9}
    every = answers(Confident(), ds, meta, None)
    assert every["released"].all() and not every["not_a_cell"].any()
    some = answers(Confident(), ds, meta, None, np.array([True, False, True]))
    assert some["not_a_cell"].tolist() == [False, True, False]
    assert some["released"].tolist() == [True, False, True]
    assert guard_stats(some)["not_a_cell_share"] == pytest.approx(1 / 3)
