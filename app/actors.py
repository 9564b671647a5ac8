"""Who is asking: a machine with an API key (the LIS, an analyser) or a signed-in person
(a session cookie, and for every state change its CSRF token). Machines create specimens,
add images and read; only a person reclassifies, finalises or amends, and the audit names
them."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from app.accounts import COOKIE, Person, Unauthenticated, check_csrf, person_of
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
