"""Reviewer sign-in: POST /auth/login (JSON or form: username, password) sets the session
cookie and returns the CSRF token; POST /auth/logout ends the session; GET /auth/me."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.accounts import COOKIE, sign_out
from app.actors import database, set_session_cookie, sign_in_request, signed_in_person
from app.errors import BadRequest, MissingField
from app.schemas import ErrorResponse

router = APIRouter(
    prefix="/auth",
    tags=["reviewers"],
    responses={
        400: {"model": ErrorResponse, "description": "not JSON or a form"},
        401: {"model": ErrorResponse, "description": "wrong user name or password; no session"},
        403: {"model": ErrorResponse, "description": "missing or wrong CSRF token"},
        422: {"model": ErrorResponse, "description": "username or password missing"},
        429: {"model": ErrorResponse, "description": "too many failed sign-ins: wait"},
        503: {"model": ErrorResponse, "description": "the database is not available"},
    },
)

LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "username": {"type": "string", "maxLength": 64},
                        "password": {"type": "string", "maxLength": 1024},
                    },
                },
                "example": {"username": "alice", "password": "a long passphrase"},
            }
            for media in ("application/json", "application/x-www-form-urlencoded")
        },
    }
}


async def credentials(request: Request) -> tuple[str, str]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/json":
        try:
            data = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("the body is not JSON") from exc
    elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        raise BadRequest("send username and password as JSON or as a form")
    if not isinstance(data, dict):
        raise BadRequest("send an object with username and password")
    name, password = data.get("username"), data.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password:
        raise MissingField("username and password are required")
    return name[:64], password[:1024]


@router.post("/login", openapi_extra=LOGIN_BODY)
async def login(request: Request) -> JSONResponse:
    """Sign a reviewer in: an HttpOnly, SameSite=Strict session cookie and, in the body, the
    CSRF token every change made with that cookie must send as ``X-CSRF-Token``."""
    name, password = await credentials(request)
    token, person = await sign_in_request(request, name, password)
    response = JSONResponse(
        {"user": person.name, "role": person.role, "csrf_token": person.csrf_token}
    )
    set_session_cookie(response, token, request.app.state.settings)
    return response


@router.post("/logout")
async def logout(request: Request) -> JSONResponse:
    """End the session (its cookie stops working at once)."""
    await run_in_threadpool(signed_in_person, request)  # a change: the CSRF token is required
    db = database(request)
    token = request.cookies.get(COOKIE)

    def work() -> None:
        with db.session() as session:
            sign_out(session, token)

    await run_in_threadpool(work)
    response = JSONResponse({"status": "signed out"})
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/me")
async def me(request: Request) -> dict[str, str]:
    """Who is signed in with this cookie (401 if nobody)."""
    person = await run_in_threadpool(signed_in_person, request)
    return {"user": person.name, "role": person.role, "csrf_token": person.csrf_token}
