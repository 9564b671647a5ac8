"""Training augmentation. ``make_dataset`` and its batch functions serve the one-site
recipes (``train``, ``cv``); ``SiteAugmentation``, ``augment_image`` and ``site_balanced``
train across laboratories: what differs between one lab's cell images and another's,
drawn at random for every training crop.

- stain: optical-density jitter along a stain matrix (Tellez et al. 2018, "HED"
  augmentation: each stain's amount scaled and shifted), then hue, saturation,
  brightness, contrast and a camera gamma (``augment``);
- optics and camera: Gaussian blur of random strength, a lower resolution, sensor noise,
  JPEG re-compression at a random quality, an occasional grey image (colour cannot be
  all the network uses);
- scale and framing: a random zoom of the crop (the cell fills from about 30% to 100% of
  it, as at other magnifications or in a tightly cropped single-cell export) and a shift;
- orientation: flips and quarter turns (a cell has none);
- optionally (``randconv``), a random convolution that changes colour and texture and
  keeps shape (Xu et al. 2021), and (``hue_turn``) a turn of every hue by one random
  amount anywhere on the colour circle (a stain whose dyes have other colours).

``site_balanced`` draws the training stream equally from every site, so that the larger
or more augmented site does not decide what the network learns.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import tensorflow as tf

from model_training.data import CLASSES, Dataset
from model_training.recipe import Augmentation
from wbc_core.preprocessing import BACKGROUND_LEVEL, IMAGE_SIZE

# Stain vectors (optical density of one unit of each stain in R, G, B), Ruifrok and
# Johnston's haematoxylin / eosin / DAB: any basis spans the stain colours; this one moves
# the nuclear and the cytoplasmic/red-cell stains separately.
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float32
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED).astype(np.float32)


def augment(
    image: tf.Tensor, label: tf.Tensor, stain: float = 1.0, gamma: float = 0.0
) -> tuple[tf.Tensor, tf.Tensor]:
    """Orientation (a cell has none), a camera's tone curve and stain/illumination jitter
    (other labs, other stains); ``stain`` scales the jitter ranges (1: hue 0.04, saturation
    0.75-1.3, brightness 0.08, contrast 0.8-1.2).

    ``gamma``: another camera's gamma (``camera_gamma``), drawn log-uniformly in
    [1/(1+gamma), 1+gamma]."""
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_flip_up_down(image)
    image = tf.image.rot90(image, tf.random.uniform([], 0, 4, dtype=tf.int32))
    image = tf.cast(image, tf.float32)
    if gamma > 0:
        image = camera_gamma(
            image, tf.exp(tf.random.uniform([], -math.log1p(gamma), math.log1p(gamma)))
        )
    image = image / 255.0
    if stain > 0:
        image = tf.image.random_hue(image, min(0.5, 0.04 * stain))
        image = tf.image.random_saturation(image, max(0.0, 1 - 0.25 * stain), 1 + 0.3 * stain)
        image = tf.image.random_brightness(image, 0.08 * stain)
        image = tf.image.random_contrast(image, max(0.0, 1 - 0.2 * stain), 1 + 0.2 * stain)
    return tf.clip_by_value(image, 0.0, 1.0) * 255.0, label


def camera_gamma(image: tf.Tensor, g: tf.Tensor | float) -> tf.Tensor:
    """A white-balanced crop (float, 0..255) as it would be had the camera applied gamma
    ``g`` to the whole field: whatever the field's own background level ``b``, gamma then
    balance map ``x`` to ``L * ((x b / L) / 255) ** g / (b / 255) ** g = L * (x / L) ** g``
    with ``L = BACKGROUND_LEVEL``. The background stays; the cell's tones darken (g > 1) or
    lighten (g < 1)."""
    return tf.minimum(BACKGROUND_LEVEL * tf.pow(image / BACKGROUND_LEVEL, g), 255.0)


def scale_shift(images: tf.Tensor, labels: tf.Tensor, jitter: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Random zoom in or out (cell size differs between microscopes and labs) and a small
    shift (the localiser's box is not exact), on a batch; outside the image is black, as in
    the rotated TRAIN views."""
    n = tf.shape(images)[0]
    side = tf.random.uniform([n], 1.0 - jitter, 1.0 + jitter)
    centre = 0.5 + tf.random.uniform([n, 2], -jitter / 2, jitter / 2)
    boxes = tf.stack(
        [
            centre[:, 0] - side / 2,
            centre[:, 1] - side / 2,
            centre[:, 0] + side / 2,
            centre[:, 1] + side / 2,
        ],
        axis=1,
    )
    out = tf.image.crop_and_resize(
        images, boxes, tf.range(n), [IMAGE_SIZE, IMAGE_SIZE], extrapolation_value=0.0
    )
    return out, labels


