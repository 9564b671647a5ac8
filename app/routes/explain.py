"""POST /explain: a Grad-CAM heatmap of the predicted class over the network's input."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.classifier import UNKNOWN, Classifier
from app.deps import ClassifierDep, SettingsDep
from app.explain import overlay_png
from app.openapi import ERRORS, image_body
from app.uploads import read_single

router = APIRouter(tags=["lab integration"])


def _explain(classifier: Classifier, data: bytes) -> tuple[bytes, str]:
    prepared = classifier.prepare(data)
    png, info = overlay_png(classifier.predictor, prepared.array)
    if not classifier.cell_check.is_cell(prepared.array, prepared.box.localised):
        return png, UNKNOWN  # the label /predict gives the same image
    return png, classifier.predictor.classes[info["class_index"]]


@router.post(
    "/explain",
    responses={200: {"content": {"image/png": {}}}, **ERRORS},
    response_class=Response,
    openapi_extra=image_body("file", many=False),
)
async def explain(request: Request, classifier: ClassifierDep, settings: SettingsDep) -> Response:
    """One image in, a PNG out: Grad-CAM of the predicted class on the cell crop."""
    upload = await read_single(request, settings.max_image_bytes)
    png, label = await run_in_threadpool(_explain, classifier, upload.data)
    return Response(png, media_type="image/png", headers={"X-Predicted-Label": label})
