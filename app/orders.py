"""Inbound orders: an MLLP listener (off by default; ``WBC_HL7_LISTEN_PORT``) that takes an
HL7 v2 ORM^O01 or OML^O21 order from the LIS and opens the specimen it names.

The accession is the order's filler order number (OBR-3, else ORC-3), else its placer
order number (OBR-2, else ORC-2); the patient is PID-3's id. The answer is an ACK: ``AA``
when the specimen exists afterwards (a repeated order gets the same ACK and no twin), ``AE``
with the reason when the order cannot be read or names no usable accession. Each worker
listens on the port (``SO_REUSEPORT``): the unique accession settles any race.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from typing import Any

from sqlalchemy import select

from app import specimens as sp
from app.records import Specimen

log = logging.getLogger("app.orders")
START, END = b"\x0b", b"\x1c\x0d"
ORDER_TYPES = ("ORM^O01", "OML^O21")


def _field(segments: dict[str, list[str]], name: str, index: int) -> str:
    """The first component of field ``index`` of segment ``name`` ("" when absent)."""
    return (_field_parts(segments, name, index) or [""])[0].strip()


def read_order(text: str) -> tuple[str, str, str | None]:
    """(message control id, accession, patient) of an order; ValueError when it is not a
    usable one. Parsed with hl7apy (the message must be valid ER7)."""
    from hl7apy.parser import parse_segments

    segments: dict[str, list[str]] = {}
    for segment in parse_segments(text.replace("\n", "\r").strip("\r")):
        er7 = segment.to_er7()
        fields = er7.split("|")
        if segment.name == "MSH":  # MSH-1 is the separator itself: fields shift by one
            fields = ["MSH", "|", *fields[1:]]
        segments.setdefault(segment.name, fields)
    kind = "^".join(_field_parts(segments, "MSH", 9)[:2])
    control = _field(segments, "MSH", 10)
    if kind not in ORDER_TYPES:
        raise ValueError(f"not an order: {kind or 'no message type'} (send ORM^O01 or OML^O21)")
    accession = (
        _field(segments, "OBR", 3)
        or _field(segments, "ORC", 3)
        or _field(segments, "OBR", 2)
        or _field(segments, "ORC", 2)
    )
    patient = _field(segments, "PID", 3) or None
    return control, accession, patient


def _field_parts(segments: dict[str, list[str]], name: str, index: int) -> list[str]:
    fields = segments.get(name)
    return fields[index].split("^") if fields and len(fields) > index else []


def control_of(text: str) -> str:
    """MSH-10 of a message, read directly: an ACK names it even for an unreadable order."""
    first = text.replace("\n", "\r").split("\r", 1)[0].split("|")
    return first[9].strip()[:64] if first[0] == "MSH" and len(first) > 9 else ""


def ack(control: str, code: str, text: str = "") -> bytes:
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%d%H%M%S")
    message = (
        f"MSH|^~\\&|WBC-CLASSIFIER|LAB|LIS|LAB|{now}||ACK^O01^ACK|{uuid.uuid4().hex[:20]}|P|2.5.1"
        f"\rMSA|{code}|{control}|{text.replace('|', ' ')[:200]}\r"
    )
    return START + message.encode() + END


def open_specimen(db: Any, accession: str, patient: str | None) -> int:
    """The specimen's id: created for this order, or the one an earlier order created."""
    accession = sp.check_accession(accession)
    patient = sp.check_patient(patient) if patient else None
    try:
        with db.session() as session:
            return sp.create(session, accession, patient, None, "lis-order").id
    except sp.Conflict:
        with db.session() as session:
            return session.scalar(select(Specimen.id).where(Specimen.accession == accession))


async def handle(app: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.readuntil(END)
            text = data.split(START, 1)[-1][: -len(END)].decode("utf-8", "replace")
            control = control_of(text)  # answered whatever else is wrong with the order
            try:
                _, accession, patient = read_order(text)
                db = app.state.db
                if db is None:
                    raise ValueError("the database is not available")
                sid = await asyncio.to_thread(open_specimen, db, accession, patient)
                writer.write(ack(control, "AA", f"specimen {sid}"))
            except Exception as exc:  # noqa: BLE001 - whatever it is, the LIS gets an AE
                detail = getattr(exc, "detail", None) or str(exc)
                log.warning("order refused: %s", detail[:200])
                writer.write(ack(control, "AE", detail))
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(app: Any) -> None:
    """Listen for orders for the worker's life (nothing when the port is unset)."""
    port = app.state.settings.hl7_listen_port
    if not port:
        return
    server = await asyncio.start_server(
        lambda r, w: handle(app, r, w),
        app.state.settings.host,
        port,
        reuse_port=True,
        limit=1024 * 1024,
    )
    async with server:
        await server.serve_forever()
