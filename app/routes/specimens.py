"""The specimen API: a specimen's cells kept, reviewed and signed (app/specimens.py).

Machines (API key) create specimens, add images and read; a signed-in reviewer (session
cookie and CSRF token) reclassifies, finalises and amends."""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastAPIPath
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.concurrency import run_in_threadpool

from app import specimens as sp
from app.accounts import Person
from app.actors import Actor, database, machine_or_person, signed_in_person
from app.classifier import Classifier
from app.deps import ClassifierDep, SettingsDep
from app.errors import BadRequest, InvalidField
from app.explain import overlay_png
from app.fhir import specimen_bundle
from app.hl7 import MEDIA_TYPE as HL7_MEDIA_TYPE
from app.hl7 import oru_r01
from app.openapi import ERRORS, image_body
from app.routes.predict import CELLS, prepare_upload
from app.uploads import Upload, read_files

router = APIRouter(prefix="/specimens", tags=["specimens"])
# the database's integer ids: larger numbers are no specimen (422, not an overflow)
SpecimenId = Annotated[int, FastAPIPath(ge=1, le=2_147_483_647)]
CellId = Annotated[int, FastAPIPath(ge=1, le=2_147_483_647)]
MachineOrPerson = Depends(machine_or_person)
SignedIn = Depends(signed_in_person)


def body_of(schema: dict[str, Any], example: dict[str, Any]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


VERSION = {
    "type": "integer",
    "minimum": 1,
    "maximum": 2**31 - 1,
    "description": "the version you last read",
}
CREATE_BODY = body_of(
    {
        "type": "object",
        "required": ["accession"],
        "properties": {
            "accession": {"type": "string", "pattern": sp.ACCESSION.pattern},
            "patient": {"type": ["string", "null"], "description": "a FHIR Patient id"},
            "collected_at": {"type": ["string", "null"], "format": "date-time"},
        },
    },
    {"accession": "H26-004211", "patient": "p-1187", "collected_at": "2026-12-06T08:15:00Z"},
)
LABEL_BODY = body_of(
    {
        "type": "object",
        "required": ["label", "version"],
        "properties": {"label": {"type": "string"}, "version": VERSION},
    },
    {"label": "monocyte", "version": 3},
)
FINALISE_BODY = body_of(
    {"type": "object", "required": ["version"], "properties": {"version": VERSION}},
    {"version": 4},
)
AMEND_BODY = body_of(
    {
        "type": "object",
        "required": ["reason", "version"],
        "properties": {"reason": {"type": "string"}, "version": VERSION},
    },
    {"reason": "cell 7 is a reactive lymphocyte, not a monocyte", "version": 5},
)
RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"description": "not signed in (and no API key where one serves)"},
    403: {"description": "missing or wrong CSRF token"},
    404: {"description": "no such specimen or cell"},
    409: {"description": "stale version, duplicate accession, or a final specimen"},
}


async def json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("the body is not JSON") from exc
    if not isinstance(data, dict):
        raise BadRequest("send a JSON object")
    return data


def conflict_response(exc: sp.Conflict) -> JSONResponse:
    return JSONResponse({"detail": exc.detail, "current": exc.current}, status_code=409)


async def in_db(request: Request, work: Any) -> Any:
    """Run ``work(session)`` in one transaction, in a work thread; a 409 carries the
    specimen's current state."""
    db = database(request)

    def run() -> Any:
        with db.session() as session:
            return work(session)

    try:
        return await run_in_threadpool(run)
    except sp.Conflict as exc:
        return conflict_response(exc)


async def stored_crop(request: Request, specimen_id: int, cell_id: int) -> bytes:
    """The PNG crop of a cell of this specimen (404 for any other cell)."""

    def work(session: Any) -> bytes:
        cell = session.get(sp.Cell, cell_id)
        if cell is None or cell.specimen_id != specimen_id:
            raise sp.NotFound(f"no cell {cell_id} in specimen {specimen_id}")
        return cell.image_png

    return await in_db(request, work)


def parse_time(value: object) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidField("collected_at must be an ISO 8601 date-time") from exc
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


