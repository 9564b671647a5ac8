"""Find the white blood cell in a stained smear image.

The white cell stands out by its dark violet nucleus: in Romanowsky-type stains the
nucleus is the region where blue clearly exceeds green, while red cells (pink),
platelets (small violet dots) and background (pale) do not or are small. We score
each pixel by ``blue - green``, keep the pixels above a threshold, close small gaps
(so the lobes of a neutrophil join), take the connected component with the largest
score mass, and grow its box by a margin that covers the cytoplasm.

A stain that does not colour the nucleus violet (a brown-red rapid stain, a hue far from
Romanowsky's) gives no credible violet component; the search is then made again on each
pixel's darkness (the nucleus is the darkest structure a nuclear stain leaves), so that
such a cell is still found, cropped and judged by the not-a-cell check, not classified as
a whole field. Images with a violet nucleus never reach that fallback.

Works on a reduced copy of the image (longer side ``WORK_SIDE``) so that it costs
about a millisecond whatever the upload size. Constants were fitted on the BCCD
trainval list only (see ``model_training.localise_eval``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from PIL import Image

from wbc_core import components

WORK_SIDE = 128  # longer side of the reduced copy the search runs on
SCORE_MIN = 55  # blue minus green, 0..255 scale: below this a pixel is not nucleus
SCORE_REL = 0.45  # ... nor below this share of the image's own 99.9th percentile score
STAIN_REF = 100  # a top score below this is a paler stain: SCORE_MIN shrinks in proportion
SCORE_FLOOR = 25  # ... but no pixel below this is nucleus, however pale the stain
MIN_AREA_FRAC = 0.002  # a nucleus smaller than this share of the image is not credible
MAX_AREA_FRAC = 0.6  # ... nor one larger than this (a violet page, a solid colour)
MAX_BOX_FILL = 0.97  # ... nor one filling this share of its bounding box: a straight-edged
# bar (ruled lines, stripes, a horizon), not a nucleus. The first nucleus found fills at
# most 0.939 of its box on every Kaggle, PBC and BCCD image, ruled lines 0.99-1.0
# (reports/experiments/straight-edged-nucleus)
CELL_MARGIN = 1.35  # cell box side / nucleus box side (cytoplasm around the nucleus)
CELL_PAD_FRAC = 0.0  # plus this share of the image's longer side on every side
CROP_CONTEXT = 1.5  # the network sees the cell box and its neighbours (size against red cells)
LEGACY_CROP_CONTEXT = 1.15  # the crop of models that record none (model v5 and before)
OTHER_CELL_REL = 0.3  # another nucleus with this share of the first's score mass is a cell
MAX_CELLS = 16  # white cells reported per image at most
CLOSE_ITERATIONS = 2  # closings with a 3x3 square: lobes up to 4 pixels apart join
DARK_REL = 0.75  # fallback (``darkness_score``): nucleus above this share of the image's
DARK_MIN = 60  # 99.9th percentile darkness, and above this darkness (0..255)
NEUTRAL_SPREAD = 20  # ... and only where its channels differ by this much: grey and black
# pixels (a rotated view's black border and its blur into the background, ink) are not stain
DARK_CONTRAST = 1.4  # ... and a nucleus at least this much darker, on average, than the
# median stained pixel outside it (cytoplasm, red cells): red cells alone (a field without a
# white cell) are not. Kaggle's 20 images in which the violet search finds no white cell
# (fields without one) stay unlocalised; PBC validation cells filling a 120x120 frame in a
# brown-red stain are localised 97.7-99.5% (reports/localisation/pbc.md).


@dataclass(frozen=True)
class CellBox:
    """Where the white cell is, in the original image's pixel coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int
    localised: bool  # False: nothing credible found, the box is the whole image

    def as_list(self) -> list[int]:
        return [self.x0, self.y0, self.x1, self.y1]


def violet_score(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel nucleus score, ``blue - green`` as int16."""
    return rgb[..., 2].astype(np.int16) - rgb[..., 1].astype(np.int16)


def percentile(values: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear method), exactly, at a tenth of its cost: it
    runs on every request, and numpy's general version spends most of its time on checks."""
    flat = values.ravel()
    k = q / 100 * (flat.size - 1)
    lo = int(k)
    hi = min(lo + 1, flat.size - 1)
    part = np.partition(flat, (lo, hi) if hi != lo else lo)
    a, b = float(part[lo]), float(part[hi])
    t = k - lo
    return a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)  # numpy's own lerp


