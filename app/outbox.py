"""The outbox: a signed report's messages, written in the same transaction as the
signature (so a committed signature always has its messages, and a rolled-back one none),
claimed by one delivery worker at a time under a lease, and their outcome.

Claiming sets ``claimed_until`` (a lease) on the oldest due message in one statement; on
PostgreSQL the row is picked ``FOR UPDATE SKIP LOCKED``, so replicas never claim the same
message. A worker that dies mid-send leaves the lease to expire and the message is sent
again, with the same control id (at least once; the receiver drops duplicates by MSH-10 or
by the FHIR report's identifier).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.fhir import specimen_bundle
from app.hl7 import oru_r01
from app.records import Delivery, Specimen, iso, now

REPORT_SYSTEM = "urn:wbc-classifier:report"  # the identifier of each report sent


def enqueue(
    session: Session,
    specimen: Specimen,
    detail: dict[str, Any],
    status: str,
    destinations: list[str],
    device: str,
) -> list[Delivery]:
    """One message per configured destination ("hl7", "fhir") for this report."""
    out = []
    for destination in destinations:
        control_id = uuid.uuid4().hex[:20]
        if destination == "hl7":
            payload = oru_r01(detail, detail["differential"], status, device, control_id)
        else:
            bundle = specimen_bundle(detail, detail["differential"], status, device)
            report = bundle["entry"][1]
            report["resource"]["identifier"].append({"system": REPORT_SYSTEM, "value": control_id})
            report["request"]["ifNoneExist"] = f"identifier={REPORT_SYSTEM}|{control_id}"
            payload = json.dumps(bundle)
        delivery = Delivery(
            specimen_id=specimen.id,
            destination=destination,
            control_id=control_id,
            report_status=status,
            payload=payload,
            status="pending",
            attempts=0,
            next_attempt_at=now(),
        )
        session.add(delivery)
        out.append(delivery)
    return out


def claim(session: Session, lease_s: float, destinations: list[str]) -> Delivery | None:
    """The oldest due message of these destinations, leased to the caller, or None."""
    at = now()
    query = (
        select(Delivery)
        .where(
            Delivery.status == "pending",
            Delivery.destination.in_(destinations),
            Delivery.next_attempt_at <= at,
            (Delivery.claimed_until.is_(None)) | (Delivery.claimed_until < at),
        )
        .order_by(Delivery.id)
        .limit(1)
    )
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    delivery = session.scalar(query)
    if delivery is None:
        return None
    delivery.claimed_until = at + dt.timedelta(seconds=lease_s)
    delivery.attempts += 1
    return delivery


def delivered(session: Session, delivery_id: int) -> None:
    d = session.get(Delivery, delivery_id)
    d.status, d.delivered_at, d.claimed_until, d.last_error = "delivered", now(), None, None


def failed(
    session: Session,
    delivery_id: int,
    error: str,
    retry: bool,
    max_attempts: int,
    backoff_s: float,
    max_backoff_s: float = 600.0,
) -> None:
    """A try that did not deliver: retried later (exponential backoff with jitter) unless
    the destination refused it for good or the attempts are spent: then parked as failed."""
    d = session.get(Delivery, delivery_id)
    d.last_error, d.claimed_until = error[:2000], None
    if not retry or d.attempts >= max_attempts:
        d.status = "failed"
        return
    delay = min(max_backoff_s, backoff_s * 2 ** (d.attempts - 1)) * random.uniform(0.5, 1.0)
    d.next_attempt_at = now() + dt.timedelta(seconds=delay)


def retry(session: Session, delivery_id: int) -> Delivery | None:
    """An admin sends a failed message again (same control id), from its first try."""
    d = session.get(Delivery, delivery_id)
    if d is None:
        return None
    d.status, d.attempts, d.next_attempt_at, d.claimed_until = "pending", 0, now(), None
    return d


def as_json(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "specimen_id": d.specimen_id,
        "destination": d.destination,
        "control_id": d.control_id,
        "report_status": d.report_status,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at),
        "last_error": d.last_error,
        "created_at": iso(d.created_at),
        "delivered_at": iso(d.delivered_at),
    }
