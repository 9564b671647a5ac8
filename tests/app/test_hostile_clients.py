"""What a hostile or careless client may not do: hold upload slots or be parsed without a
key, open the admin routes with an API key, make a worker parse millions of JSON numbers,
or spend gigabytes on a small 16-bit image; and a reload reaches every worker."""

from __future__ import annotations

import io
import json
import shutil
import socket
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.main import create_app
from bench.server import Server
from tests.app.conftest import make_settings
from wbc_core.preprocessing import ImageTooLarge, open_image, to_rgb

KEY = "predict-key"
ADMIN = "admin-key"


def _announce(port: int, path: str, length: int, headers: bytes = b"") -> socket.socket:
    """Open a connection that announces a body of ``length`` bytes and sends one byte."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n".encode()
        + headers
        + f"content-length: {length}\r\n\r\n{{".encode()
    )
    return sock


def test_keyless_requests_hold_no_upload_slot_and_are_answered_401_at_once(
    tiny_model: Path, cell_jpeg: bytes
) -> None:
    """Six keyless connections announcing 256 MiB each once filled the upload budget, and
    every authenticated /predict got 503 for 30 s: the key is now checked from the headers,
    before admission control counts the request or its body is read."""
    env = {
        "WBC_MODEL_DIR": str(tiny_model),
        "WBC_API_KEY": KEY,
        "WBC_MAX_PENDING_BYTES": str(64 * 1024 * 1024),
        "WBC_BODY_TIMEOUT_S": "20",
    }
    with Server(env=env) as running:
        held = []
        try:
            for path in ("/v2/models/wbc-classifier/infer", "/predict/batch") * 3:
                sock = _announce(running.port, path, 268_435_456)
                held.append(sock)
                sock.settimeout(5)
                head = sock.recv(4096)
                assert b" 401 " in head.split(b"\r\n")[0], head[:200]
                assert b"www-authenticate" in head.lower()
            for _ in range(3):
                r = httpx.post(
                    f"{running.url}/predict",
                    content=cell_jpeg,
                    headers={"content-type": "image/jpeg", "X-API-Key": KEY},
                    timeout=30,
                )
                assert r.status_code == 200, r.text
        finally:
            for sock in held:
                sock.close()


@pytest.fixture(scope="module")
def locked(tiny_model: Path) -> TestClient:
    app = create_app(make_settings(tiny_model, api_key=KEY, admin_key=ADMIN, max_batch=2))
    with TestClient(app) as client:
        yield client


def test_admin_routes_need_the_admin_key_not_an_api_key(locked: TestClient) -> None:
    assert locked.post("/admin/reload").status_code == 401
    r = locked.post("/admin/reload", headers={"X-API-Key": KEY})
    assert r.status_code == 401 and "admin key" in r.json()["detail"]
    r = locked.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "reloaded"
    # and the admin key is not an API key
    r = locked.get("/v1/models/wbc-classifier", headers={"X-API-Key": ADMIN})
    assert r.status_code == 401


def test_admin_routes_are_closed_when_keys_are_set_but_no_admin_key(tiny_model: Path) -> None:
    with TestClient(create_app(make_settings(tiny_model, api_key=KEY))) as client:
        r = client.post("/admin/reload", headers={"X-API-Key": KEY})
        assert r.status_code == 403 and "WBC_ADMIN_KEY" in r.json()["detail"]


def test_a_v2_body_of_too_many_numbers_is_refused_before_it_is_parsed(
    locked: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N=1800 FP32 images once peaked a worker at 7 GB: json.loads makes an object of every
    number before the batch limit was checked. The values are now counted first."""
    import app.routes.v2 as v2

    def no_parsing(*_: object, **__: object) -> object:
        raise AssertionError("the body was parsed")

    n = 3 * 150 * 150 * 3  # three images; the limit is two
    body = (
        b'{"inputs":[{"name":"image","shape":[3,150,150,3],"datatype":"FP32","data":['
        + b"0.5," * (n - 1)
        + b"0.5]}]}"
    )
    monkeypatch.setattr(v2, "json", SimpleNamespace(loads=no_parsing))  # this module's only
    r = locked.post("/v2/models/wbc-classifier/infer", content=body, headers={"X-API-Key": KEY})
    assert r.status_code == 413
    assert "WBC_MAX_BATCH" in r.json()["error"]