def close(mask: np.ndarray, iterations: int = CLOSE_ITERATIONS) -> np.ndarray:
    """``ndimage.binary_closing(mask, 3x3 square, iterations)``, exactly, in plain numpy.

    n dilations by a 3x3 square are one dilation by a (2n+1) square, separable into a row
    and a column pass; the erosion treats outside the image as empty, as scipy does. About
    ten times faster than scipy's iterated version on the 128x96 working copy."""
    r = iterations
    width = 2 * r + 1
    h, w = mask.shape
    pad = np.zeros((h + 4 * r, w + 4 * r), dtype=bool)
    pad[2 * r : 2 * r + h, 2 * r : 2 * r + w] = mask

    def run(a: np.ndarray, axis: int, op: np.ufunc) -> np.ndarray:
        n = a.shape[axis] - width + 1
        window = [a[(slice(None),) * axis + (slice(i, i + n),)] for i in range(width)]
        return functools.reduce(op, window)

    dilated = run(run(pad, 1, np.logical_or), 0, np.logical_or)  # (h + 2r) x (w + 2r)
    inner = np.zeros_like(dilated)
    inner[r : r + h, r : r + w] = dilated[r : r + h, r : r + w]  # outside the image is empty
    return run(run(inner, 1, np.logical_and), 0, np.logical_and)


def working_copy(image: Image.Image) -> tuple[Image.Image, float]:
    """The reduced copy the search runs on (longer side ``WORK_SIDE``) and its scale."""
    width, height = image.size
    scale = WORK_SIDE / max(width, height)
    if scale >= 1:
        return image, 1.0
    small_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(small_size, Image.Resampling.BILINEAR), scale


def nucleus_threshold(top: float) -> float:
    """The score above which a pixel counts as nucleus, given the image's 99.9th percentile
    score ``top`` (its most violet pixels: the nucleus when there is a white cell).

    ``SCORE_MIN`` alone cut a paler stain's nucleus into a few dark spots: the score is a
    colour difference and shrinks with the stain's saturation (x0.6 moved the box of 8% of
    TRAIN's cells to IoU < 0.5). Below ``STAIN_REF`` (99% of Kaggle images score above it, so
    their boxes stay as they were) the absolute floor scales with ``top``, i.e. with the
    stain, down to ``SCORE_FLOOR``."""
    return max(SCORE_REL * top, SCORE_MIN * min(1.0, top / STAIN_REF), SCORE_FLOOR)


