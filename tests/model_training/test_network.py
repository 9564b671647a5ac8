"""Network builders: contract shared by every arch, and what ``wbc-fine`` changes."""

from __future__ import annotations

import numpy as np
import pytest

from wbc_core.network import ARCHS, make_model


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_maps_images_to_four_probabilities(arch: str) -> None:
    model = make_model(arch)
    images = np.random.default_rng(0).uniform(0, 255, (2, 150, 150, 3)).astype("float32")
    probs = np.asarray(model(images, training=False))
    assert probs.shape == (2, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def _stem_side(model) -> int:
    """Side of the first convolution's output."""
    conv = next(layer for layer in model.layers if type(layer).__name__ == "Conv2D")
    return conv.output.shape[1]


def test_fine_stem_sees_the_full_input_and_blocks_keep_their_resolution() -> None:
    coarse, fine = make_model("wbc"), make_model("wbc-fine")
    assert _stem_side(coarse) == 38 and _stem_side(fine) == 75
    # Same weights' shapes, and every separable conv runs at the same size in both.
    assert [w.shape for w in coarse.weights] == [w.shape for w in fine.weights]
    sides = [
        [layer.output.shape[1] for layer in m.layers if type(layer).__name__ == "SeparableConv2D"]
        for m in (coarse, fine)
    ]
    assert sides[0] == sides[1] == [38, 38, 19, 19, 10, 10, 5, 5]


def test_command_line_offers_every_arch() -> None:
    """The CLI lists the archs by name (it defers importing Keras); keep it in step."""
    import argparse

    from model_training.__main__ import add_recipe

    parser = argparse.ArgumentParser()
    add_recipe(parser)
    arch = next(a for a in parser._actions if a.dest == "arch")
    assert tuple(arch.choices) == ARCHS


def test_robust_arch_ignores_a_laboratory_wide_colour_cast() -> None:
    """``wbc-robust`` standardises each channel of each crop before any weight: another
    lab's brightness, contrast and colour balance (a per-channel gain and offset) leave
    the cell's description as it was; the plain network's changes with them."""
    import keras

    from wbc_core.network import FEATURES

    rng = np.random.default_rng(1)
    # cell-sized structure (a 10x10 pattern enlarged), not pixel noise the low-pass removes
    coarse = rng.uniform(0, 255, (2, 10, 10, 3)).astype("float32")
    images = np.repeat(np.repeat(coarse, 15, axis=1), 15, axis=2)
    cast = images * np.array([0.6, 0.9, 1.2], "float32") + np.array([40, -10, 5], "float32")
    change = {}
    for arch in ("wbc-robust", "wbc"):
        model = make_model(arch)
        features = keras.Model(model.input, model.get_layer(FEATURES).output)
        a = np.asarray(features(images, training=False))
        b = np.asarray(features(cast, training=False))
        change[arch] = np.linalg.norm(a - b) / np.linalg.norm(a)
    assert change["wbc-robust"] < 0.02 and change["wbc"] > 0.1, change
    assert make_model("wbc-robust").count_params() == make_model("wbc").count_params()
