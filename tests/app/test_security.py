"""API keys, CORS, request ids, no image bytes or filenames in logs at INFO."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import make_settings


@pytest.fixture(scope="module")
def locked(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text("# lab keys\nsecond-key\n")
    app = create_app(
        make_settings(
            tiny_model,
            api_key="first-key",
            api_key_file=key_file,
            cors_origins=["https://lis.example.org"],
        )
    )
    with TestClient(app) as c:
        yield c


def test_health_routes_stay_open(locked: TestClient) -> None:
    for path in ("/health/live", "/health/ready", "/v2/health/ready"):
        assert locked.get(path).status_code == 200


KEYED_ROUTES = [
    ("/predict", "post"),
    ("/predict/batch", "post"),
    ("/differential", "post"),
    ("/explain", "post"),
    ("/v1/models/wbc-classifier", "get"),
    ("/v2/models/wbc-classifier", "get"),
    ("/metrics", "get"),
]


@pytest.mark.parametrize("path,method", KEYED_ROUTES)
def test_everything_else_needs_a_key(locked: TestClient, path: str, method: str) -> None:
    r = getattr(locked, method)(path)
    assert r.status_code == 401
    body = r.json()  # the v2 routes answer in the Open Inference Protocol's {"error"} shape
    assert "API key" in body["error" if path.startswith("/v2") else "detail"]
    r = getattr(locked, method)(path, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401


def test_schema_names_the_key_where_it_is_checked(locked: TestClient) -> None:
    """The key is checked by the middleware, not by route dependencies: the schema's
    security must still name it on the classifying and model routes, and only on routes
    that refuse a request without it."""
    schema = locked.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {"type": "http", "scheme": "bearer"}
    assert schemes["APIKeyHeader"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    documented = set()
    for path, operations in schema["paths"].items():
        concrete = path.replace("{", "").replace("}", "")  # any value for a path parameter
        for method, operation in operations.items():
            if operation.get("security") is None:
                continue
            assert operation["security"] == [{"HTTPBearer": []}, {"APIKeyHeader": []}]
            r = getattr(locked, method)(concrete)
            message = str(r.json())
            assert (r.status_code, "API key" in message) == (401, True) or (
                r.status_code == 403 and "admin key" in message  # closed: no admin key set
            ), (method, path, r.status_code)
            documented.add((method, path))
    for path, method in KEYED_ROUTES:
        assert (method, path) in documented


def test_admin_routes_are_closed_to_api_keys(locked: TestClient) -> None:
    """No admin key configured beside the API keys: /admin is closed, whatever is sent
    (tests/app/test_hostile_clients.py has the admin key's own tests)."""
    for headers in ({}, {"X-API-Key": "first-key"}, {"Authorization": "Bearer second-key"}):
        r = locked.post("/admin/reload", headers=headers)
        assert r.status_code == 403 and "WBC_ADMIN_KEY" in r.json()["detail"]


def test_keys_from_env_and_file(locked: TestClient, cell_jpeg: bytes) -> None:
    for headers in ({"X-API-Key": "first-key"}, {"Authorization": "Bearer second-key"}):
        r = locked.post(
            "/predict", files={"file": ("a.jpg", cell_jpeg, "image/jpeg")}, headers=headers
        )
        assert r.status_code == 200


def test_cors_allows_only_configured_origin(locked: TestClient, client: TestClient) -> None:
    pre = {"access-control-request-method": "POST"}
    ok = locked.options("/predict", headers={"origin": "https://lis.example.org", **pre})
    assert ok.headers.get("access-control-allow-origin") == "https://lis.example.org"
    other = locked.options("/predict", headers={"origin": "https://evil.example", **pre})
    assert "access-control-allow-origin" not in other.headers
    closed = client.options("/predict", headers={"origin": "https://lis.example.org", **pre})
    assert "access-control-allow-origin" not in closed.headers


def test_request_id_echoed(client: TestClient) -> None:
    assert (
        client.get("/health/live", headers={"x-request-id": "abc-123"}).headers["x-request-id"]
        == "abc-123"
    )
    generated = client.get("/health/live", headers={"x-request-id": "bad id\n"})
    assert generated.headers["x-request-id"] != "bad id\n"


def test_logs_hold_no_image_bytes_or_filenames(
    client: TestClient, cell_jpeg: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        client.post("/predict", files={"file": ("patient-JONES.jpg", cell_jpeg, "image/jpeg")})
        client.post(
            "/differential",
            files={"files": ("x.jpg", b"junk", "image/jpeg")},
            data={"patient": "Patient/SECRET-42"},
        )
    text = caplog.text
    assert "JONES" not in text and "SECRET-42" not in text
    assert "request" in text
