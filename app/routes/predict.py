"""POST /predict and /predict/batch: parse, classify off the event loop, shape."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.deps import ClassifierDep, SettingsDep, get_app_settings, get_classifier
from app.errors import ServiceError
from app.observability import REJECTED
from app.openapi import ERRORS, image_body
from app.schemas import BatchResponse, CellsResponse, Prediction
from app.uploads import Upload, read_files, read_single

router = APIRouter(tags=["classification"])


@router.post(
    "/predict",
    response_model=Prediction,
    responses=ERRORS,
    openapi_extra=image_body("file", many=False),
)
async def predict(request: Request) -> JSONResponse:
    """Classify one white-cell image (multipart field `file`, or a raw image/* body)."""
    # The busiest route reads the classifier and settings itself: FastAPI resolves each
    # declared dependency on every request, a share of the route's framework time
    # (reports/experiments/performance-history.md).
    classifier = await get_classifier(request)
    settings = await get_app_settings(request)
    upload = await read_single(request, settings.max_image_bytes)
    try:
        image = classifier.open(upload.data)  # header only: size known, nothing decoded
        if image.width * image.height <= settings.inline_max_pixels:
            result = classifier.classify_one(image)  # a cell image: no hop to a thread
        else:
            result = await run_in_threadpool(classifier.classify_one, image)
        # A Response skips FastAPI's re-validation of a dict we built ourselves (~0.5 ms);
        # the schema stays documented by response_model and checked by the tests.
        return JSONResponse(result)
    except ServiceError as exc:
        REJECTED.labels(str(exc.status_code)).inc()
        raise


@router.post(
    "/predict/cells",
    response_model=CellsResponse,
    responses=ERRORS,
    openapi_extra=image_body("file", many=False),
)
async def predict_cells(
    request: Request, classifier: ClassifierDep, settings: SettingsDep
) -> JSONResponse:
    """Classify every white cell of one image (a smear field with several), the most
    prominent first; multipart field `file`, or a raw image/* body."""
    upload = await read_single(request, settings.max_image_bytes)
    try:
        prepared = await run_in_threadpool(classifier.prepare_cells, upload.data)
        return JSONResponse({"cells": await run_in_threadpool(classifier.classify, prepared)})
    except ServiceError as exc:
        REJECTED.labels(str(exc.status_code)).inc()
        raise


CELLS = Query(
    "first",
    pattern="^(first|all)$",
    description="`all`: an entry for every white cell of each file (smear fields), "
    "with its index in `cell`; `first`: the most prominent cell only",
)


def prepare_upload(classifier: Any, upload: Upload, every_cell: bool) -> list[Any] | dict[str, Any]:
    """The crops of one uploaded file (every white cell's, or the most prominent one's), or
    the error entry that takes its place in a batch's answer when it is refused."""
    try:
        if every_cell:
            return classifier.prepare_cells(upload.data)
        return [classifier.prepare(upload.data)]
    except ServiceError as exc:
        REJECTED.labels(str(exc.status_code)).inc()
        return {"filename": upload.filename, "error": exc.detail, "status": exc.status_code}


def classify_many(
    classifier: Any, uploads: list[Upload], every_cell: bool = False
) -> list[dict[str, Any]]:
    """Per-file results in input order; a bad file gets an error entry, the rest go on.
    ``every_cell``: one entry per white cell of each file (``cell``: its index), each
    file's cells classified before the next file is read (its crops are not all held)."""
    prepared: list[Any] = []
    results: list[dict[str, Any]] = []
    for upload in uploads:
        crops = prepare_upload(classifier, upload, every_cell)
        if isinstance(crops, dict):
            results.append(crops)
            continue
        if every_cell:
            results += [
                {"filename": upload.filename, "cell": i, **cell}
                for i, cell in enumerate(classifier.classify(crops))
            ]
        else:
            prepared += crops
            results.append({"filename": upload.filename})
    classified = iter(classifier.classify(prepared))
    for entry in results:
        if "error" not in entry and "cell" not in entry:
            entry.update(next(classified))
    return results


@router.post(
    "/predict/batch",
    response_model=BatchResponse,
    response_model_exclude_none=True,
    responses=ERRORS,
    openapi_extra=image_body("files", many=True),
)
async def predict_batch(
    request: Request, classifier: ClassifierDep, settings: SettingsDep, cells: str = CELLS
) -> dict[str, Any]:
    """Classify up to `WBC_MAX_BATCH` images (multipart field `files`), in input order."""
    uploads = await read_files(request, "files", settings.max_batch, settings.max_image_bytes)
    return {"results": await run_in_threadpool(classify_many, classifier, uploads, cells == "all")}
