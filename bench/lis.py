"""A stand-in LIS for tests and benchmarks: an MLLP listener (TCP, 0x0B ... 0x1C 0x0D
framing) that records each HL7 message and answers an ACK with MSA-1 ``code``."""

from __future__ import annotations

import socketserver
import threading
import time

START, END = b"\x0b", b"\x1c\x0d"


class Lis:
    """An MLLP listener on ``port``: records each message, answers ``code`` (AA, AE)."""

    def __init__(self, port: int, code: str = "AA") -> None:
        self.port, self.code, self.messages = port, code, []
        self.arrived: list[float] = []  # time.monotonic() of each message
        self.server: socketserver.ThreadingTCPServer | None = None

    def start(self) -> Lis:
        lis = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = b""
                while END not in data:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                text = data.split(START, 1)[1].split(END, 1)[0].decode()
                lis.messages.append(text)
                lis.arrived.append(time.monotonic())
                control = text.split("\r")[0].split("|")[9]
                ack = (
                    f"MSH|^~\\&|LIS|LAB|WBC|LAB|20261206000000||ACK^R01^ACK|A{control}|P|2.5.1\r"
                    f"MSA|{lis.code}|{control}|{'rejected by test' if lis.code != 'AA' else ''}"
                )
                self.request.sendall(START + ack.encode() + END)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def control_ids(self) -> list[str]:
        return [m.split("\r")[0].split("|")[9] for m in self.messages]
