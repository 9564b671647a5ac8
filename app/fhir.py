"""FHIR R4 output for a WBC differential: a Bundle with a DiagnosticReport and one
Observation per cell type.

LOINC codes for "<type>/100 leukocytes in Blood by Automated count" (checked against
the LOINC table, loinc.org, part of the LOINC 2.7x releases):
770-8 neutrophils, 736-9 lymphocytes, 5905-5 monocytes, 713-8 eosinophils.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

LOINC = "http://loinc.org"
LOINC_CODES: dict[str, tuple[str, str]] = {
    "neutrophil": ("770-8", "Neutrophils/100 leukocytes in Blood by Automated count"),
    "lymphocyte": ("736-9", "Lymphocytes/100 leukocytes in Blood by Automated count"),
    "monocyte": ("5905-5", "Monocytes/100 leukocytes in Blood by Automated count"),
    "eosinophil": ("713-8", "Eosinophils/100 leukocytes in Blood by Automated count"),
}
PANEL = ("57023-4", "Auto Differential panel - Blood")
UCUM = "http://unitsofmeasure.org"
# Not in a standard code system: the service's own, for the LIS to act on.
REVIEW_SYSTEM = "urn:wbc-classifier:review"
OUTSIDE_DOMAIN = {
    "system": REVIEW_SYSTEM,
    "code": "outside-validated-domain",
    "display": "Images outside the model's validated domain: review every cell",
}


# What every DiagnosticReport here is: a laboratory auto differential panel.
REPORT_KIND: dict[str, Any] = {
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0074",
                    "code": "LAB",
                    "display": "Laboratory",
                }
            ]
        }
    ],
    "code": {"coding": [{"system": LOINC, "code": PANEL[0], "display": PANEL[1]}]},
}


def _ref(resource_type: str, value: str | None) -> dict[str, str] | None:
    if not value:
        return None
    return {"reference": value if "/" in value else f"{resource_type}/{value}"}


def observation(
    cls: str,
    entry: dict[str, Any],
    classified: int,
    status: str,
    when: str,
    device: dict[str, str],
    notes: list[str],
    outside: bool = False,
) -> dict[str, Any]:
    """One Observation: a class's percent of the leukocytes counted (absent, with a
    reason, when nothing was counted)."""
    code, display = LOINC_CODES[cls]
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": str(uuid.uuid4()),
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                        "display": "Laboratory",
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": LOINC, "code": code, "display": display}],
            "text": f"{cls.capitalize()}s/100 leukocytes",
        },
        "effectiveDateTime": when,
        **(
            {"valueQuantity": {"value": entry["percent"], "unit": "%", "system": UCUM, "code": "%"}}
            if classified
            else {
                "dataAbsentReason": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/data-absent-reason",
                            "code": "error",
                            "display": "Error",
                        }
                    ],
                    "text": "no image of the specimen could be classified",
                }
            }
        ),
        "device": device,
        "note": [{"text": f"{entry['count']} of {classified} cells counted"}]
        + [{"text": n} for n in notes],
        "component": [
            {
                "code": {"text": "cells counted"},
                "valueQuantity": {
                    "value": entry["count"],
                    "unit": "cells",
                    "system": UCUM,
                    "code": "{cells}",
                },
            }
        ],
    }
    if outside:
        obs["interpretation"] = [{"coding": [OUTSIDE_DOMAIN], "text": OUTSIDE_DOMAIN["display"]}]
    return obs


def differential_bundle(
    diff: dict[str, Any], device_name: str, transaction: bool = False
) -> dict[str, Any]:
    """A FHIR R4 Bundle for one specimen's differential: a ``collection`` (the default,
    stored as is), or with ``transaction`` one a FHIR server creates resources from, the
    specimen id as ``Specimen.identifier`` with a conditional create (``as_transaction``)."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    subject = _ref("Patient", diff.get("patient"))
    specimen = _ref("Specimen", diff.get("specimen_id"))
    device = {"display": device_name}
    outside = bool(diff.get("warnings"))
    final = not diff["flagged"] and not outside and diff["classified"] > 0
    status = "final" if final else "preliminary"
    warning_text = " ".join(w["message"] for w in diff.get("warnings", []))
    observations = []
    for cls in LOINC_CODES:
        obs = observation(
            cls,
            diff["counts"][cls],
            diff["classified"],
            status,
            now,
            device,
            [warning_text] if outside else [],
            outside,
        )
        if subject:
            obs["subject"] = subject
        if specimen:
            obs["specimen"] = specimen
        observations.append(obs)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": str(uuid.uuid4()),
        "status": status,
        **REPORT_KIND,
        "issued": now,
        "effectiveDateTime": now,
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
        "conclusion": (
            f"{diff['classified']} cells classified, {len(diff['flagged'])} flagged "
            f"for review, {diff['rejected']['count']} images rejected. "
            f"Model {device_name}." + (f" {warning_text}" if outside else "")
        ),
    }
    if outside:
        report["conclusionCode"] = [{"coding": [OUTSIDE_DOMAIN], "text": OUTSIDE_DOMAIN["display"]}]
    if subject:
        report["subject"] = subject
    if specimen:
        report["specimen"] = [specimen]
    resources = [report, *observations]
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "timestamp": now,
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources],
    }
    return as_transaction(bundle, diff.get("specimen_id")) if transaction else bundle


