"""Response models: the JSON contract, shown in the OpenAPI schema."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

ReviewReason = Literal["low_confidence", "out_of_distribution", "not_a_cell", "cell_not_found"]


class ModelRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    label: str = Field(description="most probable class (or 'unknown')")
    confidence: float = Field(description="calibrated probability of the label")
    probabilities: dict[str, float] = Field(description="calibrated, sum to 1, class order")
    needs_review: bool = Field(description="true whenever `review_reasons` is not empty")
    review_reasons: list[ReviewReason] = Field(
        default_factory=list,
        description="why the cell needs review: `low_confidence` "
        "(calibrated confidence below the review threshold), `out_of_distribution` (unlike "
        "every cell the model was trained and validated on: another stain, scale or camera), "
        "`not_a_cell` (label 'unknown'), `cell_not_found` (no white cell located: the whole "
        "image was classified)",
    )
    ood_score: float | None = Field(
        None,
        description="distance of the cell to the model's training data (Mahalanobis, "
        "penultimate features); above the model's `ood_threshold` it is out of distribution. "
        "null when the model version has no guard",
    )
    is_cell: bool = Field(description="false: not a stained white cell; label is 'unknown'")
    localised: bool = Field(description="false: no white cell found, whole image used")
    cell_box: list[int] = Field(description="[x0, y0, x1, y1] in the original image's pixels")
    other_cells: list[list[int]] = Field(
        default_factory=list,
        description="boxes of further white cells found in the image "
        "(a smear field), not classified here: POST /predict/cells classifies each",
    )
    model: ModelRef


class CellsResponse(BaseModel):
    cells: list[Prediction] = Field(
        description="one per white cell found, the most "
        "prominent first (the cell /predict classifies)"
    )


class BatchItem(BaseModel):
    filename: str
    label: str | None = None
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    needs_review: bool | None = None
    review_reasons: list[ReviewReason] | None = None
    ood_score: float | None = None
    is_cell: bool | None = None
    localised: bool | None = None
    cell_box: list[int] | None = None
    other_cells: list[list[int]] | None = None
    cell: int | None = Field(
        None, description="with ?cells=all: which white cell of the file, 0 the most prominent"
    )
    model: ModelRef | None = None
    error: str | None = None
    status: int | None = Field(None, description="HTTP status this file alone would get")


class BatchResponse(BaseModel):
    results: list[BatchItem]


class ErrorResponse(BaseModel):
    detail: str


class ValidationProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """422: one message (a field the route checks itself), or FastAPI's list of problems
    (a parameter or field that fails its declared type)."""

    detail: str | list[ValidationProblem]


class V2ErrorResponse(BaseModel):
    """The Open Inference Protocol's error shape (every error under /v2)."""

    error: str