def test_a_v2_body_within_the_limit_is_parsed_and_answered(locked: TestClient) -> None:
    image = np.full((1, 150, 150, 3), 200.0).round(1).tolist()
    body = {
        "inputs": [{"name": "image", "shape": [1, 150, 150, 3], "datatype": "FP32", "data": image}]
    }
    r = locked.post(
        "/v2/models/wbc-classifier/infer", content=json.dumps(body), headers={"X-API-Key": KEY}
    )
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["shape"] == [1, 4]


def test_deeply_nested_json_is_a_400_not_a_500(locked: TestClient) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    r = locked.post("/v2/models/wbc-classifier/infer", content=body, headers={"X-API-Key": KEY})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]


def test_decoded_bytes_are_bounded_not_only_pixels() -> None:
    """An image within the pixel limit whose mode takes more bytes than the limit allows
    in 8-bit RGB is refused from its header."""
    rgba = io.BytesIO()
    Image.new("RGBA", (30, 30), (1, 2, 3, 4)).save(rgba, format="PNG")
    with pytest.raises(ImageTooLarge, match="once decoded"):
        open_image(rgba.getvalue(), max_pixels=1000)  # 900 pixels, 3600 bytes > 3000
    assert open_image(rgba.getvalue(), max_pixels=1200).size == (30, 30)


def test_a_16_bit_image_converts_in_bounded_memory() -> None:
    """A 16-bit greyscale image once went through three float64 copies of itself (a
    40-megapixel PNG of 88 KB cost about 0.8 GB); it is now converted a megapixel at a
    time. Same answer, a fraction of the memory."""
    h, w = 2000, 2500  # 5 megapixels
    ramp = (np.arange(h * w, dtype=np.uint32) % 65536).astype(np.uint16).reshape(h, w)
    image = Image.fromarray(ramp)
    assert image.mode.startswith("I;16")
    expected = np.clip(ramp.astype(np.float64) / 65535 * 255 + 0.5, 0, 255).astype(np.uint8)
    tracemalloc.start()
    try:
        rgb = to_rgb(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    got = np.asarray(rgb)[..., 0]
    assert np.abs(got.astype(int) - expected).max() <= 1
    # the source (10 MB) and the result (5 MB) plus a megapixel of float32: not 3 x 40 MB
    assert peak < 3 * h * w * 2, peak


def test_reload_reaches_every_worker(tiny_model: Path, tmp_path: Path) -> None:
    """POST /admin/reload lands on one worker of several; every worker now serves the new
    version within a second or two (versions once alternated between connections)."""
    models = tmp_path / "models"
    shutil.copytree(tiny_model, models)
    env = {"WBC_MODEL_DIR": str(models), "WBC_API_KEY": KEY, "WBC_ADMIN_KEY": ADMIN}
    with Server(workers=2, env=env) as running:

        def versions(count: int) -> set[str]:
            seen = set()
            for _ in range(count):
                with httpx.Client(base_url=running.url, timeout=30) as http:  # new connection
                    r = http.get("/v1/models/wbc-classifier", headers={"X-API-Key": KEY})
                    seen.add(r.json()["version"])
            return seen

        assert versions(6) == {"1"}
        shutil.copytree(models / "1", models / "2")
        meta = json.loads((models / "2" / "metadata.json").read_text())
        meta["version"] = "2"
        (models / "2" / "metadata.json").write_text(json.dumps(meta))
        r = httpx.post(f"{running.url}/admin/reload", headers={"X-API-Key": ADMIN}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["workers"] == 2
        deadline = time.monotonic() + 15
        while versions(8) != {"2"}:
            assert time.monotonic() < deadline, "a worker still serves version 1"
            time.sleep(0.5)
        assert versions(16) == {"2"}
