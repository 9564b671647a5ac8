"""A short real training run of the tiny network: export, reload, evaluate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_training.data import CLASSES, load_folder
from model_training.export import SavedModelRunner
from tests.conftest import PROJECT


def test_export_has_named_signature_and_metadata(tiny_model: Path) -> None:
    version = tiny_model / "1"
    assert (version / "saved_model.pb").exists()
    runner = SavedModelRunner(version)
    meta = runner.metadata
    assert meta["classes"] == list(CLASSES)
    assert meta["input"]["size"] == [150, 150, 3]
    assert meta["input"]["white_balance"] is True
    assert meta["protocol"] == "official" and meta["arch"] == "tiny"
    assert set(meta["test_metrics"]) == {"TEST", "TEST_SIMPLE"}
    assert meta["temperature"] > 0 and 0 < meta["review_threshold"] < 1
    assert meta["data_fingerprint"]["train"]["n"] > 0
    spec = runner.fn.structured_input_signature[1]["image"]
    assert spec.shape.as_list() == [None, 150, 150, 3]


def test_probabilities_sum_to_one_in_class_order(tiny_model: Path, kaggle_like: Path) -> None:
    runner = SavedModelRunner(tiny_model / "1")
    data = load_folder(kaggle_like / "TEST", cache_dir=None, workers=1)
    probs = runner(data.x)
    assert probs.shape == (len(data.y), len(CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (probs >= 0).all()


def test_validation_cells_never_in_training(tiny_model: Path) -> None:
    meta = json.loads((tiny_model / "1" / "metadata.json").read_text())
    fp = meta["data_fingerprint"]
    assert fp["train"]["n"] + fp["val"]["n"] == 48  # every TRAIN file on exactly one side


def test_evaluate_cli_last_line_is_json(tiny_model: Path, kaggle_like: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "model_training",
            "evaluate",
            "--model",
            str(tiny_model / "1"),
            "--data",
            str(kaggle_like / "TEST"),
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT,
        timeout=300,
        check=True,
    )
    last = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 <= last["accuracy"] <= 1 and 0 <= last["macro_f1"] <= 1
    for name in CLASSES:
        assert set(last["per_class"][name]) >= {"precision", "recall", "f1", "support"}
        assert last["per_class"][name]["support"] == 4
    assert "| eosinophil |" in result.stdout
    cells = last["cells"]  # 4 classes x 2 source cells x 2 views in the synthetic TEST
    assert cells["cells"] == 8
    assert cells["cells_right"] == 8 - len(cells["wrong_cells"])
    assert f"{cells['cells_right']} of 8 source cells right" in result.stdout


def test_evaluate_draws_the_misclassified_images(
    tiny_model: Path, kaggle_like: Path, tmp_path: Path
) -> None:
    from PIL import Image

    from model_training.evaluate import evaluate, plot_errors

    report = evaluate(tiny_model / "1", kaggle_like / "TEST", errors=tmp_path / "errors.png")
    assert report["errors_png"] == str(tmp_path / "errors.png")
    wrong = round((1 - report["accuracy"]) * report["n"])
    width = Image.open(tmp_path / "errors.png").size[0]
    assert width == max(1, wrong) * 260  # one column per misclassified image, 2.6 in at 100 dpi
    plot_errors([], np.zeros(0, int), np.zeros((0, 4)), True, tmp_path / "none.png")
    assert Image.open(tmp_path / "none.png").size[0] == 260


def test_refit_trains_on_all_of_train_with_the_validated_calibration(
    tiny_model: Path, kaggle_like: Path, tmp_path: Path
) -> None:
    from model_training.train import train

    validated = json.loads((tiny_model / "1" / "metadata.json").read_text())
    summary = train(
        "official",
        kaggle_like,
        tmp_path / "wbc-classifier",
        arch="tiny",
        epochs=1,
        batch_size=8,
        cache_dir=None,
        report_dir=tmp_path / "report",
        refit=tiny_model / "1",
    )
    meta = json.loads((tmp_path / "wbc-classifier" / "1" / "metadata.json").read_text())
    assert meta["data_fingerprint"]["train"]["n"] == 48  # every TRAIN file, validation's too
    assert "val" not in meta["data_fingerprint"]
    assert meta["refit"]["calibration_from"]["created"] == validated["created"]
    assert meta["calibration"]["fitted_on"].startswith("validation of the validated run")
    assert meta["temperature"] == validated["temperature"]
    assert meta["review_threshold"] == validated["review_threshold"]
    assert summary["n_val"] == 0 and summary["val_accuracy_best"] is None
    report = (tmp_path / "report" / "report.md").read_text()
    assert "Refit on all of TRAIN" in report and "history.csv" in {
        p.name for p in (tmp_path / "report").iterdir()
    }


def test_calibrate_gives_a_refit_another_validated_runs_calibration(
    tiny_model: Path, kaggle_like: Path, tmp_path: Path
) -> None:
    """A validated run on a corrected split recalibrates the shipped refit without
    retraining it: its temperature and review threshold, and the refit says where from."""
    import shutil

    from model_training.__main__ import main
    from model_training.train import train

    train(
        "official",
        kaggle_like,
        tmp_path / "refit",
        arch="tiny",
        epochs=1,
        batch_size=8,
        cache_dir=None,
        refit=tiny_model / "1",
        report_dir=tmp_path / "report",
    )
    other = tmp_path / "validated"
    shutil.copytree(tiny_model / "1", other)
    meta = json.loads((other / "metadata.json").read_text())
    meta.update({"temperature": 0.5, "review_threshold": 0.77, "created": "another run"})
    (other / "metadata.json").write_text(json.dumps(meta))
    refit_dir, cache = tmp_path / "refit" / "1", str(tmp_path / "cache")
    main(
        [
            "calibrate",
            "--model",
            str(refit_dir),
            "--data",
            str(kaggle_like),
            "--cache",
            cache,
            "--report",
            str(tmp_path / "report"),
            "--calibration-from",
            str(other),
        ]
    )
    refit = json.loads((refit_dir / "metadata.json").read_text())
    assert (refit["temperature"], refit["review_threshold"]) == (0.5, 0.77)
    assert refit["refit"]["calibration_from"]["created"] == "another run"
    assert refit["calibration"]["review"]["threshold"] == 0.77
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["refit"]["calibration_from"]["created"] == "another run"  # not the old one
    with pytest.raises(ValueError, match="not a validated run"):
        main(
            [
                "calibrate",
                "--model",
                str(refit_dir),
                "--data",
                str(kaggle_like),
                "--cache",
                cache,
                "--calibration-from",
                str(refit_dir),
            ]
        )


def test_calibrate_fits_a_refit_on_its_recipes_out_of_fold_predictions(
    tiny_model: Path, kaggle_like: Path, tmp_path: Path
) -> None:
    from model_training import metrics
    from model_training.postfit import refit_calibration
    from model_training.train import train

    train(
        "official",
        kaggle_like,
        tmp_path / "refit",
        arch="tiny",
        epochs=1,
        batch_size=8,
        cache_dir=None,
        refit=tiny_model / "1",
    )
    refit_dir = tmp_path / "refit" / "1"
    meta = json.loads((refit_dir / "metadata.json").read_text())
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    probs = rng.dirichlet(np.ones(4), 400).astype(np.float32)
    probs[np.arange(300), y[:300]] += 2  # mostly right, not always
    probs /= probs.sum(axis=1, keepdims=True)
    cv = tmp_path / "cv"
    cv.mkdir()
    np.savez_compressed(cv / "out_of_fold.npz", probs=probs, y=y)
    recipe = {k: meta.get(k, 0.0) for k in ("arch", "epochs", "scale_jitter", "stain_jitter")}
    recipe["crop_context"] = meta["input"]["crop_context"]
    (cv / "metrics.json").write_text(json.dumps(recipe | {"command": "python -m cv"}))
    calibration, made = refit_calibration(meta, cv)
    expected = metrics.fit_temperature(probs, y)
    assert calibration.temperature == expected
    assert calibration.review_threshold == metrics.choose_review_threshold(
        metrics.apply_temperature(probs, expected), y
    )
    assert "out-of-fold" in calibration.fitted_on
    assert made == {"path": str(cv), "command": "python -m cv"}
    (cv / "metrics.json").write_text(json.dumps(recipe | {"epochs": 99}))
    with pytest.raises(ValueError, match="another recipe \\(epochs\\)"):
        refit_calibration(meta, cv)
    (cv / "metrics.json").write_text(json.dumps(recipe | {"balance": "stain"}))
    with pytest.raises(ValueError, match="another recipe \\(balance\\)"):
        refit_calibration(meta, cv)
    (cv / "metrics.json").write_text(json.dumps(recipe | {"members": 2}))
    with pytest.raises(ValueError, match="another recipe \\(members\\)"):
        refit_calibration(meta, cv)
    with pytest.raises(ValueError, match="another recipe \\(members\\)"):  # before training
        train(
            "official",
            kaggle_like,
            tmp_path / "never",
            arch="tiny",
            epochs=1,
            cache_dir=Path("/nonexistent"),
            refit=cv,
        )
    assert not (tmp_path / "never").exists()


def test_refit_refuses_the_paper_recipe(
    tiny_model: Path, kaggle_like: Path, tmp_path: Path
) -> None:
    from model_training.train import train

    with pytest.raises(ValueError, match="fixed schedule"):
        train(
            "official",
            kaggle_like,
            tmp_path / "m",
            arch="paper",
            epochs=1,
            cache_dir=None,
            refit=tiny_model / "1",
        )


def test_refit_refuses_a_model_trained_without_white_balance(
    tiny_model: Path, kaggle_like: Path, tmp_path: Path
) -> None:
    """Its temperature was fitted on other inputs than the refit will see."""
    import shutil

    from model_training.train import train

    old = tmp_path / "old"
    shutil.copytree(tiny_model / "1", old)
    meta = json.loads((old / "metadata.json").read_text())
    del meta["input"]["white_balance"]
    (old / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="balanced .none., this run.s .white."):
        train(
            "official",
            kaggle_like,
            tmp_path / "m",
            arch="tiny",
            epochs=1,
            cache_dir=None,
            refit=old,
        )


def test_time_budget_stops_after_the_epoch_that_spends_it(
    kaggle_like: Path, tmp_path: Path
) -> None:
    from model_training.train import train

    summary = train(
        "official",
        kaggle_like,
        tmp_path / "m",
        arch="tiny",
        epochs=5,
        batch_size=8,
        cache_dir=None,
        report_dir=tmp_path / "report",
        max_minutes=1e-6,
    )
    assert summary["epochs_run"] == 1
    assert summary["stopped_by_time_budget"] == "1e-06 min"
    assert (tmp_path / "m" / "1" / "saved_model.pb").exists()
    text = (tmp_path / "report" / "report.md").read_text()
    assert "Stopped by the time budget" in text
    # the held-out cells and each test set, per class and per source cell
    val = summary["validation"]
    assert val["n"] + summary["n_train"] == 48 and val["cells"]["cells"] >= 4
    assert "## Validation (TRAIN's held-out source cells)" in text
    assert text.count("source cells right by majority of their views") == 3  # val, 2 tests


def test_calibrate_keeps_a_refit_models_calibration(
    tiny_model: Path, kaggle_like: Path, tmp_path: Path
) -> None:
    """A refit model trained on its validation cells: calibrate must not fit on them."""
    from model_training.__main__ import main
    from model_training.train import train

    train(
        "official",
        kaggle_like,
        tmp_path / "wbc-classifier",
        arch="tiny",
        epochs=1,
        batch_size=8,
        cache_dir=None,
        report_dir=None,
        refit=tiny_model / "1",
    )
    version = tmp_path / "wbc-classifier" / "1"
    before = json.loads((version / "metadata.json").read_text())
    main(
        [
            "calibrate",
            "--model",
            str(version),
            "--data",
            str(kaggle_like),
            "--cache",
            str(tmp_path / "cache"),
            "--report",
            str(tmp_path / "none"),
        ]
    )
    after = json.loads((version / "metadata.json").read_text())
    assert after["temperature"] == before["temperature"]
    assert after["review_threshold"] == before["review_threshold"]
    assert after["calibration"]["fitted_on"] == before["calibration"]["fitted_on"]


def test_stain_variants_are_reproducible() -> None:
    """The not-a-cell gamut is fitted on them: calibrate must refit the same check."""
    from model_training.postfit import stain_variants

    x = np.random.default_rng(0).integers(0, 256, (12, 150, 150, 3), dtype=np.uint8)
    first, second = stain_variants(x, 2.0), stain_variants(x, 2.0)
    assert [g.shape for g in first] == [(36, 150, 150, 3)]
    np.testing.assert_array_equal(first[0], second[0])
    groups = stain_variants(x, 2.0, hues=(-0.1, 0.1), fill=True)
    assert [len(g) for g in groups] == [72, 24, 24]  # crops and centres, jittered; 2 turns
    np.testing.assert_array_equal(groups[0][:12], x)


def test_sensor_noise_is_coarse_bounded_and_varies_in_strength() -> None:
    import tensorflow as tf

    from model_training.augment import sensor_noise

    tf.random.set_seed(0)
    images = tf.fill([16, 150, 150, 3], 128.0)
    labels = tf.zeros([16, 4])
    noisy, same_labels = sensor_noise(images, labels, 12.0)
    noisy = noisy.numpy()
    assert noisy.shape == (16, 150, 150, 3) and same_labels is labels
    assert noisy.min() >= 0 and noisy.max() <= 255
    spread = (noisy - 128).reshape(16, -1).std(axis=1)
    assert 0 < spread.min() < spread.max() <= 12.5  # a random strength per image, up to 12
    assert spread.max() > 8 and spread.max() - spread.min() > 4
    # made at half resolution: neighbouring pixels move together
    d = noisy - 128
    neighbours = np.corrcoef(d[:, :, :-1].ravel(), d[:, :, 1:].ravel())[0, 1]
    assert neighbours > 0.4
    # off: the training pipeline leaves images as they are
    plain = sensor_noise(images, labels, 1e-9)[0].numpy()
    assert np.abs(plain - 128).max() < 1e-3


def test_training_batches_with_noise_keep_shape_and_range(kaggle_like: Path) -> None:
    from model_training.augment import make_dataset
    from model_training.train import Augmentation

    ds = load_folder(kaggle_like / "TRAIN")
    x, y = next(iter(make_dataset(ds, 8, True, 0, Augmentation(scale=0.1, noise=8.0))))
    assert x.shape == (8, 150, 150, 3) and y.shape == (8, 4)
    assert np.asarray(x).min() >= 0 and np.asarray(x).max() <= 255


def test_mixup_mixes_images_and_labels_alike() -> None:
    import tensorflow as tf

    from model_training.augment import mixup

    tf.random.set_seed(0)
    n = 64
    values = np.arange(n, dtype=np.float32) * 3.0
    images = tf.constant(np.broadcast_to(values[:, None, None, None], (n, 4, 4, 3)).copy())
    labels = tf.eye(n)  # each image its own label: the mix can be read back from the labels
    mixed, mixed_labels = mixup(images, labels, 0.2)
    mixed, mixed_labels = mixed.numpy(), mixed_labels.numpy()
    assert mixed.shape == (n, 4, 4, 3) and mixed_labels.shape == (n, n)
    np.testing.assert_allclose(mixed_labels.sum(axis=1), 1.0, atol=1e-6)
    # an image is the same blend of its sources as its label
    np.testing.assert_allclose(mixed[:, 0, 0, 0], mixed_labels @ values, rtol=1e-5, atol=1e-3)
    # each keeps its own label as the larger share, and with a small alpha mostly near all
    own = mixed_labels[np.arange(n), np.arange(n)]
    assert (own >= 0.5 - 1e-6).all()
    assert np.median(own) > 0.8 and own.min() < 0.95  # but some are truly mixed
    assert (mixed_labels > 1e-6).sum(axis=1).max() <= 2  # at most two sources each


def test_training_batches_with_mixup_keep_shape_and_soft_labels(kaggle_like: Path) -> None:
    from model_training.augment import make_dataset
    from model_training.train import Augmentation

    ds = load_folder(kaggle_like / "TRAIN")
    x, y = next(iter(make_dataset(ds, 8, True, 0, Augmentation(mixup=0.4))))
    assert x.shape == (8, 150, 150, 3) and y.shape == (8, 4)
    assert np.asarray(x).min() >= 0 and np.asarray(x).max() <= 255
    np.testing.assert_allclose(np.asarray(y).sum(axis=1), 1.0, atol=1e-6)


def test_keras_model_rebuilt_from_the_savedmodel_answers_the_same(
    tiny_model: Path, kaggle_like: Path
) -> None:
    """Grad-CAM's model: the arch from metadata.json, the SavedModel's own variables."""
    from wbc_core.keras_model import load_keras

    x = load_folder(kaggle_like / "TEST", cache_dir=None, workers=1).x.astype(np.float32)
    rebuilt = load_keras(tiny_model / "1")
    np.testing.assert_allclose(
        rebuilt.predict(x, verbose=0), SavedModelRunner(tiny_model / "1")(x), atol=1e-5
    )


def test_an_ensemble_exports_as_one_model_averaging_its_networks(
    kaggle_like: Path, tmp_path: Path
) -> None:
    """--members 2: two networks from other seeds, one SavedModel answering their mean; the
    Keras rebuild answers the same, the LiteRT runtime serves the mean, and Grad-CAM (NumPy,
    from both networks' feature maps) draws the map TensorFlow's GradientTape draws."""
    from app.predictor import Predictor
    from model_training.serving_export import tf_gradcam
    from model_training.train import train
    from wbc_core.keras_model import load_keras
    from wbc_core.network import members_of

    summary = train(
        "official",
        kaggle_like,
        tmp_path / "m",
        arch="tiny",
        epochs=1,
        batch_size=8,
        cache_dir=None,
        report_dir=tmp_path / "report",
        members=2,
    )
    version = tmp_path / "m" / "1"
    assert json.loads((version / "metadata.json").read_text())["members"] == 2
    assert len(summary["last_train_accuracy"]) == 2
    assert "An ensemble of 2 networks" in (tmp_path / "report" / "report.md").read_text()
    x = load_folder(kaggle_like / "TEST", cache_dir=None, workers=1).x.astype(np.float32)
    served = SavedModelRunner(version)(x)
    rebuilt = load_keras(version)
    nets = members_of(rebuilt)
    assert len(nets) == 2
    each = [net.predict(x, verbose=0) for net in nets]
    assert np.abs(each[0] - each[1]).max() > 1e-3  # other seeds: other networks
    np.testing.assert_allclose(served, np.mean(each, axis=0), atol=1e-5)
    np.testing.assert_allclose(rebuilt.predict(x, verbose=0), served, atol=1e-5)
    predictor = Predictor(tmp_path / "m")
    predictor.load()
    np.testing.assert_allclose(predictor.predict(x), served, atol=1e-5)
    cam, best = predictor.gradcam(x[0])
    assert best == int(np.argmax(served[0]))
    assert cam.ndim == 2 and cam.min() >= 0 and cam.max() <= 1
    ref, ref_best = tf_gradcam(rebuilt, x[0])
    assert ref_best == best
    np.testing.assert_allclose(cam, ref, atol=1e-2)


def test_training_is_reproducible(kaggle_like: Path) -> None:
    """The same recipe and seed train the same network, to the last bit (CPU training was
    not: the validated run rerun with its own command differed, reports/official-v5-validated-
    rerun)."""
    import keras

    from model_training.train import Augmentation, fit_network

    ds = load_folder(kaggle_like / "TRAIN", cache_dir=None, workers=1)
    probe = ds.x.astype(np.float32)
    answers = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        model, _ = fit_network(
            ds, None, "wbc", 2, 8, 7, Augmentation(scale=0.15, stain=2.0, noise=4.0)
        )
        answers.append(model.predict(probe, verbose=0))
        keras.backend.clear_session()
    assert np.array_equal(answers[0], answers[1]), np.abs(answers[0] - answers[1]).max()


def test_camera_gamma_on_a_crop_is_gamma_on_the_field_before_white_balance() -> None:
    """Training's gamma jitter stands for another camera's gamma (robustness's "gamma 1.4"),
    which acts on the whole field before the white balance."""
    from model_training.augment import camera_gamma
    from model_training.robustness import PERTURBATIONS
    from tests.synthetic import field
    from wbc_core.preprocessing import white_balance

    image = field((320, 240), cells=[(160, 120, 30)]).convert("RGB")
    for g in (0.7, 1.4):
        on_field = np.asarray(white_balance(PERTURBATIONS[f"gamma {g}"](image)), dtype=float)
        balanced = np.asarray(white_balance(image), dtype=np.float32)
        on_crop = camera_gamma(balanced, g).numpy()
        assert np.abs(on_field - balanced).max() > 20  # the camera changed the cell
        np.testing.assert_allclose(on_crop, on_field, atol=4)


def test_gamma_jitter_keeps_the_background_and_varies_the_cell() -> None:
    import tensorflow as tf

    from model_training.augment import augment
    from wbc_core.preprocessing import BACKGROUND_LEVEL

    tf.random.set_seed(0)
    tones = np.array([BACKGROUND_LEVEL, 110.0, 0.0], np.float32)  # background, cell, black
    image = tf.constant(np.broadcast_to(tones[None, :, None], (3, 3, 3)))
    out = np.stack([augment(image, 0, stain=0, gamma=0.5)[0].numpy() for _ in range(40)])
    assert out.min() == 0.0  # black outside a turned view stays black
    np.testing.assert_allclose(out.max(axis=(1, 2, 3)), BACKGROUND_LEVEL, rtol=1e-5)
    cell = out[(out > 1) & (out < 200)]
    low, high = 110 * (110 / BACKGROUND_LEVEL) ** 0.5, 110 * (BACKGROUND_LEVEL / 110) ** (1 / 3)
    assert low - 0.01 <= cell.min() < 100 and 120 < cell.max() <= high + 0.01  # both ways
    plain = np.stack([augment(image, 0, stain=0)[0].numpy() for _ in range(8)])
    np.testing.assert_allclose(np.unique(plain), [0.0, 110.0, BACKGROUND_LEVEL], rtol=1e-5)


def test_augmentation_keeps_the_metadata_keys_models_were_exported_with() -> None:
    """metadata.json of every shipped model and the cv records use these keys; refit,
    calibrate and the not-a-cell check read them back."""
    from model_training.train import Augmentation

    assert Augmentation().metadata() == {"scale_jitter": 0.0, "stain_jitter": 1.0}
    aug = Augmentation(scale=0.15, stain=2.0, gamma=0.5)
    assert aug.metadata() == {"scale_jitter": 0.15, "stain_jitter": 2.0, "gamma_jitter": 0.5}
    assert aug.metadata(every=True) == {
        "scale_jitter": 0.15,
        "stain_jitter": 2.0,
        "noise_jitter": 0.0,
        "mixup": 0.0,
        "gamma_jitter": 0.5,
        "cutout": 0.0,
        "weight_decay": 0.0,
        "robust_loss": 0.0,
    }


def test_weight_decay_shrinks_the_kernels_only() -> None:
    """With zero gradients Adam moves nothing, so what changes is AdamW's decay: every
    convolution and dense kernel shrinks by lr x decay; biases and batch norm stay."""
    import keras

    from model_training.train import WBC_LR, compile_model
    from wbc_core.network import make_model

    model = make_model("wbc")
    compile_model(model, "wbc", steps=100, epochs=1, validate=False, weight_decay=0.5)
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.optimizer.apply_gradients(
        [(keras.ops.zeros_like(v), v) for v in model.trainable_variables]
    )
    kernels = 0
    for v, old in zip(model.trainable_variables, before, strict=True):
        if v.path.endswith("kernel"):
            kernels += 1
            np.testing.assert_allclose(v.numpy(), old * (1 - WBC_LR * 0.5), rtol=1e-4)
        else:
            np.testing.assert_array_equal(v.numpy(), old)
    assert kernels > 10


def test_generalized_cross_entropy_is_cross_entropy_whose_pull_shrinks_with_confidence() -> None:
    """q -> 0 gives the smoothed cross-entropy the recipe otherwise uses; with q, each
    class's gradient is cross-entropy's times p^q: a label given 5% pulls 0.05^q as hard."""
    import keras
    import tensorflow as tf

    from model_training.train import LABEL_SMOOTHING, GeneralizedCrossEntropy

    labels = tf.one_hot([0, 1, 2, 3], 4)
    probs = tf.constant(
        [
            [0.7, 0.1, 0.1, 0.1],
            [0.85, 0.05, 0.05, 0.05],
            [0.25, 0.25, 0.25, 0.25],
            [0.1, 0.2, 0.3, 0.4],
        ]
    )
    ce = keras.losses.CategoricalCrossentropy(label_smoothing=LABEL_SMOOTHING, reduction=None)
    np.testing.assert_allclose(
        GeneralizedCrossEntropy(1e-3, reduction=None)(labels, probs).numpy(),
        ce(labels, probs).numpy(),
        rtol=2e-3,
    )

    def grad(loss: keras.losses.Loss) -> np.ndarray:
        with tf.GradientTape() as tape:
            tape.watch(probs)
            value = keras.ops.sum(loss(labels, probs))
        return tape.gradient(value, probs).numpy()

    smoothed = labels.numpy() * (1 - LABEL_SMOOTHING) + LABEL_SMOOTHING / 4
    cross_entropy_grad = -smoothed / probs.numpy()  # of -sum(y log p), per class
    np.testing.assert_allclose(
        grad(GeneralizedCrossEntropy(0.5, reduction=None)),
        cross_entropy_grad * probs.numpy() ** 0.5,
        rtol=1e-4,
    )


def test_cutout_paints_one_background_square_no_larger_than_asked() -> None:
    """Each crop loses at most one square of side <= SIDE x the crop's, painted the slide
    background; the rest of the crop and the labels are untouched."""
    import tensorflow as tf

    from model_training.augment import cutout
    from wbc_core.preprocessing import BACKGROUND_LEVEL, IMAGE_SIZE

    images = tf.fill([64, IMAGE_SIZE, IMAGE_SIZE, 3], 30.0)
    labels = tf.one_hot(tf.range(64) % 4, 4)
    out, same = cutout(images, labels, 0.5)
    out = out.numpy()
    np.testing.assert_array_equal(same.numpy(), labels.numpy())
    assert set(np.unique(out)) <= {30.0, BACKGROUND_LEVEL}
    erased = out[..., 0] == BACKGROUND_LEVEL
    assert (erased == (out[..., 2] == BACKGROUND_LEVEL)).all()  # all channels together
    rows, cols = erased.any(axis=2).sum(axis=1), erased.any(axis=1).sum(axis=1)
    assert rows.max() <= IMAGE_SIZE * 0.5 + 1 and cols.max() <= IMAGE_SIZE * 0.5 + 1
    assert (erased.sum(axis=(1, 2)) == rows * cols).all()  # one filled rectangle each
    assert (rows > 0).mean() > 0.5  # most crops lose something


def test_crop_context_option_trains_on_wider_crops_and_records_them(
    kaggle_like: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """... and ``recipe`` gives back every option of the run (``make train`` retrains the
    shipped model with them)."""
    from model_training.__main__ import main
    from wbc_core import localise

    monkeypatch.setattr(localise, "CROP_CONTEXT", localise.CROP_CONTEXT)  # restored after
    options = [
        "--arch=tiny",
        "--epochs=1",
        "--seed=7",
        "--members=1",
        "--scale-jitter=0.1",
        "--stain-jitter=0.5",
        "--noise-jitter=0",
        "--mixup=0",
        "--gamma-jitter=0.2",
        "--cutout=0.3",
        "--weight-decay=0.01",
        "--robust-loss=0.5",
        "--crop-context=1.8",
    ]
    main(
        [
            "train",
            "--data",
            str(kaggle_like),
            "--out",
            str(tmp_path / "m"),
            *options,
            "--batch-size",
            "8",
            "--cache",
            str(tmp_path / "cache"),
            "--report",
            str(tmp_path / "report"),
        ]
    )
    meta = json.loads((tmp_path / "m" / "1" / "metadata.json").read_text())
    assert meta["input"]["crop_context"] == 1.8 == localise.CROP_CONTEXT
    assert all("-context1.8" in p.name for p in (tmp_path / "cache").iterdir())
    capsys.readouterr()
    main(["recipe", "--model", str(tmp_path / "m" / "1")])
    assert capsys.readouterr().out.split() == options


def test_recipe_of_a_one_site_model_names_its_ensemble_and_augmentation() -> None:
    from model_training.__main__ import recipe_flags

    meta = {
        "arch": "wbc",
        "epochs": 14,
        "seed": 42,
        "members": 3,
        "scale_jitter": 0.15,
        "stain_jitter": 2.0,
    }  # the last Kaggle-only model's metadata, in part
    flags = recipe_flags(meta)
    assert f"--members={meta['members']}" in flags and f"--epochs={meta['epochs']}" in flags
    assert f"--stain-jitter={meta['stain_jitter']:g}" in flags
    assert recipe_flags({"arch": "wbc", "epochs": 14, "seed": 42}) == [  # a model before v5
        "--arch=wbc",
        "--epochs=14",
        "--seed=42",
        "--members=1",
        "--scale-jitter=0",
        "--stain-jitter=1",
        "--noise-jitter=0",
        "--mixup=0",
        "--gamma-jitter=0",
        "--cutout=0",
        "--weight-decay=0",
        "--robust-loss=0",
    ]
    stained = recipe_flags(
        {
            "arch": "wbc",
            "epochs": 14,
            "seed": 42,
            "input": {"white_balance": True, "stain_balance": True},
        }
    )
    assert stained[-1] == "--stain-balance"


def test_refit_takes_its_calibration_from_a_cross_validation_of_its_recipe(
    kaggle_like: Path, tmp_path: Path
) -> None:
    from model_training.crossval import cross_validate, write
    from model_training.train import Augmentation, train

    aug = Augmentation(scale=0.1)
    record = cross_validate(
        kaggle_like, folds=2, arch="tiny", epochs=1, batch_size=8, aug=aug, cache_dir=None
    )
    write(tmp_path / "cv", record, "python -m model_training cv --folds 2")
    summary = train(
        "official",
        kaggle_like,
        tmp_path / "m",
        arch="tiny",
        epochs=1,
        batch_size=8,
        cache_dir=None,
        aug=aug,
        refit=tmp_path / "cv",
    )
    meta = json.loads((tmp_path / "m" / "1" / "metadata.json").read_text())
    assert meta["refit"]["calibration_from"]["command"] == "python -m model_training cv --folds 2"
    assert meta["calibration"]["fitted_on"].startswith("out-of-fold predictions")
    assert summary["n_val"] == 0
    with pytest.raises(ValueError, match="another recipe"):  # cv'd with scale 0.1, not 0.2
        train(
            "official",
            kaggle_like,
            tmp_path / "m2",
            arch="tiny",
            epochs=1,
            batch_size=8,
            cache_dir=None,
            aug=Augmentation(scale=0.2),
            refit=tmp_path / "cv",
        )
    with pytest.raises(ValueError, match="another recipe \\(balance\\)"):  # cv'd white only
        train(
            "official",
            kaggle_like,
            tmp_path / "m3",
            arch="tiny",
            epochs=1,
            batch_size=8,
            cache_dir=None,
            aug=aug,
            refit=tmp_path / "cv",
            balance="stain",
        )


def test_a_refit_leaves_listed_cells_out_and_takes_its_calibration_from_a_cv_that_did(
    kaggle_like: Path, tmp_path: Path
) -> None:
    from model_training.__main__ import recipe_flags
    from model_training.crossval import cross_validate, write
    from model_training.data import load_folder
    from model_training.train import Augmentation, train

    full = load_folder(kaggle_like / "TRAIN")
    cell = str(full.groups[0])
    listed = tmp_path / "exclude.txt"
    listed.write_text(cell + "\n")
    args = dict(folds=2, arch="tiny", epochs=1, batch_size=8, aug=Augmentation(), cache_dir=None)
    write(tmp_path / "cv", cross_validate(kaggle_like, exclude=listed, **args), "cv --exclude")
    write(tmp_path / "cv-all", cross_validate(kaggle_like, **args), "cv")
    refit = dict(arch="tiny", epochs=1, batch_size=8, cache_dir=None, aug=Augmentation())
    summary = train(
        "official", kaggle_like, tmp_path / "m", refit=tmp_path / "cv", exclude=listed, **refit
    )
    assert summary["n_train"] == len(full.y) - int((full.groups == cell).sum())
    meta = json.loads((tmp_path / "m" / "1" / "metadata.json").read_text())
    assert meta["excluded_cells"] == [cell] and meta["excluded_cells_file"] == str(listed)
    assert recipe_flags(meta)[-1] == f"--exclude-cells={listed}"  # make train reproduces it
    with pytest.raises(ValueError, match="another recipe \\(excluded_cells\\)"):
        train(
            "official",
            kaggle_like,
            tmp_path / "m2",
            refit=tmp_path / "cv-all",
            exclude=listed,
            **refit,
        )


def test_a_stain_balanced_run_records_it_and_is_served_so(
    kaggle_like: Path, tmp_path: Path
) -> None:
    from app.classifier import Classifier
    from app.predictor import Predictor
    from model_training.train import train
    from wbc_core.preprocessing import balance_of, preprocess_file

    train(
        "official",
        kaggle_like,
        tmp_path / "m",
        arch="tiny",
        epochs=1,
        batch_size=8,
        cache_dir=None,
        balance="stain",
        report_dir=tmp_path / "report",
    )
    meta = json.loads((tmp_path / "m" / "1" / "metadata.json").read_text())
    assert meta["input"]["stain_balance"] is True and balance_of(meta) == "stain"
    predictor = Predictor(tmp_path / "m")
    predictor.load()
    classifier = Classifier(predictor, max_pixels=40_000_000)
    assert classifier.balance == "stain"
    path = next((kaggle_like / "TEST_SIMPLE").rglob("*.jpeg"))
    assert not np.array_equal(
        preprocess_file(path, balance="stain").array, preprocess_file(path, balance="white").array
    )
    with pytest.raises(ValueError, match="balance must be"):
        train(
            "official",
            kaggle_like,
            tmp_path / "m2",
            arch="tiny",
            epochs=1,
            cache_dir=None,
            balance="none",
        )