def sensor_noise(
    images: tf.Tensor, labels: tf.Tensor, sigma_max: float
) -> tuple[tf.Tensor, tf.Tensor]:
    """Camera noise of a random strength, standard deviation up to ``sigma_max`` (0..255
    scale, in the crop), on a batch. Made at half resolution and enlarged: a crop is an
    enlarged piece of the camera's image (about 2x for these cells), so its noise is coarser
    than a pixel. (Gaussian noise of 8 on a whole Kaggle image comes out at about 5.4 in its
    crop, after white balance and resizing: one-off measurement.)"""
    n = tf.shape(images)[0]
    sigma = tf.random.uniform([n, 1, 1, 1], 0.0, sigma_max)
    half = IMAGE_SIZE // 2
    noise = tf.image.resize(tf.random.normal([n, half, half, 3]), [IMAGE_SIZE, IMAGE_SIZE])
    noise = noise / tf.math.reduce_std(noise)  # enlarging smooths it: back to 1 per pixel
    return tf.clip_by_value(images + sigma * noise, 0.0, 255.0), labels


def cutout(images: tf.Tensor, labels: tf.Tensor, side_max: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Cutout (DeVries and Taylor 2017) on a batch: one square of each crop, side drawn
    uniformly up to ``side_max`` x the crop's side and centred anywhere in it (so it may
    hang over the edge), painted the slide-background grey. The network cannot lean on
    one part of the cell (one nucleus lobe, one patch of granules) and must use all."""
    n = tf.shape(images)[0]
    half = tf.random.uniform([n, 1, 1], 0.0, side_max * IMAGE_SIZE / 2)
    centre = tf.random.uniform([n, 2, 1, 1], 0.0, float(IMAGE_SIZE))
    grid = tf.range(IMAGE_SIZE, dtype=tf.float32) + 0.5
    inside_y = tf.abs(grid[None, :, None] - centre[:, 0]) < half
    inside_x = tf.abs(grid[None, None, :] - centre[:, 1]) < half
    erased = tf.logical_and(inside_y, inside_x)[..., None]
    return tf.where(erased, BACKGROUND_LEVEL, images), labels


def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float) -> tuple[tf.Tensor, tf.Tensor]:
    """Mixup (Zhang et al. 2018) on a batch: each image and its label become
    ``lam * own + (1 - lam) * another's`` from the same batch, ``lam ~ Beta(alpha, alpha)``
    per image (small ``alpha``: mostly near 0 or 1, i.e. mostly one cell). Trains the network
    to move smoothly between classes instead of memorising the few source cells."""
    n = tf.shape(images)[0]
    a = tf.random.gamma([n], alpha)
    b = tf.random.gamma([n], alpha)
    lam = a / tf.maximum(a + b, 1e-12)
    lam = tf.maximum(lam, 1.0 - lam)  # the image keeps its own label as the larger share
    other = tf.random.shuffle(tf.range(n))
    mixed = lam[:, None, None, None] * images + (1.0 - lam[:, None, None, None]) * tf.gather(
        images, other
    )
    mixed_labels = lam[:, None] * labels + (1.0 - lam[:, None]) * tf.gather(labels, other)
    return mixed, mixed_labels


def make_dataset(
    ds: Dataset, batch: int, training: bool, seed: int, aug: Augmentation = Augmentation()
) -> tf.data.Dataset:
    onehot = tf.one_hot(ds.y, len(CLASSES))
    data = tf.data.Dataset.from_tensor_slices((ds.x, onehot))
    if training:
        data = data.shuffle(len(ds.y), seed=seed, reshuffle_each_iteration=True)
        data = data.map(
            lambda x, y: augment(x, y, aug.stain, aug.gamma), num_parallel_calls=tf.data.AUTOTUNE
        ).batch(batch)
        if aug.scale > 0:
            data = data.map(
                lambda x, y: scale_shift(x, y, aug.scale), num_parallel_calls=tf.data.AUTOTUNE
            )
        if aug.noise > 0:
            data = data.map(
                lambda x, y: sensor_noise(x, y, aug.noise), num_parallel_calls=tf.data.AUTOTUNE
            )
        if aug.cutout > 0:
            data = data.map(
                lambda x, y: cutout(x, y, aug.cutout), num_parallel_calls=tf.data.AUTOTUNE
            )
        if aug.mixup > 0:
            data = data.map(
                lambda x, y: mixup(x, y, aug.mixup), num_parallel_calls=tf.data.AUTOTUNE
            )
        return data.prefetch(tf.data.AUTOTUNE)
    else:
        data = data.map(lambda x, y: (tf.cast(x, tf.float32), y))
    return data.batch(batch).prefetch(tf.data.AUTOTUNE)


@dataclass(frozen=True)
class SiteAugmentation:
    """The ranges of ``augment_image`` / ``augment_batch`` (recorded in metadata.json)."""

    hed: float = 0.25  # each stain's optical density scaled by U(1 - hed, 1 + hed) ...
    hed_shift: float = 0.03  # ... and shifted by U(-hed_shift, hed_shift)
    colour: float = 2.0  # augment's hue/saturation/brightness/contrast scale
    gamma: float = 0.5  # camera gamma in [1/(1+g), 1+g]
    zoom: tuple[float, float] = (0.67, 2.2)  # crop side x this (log-uniform): the cell,
    # 1/1.5 of the crop as served, fills it at 0.67 and a third of it at 2.2
    shift: float = 0.08  # crop centre moved by up to this share of its side
    blur: float = 1.5  # Gaussian blur sigma up to this (pixels of the 150 crop), half the time
    lowres: float = 1.0  # the crop shrunk by up to this factor and enlarged back, half the
    # time: a camera with fewer pixels per cell (1: never)
    noise: float = 6.0  # sensor noise sigma up to this (0..255)
    jpeg: tuple[int, int] = (30, 95)  # JPEG quality range, half the time
    grey: float = 0.1  # share of crops made grey
    randconv: float = 0.0  # share of crops through a random convolution (0: none)
    hue_turn: float = 0.0  # share of crops whose hue is turned anywhere on the circle: a
    # stain that colours the nucleus brown-red or blue-green instead of violet (0: none)

    def metadata(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def hed_jitter(image: tf.Tensor, scale: float, shift: float) -> tf.Tensor:
    """``image`` (float 0..255) with each stain's optical density scaled and shifted."""
    od = -tf.math.log((image + 1.0) / 256.0)
    stains = tf.reshape(od, [-1, 3]) @ HED_FROM_RGB
    alpha = tf.random.uniform([1, 3], 1.0 - scale, 1.0 + scale)
    beta = tf.random.uniform([1, 3], -shift, shift)
    od = tf.reshape((stains * alpha + beta) @ RGB_FROM_HED, tf.shape(image))
    return tf.clip_by_value(256.0 * tf.exp(-od) - 1.0, 0.0, 255.0)


