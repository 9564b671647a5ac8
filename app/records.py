"""What the service keeps: specimens, their cells, the audit trail, reviewer accounts and
their sessions (SQLAlchemy 2 typed ORM; the schema changes only through the migrations in
``app/migrations``).

Cell crops (150x150 PNG, about 40 KB) live in the database beside their cell: one
transaction stores the crop with the machine's call, every replica reads the same rows, and
one database backup holds a specimen whole. A shared storage directory would need its own
backup and could disagree with the rows after a crash.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def iso(value: dt.datetime | None) -> str | None:
    """A stored time as ISO 8601 in UTC (SQLite gives times back without their zone)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat(timespec="seconds")


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))  # reviewer | admin
    password_hash: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=now)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class LoginSession(Base):
    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the cookie
    csrf_token: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    user: Mapped[User] = relationship()


class LoginFailure(Base):
    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=now)

    __table_args__ = (Index("ix_login_failures_name_at", "name", "at"),)


class Specimen(Base):
    __tablename__ = "specimens"

    id: Mapped[int] = mapped_column(primary_key=True)
    accession: Mapped[str] = mapped_column(String(64), unique=True)
    patient: Mapped[str | None] = mapped_column(String(64))
    collected_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | final
    version: Mapped[int] = mapped_column(Integer, default=1)  # bumped by every change
    amendments: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=now)
    finalised_by: Mapped[str | None] = mapped_column(String(64))
    finalised_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    cells: Mapped[list[Cell]] = relationship(
        back_populates="specimen", order_by="Cell.id", lazy="selectin"
    )


class Cell(Base):
    __tablename__ = "cells"

    id: Mapped[int] = mapped_column(primary_key=True)
    specimen_id: Mapped[int] = mapped_column(ForeignKey("specimens.id"), index=True)
    source: Mapped[str] = mapped_column(String(255))  # the upload's file name, sanitised
    image_png: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    machine_label: Mapped[str] = mapped_column(String(16))
    label: Mapped[str] = mapped_column(String(16))  # the current label
    probabilities: Mapped[dict[str, Any]] = mapped_column(JSON)
    review_reasons: Mapped[list[Any]] = mapped_column(JSON)
    ood_score: Mapped[float | None] = mapped_column(Float)
    model_version: Mapped[str] = mapped_column(String(32))
    changed_by: Mapped[str | None] = mapped_column(String(64))
    changed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    specimen: Mapped[Specimen] = relationship(back_populates="cells")


class AuditEvent(Base):
    """Append-only: nothing updates or deletes a row (``app.specimens`` only inserts; on
    PostgreSQL a trigger refuses UPDATE and DELETE)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    specimen_id: Mapped[int] = mapped_column(ForeignKey("specimens.id"), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=now)
    actor: Mapped[str] = mapped_column(String(80))  # "user:NAME" or "api-key"
    action: Mapped[str] = mapped_column(String(32))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    model_version: Mapped[str | None] = mapped_column(String(32))
    note: Mapped[str | None] = mapped_column(Text)


class Delivery(Base):
    """One message to one destination (the outbox): written in the transaction that signs
    the specimen, sent by ``app.delivery``; ``control_id`` stays the same across retries
    (HL7 MSH-10; the FHIR bundle's identifier) so the receiver can drop duplicates."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(primary_key=True)
    specimen_id: Mapped[int] = mapped_column(ForeignKey("specimens.id"))
    destination: Mapped[str] = mapped_column(String(16))
    control_id: Mapped[str] = mapped_column(String(64))
    report_status: Mapped[str] = mapped_column(String(16))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=now)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=now)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
