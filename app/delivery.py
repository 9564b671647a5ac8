"""Sending the outbox (app/outbox.py) to the LIS: HL7 v2 over MLLP and FHIR R4 REST.

- MLLP (``WBC_HL7_MLLP_ADDRESS=host:port``): the message framed in 0x0B ... 0x1C 0x0D, then
  the ACK read back and parsed with hl7apy: MSA-1 ``AA`` (or ``CA``) delivered; ``AE``/``AR``
  (``CE``/``CR``) refused: failed, its error recorded, not retried; no ACK, a timeout or a
  refused connection: retried.
- FHIR (``WBC_FHIR_BASE_URL``, optional ``WBC_FHIR_TOKEN``): the transaction Bundle POSTed
  to the base URL; 2xx delivered; 4xx failed and recorded; 5xx and timeouts retried.

Each worker process runs one loop (``run``): claim the oldest due message, send it in a
work thread, record the outcome; the API never waits on a destination.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass
from typing import Any

from app import outbox
from app.observability import DELIVERIES, OUTBOX_OLDEST, OUTBOX_PENDING

log = logging.getLogger("app.delivery")
START, END = b"\x0b", b"\x1c\x0d"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    retry: bool
    error: str = ""


def send_mllp(address: str, payload: str, timeout_s: float) -> Outcome:
    from hl7apy.parser import parse_message

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.sendall(START + payload.encode("utf-8") + END)
            reply = b""
            while END not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        return Outcome(False, True, f"MLLP {address}: {type(exc).__name__}: {exc}")
    if END not in reply:
        return Outcome(False, True, f"MLLP {address}: no ACK")
    text = reply.split(START, 1)[-1].split(END, 1)[0].decode("utf-8", "replace")
    try:
        ack = parse_message(text.replace("\n", "\r").strip("\r"), find_groups=False)
        code = ack.msa.msa_1.value
        detail = ack.msa.msa_3.value if ack.msa.msa_3.value else ""
    except Exception as exc:  # noqa: BLE001 - an unreadable ACK is no ACK
        return Outcome(False, True, f"MLLP {address}: unreadable ACK ({type(exc).__name__})")
    if code in ("AA", "CA"):
        return Outcome(True, False)
    return Outcome(False, False, f"MLLP {address}: {code} {detail}".strip())


def send_fhir(base_url: str, token: str | None, payload: str, timeout_s: float) -> Outcome:
    import httpx  # here, as hl7apy above: with its command line, 0.1 s of every worker's start

    headers = {"content-type": "application/fhir+json", "accept": "application/fhir+json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        r = httpx.post(base_url.rstrip("/"), content=payload, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return Outcome(False, True, f"FHIR {base_url}: {type(exc).__name__}")
    if r.is_success:
        return Outcome(True, False)
    error = f"FHIR {base_url}: {r.status_code} {r.text[:300]}"
    return Outcome(False, r.status_code >= 500 or r.status_code == 429, error)


def destinations(settings: Any) -> list[str]:
    out = []
    if settings.hl7_mllp_address:
        out.append("hl7")
    if settings.fhir_base_url:
        out.append("fhir")
    return out


def send(settings: Any, destination: str, payload: str) -> Outcome:
    if destination == "hl7":
        return send_mllp(settings.hl7_mllp_address, payload, settings.delivery_timeout_s)
    return send_fhir(
        settings.fhir_base_url, settings.fhir_token, payload, settings.delivery_timeout_s
    )


def deliver_one(db: Any, settings: Any) -> bool:
    """Claim, send and record one due message; False when none is due."""
    wanted = destinations(settings)
    if not wanted:
        return False
    with db.session() as session:
        claimed = outbox.claim(session, settings.delivery_lease_s, wanted)
        if claimed is None:
            return False
        delivery_id, destination, payload = claimed.id, claimed.destination, claimed.payload
    result = send(settings, destination, payload)
    with db.session() as session:
        if result.ok:
            outbox.delivered(session, delivery_id)
        else:
            outbox.failed(
                session,
                delivery_id,
                result.error,
                result.retry,
                settings.delivery_max_attempts,
                settings.delivery_backoff_s,
            )
    DELIVERIES.labels(
        destination, "delivered" if result.ok else ("retry" if result.retry else "failed")
    ).inc()
    if not result.ok:
        log.warning("delivery %s to %s: %s", delivery_id, destination, result.error)
    return True


def queue_stats(db: Any) -> None:
    from sqlalchemy import func, select

    from app.records import Delivery, now

    with db.session() as session:
        pending, oldest = session.execute(
            select(func.count(), func.min(Delivery.created_at)).where(Delivery.status == "pending")
        ).one()
    OUTBOX_PENDING.set(pending or 0)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=now().tzinfo)
    OUTBOX_OLDEST.set((now() - oldest).total_seconds() if oldest else 0.0)


async def run(app: Any) -> None:
    """The worker's delivery loop (a task for the worker's life)."""
    settings = app.state.settings
    if not destinations(settings):
        return
    idle = 0
    while True:
        db = getattr(app.state, "db", None)
        if db is None:
            await asyncio.sleep(settings.delivery_poll_s)
            continue
        try:
            busy = await asyncio.to_thread(deliver_one, db, settings)  # not the work threads
            if idle % 20 == 0 or busy:
                await asyncio.to_thread(queue_stats, db)
        except Exception:  # noqa: BLE001 - the loop outlives a database hiccup
            log.exception("delivery loop")
            busy = False
        idle = 0 if busy else idle + 1
        if not busy:
            await asyncio.sleep(settings.delivery_poll_s)
