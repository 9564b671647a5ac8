"""Open Inference Protocol (KServe v2) routes, for Triton and KServe clients."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from app.classifier import Classifier
from app.config import Settings
from app.deps import ClassifierDep, SettingsDep
from app.errors import (
    BadImage,
    BadRequest,
    MissingField,
    ModelVersionNotFound,
    PayloadTooLarge,
)
from wbc_core.calibration import apply_temperature

MODEL = "wbc-classifier"
SERVER_VERSION = "2.0.0"
router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])
health_router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])


class TensorInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(pattern="^(BYTES|FP32)$")
    data: list[Any]
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[TensorInput] = Field(min_length=1, max_length=1)
    parameters: dict[str, Any] | None = None


@health_router.get("/health/ready")
async def v2_ready(request: Request) -> JSONResponse:
    classifier = getattr(request.app.state, "classifier", None)
    ready = classifier is not None and classifier.predictor.ready
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@health_router.get("/health/live")
async def v2_live() -> dict[str, bool]:
    return {"live": True}


@health_router.get("")
async def v2_server_metadata() -> dict[str, Any]:
    """Server metadata (Open Inference Protocol): name, version, extensions."""
    return {"name": "wbc-classifier", "version": SERVER_VERSION, "extensions": []}


@router.get(f"/models/{MODEL}/ready")
async def v2_model_ready(request: Request) -> JSONResponse:
    classifier = getattr(request.app.state, "classifier", None)
    ready = classifier is not None and classifier.predictor.ready
    return JSONResponse({"name": MODEL, "ready": ready}, status_code=200 if ready else 503)


def served_version(classifier: Classifier, version: str) -> None:
    """A versioned route names the served version, or it is 404."""
    served = classifier.model_info()["version"]
    if version != served:
        raise ModelVersionNotFound(
            f"model {MODEL} version {version} is not served (version {served} is)"
        )


@router.get(f"/models/{MODEL}")
async def v2_metadata(classifier: ClassifierDep) -> dict[str, Any]:
    meta = classifier.predictor.metadata
    size = meta.get("input", {}).get("size", [150, 150, 3])
    return {
        "name": MODEL,
        "versions": [str(meta.get("version"))],
        "platform": "tensorflow_savedmodel",
        "inputs": [
            {"name": "image", "datatype": "FP32", "shape": [-1, *size]},
            {
                "name": "image_bytes",
                "datatype": "BYTES",
                "shape": [-1],
                "parameters": {"content": "base64-encoded image files"},
            },
        ],
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [-1, len(classifier.predictor.classes)],
            },
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "needs_review", "datatype": "BOOL", "shape": [-1]},
            {
                "name": "review_reasons",
                "datatype": "BYTES",
                "shape": [-1],
                "parameters": {
                    "content": "comma-separated: low_confidence, "
                    "out_of_distribution, not_a_cell, cell_not_found"
                },
            },
            {
                "name": "ood_score",
                "datatype": "FP32",
                "shape": [-1],
                "parameters": {"content": "-1 when the guard is off"},
            },
        ],
        "parameters": {
            "classes": classifier.predictor.classes,
            "review_threshold": classifier.threshold,
            "ood_guard": classifier.ood_threshold is not None,
            "ood_threshold": classifier.ood_threshold,
        },
    }


def check_batch(tensor: TensorInput, settings: Settings) -> None:
    """The batch limit of every other route (``WBC_MAX_BATCH``) applies here too."""
    n = len(tensor.data) if tensor.datatype == "BYTES" else (tensor.shape or [0])[0]
    if n > settings.max_batch:
        raise PayloadTooLarge(
            f"{n} images in one request; the limit is WBC_MAX_BATCH = {settings.max_batch}"
        )


def _infer(
    classifier: Classifier, tensor: TensorInput, max_image_bytes: int
) -> tuple[np.ndarray, list[str], list[dict[str, Any]]]:
    """Probabilities, labels and each image's review (``needs_review``, ``review_reasons``,
    ``ood_score``)."""
    classes = classifier.predictor.classes
    if tensor.datatype == "BYTES":
        prepared = []
        for i, item in enumerate(tensor.data):
            if len(str(item)) > max_image_bytes * 4 // 3 + 4:
                raise PayloadTooLarge(
                    f"input {i} is over WBC_MAX_IMAGE_BYTES = {max_image_bytes} once decoded"
                )
            try:
                raw = base64.b64decode(str(item), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise BadImage(f"input {i} is not valid base64") from exc
            prepared.append(classifier.prepare(raw))
        results = classifier.classify(prepared)
        probs = np.array([[r["probabilities"][c] for c in classes] for r in results])
        return probs, [r["label"] for r in results], results
    size = classifier.predictor.metadata.get("input", {}).get("size", [150, 150, 3])
    try:
        batch = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    except (ValueError, TypeError) as exc:
        raise MissingField(f"FP32 data does not match shape {tensor.shape}: {exc}") from exc
    if list(batch.shape[1:]) != list(size) or not np.isfinite(batch).all():
        raise MissingField(
            f"FP32 input must have shape [N, {', '.join(map(str, size))}] "
            "with finite values in 0..255"
        )
    raw, features = classifier.predictor.infer(np.clip(batch, 0, 255))
    probs = apply_temperature(raw, classifier.temperature)
    scores = classifier.ood_scores([(raw, features)])
    reviews = []
    for row, score in zip(probs, scores, strict=True):  # crops given: no cell check to make
        reasons = classifier.review_reasons(float(row.max()), score, True, True)
        reviews.append(
            {"needs_review": bool(reasons), "review_reasons": reasons, "ood_score": score}
        )
    return probs, [classes[i] for i in probs.argmax(axis=1)], reviews


INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "inputs": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 1,
                            "items": TensorInput.model_json_schema(),
                        },
                        "parameters": {"type": "object"},
                    },
                },
                "example": {
                    "id": "r1",
                    "inputs": [
                        {
                            "name": "image_bytes",
                            "shape": [1],
                            "datatype": "BYTES",
                            "data": ["<base64 of a JPEG>"],
                        }
                    ],
                },
            }
        },
    }
}


PARSE_INLINE_BYTES = 256 * 1024  # larger bodies are parsed in a work thread


def max_values(classifier: Classifier | None, settings: Settings) -> int:
    """The most JSON values a request may hold: ``WBC_MAX_BATCH`` FP32 images, and some."""
    size = [150, 150, 3]
    if classifier is not None:
        size = classifier.predictor.metadata.get("input", {}).get("size", size)
    return settings.max_batch * int(np.prod(size)) + 1024


def parse_body(raw: bytes, most_values: int) -> InferRequest:
    """Bounded before it is parsed: ``json.loads`` makes a Python object of every number
    (about 32 bytes each), so a body of nothing but ``0,0,0,...`` under the body limit
    would cost gigabytes. A JSON value is followed by a comma but the last of each list,
    so the commas bound the values; base64 images have none."""
    if raw.count(b",") > most_values:
        raise PayloadTooLarge(
            f"the request holds more values than WBC_MAX_BATCH images of the model's input "
            f"({most_values}); send fewer images per request"
        )
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadRequest(f"the body is not JSON: {str(exc)[:200]}") from exc
    try:
        return InferRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


async def infer_request(request: Request, settings: Settings) -> InferRequest:
    """The JSON body, whatever its Content-Type says (Triton's and KServe's clients send
    none); the binary tensor data extension gets a clear 400."""
    if "inference-header-content-length" in request.headers:
        raise BadRequest(
            "the binary tensor data extension is not supported: send the inputs as JSON "
            "(tritonclient: binary_data=False on each input and requested output)"
        )
    raw = await request.body()
    most = max_values(getattr(request.app.state, "classifier", None), settings)
    if len(raw) <= PARSE_INLINE_BYTES:
        return parse_body(raw, most)
    return await run_in_threadpool(parse_body, raw, most)  # the event loop keeps answering


@router.post(f"/models/{MODEL}/infer", openapi_extra=INFER_BODY)
async def v2_infer(
    request: Request, classifier: ClassifierDep, settings: SettingsDep
) -> dict[str, Any]:
    """One input: BYTES (base64 images, preprocessed like /predict) or FP32 [N,150,150,3]."""
    return await infer(await infer_request(request, settings), classifier, settings)


@router.post(f"/models/{MODEL}/versions/{{version}}/infer", openapi_extra=INFER_BODY)
async def v2_infer_version(
    version: str, request: Request, classifier: ClassifierDep, settings: SettingsDep
) -> dict[str, Any]:
    """As the unversioned route, for the version served (404 for any other)."""
    served_version(classifier, version)
    return await infer(await infer_request(request, settings), classifier, settings)


@router.get(f"/models/{MODEL}/versions/{{version}}")
async def v2_metadata_version(version: str, classifier: ClassifierDep) -> dict[str, Any]:
    served_version(classifier, version)
    return await v2_metadata(classifier)


@router.get(f"/models/{MODEL}/versions/{{version}}/ready")
async def v2_model_ready_version(version: str, request: Request) -> JSONResponse:
    classifier = getattr(request.app.state, "classifier", None)
    if classifier is not None:
        served_version(classifier, version)
    return await v2_model_ready(request)


async def infer(body: InferRequest, classifier: Classifier, settings: Settings) -> dict[str, Any]:
    tensor = body.inputs[0]
    if not tensor.data:
        raise MissingField("input has no data")
    check_batch(tensor, settings)
    probs, labels, reviews = await run_in_threadpool(
        _infer, classifier, tensor, settings.max_image_bytes
    )
    n = len(labels)
    return {
        "model_name": MODEL,
        "model_version": classifier.model_info()["version"],
        "id": body.id,
        "outputs": [
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": list(probs.shape),
                "data": [round(float(v), 6) for v in probs.ravel()],
            },
            {"name": "label", "datatype": "BYTES", "shape": [n], "data": labels},
            {
                "name": "needs_review",
                "datatype": "BOOL",
                "shape": [n],
                "data": [r["needs_review"] for r in reviews],
            },
            {
                "name": "review_reasons",
                "datatype": "BYTES",
                "shape": [n],
                "data": [",".join(r["review_reasons"]) for r in reviews],
            },
            {
                "name": "ood_score",
                "datatype": "FP32",
                "shape": [n],
                "data": [
                    -1.0 if r["ood_score"] is None else round(float(r["ood_score"]), 4)
                    for r in reviews
                ],
            },
        ],
        "parameters": {
            "ood_threshold": classifier.ood_threshold,
            "review_threshold": classifier.threshold,
        },
    }
