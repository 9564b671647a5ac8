"""Admission control: a worker holds a bounded number of classification requests, and a
bounded number of upload bytes.

Without a bound, a burst larger than the machine can serve waits in the event loop: every
request's latency grows with the queue, uploads pile up in memory, and the clients that
give up leave work behind that is still done. With it, a request over the bound is
answered at once with 503 and ``Retry-After`` (before its body is read), the ones admitted
keep a bounded wait and memory, and an LIS can back off and retry. Health, metrics and
model routes are never refused, so probes keep working under any load.

Bytes are counted from ``Content-Length`` (a body without one counts as its route's
limit, the most it may be). A request alone is always admitted, however large (up to its
route's limit, which ``BodyLimitMiddleware`` enforces), so a large batch is never refused
forever.

The count covers requests from the moment they reach the app until their response is
sent. A single-cell image is classified on the event loop, and a request whose body has
arrived would otherwise run to the end before the requests that arrived with it have
even started: each request therefore yields once on entry, so that all of a burst is
counted before any of it is classified.
"""

from __future__ import annotations

import asyncio

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import send_error
from app.observability import PENDING, SHED
from app.uploads import BodyLimits, declared_length

RETRY_AFTER_S = 1


class AdmissionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_pending: int,
        max_pending_bytes: int,
        paths: tuple[str, ...],
        limits: BodyLimits,
    ) -> None:
        self.app = app
        self.max_pending = max_pending  # 0: no bound
        self.max_pending_bytes = max_pending_bytes
        self.paths = paths
        self.limits = limits
        self.pending = 0
        self.pending_bytes = 0

    def size(self, scope: Scope) -> int:
        """Bytes the request will hold: its declared length, at most its route's limit."""
        limit = self.limits.for_path(scope["path"])
        declared = declared_length(scope)
        return limit if declared is None else min(max(0, declared), limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") != "POST"
            or not self.max_pending
            or not scope.get("path", "").startswith(self.paths)
        ):
            await self.app(scope, receive, send)
            return
        size = self.size(scope)
        if self.pending >= self.max_pending:
            await refuse(
                send,
                f"server busy: {self.pending} classification requests are "
                f"in progress or waiting in this worker (limit "
                f"{self.max_pending}); retry after {RETRY_AFTER_S} s",
            )
            return
        if self.pending and self.pending_bytes + size > self.max_pending_bytes:
            await refuse(
                send,
                f"server busy: the requests in progress or waiting in this "
                f"worker hold {self.pending_bytes} bytes of uploads; this one "
                f"would pass the limit of {self.max_pending_bytes}; retry "
                f"after {RETRY_AFTER_S} s",
            )
            return
        self.pending += 1
        self.pending_bytes += size
        PENDING.inc()
        try:
            await asyncio.sleep(0)  # let the requests that arrived with this one be counted
            await self.app(scope, receive, send)
        finally:
            self.pending -= 1
            self.pending_bytes -= size
            PENDING.dec()


async def refuse(send: Send, detail: str) -> None:
    """503 with ``Retry-After``, JSON like every other error."""
    SHED.inc()
    await send_error(send, 503, detail, {"Retry-After": str(RETRY_AFTER_S)})
