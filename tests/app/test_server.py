"""A real uvicorn process on a free port, over HTTP: bad input, then good input."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.server import Server, listening_sockets


@pytest.fixture(scope="module")
def server(tiny_model: Path) -> Iterator[str]:
    with Server(env={"WBC_MODEL_DIR": str(tiny_model)}) as running:
        yield running.url


def test_bad_input_then_good_input(server: str, cell_jpeg: bytes) -> None:
    with httpx.Client(base_url=server, timeout=30) as http:
        bad = http.post(
            "/predict", content=b"\x89PNG\r\n\x1a\nbroken", headers={"content-type": "image/png"}
        )
        assert bad.status_code == 400
        assert bad.json()["detail"]
        wrong = http.post("/predict", files={"upload": ("a.jpg", cell_jpeg, "image/jpeg")})
        assert wrong.status_code == 422
        good = http.post("/predict", files={"file": ("a.jpg", cell_jpeg, "image/jpeg")})
        assert good.status_code == 200
        assert good.json()["label"] in {"eosinophil", "lymphocyte", "monocyte", "neutrophil"}
        assert http.get("/health/live").status_code == 200
        metrics = http.get("/metrics").text
        assert 'wbc_http_requests_total{method="POST",route="/predict",status="400"} 1.0' in metrics
        assert "wbc_model_load_seconds" in metrics
        assert "wbc_images_classified_total" in metrics


def _worker_pids(running: Server) -> list[int]:
    """The supervisor's worker processes, not multiprocessing's resource tracker (a helper
    that exits on its own a moment after the supervisor)."""
    return [
        pid
        for pid in running.pids()[1:]
        if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_two_workers_each_listen_serve_and_stop_gracefully(
    tiny_model: Path, cell_jpeg: bytes
) -> None:
    """WBC_WORKERS=2: a socket per worker (both serving once ready), answers on fresh
    connections, and SIGTERM to the supervisor stops every worker with exit code 0."""
    running = Server(workers=2, env={"WBC_MODEL_DIR": str(tiny_model)}).start()
    assert running.proc
    try:
        assert listening_sockets(running.port) == 2
        workers = _worker_pids(running)
        assert len(workers) == 2
        for _ in range(6):
            with httpx.Client(base_url=running.url, timeout=30) as http:  # a new connection
                r = http.post("/predict", files={"file": ("a.jpg", cell_jpeg, "image/jpeg")})
                assert r.status_code == 200
    finally:
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(60) == 0
    assert listening_sockets(running.port) == 0
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
        )


def _predict_on_fresh_connections(url: str, image: bytes, count: int) -> None:
    for _ in range(count):
        with httpx.Client(base_url=url, timeout=30) as http:  # a new connection each
            r = http.post("/predict", content=image, headers={"content-type": "image/jpeg"})
            assert r.status_code == 200


def _scrape(url: str) -> str:
    with httpx.Client(base_url=url, timeout=30) as http:  # lands on either worker
        return http.get("/metrics").text


def _classified(metrics: str) -> float:
    return sum(
        float(v)
        for v in re.findall(r"^wbc_images_classified_total\{[^}]*\} ([0-9.e+]+)$", metrics, re.M)
    )


def test_metrics_add_up_over_both_workers(tiny_model: Path, cell_jpeg: bytes) -> None:
    """WBC_WORKERS=2: /metrics counts the requests of both workers, whichever answers the
    scrape (12 requests on fresh connections: both workers get some, all but surely)."""
    with Server(workers=2, env={"WBC_MODEL_DIR": str(tiny_model)}) as running:
        _predict_on_fresh_connections(running.url, cell_jpeg, 12)
        for _ in range(4):
            text = _scrape(running.url)
            assert _classified(text) == 12, text
            assert re.search(r"^wbc_model_ready(\{[^}]*\})? 1\.0$", text, re.M), text


def test_a_killed_worker_is_replaced_and_its_counts_are_kept(
    tiny_model: Path, cell_jpeg: bytes
) -> None:
    """WBC_WORKERS=2: SIGKILL one worker; the supervisor starts a new one, both listen
    again, and /metrics still counts what the dead worker classified."""
    with Server(workers=2, env={"WBC_MODEL_DIR": str(tiny_model)}) as running:
        _predict_on_fresh_connections(running.url, cell_jpeg, 8)
        assert _classified(_scrape(running.url)) == 8
        workers = _worker_pids(running)
        assert len(workers) == 2
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            time.sleep(1)
            if victim not in running.pids() and listening_sockets(running.port) == 2:
                break
        assert victim not in running.pids() and listening_sockets(running.port) == 2
        for _ in range(4):  # scrapes land on either worker, the new one included
            assert _classified(_scrape(running.url)) == 8


def _raw_request(url: str, head: bytes, body: bytes = b"", piece: int = 0) -> bytes:
    """Send ``head`` (request line and headers, without the blank line) and ``body`` over
    a raw socket, in pieces of ``piece`` bytes if given; what came back before the close."""
    host, port = url.removeprefix("http://").split(":")
    data = head + b"\r\n\r\n" + body
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        chunks = [data[i : i + piece] for i in range(0, len(data), piece)] if piece else [data]
        try:
            for chunk in chunks:
                sock.sendall(chunk)
                if select.select([sock], [], [], 0.01)[0]:
                    break  # the server answered before the end: read it
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and not piece:
                    break
        except ConnectionResetError:
            pass
    return received


def test_oversized_headers_get_431_and_the_server_keeps_serving(server: str) -> None:
    """Request line and headers over WBC_MAX_HEADER_BYTES (64 KiB): 431 with a JSON detail,
    whether they arrive at once or dribble in; ordinary and large-body requests pass."""
    ok = _raw_request(server, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 8000)
    assert ok.startswith(b"HTTP/1.1 200")
    at_once = _raw_request(
        server, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000
    )
    assert at_once.startswith(b"HTTP/1.1 431")
    assert b"over the limit of 65536 bytes" in at_once
    url = _raw_request(server, b"GET /health/live?" + b"q" * 100_000 + b" HTTP/1.1\r\nHost: x")
    assert url.startswith(b"HTTP/1.1 431")
    dribbled = _raw_request(
        server, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 400_000, piece=4096
    )
    assert dribbled.startswith(b"HTTP/1.1 431")
    big_body = b"\xff" * 1_500_000  # not an image: the app must see it and say so (400)
    post = _raw_request(
        server,
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg"
        b"\r\nContent-Length: " + str(len(big_body)).encode(),
        big_body,
    )
    assert post.startswith(b"HTTP/1.1 400")
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.get("/health/live").status_code == 200


def test_headers_that_never_arrive_get_408_but_idle_keep_alive_is_kept(tiny_model: Path) -> None:
    """WBC_HEADER_TIMEOUT_S=1: a connection that sends nothing, or starts a request and
    stalls, gets 408 and is closed; a kept-alive connection idle between requests is not
    (uvicorn's keep-alive timeout governs that)."""
    env = {"WBC_MODEL_DIR": str(tiny_model), "WBC_HEADER_TIMEOUT_S": "1"}
    with Server(env=env) as running:
        for sent in (b"", b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: "):
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
                sock.sendall(sent)
                t0 = time.monotonic()
                answer = sock.recv(65536)
                assert answer.startswith(b"HTTP/1.1 408"), answer
                assert b"not received within 1 s" in answer
                assert 0.8 < time.monotonic() - t0 < 5
                assert sock.recv(65536) == b""  # closed
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            for pause in (0, 2, 0):  # the same connection, idle 2 s between requests
                time.sleep(pause)
                sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while not answer.endswith(b'{"status":"live"}'):
                    chunk = sock.recv(65536)
                    assert chunk, answer  # not closed
                    answer += chunk
                assert answer.startswith(b"HTTP/1.1 200")
