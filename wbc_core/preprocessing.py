"""The one preprocessing path shared by training and serving.

bytes or file -> decoded RGB image (EXIF orientation applied, every mode converted)
-> white balance (the slide background becomes the same neutral grey in every image)
-> white-cell localisation -> (stain balance: the red cells around the white cell take
the reference stain's colour, for models trained so) -> square crop around the cell ->
bilinear resize to ``IMAGE_SIZE`` x ``IMAGE_SIZE`` -> uint8 array. The model rescales to
[0, 1] itself, so the array fed to it holds 0..255 values. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wbc_core import localise
from wbc_core.localise import CellBox, find_cells, square_crop, working_copy

IMAGE_SIZE = 150
RESIZE_METHOD = "cell-centred square crop, then PIL bilinear"
DEFAULT_MAX_PIXELS = 40_000_000
BACKGROUND_LEVEL = 220.0  # the slide background is mapped to this grey (Kaggle's is ~219)
BACKGROUND_SHARE = 0.05  # the brightest share of pixels is taken as the slide background
GAIN_LIMITS = (0.5, 2.0)  # per-channel gains beyond these are not a colour cast
# Stain balance (models that record ``input.stain_balance``). Median optical density of
# the stained pixels around the white cell, per channel, over TRAIN's images:
# ``python -m model_training stain-reference --data ../shared/data/kaggle-blood-cells``.
STAIN_REFERENCE_OD = (0.147, 0.264, 0.206)  # 9,951 of 9,957 images counted
STAIN_MIN_OD = 0.3  # optical densities summing above this: a stained pixel, not background
STAIN_MAX_OD = 2.0  # ... unless a channel is above this (below grey 30): the black border of a
# rotated or padded image (7-17% of every Kaggle TRAIN image, outside the cell), not stain
STAIN_MIN_SHARE = 0.05  # fewer stained pixels outside the cell's box: the stain is left as is
STAIN_GAIN_LIMITS = (0.5, 2.0)  # optical density scaled by at most this
BALANCES = ("none", "white", "stain")  # what ``balance`` may be: see ``locate``
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP", "GIF", "MPO")


class ImageError(ValueError):
    """An upload that is not a usable image."""


class ImageDecodeError(ImageError):
    """Undecodable, truncated or unsupported image data."""


class UnsupportedFormat(ImageError):
    """A recognised image format that the service does not accept."""


class ImageTooLarge(ImageError):
    """More pixels than allowed: refused before the pixels are decoded."""


@dataclass(frozen=True)
class Prepared:
    """A network-ready cell image and where it was found in the original."""

    array: np.ndarray  # uint8, IMAGE_SIZE x IMAGE_SIZE x 3
    box: CellBox
    original_size: tuple[int, int]
    others: tuple[CellBox, ...] = ()  # further white cells found in the image, not cropped


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent areas become white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        out = np.empty(arr.shape, np.uint8)
        rows = max(1, (1 << 20) // max(1, arr.shape[1]))  # a megapixel at a time: a float
        for r in range(0, arr.shape[0], rows):  # copy of a 40-megapixel image is 320 MB
            block = arr[r : r + rows].astype(np.float32) * np.float32(255.0 / top) + 0.5
            out[r : r + rows] = np.clip(block, 0, 255)
        return Image.fromarray(out, "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


@contextmanager
def _image_errors() -> Iterator[None]:
    """Every way Pillow fails on bad data, as one of this module's ``ImageError``s."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a decodable image (unknown format)") from exc
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        IndexError,
        TypeError,
        MemoryError,
        ZeroDivisionError,
    ) as exc:
        raise ImageDecodeError(f"image data is corrupt or truncated: {exc}") from exc


# Bytes per pixel of Pillow's modes once decoded (others: 4, the most a mode takes).
BYTES_PER_PIXEL = {
    "1": 1,
    "L": 1,
    "P": 1,
    "LA": 2,
    "PA": 2,
    "La": 2,
    "RGB": 3,
    "YCbCr": 3,
    "LAB": 3,
    "HSV": 3,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "I": 4,
    "F": 4,
}


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read the header only: format and size checked, no pixels decoded yet (cheap, and
    it tells how much work the pixels will be)."""
    if not data:
        raise ImageDecodeError("empty body: no image data")
    with _image_errors():
        image = Image.open(io.BytesIO(data))
        fmt = image.format
        if fmt not in SUPPORTED_FORMATS:
            raise UnsupportedFormat(
                f"unsupported image format {fmt}; send JPEG, PNG, BMP, TIFF, WebP or GIF"
            )
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
            )
        decoded = width * height * BYTES_PER_PIXEL.get(image.mode, 4)
        if decoded > max_pixels * 3:  # what the pixel limit allows in 8-bit RGB
            raise ImageTooLarge(
                f"image is {width}x{height} in mode {image.mode}: {decoded} bytes once "
                f"decoded; the limit is {max_pixels * 3} (the pixel limit in 8-bit RGB)"
            )
        if width < 1 or height < 1:
            raise ImageDecodeError("image has no pixels")
        return image


def load_rgb(image: Image.Image) -> Image.Image:
    """Decode an ``open_image`` result to RGB. Only the first frame of animations and
    multi-page files; EXIF orientation applied."""
    with _image_errors():
        image.seek(0)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy when upright
        return to_rgb(image)


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes to RGB (``open_image`` then ``load_rgb``)."""
    return load_rgb(open_image(data, max_pixels))


