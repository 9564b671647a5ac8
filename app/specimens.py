"""A specimen's life: created by the LIS, cells added and classified, reclassified by a
reviewer, finalised (signed), amended with a reason. Every change bumps the specimen's
``version`` (a stale version is refused: two reviewers never overwrite each other silently)
and appends an audit event in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any

import numpy as np
from PIL import Image
from sqlalchemy import String, case, cast, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.classifier import UNKNOWN
from app.errors import InvalidField, MissingField, ServiceError
from app.records import AuditEvent, Cell, Specimen, iso, now
from wbc_core.classes import CLASSES

ACCESSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FHIR_ID = re.compile(r"^[A-Za-z0-9.-]{1,64}$")


class NotFound(ServiceError):
    status_code = 404


class Conflict(ServiceError):
    status_code = 409

    def __init__(self, detail: str, current: dict[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.current = current


def check_accession(value: object) -> str:
    if not isinstance(value, str) or not ACCESSION.match(value):
        raise InvalidField(
            "accession must be 1-64 letters, digits, '.', '_' or '-', starting with a letter "
            "or digit"
        )
    return value


def check_patient(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not FHIR_ID.match(value.removeprefix("Patient/")):
        raise InvalidField("patient must be a FHIR id (letters, digits, '-', '.'; 1-64)")
    return value.removeprefix("Patient/")


def check_version(value: object) -> int:
    if value is None:
        raise MissingField("version is required: the specimen's version you last read")
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 2**31 - 1:
        raise InvalidField("version must be a positive integer (the specimen's version)")
    return value


def check_label(value: object) -> str:
    if value not in (*CLASSES, UNKNOWN):
        raise InvalidField(f"label must be one of {', '.join((*CLASSES, UNKNOWN))}")
    return str(value)


def audit(
    session: Session,
    specimen_id: int,
    actor: str,
    action: str,
    detail: dict[str, Any],
    model_version: str | None = None,
    note: str | None = None,
) -> None:
    session.add(
        AuditEvent(
            specimen_id=specimen_id,
            actor=actor,
            action=action,
            detail=detail,
            model_version=model_version,
            note=note,
        )
    )


def create(
    session: Session,
    accession: str,
    patient: str | None,
    collected_at: dt.datetime | None,
    actor: str,
) -> Specimen:
    existing = session.scalar(select(Specimen).where(Specimen.accession == accession))
    if existing is not None:
        raise Conflict(f"accession {accession} exists: specimen {existing.id}", summary(existing))
    specimen = Specimen(
        accession=accession,
        patient=patient,
        collected_at=collected_at,
        status="open",
        version=1,
        amendments=0,
    )
    session.add(specimen)
    try:
        session.flush()
    except IntegrityError as exc:  # a concurrent twin won the race
        raise Conflict(f"accession {accession} exists") from exc
    audit(session, specimen.id, actor, "created", {"accession": accession})
    return specimen


def get(session: Session, specimen_id: int) -> Specimen:
    specimen = session.get(Specimen, specimen_id)
    if specimen is None:
        raise NotFound(f"no specimen {specimen_id}")
    return specimen


def bump(session: Session, specimen: Specimen, version: int) -> None:
    """Move the specimen to its next version if it is still at ``version`` (one atomic
    UPDATE on every database), else 409 with its current state."""
    done = session.execute(
        update(Specimen)
        .where(Specimen.id == specimen.id, Specimen.version == version)
        .values(version=Specimen.version + 1)
        .execution_options(synchronize_session=False)
    ).rowcount
    if done != 1:
        session.refresh(specimen)
        raise Conflict(
            f"specimen {specimen.id} is at version {specimen.version}, not {version}: "
            "someone changed it; read it again",
            summary(specimen),
        )
    session.refresh(specimen)


def require_open(specimen: Specimen) -> None:
    if specimen.status == "final":
        raise Conflict(
            f"specimen {specimen.id} is final: amend it (with a reason) before changing it",
            summary(specimen),
        )


def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def add_cells(
    session: Session,
    specimen: Specimen,
    classified: list[tuple[str, np.ndarray, dict[str, Any]]],
    actor: str,
) -> list[Cell]:
    """Store each (source file, crop, classification) as a cell of an open specimen."""
    require_open(specimen)
    cells = []
    for source, crop, result in classified:
        cell = Cell(
            specimen_id=specimen.id,
            source=source[:255],
            image_png=png(crop),
            machine_label=result["label"],
            label=result["label"],
            probabilities=result["probabilities"],
            review_reasons=result["review_reasons"],
            ood_score=result.get("ood_score"),
            model_version=result["model"]["version"],
        )
        session.add(cell)
        cells.append(cell)
    session.flush()
    versions = sorted({c.model_version for c in cells})
    session.execute(
        update(Specimen).where(Specimen.id == specimen.id).values(version=Specimen.version + 1)
    )
    audit(
        session,
        specimen.id,
        actor,
        "images_added",
        {"cells": [c.id for c in cells], "count": len(cells)},
        model_version=",".join(versions) or None,
    )
    session.refresh(specimen)
    return cells


def reclassify(
    session: Session, specimen: Specimen, cell_id: int, label: str, version: int, person: str
) -> Cell:
    cell = session.get(Cell, cell_id)
    if cell is None or cell.specimen_id != specimen.id:
        raise NotFound(f"no cell {cell_id} in specimen {specimen.id}")
    require_open(specimen)
    bump(session, specimen, version)
    before = cell.label
    cell.label, cell.changed_by, cell.changed_at = label, person, now()
    audit(
        session,
        specimen.id,
        f"user:{person}",
        "reclassified",
        {"cell": cell.id, "from": before, "to": label, "machine_label": cell.machine_label},
        model_version=cell.model_version,
    )
    return cell


def finalise(
    session: Session,
    specimen: Specimen,
    version: int,
    person: str,
    destinations: list[str] | tuple[str, ...] = (),
    device: str = "",
) -> Specimen:
    """Sign: final, by ``person``, now; the report's messages to ``destinations`` (the
    outbox) are written in the same transaction."""
    require_open(specimen)
    if not specimen.cells:
        raise Conflict(f"specimen {specimen.id} has no cells to sign", summary(specimen))
    bump(session, specimen, version)
    specimen.status, specimen.finalised_by, specimen.finalised_at = "final", person, now()
    audit(
        session,
        specimen.id,
        f"user:{person}",
        "finalised",
        {"differential": differential(specimen)["counts"], "amended": specimen.amendments > 0},
    )
    if destinations:
        from app import outbox

        outbox.enqueue(
            session, specimen, detail(specimen), report_status(specimen), list(destinations), device
        )
    return specimen


def amend(
    session: Session, specimen: Specimen, version: int, reason: object, person: str
) -> Specimen:
    if not isinstance(reason, str) or not reason.strip():
        raise MissingField("reason is required to amend a final specimen")
    if specimen.status != "final":
        raise Conflict(f"specimen {specimen.id} is not final: nothing to amend", summary(specimen))
    bump(session, specimen, version)
    specimen.status = "open"
    specimen.amendments += 1
    audit(
        session,
        specimen.id,
        f"user:{person}",
        "amended",
        {"reason": reason.strip()[:1000]},
        note=reason.strip()[:1000],
    )
    return specimen


def report_status(specimen: Specimen) -> str:
    """FHIR DiagnosticReport.status: preliminary while open, final when signed, amended
    when signed again after an amendment."""
    if specimen.status != "final":
        return "preliminary"
    return "amended" if specimen.amendments else "final"


def differential(specimen: Specimen) -> dict[str, Any]:
    """Counts and percent over the current labels; cells labelled unknown are not counted."""
    counted = [c for c in specimen.cells if c.label != UNKNOWN]
    total = len(counted)
    counts = {
        cls: {
            "count": (n := sum(1 for c in counted if c.label == cls)),
            "percent": round(100.0 * n / total, 1) if total else 0.0,
        }
        for cls in CLASSES
    }
    return {
        "counts": counts,
        "classified": total,
        "unknown": len(specimen.cells) - total,
        "flagged": sum(1 for c in specimen.cells if c.review_reasons),
        "reclassified": sum(1 for c in specimen.cells if c.label != c.machine_label),
    }


def summary(specimen: Specimen) -> dict[str, Any]:
    return {
        "id": specimen.id,
        "accession": specimen.accession,
        "patient": specimen.patient,
        "collected_at": iso(specimen.collected_at),
        "status": specimen.status,
        "version": specimen.version,
        "amendments": specimen.amendments,
        "created_at": iso(specimen.created_at),
        "finalised_by": specimen.finalised_by,
        "finalised_at": iso(specimen.finalised_at),
    }


def cell_json(cell: Cell) -> dict[str, Any]:
    return {
        "id": cell.id,
        "source": cell.source,
        "machine_label": cell.machine_label,
        "label": cell.label,
        "probabilities": cell.probabilities,
        "review_reasons": cell.review_reasons,
        "needs_review": bool(cell.review_reasons),
        "ood_score": cell.ood_score,
        "model_version": cell.model_version,
        "changed_by": cell.changed_by,
        "changed_at": iso(cell.changed_at),
    }


def detail(specimen: Specimen) -> dict[str, Any]:
    return {
        **summary(specimen),
        "differential": differential(specimen),
        "cells": [cell_json(c) for c in specimen.cells],
    }


def listing(
    session: Session, status: str | None, accession: str | None, limit: int, offset: int
) -> dict[str, Any]:
    query = select(Specimen)
    if status:
        query = query.where(Specimen.status == status)
    if accession:
        query = query.where(Specimen.accession == accession)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Specimen.id.desc()).limit(limit).offset(offset))
    return {
        "total": total,
        "limit": limit,
        "offset": offset,
        "specimens": [summary(s) for s in rows],
    }


SIGNED_PER_PAGE = 100  # signed specimens on one page of the review work list


def worklist(session: Session, signed_offset: int = 0) -> dict[str, Any]:
    """The review work list: every open specimen, oldest first, then a page of the signed
    ones (``listing``'s, newest first); each with its number of cells and of flagged
    cells, counted by the database (no cell is loaded)."""
    open_rows = session.scalars(
        select(Specimen).where(Specimen.status == "open").order_by(Specimen.created_at)
    )
    signed = listing(session, "final", None, SIGNED_PER_PAGE, signed_offset)
    rows = [summary(s) for s in open_rows] + signed["specimens"]
    flagged = case((cast(Cell.review_reasons, String) != "[]", 1), else_=0)
    counts = {
        specimen_id: (cells, int(flags or 0))
        for specimen_id, cells, flags in session.execute(
            select(Cell.specimen_id, func.count(), func.sum(flagged))
            .where(Cell.specimen_id.in_([r["id"] for r in rows]))
            .group_by(Cell.specimen_id)
        )
    }
    for r in rows:
        r["cells"], r["flagged"] = counts.get(r["id"], (0, 0))
    return {
        "specimens": rows,
        "signed_total": signed["total"],
        "signed_offset": signed_offset,
        "signed_shown": len(signed["specimens"]),
    }


def audit_json(session: Session, specimen: Specimen) -> list[dict[str, Any]]:
    events = session.scalars(
        select(AuditEvent).where(AuditEvent.specimen_id == specimen.id).order_by(AuditEvent.id)
    )
    return [
        {
            "id": e.id,
            "at": iso(e.at),
            "actor": e.actor,
            "action": e.action,
            "detail": e.detail,
            "model_version": e.model_version,
        }
        for e in events
    ]
