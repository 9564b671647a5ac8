"""Knowing when it does not know: review reasons, the out-of-distribution guard per cell
and per specimen, its metric, and a model version without the guard's statistics."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from fhir.resources.bundle import Bundle
from PIL import Image

from app.classifier import REVIEW_REASONS
from app.schemas import ReviewReason
from tests.app.conftest import encode, make_settings
from tests.synthetic import class_image


def recoloured(seed: int) -> bytes:
    """A synthetic cell with its colour channels reversed: the shape of a cell in a stain
    the model never saw."""
    return encode(Image.fromarray(np.asarray(class_image(1, seed))[..., ::-1].copy()))


def in_distribution(seed: int) -> bytes:
    return encode(class_image(seed % 4, seed))


def test_vocabulary_is_one_list_and_in_the_schema(client: TestClient) -> None:
    assert set(ReviewReason.__args__) == set(REVIEW_REASONS)  # type: ignore[attr-defined]
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    reasons = schema["Prediction"]["properties"]["review_reasons"]
    assert set(reasons["items"]["enum"]) == set(REVIEW_REASONS)
    assert "ood_score" in schema["Prediction"]["properties"]


def test_far_image_is_out_of_distribution_and_needs_review(client: TestClient) -> None:
    body = client.post("/predict", files={"file": ("x.jpg", recoloured(77), "image/jpeg")}).json()
    assert "out_of_distribution" in body["review_reasons"], body
    assert body["needs_review"] is True
    assert body["ood_score"] > client.get("/v1/models/wbc-classifier").json()["ood_threshold"]


def test_in_distribution_images_mostly_pass_the_guard(client: TestClient) -> None:
    flagged = []
    for seed in range(900, 908):
        body = client.post(
            "/predict", files={"file": ("c.jpg", in_distribution(seed), "image/jpeg")}
        ).json()
        assert body["ood_score"] is not None
        assert body["needs_review"] == bool(body["review_reasons"])
        flagged.append("out_of_distribution" in body["review_reasons"])
    assert sum(flagged) <= 1, flagged  # the threshold lets 97.5% of validation cells pass


def test_reasons_on_cells_batch_and_v2(client: TestClient) -> None:
    cells = client.post(
        "/predict/cells", files={"file": ("x.jpg", recoloured(78), "image/jpeg")}
    ).json()["cells"]
    assert "out_of_distribution" in cells[0]["review_reasons"]
    batch = client.post(
        "/predict/batch", files=[("files", ("x.jpg", recoloured(79), "image/jpeg"))]
    ).json()
    assert "out_of_distribution" in batch["results"][0]["review_reasons"]
    import base64

    r = client.post(
        "/v2/models/wbc-classifier/infer",
        json={
            "inputs": [
                {
                    "name": "image_bytes",
                    "shape": [1],
                    "datatype": "BYTES",
                    "data": [base64.b64encode(recoloured(80)).decode()],
                }
            ]
        },
    )
    outputs = {o["name"]: o for o in r.json()["outputs"]}
    assert "out_of_distribution" in outputs["review_reasons"]["data"][0]
    assert outputs["needs_review"]["data"] == [True]
    assert outputs["ood_score"]["data"][0] > 0
    meta = client.get("/v2/models/wbc-classifier").json()
    assert meta["parameters"]["ood_guard"] is True
    assert "review_reasons" in {o["name"] for o in meta["outputs"]}


def test_specimen_mostly_out_of_distribution_is_outside_the_domain(client: TestClient) -> None:
    files = [("files", (f"r{i}.jpg", recoloured(200 + i), "image/jpeg")) for i in range(5)]
    files.append(("files", ("ok.jpg", in_distribution(901), "image/jpeg")))
    body = client.post("/differential", files=files).json()
    assert body["validated_domain"] is False
    assert body["out_of_distribution_share"] > 0.5
    assert body["warnings"][0]["code"] == "outside_validated_domain"
    r = client.post("/differential?format=fhir", files=files)
    bundle = Bundle.model_validate(r.json())
    report = bundle.entry[0].resource
    assert report.status == "preliminary"
    assert report.conclusionCode[0].coding[0].code == "outside-validated-domain"
    observation = bundle.entry[1].resource
    assert observation.interpretation[0].coding[0].code == "outside-validated-domain"
    assert any("validated domain" in n.text for n in observation.note)


def test_specimen_in_distribution_has_no_warning(client: TestClient) -> None:
    files = [("files", (f"c{i}.jpg", in_distribution(900 + i), "image/jpeg")) for i in range(4)]
    body = client.post("/differential", files=files).json()
    assert body["validated_domain"] is True and body["warnings"] == []


def test_metric_counts_out_of_distribution_by_version(client: TestClient) -> None:
    client.post("/predict", files={"file": ("x.jpg", recoloured(81), "image/jpeg")})
    text = client.get("/metrics").text
    assert 'wbc_cells_out_of_distribution_total{model_version="1"}' in text
    assert 'wbc_cells_classified_total{model_version="1"}' in text


def test_model_without_statistics_serves_with_the_guard_reported_off(
    tiny_model: Path, tmp_path: Path
) -> None:
    from app.main import create_app

    copy = tmp_path / "wbc-classifier"
    shutil.copytree(tiny_model, copy)
    for version in copy.iterdir():
        (version / "ood.npz").unlink()
    with TestClient(create_app(make_settings(copy))) as c:
        assert c.get("/health/ready").json()["ood_guard"].startswith("off")
        assert c.get("/v1/models/wbc-classifier").json()["ood_guard"] is False
        assert c.get("/v2/models/wbc-classifier").json()["parameters"]["ood_guard"] is False
        body = c.post("/predict", files={"file": ("x.jpg", recoloured(82), "image/jpeg")}).json()
        assert body["ood_score"] is None
        assert "out_of_distribution" not in body["review_reasons"]


def test_corrupt_statistics_fail_the_load_loudly(tiny_model: Path, tmp_path: Path) -> None:
    from app.main import create_app

    copy = tmp_path / "wbc-classifier"
    shutil.copytree(tiny_model, copy)
    for version in copy.iterdir():
        (version / "ood.npz").write_bytes(b"not an npz")
    with TestClient(create_app(make_settings(copy))) as c:
        r = c.get("/health/ready")
        assert r.status_code == 503 and "OOD statistics" in r.json()["detail"]


def test_empty_fp32_batch_leaves_the_runtime_working(client: TestClient) -> None:
    r = client.post(
        "/v2/models/wbc-classifier/infer",
        json={
            "inputs": [
                {"name": "image", "shape": [0, 150, 150, 3], "datatype": "FP32", "data": [[]]}
            ]
        },
    )
    assert r.status_code in (200, 400, 422), r.text
    for _ in range(4):  # every work thread's interpreter still answers a batch
        files = [("files", (f"c{i}.jpg", in_distribution(910 + i), "image/jpeg")) for i in range(3)]
        assert client.post("/predict/batch", files=files).status_code == 200
