"""Reviewer accounts and their sessions.

Passwords are hashed with Argon2id (argon2-cffi) and never logged. Signing in stores a
session (the SHA-256 of a random cookie token, a CSRF token, an expiry) and sets the token
as an HttpOnly, SameSite=Strict cookie; a state change made with that cookie must carry
the CSRF token in ``X-CSRF-Token``. Failed sign-ins are counted per account and per address
in the database (so every replica sees them) and refused beyond
``WBC_LOGIN_MAX_FAILURES`` per ``WBC_LOGIN_WINDOW_S``.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.errors import ServiceError
from app.records import LoginFailure, LoginSession, User, now

COOKIE = "wbc_session"
ROLES = ("reviewer", "admin")
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
HASHER = PasswordHasher()


@functools.cache
def dummy_hash() -> str:
    """Verified when the account does not exist, so that the time taken does not tell.
    Made at the first sign-in, not at import: an Argon2 hash takes 0.1 s of CPU, which every
    worker would otherwise spend before it is ready (so a worker's first sign-in naming no
    account takes one hash longer than the rest)."""
    return HASHER.hash("not a password of anyone")


class Unauthenticated(ServiceError):
    status_code = 401


class Forbidden(ServiceError):
    status_code = 403


class TooManyFailures(ServiceError):
    status_code = 429
    headers = {"Retry-After": "60"}


@dataclass(frozen=True)
class Person:
    name: str
    role: str
    csrf_token: str


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise ValueError("a user name is 1-64 letters, digits, '.', '_' or '-'")
    return name


def add_user(session: Session, name: str, role: str, password: str) -> User:
    check_name(name)
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if len(password) < 10:
        raise ValueError("a password has at least 10 characters")
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ValueError(f"user {name} exists")
    user = User(name=name, role=role, password_hash=HASHER.hash(password))
    session.add(user)
    return user


def delete_user(session: Session, name: str) -> None:
    """Mark the account deleted: its sessions stop working at once; its name stays in the
    audit trail."""
    user = session.scalar(select(User).where(User.name == name, User.deleted_at.is_(None)))
    if user is None:
        raise ValueError(f"no user {name}")
    user.deleted_at = now()
    session.execute(delete(LoginSession).where(LoginSession.user_id == user.id))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _failures(session: Session, column, value: str, since: dt.datetime) -> int:  # type: ignore[no-untyped-def]
    return (
        session.scalar(
            select(func.count())
            .select_from(LoginFailure)
            .where(column == value, LoginFailure.at > since)
        )
        or 0
    )


def sign_in(
    session: Session,
    name: str,
    password: str,
    address: str,
    hours: float,
    max_failures: int,
    window_s: int,
) -> tuple[str, Person]:
    """A new session for ``name``: (cookie token, person). 401 for a wrong name or
    password (the same message for both), 429 past the failure limit."""
    since = now() - dt.timedelta(seconds=window_s)
    if (
        _failures(session, LoginFailure.name, name[:64], since) >= max_failures
        or _failures(session, LoginFailure.address, address[:64], since) >= max_failures
    ):
        raise TooManyFailures(
            f"too many failed sign-ins for this account or address; retry in {window_s // 60} "
            "minutes"
        )
    user = session.scalar(select(User).where(User.name == name, User.deleted_at.is_(None)))
    try:
        ok = HASHER.verify(user.password_hash if user else dummy_hash(), password) and user
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:  # the caller records the failure (this transaction is rolled back)
        raise Unauthenticated("wrong user name or password")
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    session.add(
        LoginSession(
            token_hash=_digest(token),
            csrf_token=csrf,
            user_id=user.id,
            expires_at=now() + dt.timedelta(hours=hours),
        )
    )
    return token, Person(user.name, user.role, csrf)


def person_of(session: Session, token: str | None) -> Person | None:
    """The signed-in person of a cookie token, or None (no, unknown or expired session, or
    a deleted account)."""
    if not token:
        return None
    row = session.scalar(select(LoginSession).where(LoginSession.token_hash == _digest(token)))
    if row is None or row.user.deleted_at is not None:
        return None
    expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=dt.UTC)
    if expires < now():
        return None
    return Person(row.user.name, row.user.role, row.csrf_token)


def check_csrf(person: Person, given: str | None) -> None:
    if not given or not hmac.compare_digest(given.encode(), person.csrf_token.encode()):
        raise Forbidden(
            "missing or wrong CSRF token: send the token /auth/login returned in X-CSRF-Token"
        )


def record_failure(session: Session, name: str, address: str) -> None:
    session.add(LoginFailure(name=name[:64], address=address[:64]))


def sign_out(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(LoginSession).where(LoginSession.token_hash == _digest(token)))