BLUR_RADIUS = 3  # the Gaussian's kernel is 2 * BLUR_RADIUS + 1 pixels wide


def reflect_taps(n: int, radius: int = BLUR_RADIUS) -> np.ndarray:
    """[n, 2r+1, n] one-hot: tap t of output pixel i reads input pixel i + t - r, mirrored
    at the borders (``tf.pad``'s REFLECT), so that a 1-D filter becomes an [n, n] matrix."""
    index = np.arange(n)[:, None] + np.arange(-radius, radius + 1)[None, :]
    index = np.abs(index)
    index = np.where(index > n - 1, 2 * (n - 1) - index, index)
    return np.eye(n, dtype=np.float32)[index]


BLUR_TAPS = reflect_taps(IMAGE_SIZE)


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """``image`` [H, W, 3] (H = W = IMAGE_SIZE) blurred by a Gaussian of ``sigma`` pixels
    (7x7 kernel, borders mirrored). The Gaussian is separable: rows then columns, each a
    matrix product with the filter's [H, H] matrix, about 8x faster on CPU than a 7x7
    depthwise convolution of one crop (the stream's slowest step once)."""
    r = tf.range(-float(BLUR_RADIUS), BLUR_RADIUS + 1.0)
    k = tf.exp(-0.5 * tf.square(r / tf.maximum(sigma, 1e-3)))
    k = k / tf.reduce_sum(k)
    matrix = tf.einsum("t,itj->ij", k, BLUR_TAPS)
    rows = tf.einsum("ij,jkc->ikc", matrix, image)
    return tf.einsum("lk,ikc->ilc", matrix, rows)