def balance_table(image: Image.Image | np.ndarray) -> np.ndarray:
    """The per-channel lookup table (3 x 256, uint8) that makes the slide background
    ``BACKGROUND_LEVEL`` grey; ``apply_balance`` applies it.

    Cameras, lamps and stains give whole images a colour cast and a brightness of their
    own, and a network trained on one lab's images follows the cast (see the colour casts in
    reports/robustness). The background between cells is colourless, so its colour in the
    image is the cast. It is estimated as the mean of the brightest ``BACKGROUND_SHARE`` of
    pixels of ``image`` (the localiser's reduced working copy: a fraction of a millisecond)."""
    rgb = np.asarray(image).reshape(-1, 3).astype(np.int16)
    brightness = rgb[:, 0] + rgb[:, 1] + rgb[:, 2]
    count = max(1, int(len(brightness) * BACKGROUND_SHARE))
    background = rgb[np.argpartition(brightness, -count)[-count:]].mean(axis=0)
    gains = np.clip(BACKGROUND_LEVEL / np.maximum(background, 1.0), *GAIN_LIMITS)
    return np.minimum(np.arange(256)[None, :] * gains[:, None] + 0.5, 255).astype(np.uint8)


def apply_balance(rgb: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Each channel of a uint8 RGB array through its row of ``balance_table``: the same
    values as ``Image.point`` with that table, at half its cost (Pillow rounds all 768
    entries in Python on every call)."""
    out = np.empty_like(rgb)
    for channel in range(3):
        np.take(table[channel], rgb[..., channel], out=out[..., channel])
    return out


def white_balance(image: Image.Image) -> Image.Image:
    """``image`` with its slide background made grey (what ``prepare`` does to its copies)."""
    table = balance_table(working_copy(image)[0])
    return Image.fromarray(apply_balance(np.asarray(image), table), "RGB")


_OD_TABLE = np.log(BACKGROUND_LEVEL / np.maximum(np.arange(256, dtype=np.float32), 1.0))


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Per channel ``ln(background / value)`` of a white-balanced uint8 image: proportional
    to how much stain the light crossed (Beer-Lambert), 0 on the slide background."""
    return _OD_TABLE[rgb]


def surroundings_od(pixels: np.ndarray, box: CellBox, scale: float) -> np.ndarray | None:
    """Median optical density per channel of the stained pixels outside the white cell's
    box (red cells and platelets, not black borders: the same in every image of one stain,
    whatever the white cell's type), in a white-balanced working copy; None when no cell
    was found (nothing to tell the cell from its surroundings) or fewer than
    ``STAIN_MIN_SHARE`` of the pixels are such (a crop that is all white cell, a smear
    without red cells)."""
    if not box.localised:
        return None
    outside = np.ones(pixels.shape[:2], dtype=bool)
    x0, y0, x1, y1 = (round(v * scale) for v in box.as_list())
    outside[y0:y1, x0:x1] = False
    od = optical_density(pixels)
    stained = outside & (od.sum(axis=-1) > STAIN_MIN_OD) & (od.max(axis=-1) < STAIN_MAX_OD)
    if np.count_nonzero(stained) < STAIN_MIN_SHARE * stained.size:
        return None
    return np.median(od[stained], axis=0)


def stain_balanced(table: np.ndarray, surroundings: np.ndarray | None) -> np.ndarray:
    """``table`` (``balance_table``) followed by the stain balance: each channel's optical
    density scaled so that the surroundings' median becomes ``STAIN_REFERENCE_OD``, i.e.
    ``v -> L (v / L) ** g`` with ``L`` the background level (a stronger or paler stain, or a
    stain of another hue, as the reference would have left the same cells)."""
    if surroundings is None:
        return table
    gains = np.clip(
        np.asarray(STAIN_REFERENCE_OD) / np.maximum(surroundings, 1e-3), *STAIN_GAIN_LIMITS
    )
    ratio = table.astype(np.float64) / BACKGROUND_LEVEL
    return np.minimum(BACKGROUND_LEVEL * ratio ** gains[:, None] + 0.5, 255).astype(np.uint8)


def stain_reference(paths: list[Path]) -> tuple[np.ndarray, int]:
    """The median over images of ``surroundings_od`` (how ``STAIN_REFERENCE_OD`` was
    measured, on TRAIN), and how many images had enough stained surroundings to count."""
    measured = [
        od
        for path in paths
        if (od := measure(decode(Path(path).read_bytes()), "stain")[2]) is not None
    ]
    if not measured:
        raise ValueError("no image has enough stained pixels around its white cell")
    return np.median(np.stack(measured), axis=0), len(measured)


def balance_of(metadata: dict) -> str:
    """How a model's training images were balanced (one of ``BALANCES``): models before v5
    were not; v5-v7 white-balanced; ``input.stain_balance`` adds the stain balance."""
    given = metadata.get("input", {})
    if given.get("stain_balance", False):
        return "stain"
    return "white" if given.get("white_balance", False) else "none"


def crop_context_of(metadata: dict) -> float:
    """The crop a model was trained on, ``input.crop_context`` times the cell box."""
    return float(metadata.get("input", {}).get("crop_context", localise.LEGACY_CROP_CONTEXT))


def crop_mismatch(metadata: dict) -> str | None:
    """Why a model cannot be served with this code's crops, or None."""
    trained = crop_context_of(metadata)
    if trained != localise.CROP_CONTEXT:
        return (
            f"the model was trained on crops of {trained:g} x the cell box; this "
            f"service makes {localise.CROP_CONTEXT:g} x"
        )
    return None


def check_balance(balance: str) -> str:
    """``balance`` if it is one of ``BALANCES``; a ValueError naming them otherwise."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, not {balance!r}")
    return balance


def measure(
    image: Image.Image, balance: str
) -> tuple[list[CellBox], np.ndarray | None, np.ndarray | None]:
    """What ``locate`` reads off the localiser's (white-balanced) working copy: the white
    cells' boxes (``find_cells``, the most prominent first), the white-balance table (None
    for ``"none"``) and, for ``"stain"``, the stain around the first cell
    (``surroundings_od``; None otherwise)."""
    check_balance(balance)
    small, scale = working_copy(image)
    pixels = np.asarray(small)
    table = None if balance == "none" else balance_table(pixels)
    if table is not None:
        pixels = apply_balance(pixels, table)
    boxes = find_cells(image, (pixels, scale))
    stain = surroundings_od(pixels, boxes[0], scale) if balance == "stain" else None
    return boxes, table, stain


def locate_cells(
    image: Image.Image, balance: str = "white"
) -> tuple[list[CellBox], np.ndarray | None]:
    """Where the white cells are (the most prominent first), found on the localiser's
    white-balanced working copy, and the colour table for the crops (None for
    ``balance="none"``): white balance, and for ``"stain"`` the stain balance measured
    around the first cell. Balancing only the small images used (this copy and the crops)
    costs a fraction of balancing the upload."""
    boxes, table, stain = measure(image, balance)
    return boxes, (stain_balanced(table, stain) if balance == "stain" else table)


def locate(image: Image.Image, balance: str = "white") -> tuple[CellBox, np.ndarray | None]:
    """The most prominent white cell's box and the crop's colour table (``locate_cells``)."""
    boxes, table = locate_cells(image, balance)
    return boxes[0], table


def crop(
    image: Image.Image, box: CellBox, table: np.ndarray | None, others: tuple[CellBox, ...] = ()
) -> Prepared:
    """The network-ready crop around ``box`` (``square_crop``), colour-balanced by
    ``table``."""
    region = square_crop(box, *image.size)
    resized = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, box=region)
    array = np.asarray(resized, dtype=np.uint8)
    return Prepared(
        array if table is None else apply_balance(array, table), box, image.size, others
    )


def prepare(image: Image.Image, balance: str = "white") -> Prepared:
    """Localise the white cell in an RGB image and return the network-ready crop of the
    most prominent one (``others``: the boxes of any further white cells).

    ``balance`` must match the model's training (``balance_of(metadata)``)."""
    boxes, table = locate_cells(image, balance)
    return crop(image, boxes[0], table, tuple(boxes[1:]))