@router.post("", status_code=201, responses=RESPONSES, openapi_extra=CREATE_BODY)
async def create_specimen(request: Request, actor: Actor = MachineOrPerson) -> Any:
    """Open a specimen. Its accession is unique: posting it again answers 409 naming the
    existing specimen, so a retry never makes a twin."""
    data = await json_body(request)
    accession = sp.check_accession(data.get("accession"))
    patient = sp.check_patient(data.get("patient"))
    collected = parse_time(data.get("collected_at"))
    result = await in_db(
        request,
        lambda s: sp.summary(sp.create(s, accession, patient, collected, actor.audit_name)),
    )
    return result if isinstance(result, Response) else JSONResponse(result, status_code=201)


@router.get("", responses=RESPONSES)
async def list_specimens(
    request: Request,
    status: str | None = Query(None, pattern="^(open|final)$"),
    accession: str | None = Query(None, max_length=64),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000_000),
    actor: Actor = MachineOrPerson,
) -> Any:
    """Specimens, newest first, filtered by status and accession, a page at a time."""
    return await in_db(request, lambda s: sp.listing(s, status, accession, limit, offset))


def classify_for_storage(
    classifier: Classifier, uploads: list[Upload], every_cell: bool
) -> tuple[list[tuple[str, Any, dict[str, Any]]], list[dict[str, Any]]]:
    """(source, crop, classification) of every cell, and the files that were refused."""
    prepared, sources, rejected = [], [], []
    for upload in uploads:
        crops = prepare_upload(classifier, upload, every_cell)
        if isinstance(crops, dict):
            rejected.append(crops)
            continue
        prepared += crops
        sources += [upload.filename] * len(crops)
    results = classifier.classify(prepared)
    return [
        (src, p.array, r) for src, p, r in zip(sources, prepared, results, strict=True)
    ], rejected


@router.post(
    "/{specimen_id}/images",
    status_code=201,
    responses=RESPONSES,
    openapi_extra=image_body("files", many=True),
)
async def add_images(
    specimen_id: SpecimenId,
    request: Request,
    classifier: ClassifierDep,
    settings: SettingsDep,
    cells: str = CELLS,
    actor: Actor = MachineOrPerson,
) -> Any:
    """Classify images (single cells, or smear fields with ``?cells=all``) and keep every
    cell: its crop, the machine's label and probabilities, review flags, model version."""
    await in_db(request, lambda s: sp.get(s, specimen_id))  # 404 before reading images
    uploads = await read_files(request, "files", settings.max_batch, settings.max_image_bytes)
    classified, rejected = await run_in_threadpool(
        classify_for_storage, classifier, uploads, cells == "all"
    )

    def store(session: Any) -> dict[str, Any]:
        specimen = sp.get(session, specimen_id)
        stored = sp.add_cells(session, specimen, classified, actor.audit_name)
        return {
            **sp.summary(specimen),
            "added": [sp.cell_json(c) for c in stored],
            "rejected": rejected,
        }

    result = await in_db(request, store)
    return result if isinstance(result, Response) else JSONResponse(result, status_code=201)


@router.get("/{specimen_id}", responses=RESPONSES)
async def read_specimen(
    specimen_id: SpecimenId, request: Request, actor: Actor = MachineOrPerson
) -> Any:
    """Status, version, every cell (machine label, current label, who changed it and when)
    and the differential over the current labels."""
    return await in_db(request, lambda s: sp.detail(sp.get(s, specimen_id)))


@router.get(
    "/{specimen_id}/cells/{cell_id}/image",
    responses={**RESPONSES, 200: {"content": {"image/png": {}}}},
    response_class=Response,
)
async def cell_image(
    specimen_id: SpecimenId, cell_id: CellId, request: Request, actor: Actor = MachineOrPerson
) -> Response:
    """The stored 150x150 crop the network saw."""
    data = await stored_crop(request, specimen_id, cell_id)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private"})


@router.get(
    "/{specimen_id}/cells/{cell_id}/explain",
    responses={**RESPONSES, 200: {"content": {"image/png": {}}}},
    response_class=Response,
)
async def cell_explain(
    specimen_id: SpecimenId,
    cell_id: CellId,
    request: Request,
    classifier: ClassifierDep,
    actor: Actor = MachineOrPerson,
) -> Response:
    """Grad-CAM of the served model's predicted class over the stored crop."""
    data = await stored_crop(request, specimen_id, cell_id)
    crop = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    png, _ = await run_in_threadpool(overlay_png, classifier.predictor, crop)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private"})


