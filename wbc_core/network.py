"""Network builders. Pure functions: ``make_model(arch)`` returns an uncompiled Keras model.

Every model takes float32 RGB images in 0..255 of ``IMAGE_SIZE`` x ``IMAGE_SIZE`` and
rescales to [0, 1] itself, so the SavedModel's contract does not depend on the arch.
"""

from __future__ import annotations

import keras
from keras import layers

from wbc_core.preprocessing import IMAGE_SIZE

NUM_CLASSES = 4
ARCHS = ("wbc", "wbc-fine", "wbc-robust", "paper", "tiny")
FEATURES = "features"  # the penultimate layer: the network's description of the cell


def _paper(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """The paper's network: one standard conv, depthwise-separable blocks, three dense."""
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    for filters, kernel in ((64, 3), (128, 5), (128, 3), (256, 5)):
        x = layers.SeparableConv2D(filters, kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    for units, rate in ((256, 0.5), (128, 0.3), (64, 0.2)):
        x = layers.Dense(units, activation="relu")(x)
        x = layers.Dropout(rate)(x)
    return x


def _sep_block(x: keras.KerasTensor, filters: int, kernel: int, stride: int) -> keras.KerasTensor:
    """Residual block: (max-pool,) two depthwise-separable convs with BN and ReLU.

    Pooling comes first so that the convs run at the lower resolution: on a 2-core CPU
    the separable convs dominate training time, and this keeps the cost per image low.
    """
    shortcut = x
    if stride > 1:
        x = layers.MaxPooling2D(3, strides=stride, padding="same")(x)
    y = layers.SeparableConv2D(filters, kernel, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.Activation("relu")(y)
    y = layers.SeparableConv2D(filters, kernel, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization()(y)
    if stride > 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, padding="same", use_bias=False)(
            shortcut
        )
        shortcut = layers.BatchNormalization()(shortcut)
    return layers.Activation("relu")(layers.Add()([y, shortcut]))


def _wbc(inputs: keras.KerasTensor, fine: bool = False) -> keras.KerasTensor:
    """Default: residual depthwise-separable network at half the input resolution.

    The cell crop is upsampled from roughly 80-100 source pixels to 150, so averaging
    2x2 first loses little and makes every later layer four times cheaper.

    ``fine`` (``--arch wbc-fine``): the stem convolves the full 150x150 input instead
    (stride 2, so its output is 75x75 rather than 38x38) and the first block pools to 38;
    every block then runs at the resolution it has in ``wbc``, with the same weights'
    shapes. The stem sees fine texture (granules) that the 2x2 average blurs; it trains
    about as fast as ``wbc`` or somewhat slower (``python -m bench.train_speed``).
    """
    x = inputs if fine else layers.AveragePooling2D(2)(inputs)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    first_stride = 2 if fine else 1
    for filters, kernel, stride in ((48, 3, first_stride), (96, 3, 2), (160, 5, 2), (256, 3, 2)):
        x = _sep_block(x, filters, kernel, stride)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(0.3)(x)


def _lab_neutral(x: keras.KerasTensor) -> keras.KerasTensor:
    """What ``wbc-robust`` puts before ``wbc``: the crop as any laboratory's would look.

    - a fixed low-pass (two 3x3 means, about a Gaussian of sigma 1.2 pixels): a sharp
      camera's crop (PBC's, cut from a 360-pixel image) and a blurry one (Kaggle's,
      upsampled from about 100 pixels) keep the same detail, so sharpness cannot stand in
      for granules;
    - each channel of each crop standardised over the image (mean 0, standard deviation
      1): another stain's or camera's overall colour, brightness and contrast are taken
      out before any weight sees them, what differs within the crop is kept. The
      epsilon (1e-3 on the 0-1 scale, a standard deviation of about 0.03) is a floor:
      a nearly flat crop is not blown up into noise.

    Built-in layers only (no weights), so the SavedModel, the TFLite model and Grad-CAM
    on the last feature maps work as for ``wbc``.
    """
    x = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    x = layers.AveragePooling2D(3, strides=1, padding="same")(x)
    return layers.LayerNormalization(axis=(1, 2), epsilon=1e-3, center=False, scale=False)(x)


def _tiny(inputs: keras.KerasTensor) -> keras.KerasTensor:
    """A few-thousand-parameter network for tests."""
    x = layers.Conv2D(8, 3, strides=4, activation="relu")(inputs)
    x = layers.SeparableConv2D(16, 3, strides=2, activation="relu")(x)
    return layers.GlobalAveragePooling2D()(x)


def make_ensemble(members: list[keras.Model]) -> keras.Model:
    """One model whose output is the mean of the ``members``' probabilities (same contract
    as each member); each member is kept whole inside it, named ``member_<j>``."""
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    named = [keras.Model(m.inputs, m.output, name=f"member_{j}") for j, m in enumerate(members)]
    outputs = layers.Average(name="probabilities")([m(inputs) for m in named])
    return keras.Model(inputs, outputs, name=f"ensemble_of_{len(members)}")


def members_of(model: keras.Model) -> list[keras.Model]:
    """The networks of a ``make_ensemble`` model, or ``[model]`` for a single network."""
    return [layer for layer in model.layers if isinstance(layer, keras.Model)] or [model]


def make_model(arch: str = "wbc", image_size: int = IMAGE_SIZE) -> keras.Model:
    """Uncompiled model: [N, size, size, 3] float 0..255 -> [N, 4] softmax probabilities."""
    builders = {
        "paper": _paper,
        "wbc": _wbc,
        "wbc-fine": lambda x: _wbc(x, fine=True),
        "wbc-robust": lambda x: _wbc(_lab_neutral(x)),
        "tiny": _tiny,
    }
    if arch not in builders:
        raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")
    inputs = keras.Input(shape=(image_size, image_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.Identity(name=FEATURES)(builders[arch](x))  # what the OOD guard measures
    logits = layers.Dense(NUM_CLASSES, name="logits")(x)
    outputs = layers.Activation("softmax", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=f"wbc_{arch.replace('-', '_')}")
