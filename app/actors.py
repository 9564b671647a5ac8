"""Who is asking: a machine with an API key (the LIS, an analyser) or a signed-in person
(a session cookie, and for every state change its CSRF token). Machines create specimens,
add images and read; only a person reclassifies, finalises or amends, and the audit names
them."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from app.accounts import (
    COOKIE,
    Person,
    Unauthenticated,
    check_csrf,
    person_of,
    record_failure,
    sign_in,
)
from app.db import Database
from app.errors import TemporarilyUnavailable
from app.security import configured_keys, given_keys, matches

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Actor:
    person: Person | None

    @property
    def audit_name(self) -> str:
        return f"user:{self.person.name}" if self.person else "api-key"


def database(request: Request) -> Database:
    db = getattr(request.app.state, "db", None)
    if db is None:
        raise TemporarilyUnavailable(
            getattr(request.app.state, "db_error", None) or "the database is not available"
        )
    return db


def _signed_in(request: Request, db: Database) -> Person | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    with db.session() as session:
        person = person_of(session, token)
    if person is None:
        raise Unauthenticated("the session has ended or its account was deleted: sign in again")
    if request.method not in SAFE_METHODS:
        check_csrf(person, request.headers.get("x-csrf-token"))
    return person


def machine_or_person(request: Request) -> Actor:
    """A machine with a valid API key (a browser cannot add that header across sites, so
    no CSRF token is needed), else a signed-in person (cookie, CSRF on changes). No keys
    configured and nobody signed in: the open service's anonymous machine."""
    db = database(request)
    keys = configured_keys(request.app.state.settings)
    headers = {k.lower().encode(): v.encode() for k, v in request.headers.items()}
    if keys and matches(given_keys(headers), keys):
        return Actor(None)
    person = _signed_in(request, db)
    if person is not None:
        return Actor(person)
    if keys:
        raise Unauthenticated("sign in, or send an API key")
    return Actor(None)


def signed_in_person(request: Request) -> Person:
    """Only a person may do this: a valid session cookie and, for a change, its CSRF token."""
    person = _signed_in(request, database(request))
    if person is None:
        raise Unauthenticated(
            "a reviewer must sign in (POST /auth/login) to do this; API keys cannot"
        )
    return person


async def sign_in_request(request: Request, name: str, password: str) -> tuple[str, Person]:
    """Sign ``name`` in for this request's client: (cookie token, person). A wrong name or
    password is recorded (in its own transaction: the sign-in's is rolled back) and raised."""
    db = database(request)
    settings = request.app.state.settings
    address = request.client.host if request.client else "unknown"

    def work() -> tuple[str, Person]:
        with db.session() as session:
            return sign_in(
                session,
                name,
                password,
                address,
                settings.session_hours,
                settings.login_max_failures,
                settings.login_window_s,
            )

    def failed() -> None:
        with db.session() as session:
            record_failure(session, name, address)

    try:
        return await run_in_threadpool(work)
    except Unauthenticated:
        await run_in_threadpool(failed)
        raise


def set_session_cookie(response: Response, token: str, settings: object) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(settings.session_hours * 3600),  # type: ignore[attr-defined]
        httponly=True,
        samesite="strict",
        secure=settings.cookie_secure,  # type: ignore[attr-defined]
        path="/",
    )