@router.patch("/{specimen_id}/cells/{cell_id}", responses=RESPONSES, openapi_extra=LABEL_BODY)
async def reclassify_cell(
    specimen_id: SpecimenId, cell_id: CellId, request: Request, person: Person = SignedIn
) -> Any:
    """A reviewer's label for one cell; a stale ``version`` answers 409 with the current
    state."""
    data = await json_body(request)
    label, version = sp.check_label(data.get("label")), sp.check_version(data.get("version"))

    def work(session: Any) -> dict[str, Any]:
        specimen = sp.get(session, specimen_id)
        cell = sp.reclassify(session, specimen, cell_id, label, version, person.name)
        return {
            **sp.summary(specimen),
            "cell": sp.cell_json(cell),
            "differential": sp.differential(specimen),
        }

    return await in_db(request, work)


def delivery_of(request: Request) -> tuple[list[str], str]:
    """Where signed reports go (the outbox's destinations) and the model that made them."""
    from app.delivery import destinations

    classifier = getattr(request.app.state, "classifier", None)
    info = classifier.model_info() if classifier else {"name": "wbc-classifier", "version": "?"}
    return destinations(request.app.state.settings), f"{info['name']} {info['version']}"


@router.post("/{specimen_id}/finalise", responses=RESPONSES, openapi_extra=FINALISE_BODY)
async def finalise_specimen(
    specimen_id: SpecimenId, request: Request, person: Person = SignedIn
) -> Any:
    """Sign the specimen: final, by this reviewer, now; its report is queued for the LIS in
    the same transaction. A final specimen refuses changes until amended."""
    version = sp.check_version((await json_body(request)).get("version"))
    targets, device = delivery_of(request)
    return await in_db(
        request,
        lambda s: sp.summary(
            sp.finalise(s, sp.get(s, specimen_id), version, person.name, targets, device)
        ),
    )


@router.post("/{specimen_id}/amend", responses=RESPONSES, openapi_extra=AMEND_BODY)
async def amend_specimen(
    specimen_id: SpecimenId, request: Request, person: Person = SignedIn
) -> Any:
    """Reopen a final specimen, with a reason; its next finalisation is an amended report."""
    data = await json_body(request)
    version = sp.check_version(data.get("version"))
    return await in_db(
        request,
        lambda s: sp.summary(
            sp.amend(s, sp.get(s, specimen_id), version, data.get("reason"), person.name)
        ),
    )


@router.get("/{specimen_id}/audit", responses=RESPONSES)
async def specimen_audit(
    specimen_id: SpecimenId, request: Request, actor: Actor = MachineOrPerson
) -> Any:
    """Every event, oldest first: created, images added, reclassified, finalised, amended;
    each with who, when and the model version."""
    return await in_db(request, lambda s: {"events": sp.audit_json(s, sp.get(s, specimen_id))})


@router.get(
    "/{specimen_id}/report",
    responses={
        **RESPONSES,
        200: {
            "content": {
                "application/json": {},
                "application/fhir+json": {},
                HL7_MEDIA_TYPE: {"schema": {"type": "string"}},
            }
        },
    },
)
async def specimen_report(
    specimen_id: SpecimenId,
    request: Request,
    classifier: ClassifierDep,
    format: str = Query("json", pattern="^(json|fhir|hl7)$"),
    actor: Actor = MachineOrPerson,
) -> Any:
    """The report: JSON, a FHIR R4 transaction Bundle, or an HL7 v2.5.1 ORU^R01. Status
    preliminary while open, final when signed, amended (HL7: corrected) after an
    amendment."""

    def work(session: Any) -> tuple[dict[str, Any], str]:
        specimen = sp.get(session, specimen_id)
        return sp.detail(specimen), sp.report_status(specimen)

    got = await in_db(request, work)
    if isinstance(got, Response):
        return got
    detail, status = got
    info = classifier.model_info()
    device = f"{info['name']} {info['version']}"
    if format == "fhir":
        bundle = specimen_bundle(detail, detail["differential"], status, device)
        return JSONResponse(bundle, media_type="application/fhir+json")
    if format == "hl7":
        return Response(
            oru_r01(detail, detail["differential"], status, device), media_type=HL7_MEDIA_TYPE
        )
    return {"status": status, **detail}
