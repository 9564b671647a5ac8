"""The one preprocessing path shared by training and serving.

bytes or file -> decoded RGB image (EXIF orientation applied, every mode converted)
-> white balance (the slide background becomes the same neutral grey in every image)
-> white-cell localisation -> square crop around the cell -> bilinear resize to
``IMAGE_SIZE`` x ``IMAGE_SIZE`` -> uint8 array. The model rescales to [0, 1] itself,
so the array fed to it holds 0..255 values. Nothing here imports TensorFlow.
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

from model_training import localise
from model_training.localise import CellBox, find_cell, square_crop, working_copy

IMAGE_SIZE = 150
RESIZE_METHOD = "cell-centred square crop, then PIL bilinear"
DEFAULT_MAX_PIXELS = 40_000_000
BACKGROUND_LEVEL = 220.0  # the slide background is mapped to this grey (Kaggle's is ~219)
BACKGROUND_SHARE = 0.05  # the brightest share of pixels is taken as the slide background
GAIN_LIMITS = (0.5, 2.0)  # per-channel gains beyond these are not a colour cast
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


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent areas become white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "L").convert("RGB")
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
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
            MemoryError, ZeroDivisionError) as exc:
        raise ImageDecodeError(f"image data is corrupt or truncated: {exc}") from exc


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
                f"image is {width}x{height} = {width * height} pixels; "
                f"the limit is {max_pixels}"
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


def balance_of(metadata: dict) -> bool:
    """Whether a model was trained on white-balanced images (models before v5 were not)."""
    return bool(metadata.get("input", {}).get("white_balance", False))


def crop_context_of(metadata: dict) -> float:
    """The crop a model was trained on, ``input.crop_context`` times the cell box."""
    return float(metadata.get("input", {}).get("crop_context", localise.LEGACY_CROP_CONTEXT))


def crop_mismatch(metadata: dict) -> str | None:
    """Why a model cannot be served with this code's crops, or None."""
    trained = crop_context_of(metadata)
    if trained != localise.CROP_CONTEXT:
        return (f"the model was trained on crops of {trained:g} x the cell box; this "
                f"service makes {localise.CROP_CONTEXT:g} x")
    return None


def locate(image: Image.Image, balance: bool = True) -> tuple[CellBox, np.ndarray | None]:
    """Where the white cell is, found on the localiser's white-balanced working copy, and
    the balance table (None without ``balance``). Balancing only the two small images used
    (this copy and the final crop) costs a fraction of balancing the whole upload."""
    small, scale = working_copy(image)
    pixels = np.asarray(small)
    table = balance_table(pixels) if balance else None
    if table is not None:
        pixels = apply_balance(pixels, table)
    return find_cell(image, (pixels, scale)), table


def prepare(image: Image.Image, balance: bool = True) -> Prepared:
    """Localise the white cell in an RGB image and return the network-ready crop.

    ``balance`` must match the model's training (``balance_of(metadata)``)."""
    box, table = locate(image, balance)
    region = square_crop(box, *image.size)
    resized = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, box=region)
    crop = np.asarray(resized, dtype=np.uint8)
    return Prepared(crop if table is None else apply_balance(crop, table), box, image.size)


def preprocess_opened(image: Image.Image, balance: bool = True) -> Prepared:
    """An ``open_image`` result (header read, nothing decoded) to a network-ready crop."""
    return prepare(load_rgb(image), balance)


def preprocess_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS,
                     balance: bool = True) -> Prepared:
    """Serving entry point: raw upload bytes to a network-ready crop."""
    return preprocess_opened(open_image(data, max_pixels), balance)


def preprocess_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS,
                    balance: bool = True) -> Prepared:
    """Training entry point: the very same path as serving, from a file."""
    return preprocess_bytes(Path(path).read_bytes(), max_pixels, balance)