def as_transaction(bundle: dict[str, Any], accession: str | None) -> dict[str, Any]:
    """A collection Bundle as a transaction: every resource POSTed; the specimen (when its
    id is known) created only if none has that identifier, and referenced by the others."""
    entries = bundle["entry"]
    if accession:
        identifier = {"system": IDENTIFIER_SYSTEM, "value": accession}
        specimen = {
            "resourceType": "Specimen",
            "id": str(uuid.uuid4()),
            "identifier": [identifier],
            "accessionIdentifier": identifier,
        }
        ref = {"reference": f"urn:uuid:{specimen['id']}"}
        for entry in entries:
            resource = entry["resource"]
            if "specimen" in resource:
                resource["specimen"] = [ref] if isinstance(resource["specimen"], list) else ref
        entries = [
            {
                "fullUrl": ref["reference"],
                "resource": specimen,
                "request": {
                    "method": "POST",
                    "url": "Specimen",
                    "ifNoneExist": f"identifier={IDENTIFIER_SYSTEM}|{accession}",
                },
            }
        ] + [
            {**e, "request": {"method": "POST", "url": e["resource"]["resourceType"]}}
            for e in entries
        ]
    else:
        entries = [
            {**e, "request": {"method": "POST", "url": e["resource"]["resourceType"]}}
            for e in entries
        ]
    return {**bundle, "type": "transaction", "entry": entries}


IDENTIFIER_SYSTEM = "urn:wbc-classifier:accession"  # the LIS's accession numbers


def specimen_bundle(
    specimen: dict[str, Any], diff: dict[str, Any], status: str, device_name: str
) -> dict[str, Any]:
    """A FHIR R4 transaction Bundle for a stored specimen (``app.specimens.detail``): the
    Specimen, created only if none has its accession (``ifNoneExist``), the
    DiagnosticReport (``status``: preliminary, final or amended; the signing reviewer as
    performer) and one Observation per class over the reviewed labels."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    device = {"display": device_name}
    identifier = {"system": IDENTIFIER_SYSTEM, "value": specimen["accession"]}
    specimen_res: dict[str, Any] = {
        "resourceType": "Specimen",
        "id": str(uuid.uuid4()),
        "identifier": [identifier],
        "accessionIdentifier": identifier,
        "type": {"text": "Peripheral blood smear"},
    }
    subject = _ref("Patient", specimen.get("patient"))
    if subject:
        specimen_res["subject"] = subject
    if specimen.get("collected_at"):
        specimen_res["collection"] = {"collectedDateTime": specimen["collected_at"]}
    specimen_ref = {"reference": f"urn:uuid:{specimen_res['id']}"}
    observations = []
    for cls in LOINC_CODES:
        obs = observation(cls, diff["counts"][cls], diff["classified"], status, now, device, [])
        obs["specimen"] = specimen_ref
        if subject:
            obs["subject"] = subject
        observations.append(obs)
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": str(uuid.uuid4()),
        "identifier": [identifier],
        "status": status,
        **REPORT_KIND,
        "issued": now,
        "effectiveDateTime": specimen.get("collected_at") or now,
        "specimen": [specimen_ref],
        "result": [{"reference": f"urn:uuid:{o['id']}"} for o in observations],
        "conclusion": (
            f"{diff['classified']} cells counted, {diff['reclassified']} reclassified by the "
            f"reviewer, {diff['flagged']} flagged by the model. Model {device_name}."
        ),
    }
    if subject:
        report["subject"] = subject
    if specimen.get("finalised_by") and status != "preliminary":
        report["resultsInterpreter"] = [{"display": specimen["finalised_by"]}]
        report["performer"] = [{"display": specimen["finalised_by"]}]
    entries = [
        {
            "fullUrl": f"urn:uuid:{specimen_res['id']}",
            "resource": specimen_res,
            "request": {
                "method": "POST",
                "url": "Specimen",
                "ifNoneExist": f"identifier={IDENTIFIER_SYSTEM}|{specimen['accession']}",
            },
        },
        {
            "fullUrl": f"urn:uuid:{report['id']}",
            "resource": report,
            "request": {"method": "POST", "url": "DiagnosticReport"},
        },
    ] + [
        {
            "fullUrl": f"urn:uuid:{o['id']}",
            "resource": o,
            "request": {"method": "POST", "url": "Observation"},
        }
        for o in observations
    ]
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "transaction",
        "timestamp": now,
        "entry": entries,
    }
