"""uvicorn's httptools protocol with a bound on the size of a request's header section.

httptools accumulates a request line and headers of any size: a client could send a
header gigabytes long and the worker would hold it all in memory. Here a request whose
URL and headers pass ``max_header_bytes`` gets 431 (JSON, like every other error) and its
connection is closed, before any of the app runs. Two checks: the parsed header section
once it is complete, and, while it is still incomplete, the bytes received for it, so
that memory stays bounded for a header that never ends. Used by ``python -m app``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("app.protocol")


class BoundedHeadersProtocol(HttpToolsProtocol):
    max_header_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = False  # between the start of a request and its headers' end
        self._received = 0  # bytes received while the header section was incomplete
        self._message_ended = False  # a request ended in the chunk being parsed
        self._refused = False

    @classmethod
    def with_limit(cls, max_header_bytes: int) -> type[BoundedHeadersProtocol]:
        return type(cls.__name__, (cls,), {"max_header_bytes": max_header_bytes})

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
            self._send_431()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._received = 0

    def on_headers_complete(self) -> None:
        self._in_headers = False
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

    def _send_431(self) -> None:
        if self.transport.is_closing():
            return
        log.warning("request header section over %d bytes refused", self.max_header_bytes)
        body = json.dumps({"detail": f"request line and headers are over the limit of "
                                     f"{self.max_header_bytes} bytes"}).encode()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                             b"content-type: application/json\r\n"
                             b"content-length: " + str(len(body)).encode() + b"\r\n"
                             b"connection: close\r\n\r\n" + body)
        self.transport.close()
