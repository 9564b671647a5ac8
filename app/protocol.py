"""uvicorn's httptools protocol with bounds on a request's header section: size and time.

httptools accumulates a request line and headers of any size: a client could send a
header gigabytes long and the worker would hold it all in memory. Here a request whose
URL and headers pass ``max_header_bytes`` gets 431 (JSON, like every other error) and its
connection is closed, before any of the app runs. Two checks: the parsed header section
once it is complete, and, while it is still incomplete, the bytes received for it, so
that memory stays bounded for a header that never ends.

uvicorn also waits forever for the headers of a new connection or a started request (its
keep-alive timeout only runs between requests), so a client that connects and sends
nothing, or drips a byte now and then, holds a connection for good. Here the header
section must be complete within ``header_timeout_s`` of the connection opening or of the
request's first byte, else 408 and the connection is closed. Used by ``python -m app``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("app.protocol")


class BoundedHeadersProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024
    header_timeout_s = 20.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = False  # between the start of a request and its headers' end
        self._received = 0  # bytes received while the header section was incomplete
        self._message_ended = False  # a request ended in the chunk being parsed
        self._refused = False
        self._header_timer: asyncio.TimerHandle | None = None

    @classmethod
    def with_limits(
        cls, max_header_bytes: int, header_timeout_s: float
    ) -> type[BoundedHeadersProtocol]:
        return type(
            cls.__name__,
            (cls,),
            {"max_header_bytes": max_header_bytes, "header_timeout_s": header_timeout_s},
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_timer()
        super().connection_lost(exc)

    def _start_header_timer(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        self._refused = True
        self._send_error(
            408,
            "Request Timeout",
            f"request line and headers not received within {self.header_timeout_s:g} s",
        )

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._message_ended = False
        super().data_received(data)
        if self._in_headers and not self._message_ended and not self._refused:
            # all of this chunk belongs to the incomplete header section (unless a
            # pipelined request ended in it: then it is not counted, at most one read)
            self._received += len(data)
            self._refused = self._received > self.max_header_bytes
        if self._refused:
            self._send_error(
                431,
                "Request Header Fields Too Large",
                f"request line and headers are over the limit of {self.max_header_bytes} bytes",
            )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._received = 0
        self._start_header_timer()  # a kept-alive connection's next request

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._stop_header_timer()
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if self._refused or size > self.max_header_bytes:
            self._refused = True  # no request cycle: the app never sees it
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._message_ended = True
        if not self._refused:
            super().on_message_complete()

    def _send_error(self, status: int, reason: str, detail: str) -> None:
        if self.transport.is_closing():
            return
        log.warning("refused before the app: %d %s", status, detail)
        body = json.dumps({"detail": detail}).encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\n".encode() + b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
