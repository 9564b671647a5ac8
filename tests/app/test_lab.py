"""Differential + FHIR, the not-a-cell check, Grad-CAM, the v2 protocol."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from fhir.resources.bundle import Bundle
from PIL import Image, ImageDraw

from app.fhir import LOINC_CODES
from tests.app.conftest import encode
from tests.synthetic import class_image, field


def _cells(n: int) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [
        ("files", (f"cell{i}.jpg", encode(class_image(i % 4, 500 + i)), "image/jpeg"))
        for i in range(n)
    ]


def not_cells() -> dict[str, Image.Image]:
    """Images that are plainly not a stained cell."""
    rng = np.random.default_rng(7)
    text = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(text)
    for row in range(12):
        draw.text((10, 10 + 22 * row), "Patient report: haemoglobin 13.2 g/dL " * 2, fill=(0, 0, 0))
    scan = Image.new("RGB", (300, 400), (245, 243, 236))
    d2 = ImageDraw.Draw(scan)
    for row in range(20):
        d2.line((20, 20 + 18 * row, 280, 20 + 18 * row), fill=(30, 30, 120), width=3)
    return {
        "noise": Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)),
        "solid_red": Image.new("RGB", (320, 240), (220, 20, 30)),
        "solid_grey": Image.new("RGB", (320, 240), (128, 128, 128)),
        "solid_white": Image.new("RGB", (320, 240), (255, 255, 255)),
        "solid_violet": Image.new("RGB", (320, 240), (95, 60, 170)),
        "text": text,
        "document_scan": scan,
        "gradient": Image.fromarray(
            np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
        ),
    }


def more_not_cells() -> dict[str, Image.Image]:
    """Harder non-cells: smooth colour fields and scenes (no nucleus-shaped blob, but
    colours near a smear's), coloured pages, and ``not_cells``' page images in other hues."""
    from model_training.robustness import hue_turn

    rng = np.random.default_rng(11)
    images: dict[str, Image.Image] = {}
    for k in range(6):  # low-frequency random colours, as an out-of-focus photograph
        coarse = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
        images[f"smooth_field_{k}"] = Image.fromarray(coarse).resize((320, 240), Image.BICUBIC)
    sky = np.linspace([90, 140, 230], [200, 220, 250], 120)
    grass = np.linspace([60, 150, 60], [30, 90, 30], 120)
    column = np.concatenate([sky, grass]).astype(np.uint8)
    images["landscape"] = Image.fromarray(np.repeat(column[:, None, :], 320, axis=1))
    skin = np.full((240, 320, 3), (224, 180, 160), np.float64) + rng.normal(0, 6, (240, 320, 3))
    images["skin"] = Image.fromarray(np.clip(skin, 0, 255).astype(np.uint8))
    page = Image.new("RGB", (400, 300), (240, 215, 225))  # violet print on pink paper
    draw = ImageDraw.Draw(page)
    for row in range(12):
        draw.text(
            (10, 10 + 22 * row), "Haematology request form: FBC + film " * 2, fill=(90, 50, 150)
        )
    images["violet_on_pink_page"] = page
    stripes = np.zeros((240, 320, 3), np.uint8)
    for i, colour in enumerate([(220, 60, 60), (240, 240, 240), (60, 60, 200), (250, 200, 80)]):
        stripes[:, i * 80 : (i + 1) * 80] = colour
    images["colour_stripes"] = Image.fromarray(stripes)
    base = not_cells()
    for name in ("text", "document_scan", "solid_violet"):
        for shift in (-0.15, 0.15):
            images[f"{name}_hue{shift:+g}"] = hue_turn(shift)(base[name])
    return images


@pytest.mark.parametrize("name", sorted(not_cells()))
def test_not_a_cell_is_unknown(client: TestClient, name: str) -> None:
    r = client.post(
        "/predict", files={"file": (f"{name}.png", encode(not_cells()[name], "PNG"), "image/png")}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["label"] == "unknown", (name, body)
    assert body["is_cell"] is False and body["needs_review"] is True


def test_differential_json(client: TestClient) -> None:
    files = [
        *_cells(4),
        ("files", ("bad.jpg", b"nope", "image/jpeg")),
        ("files", ("noise.png", encode(not_cells()["noise"], "PNG"), "image/png")),
    ]
    r = client.post(
        "/differential", files=files, data={"specimen_id": "SP-1", "patient": "Patient/123"}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["classified"] == 4
    assert sum(c["count"] for c in body["counts"].values()) == 4
    assert sum(c["percent"] for c in body["counts"].values()) == pytest.approx(100, abs=0.5)
    assert body["rejected"]["count"] == 2
    assert {f["filename"] for f in body["rejected"]["files"]} == {"bad.jpg", "noise.png"}
    assert body["specimen_id"] == "SP-1" and body["model"]["version"] == "1"
    for cell in body["flagged"]:
        assert cell["confidence"] < body["review_threshold"]


def test_differential_counts_every_cell_of_a_field_when_asked(client: TestClient) -> None:
    two = field(size=(480, 320), cells=[(100, 100, 26), (360, 220, 30)], seed=3)
    files = [*_cells(2), ("files", ("field.jpg", encode(two), "image/jpeg"))]
    first = client.post("/differential", files=files).json()
    every = client.post("/differential?cells=all", files=files).json()
    assert first["classified"] + first["rejected"]["count"] == 3
    assert every["classified"] + every["rejected"]["count"] == 4


@pytest.mark.parametrize("how", ["query", "accept"])
def test_differential_fhir_bundle_validates(client: TestClient, how: str) -> None:
    kwargs: dict = {"files": _cells(4), "data": {"specimen_id": "SP-2", "patient": "p-7"}}
    if how == "query":
        r = client.post("/differential?format=fhir", **kwargs)
    else:
        r = client.post("/differential", headers={"accept": "application/fhir+json"}, **kwargs)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    bundle = Bundle.model_validate(r.json())
    resources = [e.resource for e in bundle.entry]
    report = resources[0]
    assert report.get_resource_type() == "DiagnosticReport"
    assert report.category[0].coding[0].code == "LAB"
    assert report.specimen[0].reference == "Specimen/SP-2"
    observations = resources[1:]
    codes = {o.code.coding[0].code for o in observations}
    assert codes == {code for code, _ in LOINC_CODES.values()}
    assert all(
        o.valueQuantity.code == "%" and o.valueQuantity.system == "http://unitsofmeasure.org"
        for o in observations
    )
    assert sum(float(o.valueQuantity.value) for o in observations) == pytest.approx(100, abs=0.5)
    flagged = client.post("/differential", files=_cells(4)).json()["flagged"]
    assert report.status == ("preliminary" if flagged else "final")


def test_differential_needs_files(client: TestClient) -> None:
    r = client.post("/differential", data={"specimen_id": "x"}, files={"other": ("a", b"1")})
    assert r.status_code == 422


def test_explain_returns_png(client: TestClient, cell_jpeg: bytes) -> None:
    r = client.post("/explain", files={"file": ("c.jpg", cell_jpeg, "image/jpeg")})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.size == (300, 300)
    assert r.headers["x-predicted-label"] in LOINC_CODES
    assert (
        client.post("/explain", content=b"junk", headers={"content-type": "image/png"}).status_code
        == 400
    )


def test_v2_protocol(client: TestClient, cell_jpeg: bytes) -> None:
    assert client.get("/v2/health/ready").json() == {"ready": True}
    meta = client.get("/v2/models/wbc-classifier").json()
    assert meta["inputs"][0]["shape"] == [-1, 150, 150, 3]
    b64 = base64.b64encode(cell_jpeg).decode()
    r = client.post(
        "/v2/models/wbc-classifier/infer",
        json={
            "id": "r1",
            "inputs": [
                {"name": "image_bytes", "shape": [2], "datatype": "BYTES", "data": [b64, b64]}
            ],
        },
    )
    assert r.status_code == 200, r.text
    out = {o["name"]: o for o in r.json()["outputs"]}
    assert out["probabilities"]["shape"] == [2, 4] and r.json()["id"] == "r1"
    single = client.post("/predict", files={"file": ("c.jpg", cell_jpeg, "image/jpeg")}).json()
    assert out["probabilities"]["data"][:4] == list(single["probabilities"].values())
    tensor = np.full((1, 150, 150, 3), 128.0).tolist()
    r = client.post(
        "/v2/models/wbc-classifier/infer",
        json={
            "inputs": [
                {"name": "image", "shape": [1, 150, 150, 3], "datatype": "FP32", "data": tensor}
            ]
        },
    )
    assert r.status_code == 200
    assert sum(r.json()["outputs"][0]["data"]) == pytest.approx(1, abs=1e-4)
    bad = client.post(
        "/v2/models/wbc-classifier/infer",
        json={
            "inputs": [{"name": "image", "shape": [1, 10], "datatype": "FP32", "data": [1.0] * 10}]
        },
    )
    assert bad.status_code == 422
    bad64 = client.post(
        "/v2/models/wbc-classifier/infer",
        json={"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["***"]}]},
    )
    assert bad64.status_code == 400
