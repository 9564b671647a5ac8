"""One test per error status: clear JSON detail, never a 500."""

from __future__ import annotations

import errno
import io
import struct
import tempfile
import zlib

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.app.conftest import encode, make_settings
from tests.synthetic import field


def test_400_undecodable(client: TestClient) -> None:
    r = client.post("/predict", content=b"\x00\x01garbage", headers={"content-type": "image/png"})
    assert r.status_code == 400
    assert "not a decodable image" in r.json()["detail"]


def test_400_truncated(client: TestClient, cell_jpeg: bytes) -> None:
    r = client.post(
        "/predict", files={"file": ("t.jpg", cell_jpeg[: len(cell_jpeg) // 2], "image/jpeg")}
    )
    assert r.status_code == 400
    assert "corrupt or truncated" in r.json()["detail"]


def test_400_empty_body(client: TestClient) -> None:
    r = client.post("/predict", content=b"", headers={"content-type": "image/jpeg"})
    assert r.status_code == 400
    assert "empty" in r.json()["detail"]


def test_413_body_over_byte_limit(client: TestClient) -> None:
    r = client.post("/predict", content=b"\xff" * 2_200_000, headers={"content-type": "image/jpeg"})
    assert r.status_code == 413
    assert "limit" in r.json()["detail"]


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny compressed row: a bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def test_413_decompression_bomb_refused_before_decoding(client: TestClient) -> None:
    r = client.post(
        "/predict", content=_png_header_only(50_000, 50_000), headers={"content-type": "image/png"}
    )
    assert r.status_code == 413
    assert "pixels" in r.json()["detail"]


def test_415_unsupported_content_type(client: TestClient, cell_jpeg: bytes) -> None:
    r = client.post("/predict", content=cell_jpeg, headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert "content type" in r.json()["detail"]


def test_415_unsupported_image_format(client: TestClient) -> None:
    buf = io.BytesIO()
    field().save(buf, format="ICO")
    r = client.post("/predict", files={"file": ("x.ico", buf.getvalue(), "image/x-icon")})
    assert r.status_code == 415
    assert "unsupported image format" in r.json()["detail"]


def test_422_missing_field(client: TestClient, cell_jpeg: bytes) -> None:
    r = client.post("/predict", files={"image": ("a.jpg", cell_jpeg, "image/jpeg")})
    assert r.status_code == 422
    assert "missing multipart file field 'file'" in r.json()["detail"]


def test_503_when_model_missing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    app = create_app(make_settings(tmp_path / "nothing-here"))
    with TestClient(app) as c:
        ready = c.get("/health/ready")
        assert ready.status_code == 503
        assert "does not exist" in ready.json()["detail"]
        assert c.get("/health/live").status_code == 200
        r = c.post("/predict", content=encode(field()), headers={"content-type": "image/jpeg"})
        assert r.status_code == 503
        assert "failed to load" in r.json()["detail"]  # broken, not "retry shortly"
        assert str(tmp_path) not in r.text + ready.text


def test_tiny_image_is_classified(client: TestClient) -> None:
    r = client.post(
        "/predict",
        content=encode(Image.new("RGB", (1, 1), (90, 60, 170)), "PNG"),
        headers={"content-type": "image/png"},
    )
    assert r.status_code == 200


def test_503_when_no_temporary_space_for_a_large_part(
    client: TestClient, cell_jpeg: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Multipart parts over 1 MB go to TMPDIR (a 256 MB tmpfs in the container): a full disk
    is a 503 to retry, not a 422 blaming the request; the server keeps serving."""
    import starlette.formparsers

    class FullDisk(tempfile.SpooledTemporaryFile):  # type: ignore[type-arg]
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", FullDisk)
    r = client.post("/predict", files={"file": ("a.jpg", cell_jpeg, "image/jpeg")})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "no temporary space" in r.json()["detail"]
    monkeypatch.undo()
    ok = client.post("/predict", files={"file": ("a.jpg", cell_jpeg, "image/jpeg")})
    assert ok.status_code == 200
