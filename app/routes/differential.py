"""POST /differential: the WBC differential of one specimen, JSON or FHIR R4."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.classifier import Classifier
from app.deps import ClassifierDep, SettingsDep
from app.errors import InvalidField
from app.fhir import differential_bundle
from app.openapi import ERRORS, image_body
from app.routes.predict import CELLS, classify_many
from app.uploads import read_files

router = APIRouter(tags=["lab integration"])


OUTSIDE_DOMAIN = "outside_validated_domain"
# What the optional form fields may hold: they become FHIR references (Specimen/<id>,
# Patient/<id>), whose ids are at most 64 letters, digits, '-' and '.' (FHIR's id type).
IDENTIFIERS = {
    "specimen_id": re.compile(r"^(Specimen/)?[A-Za-z0-9.-]{1,64}$"),
    "patient": re.compile(r"^(Patient/)?[A-Za-z0-9.-]{1,64}$"),
}


def checked_identifier(key: str, value: object) -> str | None:
    """A form field's identifier, or None when absent; 422 when it could not be a FHIR id
    (control characters, '../', spaces, other resource types)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not IDENTIFIERS[key].match(value):
        raise InvalidField(
            f"{key} must be 1-64 letters, digits, '-' or '.'"
            + (" (optionally after 'Patient/')" if key == "patient" else "")
        )
    return value


def domain_warnings(classified: list[dict[str, Any]], max_share: float) -> tuple[float, list]:
    """The share of a specimen's classified cells that are out of distribution, and the
    warning when it exceeds ``max_share`` (the images are unlike what the model was
    validated on: another stain, camera or scale; its counts are not to be trusted)."""
    if not classified:
        return 0.0, []
    share = sum("out_of_distribution" in r.get("review_reasons", []) for r in classified) / len(
        classified
    )
    if share <= max_share:
        return share, []
    return share, [
        {
            "code": OUTSIDE_DOMAIN,
            "message": f"{share:.0%} of the cells are unlike the images this model was "
            f"trained and validated on (limit {max_share:.0%}): the "
            "specimen is outside the validated domain; review every cell",
            "share": round(share, 4),
            "limit": max_share,
        }
    ]


def summarise(
    results: list[dict[str, Any]], classifier: Classifier, max_ood_share: float = 1.0
) -> dict[str, Any]:
    classes = classifier.predictor.classes
    classified = [r for r in results if "error" not in r and r["label"] in classes]
    unknown = [r for r in results if "error" not in r and r["label"] not in classes]
    errors = [r for r in results if "error" in r]
    total = len(classified)
    counts = {c: sum(r["label"] == c for r in classified) for c in classes}
    reasons: dict[str, int] = {}
    for r in errors:
        reasons[r["error"].split(":")[0]] = reasons.get(r["error"].split(":")[0], 0) + 1
    if unknown:
        reasons["not a white blood cell"] = len(unknown)
    ood_share, warnings = domain_warnings(classified, max_ood_share)
    return {
        "classified": total,
        "counts": {
            c: {"count": n, "percent": round(100 * n / total, 1) if total else 0.0}
            for c, n in counts.items()
        },
        "flagged": [
            {
                "filename": r["filename"],
                **({"cell": r["cell"]} if "cell" in r else {}),
                "label": r["label"],
                "review_reasons": r.get("review_reasons", []),
                "confidence": r["confidence"],
                "probabilities": r["probabilities"],
            }
            for r in classified
            if r["needs_review"]
        ],
        "rejected": {
            "count": len(errors) + len(unknown),
            "reasons": reasons,
            "files": [
                {"filename": r["filename"], "error": r.get("error", "not a white blood cell")}
                for r in errors + unknown
            ],
        },
        "review_threshold": classifier.threshold,
        "out_of_distribution_share": round(ood_share, 4),
        "validated_domain": not warnings,
        "warnings": warnings,
        "model": classifier.model_info(),
    }


FHIR_200 = {
    200: {
        "description": "the differential as JSON, or with `?format=fhir` a FHIR R4 Bundle",
        "content": {
            "application/fhir+json": {
                "schema": {"type": "object", "description": "a FHIR R4 Bundle"}
            }
        },
    }
}


@router.post(
    "/differential", responses={**FHIR_200, **ERRORS}, openapi_extra=image_body("files", many=True)
)
async def differential(
    request: Request,
    classifier: ClassifierDep,
    settings: SettingsDep,
    format: str = Query("json", pattern="^(json|fhir)$"),
    cells: str = CELLS,
    bundle: str = Query(
        "collection",
        pattern="^(collection|transaction)$",
        description="FHIR only: `transaction` for a Bundle a FHIR server creates resources "
        "from (the specimen id as Specimen.identifier, created only if new)",
    ),
) -> JSONResponse:
    """Differential count of one specimen's cell images (multipart `files`, optional form
    fields `specimen_id` and `patient`). `?format=fhir` or `Accept: application/fhir+json`
    returns a FHIR R4 Bundle (`&bundle=transaction` to POST it to a FHIR server).
    `?cells=all` counts every white cell of each image (smear fields), not only the most
    prominent."""
    uploads = await read_files(
        request, "files", settings.max_differential, settings.max_image_bytes
    )
    form = await request.form()
    identifiers = {key: checked_identifier(key, form.get(key)) for key in IDENTIFIERS}
    results = await run_in_threadpool(classify_many, classifier, uploads, cells == "all")
    diff = summarise(results, classifier, settings.ood_specimen_share) | identifiers
    wants_fhir = format == "fhir" or "application/fhir+json" in request.headers.get("accept", "")
    if wants_fhir:
        info = classifier.model_info()
        out = differential_bundle(
            diff, f"{info['name']} v{info['version']}", transaction=bundle == "transaction"
        )
        return JSONResponse(out, media_type="application/fhir+json")
    return JSONResponse(diff)
