"""Request id, access log and Prometheus accounting for every request."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import balance
from app.observability import LATENCY, REBALANCED, REQUESTS, request_id

log = logging.getLogger("app.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
KNOWN_ROUTES = (
    "/predict/batch",
    "/predict",
    "/differential",
    "/explain",
    "/health/live",
    "/health/ready",
    "/metrics",
    "/v1/models",
    "/v2/models",
    "/v2/health",
    "/docs",
    "/openapi.json",
    "/admin",
)


def route_label(path: str, route: object = None) -> str:
    """Bounded label set for metrics and logs: the matched route's template (e.g.
    ``/v2/models/{model_name}/infer``) when the router matched one, else the known prefix
    the path falls under, else ``other``. A path a client makes up never becomes a label:
    each new label value is a new Prometheus series held by every worker."""
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    for known in KNOWN_ROUTES:
        if path == known or path.startswith(known + "/"):
            return known
    return "other"


def allow_every_method(scope: Scope, headers: list) -> list:  # type: ignore[type-arg]
    """A 405's ``Allow`` names the methods of the first route whose path matched (GET and
    POST /specimens are two routes): name every method some route serves on this path,
    asking the router itself whether each method would match."""
    from starlette.routing import Match

    app = scope.get("app")
    methods = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        probe = {**scope, "method": method}
        if any(r.matches(probe)[0] is Match.FULL for r in getattr(app, "routes", [])):
            methods.append(method)
    if not methods:
        return headers
    kept = [(k, v) for k, v in headers if k.lower() != b"allow"]
    return [*kept, (b"allow", ", ".join(methods).encode())]


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _VALID_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        start = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                if status == 405:
                    message["headers"] = allow_every_method(scope, message["headers"])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
                if balance.BALANCER is not None and balance.BALANCER.should_close():
                    # this worker holds more than its share: the client reconnects
                    message["headers"].append((b"connection", b"close"))
                    REBALANCED.inc()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - start
            route = route_label(scope.get("path", ""), scope.get("route"))
            REQUESTS.labels(scope.get("method", "?"), route, str(status)).inc()
            LATENCY.labels(route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "route": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )
            request_id.reset(token)
