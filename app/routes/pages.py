"""The review pages: sign in, the work list, a specimen's cell gallery (Jinja2, rendered
on the server; app/static/review/review.js adds the keyboard and saves each change through
the specimen API). Every page needs a signed-in reviewer and is sent with a strict
Content-Security-Policy (no inline script, nothing from elsewhere)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from app import specimens as sp
from app.accounts import (
    COOKIE,
    Person,
    TooManyFailures,
    Unauthenticated,
    check_csrf,
    person_of,
    sign_out,
)
from app.actors import database, set_session_cookie, sign_in_request
from app.classifier import UNKNOWN
from app.errors import ServiceError
from wbc_core.classes import CLASSES

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
TITLES = {c: f"{c.capitalize()}s" for c in CLASSES} | {UNKNOWN: "Not classified (not a cell)"}


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    response = templates.TemplateResponse(request, name, context, status_code=status)
    response.headers.update(SECURITY_HEADERS)
    return response


def current_person(request: Request) -> Person | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    with database(request).session() as session:
        return person_of(session, token)


def to_login() -> Response:
    response = RedirectResponse("/login", status_code=303)
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("/favicon.ico")
async def favicon() -> Response:
    """No icon: a quiet 204 rather than a browser's console error."""
    return Response(status_code=204)


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return page(request, "login.html", {"person": None, "error": None})


@router.post("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> Response:
    form = await request.form()
    name, password = str(form.get("username", ""))[:64], str(form.get("password", ""))[:1024]
    try:
        token, _ = await sign_in_request(request, name, password)
    except (Unauthenticated, TooManyFailures) as exc:
        return page(
            request,
            "login.html",
            {"person": None, "error": exc.detail, "username": name},
            exc.status_code,
        )
    response = RedirectResponse("/review", status_code=303)
    set_session_cookie(response, token, request.app.state.settings)
    response.headers.update(SECURITY_HEADERS)
    return response


@router.post("/logout")
async def logout_form(request: Request) -> Response:
    person = await run_in_threadpool(current_person, request)
    if person is not None:
        form = await request.form()
        check_csrf(person, str(form.get("csrf_token", "")))
        token = request.cookies.get(COOKIE)

        def work() -> None:
            with database(request).session() as session:
                sign_out(session, token)

        await run_in_threadpool(work)
    response = to_login()
    response.delete_cookie(COOKIE, path="/")
    return response


def age(created: str | None) -> str:
    if not created:
        return ""
    delta = dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(created)
    hours = delta.total_seconds() / 3600
    return (
        f"{hours * 60:.0f} min"
        if hours < 1
        else f"{hours:.1f} h"
        if hours < 48
        else (f"{hours / 24:.0f} days")
    )


@router.get("/review", response_class=HTMLResponse)
async def worklist(request: Request, signed_offset: int = 0) -> Response:
    person = await run_in_threadpool(current_person, request)
    if person is None:
        return to_login()
    offset = min(max(signed_offset, 0), 1_000_000_000)

    def work() -> dict[str, Any]:
        with database(request).session() as session:
            return sp.worklist(session, offset)

    listing = await run_in_threadpool(work)
    for r in listing["specimens"]:
        r["age"] = age(r["created_at"])
    end = offset + listing["signed_shown"]
    return page(
        request,
        "worklist.html",
        {
            "person": person,
            **listing,
            "newer": max(offset - sp.SIGNED_PER_PAGE, 0) if offset > 0 else None,
            "older": end if end < listing["signed_total"] else None,
        },
    )


def gallery(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells grouped by current label; flagged cells first in each group."""
    groups = []
    for label in (*CLASSES, UNKNOWN):
        mine = [c for c in cells if c["label"] == label]
        mine.sort(key=lambda c: (not c["review_reasons"], c["id"]))
        for c in mine:
            c["confidence"] = max(c["probabilities"].values()) if c["probabilities"] else 0.0
        groups.append({"label": label, "title": TITLES[label], "cells": mine})
    return groups


@router.get("/review/{specimen_id}", response_class=HTMLResponse)
async def specimen_page(specimen_id: int, request: Request, stale: int = 0) -> Response:
    person = await run_in_threadpool(current_person, request)
    if person is None:
        return to_login()

    def work() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        with database(request).session() as session:
            specimen = sp.get(session, specimen_id)
            return sp.detail(specimen), sp.audit_json(session, specimen)

    try:
        detail, audit = await run_in_threadpool(work)
    except sp.NotFound as exc:
        return page(request, "login.html", {"person": person, "error": exc.detail}, 404)
    return page(
        request,
        "specimen.html",
        {
            "person": person,
            "specimen": detail,
            "groups": gallery(detail["cells"]),
            "differential": detail["differential"],
            "audit": audit,
            "stale": bool(stale),
            "message": request.query_params.get("message", "")[:200],
        },
    )


async def signed_form(request: Request) -> tuple[Person | None, Any]:
    person = await run_in_threadpool(current_person, request)
    form = await request.form()
    if person is not None:
        check_csrf(person, str(form.get("csrf_token", "")))
    return person, form


def back(specimen_id: int, **query: str) -> Response:
    suffix = urlencode(query)
    response = RedirectResponse(
        f"/review/{specimen_id}" + (f"?{suffix}" if suffix else ""), status_code=303
    )
    response.headers.update(SECURITY_HEADERS)
    return response


async def change(request: Request, specimen_id: int, action: Any) -> Response:
    person, form = await signed_form(request)
    if person is None:
        return to_login()
    try:
        version = int(str(form.get("version", "")))
    except ValueError:
        return back(specimen_id, message="missing version")

    def work() -> None:
        with database(request).session() as session:
            action(session, sp.get(session, specimen_id), version, person, form)

    try:
        await run_in_threadpool(work)
    except sp.Conflict as exc:
        if "version" in exc.detail:
            return back(specimen_id, stale="1")
        return back(specimen_id, message=exc.detail[:200])
    except ServiceError as exc:
        return back(specimen_id, message=exc.detail[:200])
    return back(specimen_id)


@router.post("/review/{specimen_id}/finalise")
async def finalise_form(specimen_id: int, request: Request) -> Response:
    from app.routes.specimens import delivery_of

    targets, device = delivery_of(request)
    return await change(
        request,
        specimen_id,
        lambda s, spec, v, p, f: sp.finalise(s, spec, v, p.name, targets, device),
    )


@router.post("/review/{specimen_id}/amend")
async def amend_form(specimen_id: int, request: Request) -> Response:
    return await change(
        request,
        specimen_id,
        lambda s, spec, v, p, f: sp.amend(s, spec, v, str(f.get("reason", "")), p.name),
    )