def prepare_cells(image: Image.Image, balance: str = "white") -> list[Prepared]:
    """A network-ready crop of every white cell of an RGB image, the most prominent first
    (its crop is ``prepare``'s)."""
    boxes, table = locate_cells(image, balance)
    return [crop(image, box, table) for box in boxes]


def preprocess_opened(image: Image.Image, balance: str = "white") -> Prepared:
    """An ``open_image`` result (header read, nothing decoded) to a network-ready crop."""
    return prepare(load_rgb(image), balance)


def preprocess_bytes(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, balance: str = "white"
) -> Prepared:
    """Serving entry point: raw upload bytes to a network-ready crop."""
    return preprocess_opened(open_image(data, max_pixels), balance)


def preprocess_cells(
    upload: bytes | Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS, balance: str = "white"
) -> list[Prepared]:
    """Serving entry point for every white cell: raw upload bytes (or an ``open_image``
    result) to a network-ready crop of each, the most prominent first (``preprocess_bytes``'s
    crop)."""
    image = upload if isinstance(upload, Image.Image) else open_image(upload, max_pixels)
    return prepare_cells(load_rgb(image), balance)


def preprocess_file(
    path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS, balance: str = "white"
) -> Prepared:
    """Training entry point: the very same path as serving, from a file."""
    return preprocess_bytes(Path(path).read_bytes(), max_pixels, balance)
