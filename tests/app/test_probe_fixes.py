"""Defects a hostile probe found, each fixed: metric labels clients cannot multiply, a key
file that names no key, a wrong Bearer beside a right X-API-Key, a broken model said to be
broken, identifiers that cannot reach a FHIR reference, /explain's label for non-cells."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.conftest import encode, make_settings


def route_labels(metrics_text: str) -> set[str]:
    return set(re.findall(r'wbc_http_requests_total\{[^}]*route="([^"]*)"', metrics_text))


def test_made_up_paths_never_become_metric_labels(client: TestClient) -> None:
    before = route_labels(client.get("/metrics").text)
    for i in range(40):
        client.get(f"/v2/models/model-{i}")
        client.post(f"/v2/models/wbc-classifier/versions/{i}/infer", json={})
        client.get(f"/v1/models/x{i}/y")
        client.get(f"/nothing/{i}")
    after = route_labels(client.get("/metrics").text)
    assert len(after - before) <= 6, sorted(after - before)  # 160 made-up paths: a few labels
    made_up = ("model-", "/x", "/versions/1", "/nothing/")
    assert not any(part in label for label in after for part in made_up), after


def test_matched_routes_are_labelled_by_their_template(client: TestClient) -> None:
    client.get("/v2/models/wbc-classifier")
    assert "/v2/models/wbc-classifier" in route_labels(client.get("/metrics").text)


@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n  # another\n"])
def test_key_file_without_a_key_fails_closed(
    tiny_model: Path,
    tmp_path: Path,
    content: str,
    cell_jpeg: bytes,
) -> None:
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("app").addHandler(handler)
    key_file = tmp_path / "keys.txt"
    key_file.write_text(content)
    with TestClient(create_app(make_settings(tiny_model, api_key_file=key_file))) as c:
        r = c.post("/predict", files={"file": ("a.jpg", cell_jpeg, "image/jpeg")})
        assert r.status_code == 401
        assert c.get("/health/ready").status_code == 200
    logging.getLogger("app").removeHandler(handler)
    assert any("holds no key" in m for m in said)  # said loudly at start


def test_a_wrong_bearer_does_not_hide_a_right_key(tiny_model: Path, cell_jpeg: bytes) -> None:
    with TestClient(create_app(make_settings(tiny_model, api_key="right"))) as c:
        r = c.post(
            "/predict",
            files={"file": ("a.jpg", cell_jpeg, "image/jpeg")},
            headers={"Authorization": "Bearer wrong", "X-API-Key": "right"},
        )
        assert r.status_code == 200, r.text
        r = c.get("/v1/models/wbc-classifier")
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_broken_model_is_said_to_be_broken_without_paths(tmp_path: Path, cell_jpeg: bytes) -> None:
    version = tmp_path / "models" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"not a graph")
    (version / "metadata.json").write_text('{"input": {"crop_context": 1.5}}')
    with TestClient(create_app(make_settings(tmp_path / "models"))) as c:
        ready = c.get("/health/ready")
        r = c.post("/predict", files={"file": ("a.jpg", cell_jpeg, "image/jpeg")})
    assert ready.status_code == 503 and r.status_code == 503
    assert "failed to load" in r.json()["detail"]
    assert "retry shortly" not in r.json()["detail"]
    for body in (ready.text, r.text):
        assert str(tmp_path) not in body, body


@pytest.mark.parametrize(
    "field,value",
    [
        ("specimen_id", "SP-1\r\nX-Injected: 1"),
        ("specimen_id", "../../Patient/1"),
        ("patient", "Patient/../secret"),
        ("patient", "Observation/1"),
        ("specimen_id", "x" * 65),
    ],
)
def test_identifiers_that_cannot_be_fhir_ids_are_refused(
    client: TestClient, cell_jpeg: bytes, field: str, value: str
) -> None:
    r = client.post(
        "/differential?format=fhir",
        files=[("files", ("a.jpg", cell_jpeg, "image/jpeg"))],
        data={field: value},
    )
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


def test_good_identifiers_become_references(client: TestClient, cell_jpeg: bytes) -> None:
    r = client.post(
        "/differential?format=fhir",
        files=[("files", ("a.jpg", cell_jpeg, "image/jpeg"))],
        data={"specimen_id": "SP-2026.0042", "patient": "Patient/123"},
    )
    assert r.status_code == 200, r.text
    report = r.json()["entry"][0]["resource"]
    assert report["subject"] == {"reference": "Patient/123"}
    assert report["specimen"] == [{"reference": "Specimen/SP-2026.0042"}]


def test_explain_labels_a_non_cell_unknown_as_predict_does(client: TestClient) -> None:
    from tests.app.test_lab import not_cells

    image = encode(not_cells()["document_scan"], "PNG")
    predicted = client.post("/predict", files={"file": ("d.png", image, "image/png")}).json()
    explained = client.post("/explain", files={"file": ("d.png", image, "image/png")})
    assert predicted["label"] == "unknown"
    assert explained.headers["x-predicted-label"] == "unknown"


def test_v2_applies_the_batch_and_image_limits(client: TestClient, cell_jpeg: bytes) -> None:
    import base64

    one = base64.b64encode(cell_jpeg).decode()
    r = client.post(  # the client fixture's WBC_MAX_BATCH is 5
        "/v2/models/wbc-classifier/infer",
        json={
            "inputs": [
                {"name": "image_bytes", "shape": [6], "datatype": "BYTES", "data": [one] * 6}
            ]
        },
    )
    assert r.status_code == 413 and "WBC_MAX_BATCH" in r.json()["error"]
    r = client.post(
        "/v2/models/wbc-classifier/infer",
        json={
            "inputs": [
                {"name": "image", "shape": [6, 150, 150, 3], "datatype": "FP32", "data": [0.0]}
            ]
        },
    )
    assert r.status_code == 413
    big = base64.b64encode(b"\xff" * 2_100_000).decode()  # over the fixture's 2,000,000 bytes
    r = client.post(
        "/v2/models/wbc-classifier/infer",
        json={
            "inputs": [{"name": "image_bytes", "shape": [1], "datatype": "BYTES", "data": [big]}]
        },
    )
    assert r.status_code == 413 and "WBC_MAX_IMAGE_BYTES" in r.json()["error"]


def test_metrics_name_the_model_version_and_the_process_memory(client: TestClient) -> None:
    text = client.get("/metrics").text
    assert 'wbc_model_info{name="wbc-classifier",ood_guard="true",version="1"} 1.0' in text
    assert "process_resident_memory_bytes" in text


def test_docs_load_nothing_from_the_internet(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    for s in sources:
        assert client.get(s).status_code == 200, s
    assert client.get("/redoc").status_code == 404  # ReDoc would need a CDN


def test_v2_server_and_model_readiness_and_versions(client: TestClient, cell_jpeg: bytes) -> None:
    import base64
    import json

    server = client.get("/v2").json()
    assert server["name"] == "wbc-classifier" and "extensions" in server
    assert client.get("/v2/models/wbc-classifier/ready").json()["ready"] is True
    assert client.get("/v2/models/wbc-classifier/versions/1/ready").status_code == 200
    assert client.get("/v2/models/wbc-classifier/versions/1").json()["name"] == "wbc-classifier"
    body = {
        "inputs": [
            {
                "name": "image_bytes",
                "shape": [1],
                "datatype": "BYTES",
                "data": [base64.b64encode(cell_jpeg).decode()],
            }
        ]
    }
    ok = client.post("/v2/models/wbc-classifier/versions/1/infer", json=body)
    assert ok.status_code == 200 and ok.json()["model_version"] == "1"
    missing = client.post("/v2/models/wbc-classifier/versions/9/infer", json=body)
    assert missing.status_code == 404 and "version 9" in missing.json()["error"]
    # Triton's and KServe's clients send JSON with no Content-Type
    bare = client.post("/v2/models/wbc-classifier/infer", content=json.dumps(body).encode())
    assert bare.status_code == 200, bare.text


def test_v2_errors_use_the_protocols_shape(client: TestClient) -> None:
    binary = client.post(
        "/v2/models/wbc-classifier/infer",
        content=b'{"inputs":[]}' + b"\0" * 8,
        headers={"Inference-Header-Content-Length": "13"},
    )
    assert binary.status_code == 400 and "binary tensor data" in binary.json()["error"]
    bad = client.post("/v2/models/wbc-classifier/infer", json={"inputs": [{"name": "x"}]})
    assert bad.status_code == 422 and "error" in bad.json() and "detail" not in bad.json()
    not_json = client.post("/v2/models/wbc-classifier/infer", content=b"\xff\xfe")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    # the JSON routes keep FastAPI's shape
    assert "detail" in client.post("/predict").json()


def test_v2_refuses_multipart_and_binary_bodies_cleanly_and_logs_no_body(
    client: TestClient,
) -> None:
    said: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(  # type: ignore[method-assign]
        record.getMessage() + repr(record.__dict__)
    )
    logging.getLogger().addHandler(handler)
    marker = "BODYMARKER" * 500
    multipart = client.post(
        "/v2/models/wbc-classifier/infer",
        content=(
            f'--x\r\nContent-Disposition: form-data; name="f"; filename="{marker}.jpg"\r\n\r\n'
            f"{marker}\r\n--x--"
        ).encode(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    binary = client.post(
        "/v2/models/wbc-classifier/infer",
        content=marker.encode() + b"\x00\x01",
        headers={"content-type": "application/octet-stream"},
    )
    logging.getLogger().removeHandler(handler)
    assert multipart.status_code == 400 and "not JSON" in multipart.json()["error"]
    assert binary.status_code == 400
    assert all("BODYMARKER" not in line for line in said)
    assert client.get("/v2/models/wbc-classifier/ready").status_code == 200


def test_a_differential_can_be_a_fhir_transaction_with_a_conditional_specimen(
    client: TestClient, cell_jpeg: bytes
) -> None:
    """?bundle=transaction: every resource POSTed, the specimen id as Specimen.identifier
    with a conditional create, references to it by urn:uuid (the default stays a
    collection, as integrations already read it)."""
    from fhir.resources.bundle import Bundle

    r = client.post(
        "/differential?format=fhir&bundle=transaction",
        files=[("files", ("a.jpg", cell_jpeg, "image/jpeg"))],
        data={"specimen_id": "SP-77", "patient": "Patient/123"},
    )
    assert r.status_code == 200, r.text
    bundle = Bundle.model_validate(r.json())
    assert bundle.type == "transaction"
    first = bundle.entry[0]
    assert first.resource.get_resource_type() == "Specimen"
    assert first.resource.identifier[0].value == "SP-77"
    assert first.request.ifNoneExist.endswith("|SP-77")
    report = bundle.entry[1].resource
    assert report.specimen[0].reference == first.fullUrl
    assert all(e.request.method == "POST" for e in bundle.entry)