def low_resolution(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """``image`` [H, W, 3] as a camera with ``factor`` times fewer pixels would have taken
    it: shrunk (area average) and enlarged back (bilinear)."""
    side = tf.cast(tf.round(IMAGE_SIZE / factor), tf.int32)
    small = tf.image.resize(image, [side, side], method="area")
    return tf.image.resize(small, [IMAGE_SIZE, IMAGE_SIZE], method="bilinear")


def random_convolution(image: tf.Tensor) -> tf.Tensor:
    """``image`` [H, W, 3] (float 0..255) mixed with itself through a random convolution
    (RandConv, Xu et al. 2021, for a model trained on one domain to meet others): a k x k
    filter (k one of 1, 3, 5, 7) with random weights maps the three channels to three new
    ones, each rescaled to the mean and spread of the input's channel, then blended with
    the input at a random weight. Colours, local texture and sharpness change at random;
    shapes stay, so the network has to learn them."""
    k = tf.random.uniform([], 0, 4, dtype=tf.int32) * 2 + 1
    r = (k - 1) // 2
    std = tf.math.rsqrt(tf.cast(3 * k * k, tf.float32))  # He: the output's scale stays
    # the k x k centre of a 7x7 draw; the convolution runs at k x k (a 7x7 one with zeros
    # outside the centre gives the same result at up to 49 times the cost)
    kernel = (tf.random.normal([7, 7, 3, 3]) * std)[3 - r : 4 + r, 3 - r : 4 + r]
    padded = tf.pad(image[None], [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
    out = tf.nn.conv2d(padded, kernel, 1, "VALID")[0]
    mean_out, var_out = tf.nn.moments(out, axes=[0, 1])
    mean_in, var_in = tf.nn.moments(image, axes=[0, 1])
    out = (out - mean_out) * tf.sqrt((var_in + 1.0) / (var_out + 1e-6)) + mean_in
    alpha = tf.random.uniform([])
    return tf.clip_by_value(alpha * image + (1.0 - alpha) * out, 0.0, 255.0)


def hue_turn(image: tf.Tensor) -> tf.Tensor:
    """``image`` [H, W, 3] (float 0..255) with every hue turned by one random amount anywhere
    on the colour circle: the relations between nucleus, granules, cytoplasm and red cells
    stay, the colours that carry them do not (another stain's dyes)."""
    delta = tf.random.uniform([], -0.5, 0.5)
    return tf.image.adjust_hue(image / 255.0, delta) * 255.0


def zoom_shift(image: tf.Tensor, zoom: tuple[float, float], shift: float) -> tf.Tensor:
    """A random zoom (crop side x a log-uniform factor in ``zoom``) and shift; what falls
    outside the crop is slide-background grey."""
    side = tf.exp(tf.random.uniform([], math.log(zoom[0]), math.log(zoom[1])))
    centre = 0.5 + tf.random.uniform([2], -shift, shift)
    box = tf.stack(
        [centre[0] - side / 2, centre[1] - side / 2, centre[0] + side / 2, centre[1] + side / 2]
    )[None]
    return tf.image.crop_and_resize(
        image[None], box, [0], [IMAGE_SIZE, IMAGE_SIZE], extrapolation_value=BACKGROUND_LEVEL
    )[0]


def augment_image(
    image: tf.Tensor, label: tf.Tensor, aug: SiteAugmentation
) -> tuple[tf.Tensor, tf.Tensor]:
    """One training crop (uint8) to a float 0..255 crop as another lab might have made it."""
    image = tf.cast(image, tf.float32)
    if aug.hed > 0:
        image = hed_jitter(image, aug.hed, aug.hed_shift)
    image, label = augment(image, label, aug.colour, aug.gamma)
    image = zoom_shift(image, aug.zoom, aug.shift)
    if aug.hue_turn > 0:
        image = tf.cond(
            tf.random.uniform([]) < aug.hue_turn, lambda: hue_turn(image), lambda: image
        )
    if aug.randconv > 0:
        image = tf.cond(
            tf.random.uniform([]) < aug.randconv,
            lambda: random_convolution(image),
            lambda: image,
        )
    if aug.blur > 0:
        sigma = tf.random.uniform([], 0.0, aug.blur)
        image = tf.cond(
            tf.random.uniform([]) < 0.5, lambda: gaussian_blur(image, sigma), lambda: image
        )
    if aug.lowres > 1:
        factor = tf.random.uniform([], 1.0, aug.lowres)
        image = tf.cond(
            tf.random.uniform([]) < 0.5, lambda: low_resolution(image, factor), lambda: image
        )
    if aug.noise > 0:
        sigma = tf.random.uniform([], 0.0, aug.noise)
        image = image + sigma * tf.random.normal(tf.shape(image))
    image = tf.clip_by_value(image, 0.0, 255.0)
    if aug.jpeg[1] > aug.jpeg[0]:
        low, high = aug.jpeg
        image = tf.cond(
            tf.random.uniform([]) < 0.5,
            lambda: tf.image.random_jpeg_quality(image / 255.0, low, high) * 255.0,
            lambda: image,
        )
    if aug.grey > 0:
        image = tf.cond(
            tf.random.uniform([]) < aug.grey,
            lambda: tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image)),
            lambda: image,
        )
    image.set_shape([IMAGE_SIZE, IMAGE_SIZE, 3])
    return image, label


def site_balanced(
    sets: list[Dataset], batch: int, seed: int, aug: SiteAugmentation
) -> tf.data.Dataset:
    """An endless training stream drawing each crop from a site chosen uniformly at random
    (every site equally often, whatever its size), augmented, in batches."""
    streams = []
    for i, ds in enumerate(sets):
        onehot = tf.one_hot(ds.y, len(CLASSES))
        streams.append(
            tf.data.Dataset.from_tensor_slices((ds.x, onehot))
            .shuffle(len(ds.y), seed=seed + i, reshuffle_each_iteration=True)
            .repeat()
        )
    data = (
        streams[0]
        if len(streams) == 1
        else tf.data.Dataset.sample_from_datasets(
            streams, [1 / len(streams)] * len(streams), seed=seed
        )
    )
    return (
        data.map(lambda x, y: augment_image(x, y, aug), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(batch)
        .prefetch(tf.data.AUTOTUNE)
    )
