"""The bad-input corpus: every entry gets its expected 4xx (or a 200 where the input is a
valid image), never a 5xx, and the server keeps serving."""

from __future__ import annotations

import io
import random
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bench.server import Server
from tests.app.conftest import encode
from tests.app.test_errors import _png_header_only
from tests.synthetic import field
from wbc_core.preprocessing import ImageError, preprocess_bytes

CELL = field(cells=[(150, 110, 30)], seed=11)


def _broken_crc_png() -> bytes:
    data = bytearray(encode(CELL, "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 8] ^= 0xFF  # flip a byte of compressed data: CRC no longer matches
    return bytes(data)


def _animated_gif() -> bytes:
    frames = [CELL.convert("P"), field(seed=2).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return buf.getvalue()


def _multipage_tiff() -> bytes:
    buf = io.BytesIO()
    CELL.save(buf, format="TIFF", save_all=True, append_images=[field(seed=3)])
    return buf.getvalue()


def _sixteen_bit_png() -> bytes:
    return encode(Image.fromarray(np.asarray(CELL.convert("L"), dtype=np.uint16) * 257), "PNG")


CORPUS: list[tuple[str, bytes, str, int, str]] = [
    ("zero bytes", b"", "image/jpeg", 400, "empty"),
    ("random bytes", random.Random(1).randbytes(5000), "image/jpeg", 400, "not a decodable"),
    ("text as image", b"hello, this is text" * 20, "image/png", 400, "not a decodable"),
    ("truncated jpeg", encode(CELL)[:900], "image/jpeg", 400, "truncated"),
    ("png broken crc", _broken_crc_png(), "image/png", 400, "corrupt"),
    ("1x1 image", encode(Image.new("RGB", (1, 1), "white"), "PNG"), "image/png", 200, ""),
    ("50000x50000 bomb", _png_header_only(50_000, 50_000), "image/png", 413, "pixels"),
    ("animated gif", _animated_gif(), "image/gif", 200, ""),
    ("multi-page tiff", _multipage_tiff(), "image/tiff", 200, ""),
    ("16-bit png", _sixteen_bit_png(), "image/png", 200, ""),
    ("cmyk jpeg", encode(CELL.convert("CMYK")), "image/jpeg", 200, ""),
    (
        "pdf with image type",
        b"%PDF-1.4\n%\xe2\xe3\n1 0 obj<<>>endobj\n",
        "image/jpeg",
        400,
        "not a decodable",
    ),
]


@pytest.mark.parametrize("name,body,ctype,status,message", CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_raw_body(
    client: TestClient, name: str, body: bytes, ctype: str, status: int, message: str
) -> None:
    r = client.post("/predict", content=body, headers={"content-type": ctype})
    assert r.status_code == status, (name, r.text)
    if status != 200:
        assert message in r.json()["detail"]
    assert client.get("/health/ready").status_code == 200


def test_corpus_in_a_batch_never_fails_the_good_files(client: TestClient) -> None:
    files = [
        ("files", (name, body, "application/octet-stream")) for name, body, *_ in CORPUS[:4]
    ] + [("files", ("good.jpg", encode(CELL), "image/jpeg"))]
    r = client.post("/predict/batch", files=files)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x.get("status") for x in results[:4]] == [400] * 4
    assert "label" in results[4]


def test_filename_with_separators_and_control_characters(client: TestClient) -> None:
    r = client.post(
        "/predict/batch",
        files=[("files", ("../../etc/passwd\r\n\x00evil.jpg", encode(CELL), "image/jpeg"))],
    )
    assert r.status_code == 200
    name = r.json()["results"][0]["filename"]
    assert "/" not in name and "\r" not in name and "\x00" not in name
    assert name.endswith("evil.jpg")


def test_many_parts_are_refused(client: TestClient) -> None:
    parts = [("files", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(1200)]
    r = client.post("/predict/batch", files=parts)
    assert r.status_code == 413


def test_body_just_over_the_limit(client: TestClient) -> None:
    limit = 2_000_000 + 64 * 1024  # max_image_bytes of the test client + multipart allowance
    r = client.post("/predict", content=b"\0" * (limit + 1), headers={"content-type": "image/png"})
    assert r.status_code == 413
    r = client.post("/predict", content=b"\0" * 2_000_001, headers={"content-type": "image/png"})
    assert r.status_code == 413


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_preprocessing_never_raises_anything_but_image_error(data: bytes) -> None:
    try:
        prepared = preprocess_bytes(data, max_pixels=1_000_000)
    except ImageError:
        return
    assert prepared.array.shape == (150, 150, 3) and prepared.array.dtype == np.uint8


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 400),
    st.integers(1, 400),
    st.sampled_from(["PNG", "JPEG", "BMP"]),
    st.integers(0, 2**32 - 1),
)
def test_preprocessing_any_valid_image(width: int, height: int, fmt: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    data = encode(image, fmt)
    prepared = preprocess_bytes(data)
    box = prepared.box
    assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height
    # mutate a byte: still either a valid crop or a clean ImageError
    mutated = bytearray(data)
    mutated[int(rng.integers(0, len(mutated)))] ^= 0x5A
    try:
        preprocess_bytes(bytes(mutated))
    except ImageError:
        pass


@pytest.fixture(scope="module")
def short_timeout_server(tiny_model: Path) -> Iterator[int]:
    with Server(env={"WBC_MODEL_DIR": str(tiny_model), "WBC_BODY_TIMEOUT_S": "2"}) as running:
        yield running.port


def test_slow_client_gets_408_and_server_keeps_serving(short_timeout_server: int) -> None:
    import httpx

    port = short_timeout_server
    body = encode(CELL)
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: image/jpeg\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
        )
        start = time.monotonic()
        reply = b""
        sock.settimeout(1.2)
        for byte in body[:10]:  # one byte a second
            try:
                sock.sendall(bytes([byte]))
                chunk = sock.recv(4096)
                if chunk:
                    reply += chunk
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        assert time.monotonic() - start < 8
    assert b" 408 " in reply.split(b"\r\n")[0], reply[:200]
    r = httpx.post(
        f"http://127.0.0.1:{port}/predict",
        content=body,
        headers={"content-type": "image/jpeg"},
        timeout=30,
    )
    assert r.status_code == 200