def darkness_score(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel darkness, 255 minus the darkest channel, as int16, on stained (coloured)
    pixels only (0 on grey and black): the fallback nucleus score for a stain that does not
    colour the nucleus violet."""
    low = rgb.min(axis=-1).astype(np.int16)
    score = 255 - low
    score[rgb.max(axis=-1) - low < NEUTRAL_SPREAD] = 0
    return score


def find_cells(
    image: Image.Image, work: tuple[Image.Image | np.ndarray, float] | None = None
) -> list[CellBox]:
    """Boxes around the white cells of an RGB image, the most prominent first (the whole
    image, not localised, if none is credible). ``work``: its ``working_copy`` (image or
    array), when the caller has made (and white-balanced) it.

    Nuclei are found by ``violet_score`` or, when that finds no credible one, by
    ``darkness_score`` (``nuclei``)."""
    width, height = image.size
    small, scale = work or working_copy(image)
    pixels = np.asarray(small)
    score = violet_score(pixels)
    cells = nuclei(score, nucleus_threshold(percentile(score, 99.9)), scale, width, height)
    if not cells:
        dark = darkness_score(pixels)
        if dark.any():
            threshold = max(DARK_REL * percentile(dark, 99.9), DARK_MIN)
            cells = nuclei(dark, threshold, scale, width, height, DARK_CONTRAST)
    return cells or [CellBox(0, 0, width, height, localised=False)]


def nuclei(
    score: np.ndarray,
    threshold: float,
    scale: float,
    width: int,
    height: int,
    contrast: float = 0.0,
) -> list[CellBox]:
    """The cell boxes of the nucleus components of ``score > threshold`` (closed), the
    most prominent first; none when the first is not credible: its area, or (``contrast``
    > 0) its mean score under ``contrast`` x the median score of the stained pixels (score
    > 0) outside it. That reference is the cytoplasm and the red cells whether the cell
    fills the frame or sits among many red cells.

    The first is the component with the largest score mass, credible also only when it
    fills less than ``MAX_BOX_FILL`` of its bounding box. A further component is another
    white cell when its mass is at least ``OTHER_CELL_REL`` of the first's, its area is
    credible, and its centre lies outside the cells already found (a neutrophil lobe the
    closing did not join lies inside its cell's box); at most ``MAX_CELLS``."""
    mask = close(score > threshold)
    found = components.find(mask)  # 4-connected, numbered as SciPy does
    if found.count == 0:
        return []
    objects = found.objects
    mass = found.sums(np.clip(score, 0, None))
    area = found.areas()
    order = np.argsort(-mass[1:], kind="stable") + 1  # the most prominent first
    credible = (MIN_AREA_FRAC * score.size <= area) & (area <= MAX_AREA_FRAC * score.size)
    rows, cols = objects[order[0] - 1]
    box_area = (rows.stop - rows.start) * (cols.stop - cols.start)
    if not credible[order[0]] or area[order[0]] >= MAX_BOX_FILL * box_area:
        return []
    if contrast > 0:
        stained = score.ravel() > 0
        stained[found.pixels(int(order[0]), score.shape[1])] = False
        outside = score.ravel()[stained]
        reference = float(np.median(outside)) if outside.size else 0.0
        if mass[order[0]] < contrast * reference * area[order[0]]:
            return []
    cells = [_cell_box(objects[order[0] - 1], scale, width, height)]
    for label in order[1:]:
        if mass[label] < OTHER_CELL_REL * mass[order[0]] or len(cells) == MAX_CELLS:
            break
        if not credible[label]:
            continue
        box = _cell_box(objects[label - 1], scale, width, height)
        cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
        if not any(c.x0 <= cx <= c.x1 and c.y0 <= cy <= c.y1 for c in cells):
            cells.append(box)
    return cells


def find_cell(
    image: Image.Image, work: tuple[Image.Image | np.ndarray, float] | None = None
) -> CellBox:
    """Box around the most prominent white cell of an RGB image (whole image if none):
    the first of ``find_cells``."""
    return find_cells(image, work)[0]


def _cell_box(nucleus: tuple[slice, slice], scale: float, width: int, height: int) -> CellBox:
    """The cell's box from its nucleus' (rows, cols) slices in the working copy: back to
    original pixel coordinates, grown by the cytoplasm margin."""
    rows, cols = nucleus
    nx0, nx1 = cols.start / scale, cols.stop / scale
    ny0, ny1 = rows.start / scale, rows.stop / scale
    cx, cy = (nx0 + nx1) / 2, (ny0 + ny1) / 2
    pad = CELL_PAD_FRAC * max(width, height)
    half_w = (nx1 - nx0) * CELL_MARGIN / 2 + pad
    half_h = (ny1 - ny0) * CELL_MARGIN / 2 + pad
    return CellBox(
        x0=max(0, round(cx - half_w)),
        y0=max(0, round(cy - half_h)),
        x1=min(width, round(cx + half_w)),
        y1=min(height, round(cy + half_h)),
        localised=True,
    )


def square_crop(
    box: CellBox, width: int, height: int, context: float | None = None
) -> tuple[int, int, int, int]:
    """The region to feed the network: a square around the cell, kept inside the image.

    A square keeps the cell's aspect ratio when resized to the square network input.
    When the square does not fit (a single-cell crop whose cell fills the frame), it
    shrinks to the image's shorter side, so nearly the whole image is kept. Without a
    credible cell, the whole image is used. ``context``: the side over the box's longer
    side (default ``CROP_CONTEXT``).
    """
    if not box.localised:
        return 0, 0, width, height
    side = min((context or CROP_CONTEXT) * max(box.x1 - box.x0, box.y1 - box.y0), width, height)
    cx, cy = (box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2
    x0 = int(round(min(max(cx - side / 2, 0), width - side)))
    y0 = int(round(min(max(cy - side / 2, 0), height - side)))
    return x0, y0, x0 + int(side), y0 + int(side)
