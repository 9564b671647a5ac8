"""Clients of the real app over a tiny real SavedModel."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.config import Settings
from app.main import create_app
from tests.synthetic import field


def make_settings(model_dir: Path, **overrides: object) -> Settings:
    return Settings(model_dir=model_dir, **overrides)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def client(tiny_model: Path) -> Iterator[TestClient]:
    app = create_app(
        make_settings(tiny_model, max_image_bytes=2_000_000, max_pixels=4_000_000, max_batch=5)
    )
    with TestClient(app) as test_client:
        yield test_client


def encode(image: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.fixture(scope="session")
def cell_jpeg() -> bytes:
    return encode(field(cells=[(100, 90, 28)], seed=5))
