"""Admission control: a worker holds a bounded number of classification requests.

Without a bound, a burst larger than the machine can serve waits in the event loop: every
request's latency grows with the queue, uploads pile up in memory, and the clients that
give up leave work behind that is still done. With it, a request over the bound is
answered at once with 503 and ``Retry-After`` (before its body is read), the ones admitted
keep a bounded wait, and an LIS can back off and retry. Health, metrics and model routes
are never refused, so probes keep working under any load.

The count covers requests from the moment they reach the app until their response is
sent. A single-cell image is classified on the event loop, and a request whose body has
arrived would otherwise run to the end before the requests that arrived with it have
even started: each request therefore yields once on entry, so that all of a burst is
counted before any of it is classified.
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from app.observability import PENDING, SHED

RETRY_AFTER_S = 1


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, max_pending: int, max_pending_bulk: int,
                 paths: tuple[str, ...], bulk_paths: tuple[str, ...]) -> None:
        self.app = app
        self.max_pending = max_pending  # 0: no bound
        self.max_pending_bulk = max_pending_bulk
        self.paths = paths
        self.bulk_paths = bulk_paths
        self.pending = 0
        self.pending_bulk = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (scope["type"] != "http" or scope.get("method") != "POST" or not self.max_pending
                or not path.startswith(self.paths)):
            await self.app(scope, receive, send)
            return
        bulk = path.startswith(self.bulk_paths)
        if self.pending >= self.max_pending:
            await refuse(send, f"server busy: {self.pending} classification requests are "
                               f"in progress or waiting in this worker (limit "
                               f"{self.max_pending}); retry after {RETRY_AFTER_S} s")
            return
        if bulk and self.pending_bulk >= self.max_pending_bulk:
            await refuse(send, f"server busy: {self.pending_bulk} batch requests are in "
                               f"progress or waiting in this worker (limit "
                               f"{self.max_pending_bulk}); retry after {RETRY_AFTER_S} s")
            return
        self.pending += 1
        self.pending_bulk += bulk
        PENDING.inc()
        try:
            await asyncio.sleep(0)  # let the requests that arrived with this one be counted
            await self.app(scope, receive, send)
        finally:
            self.pending -= 1
            self.pending_bulk -= bulk
            PENDING.dec()


async def refuse(send: Send, detail: str) -> None:
    """503 with ``Retry-After``, JSON like every other error."""
    SHED.inc()
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"retry-after", str(RETRY_AFTER_S).encode())]})
    await send({"type": "http.response.body", "body": body})
