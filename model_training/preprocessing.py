"""The one preprocessing path shared by training and serving.

bytes or file -> decoded RGB image (EXIF orientation applied, every mode converted)
-> white-cell localisation -> square crop around the cell -> bilinear resize to
``IMAGE_SIZE`` x ``IMAGE_SIZE`` -> uint8 array. The model rescales to [0, 1] itself,
so the array fed to it holds 0..255 values. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model_training.localise import CellBox, find_cell, square_crop

IMAGE_SIZE = 150
RESIZE_METHOD = "cell-centred square crop, then PIL bilinear"
DEFAULT_MAX_PIXELS = 40_000_000
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


def decode(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes to RGB. Only the first frame of animations and multi-page files."""
    if not data:
        raise ImageDecodeError("empty body: no image data")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
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
            image.seek(0)
            image.load()
            ImageOps.exif_transpose(image, in_place=True)  # no copy when upright
            return to_rgb(image)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError("not a decodable image (unknown format)") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError,
            MemoryError, ZeroDivisionError) as exc:
        raise ImageDecodeError(f"image data is corrupt or truncated: {exc}") from exc


def prepare(image: Image.Image) -> Prepared:
    """Localise the white cell in an RGB image and return the network-ready crop."""
    box = find_cell(image)
    region = square_crop(box, *image.size)
    resized = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR, box=region)
    return Prepared(np.asarray(resized, dtype=np.uint8), box, image.size)


def preprocess_bytes(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Serving entry point: raw upload bytes to a network-ready crop."""
    return prepare(decode(data, max_pixels))


def preprocess_file(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Prepared:
    """Training entry point: the very same path as serving, from a file."""
    return preprocess_bytes(Path(path).read_bytes(), max_pixels)
