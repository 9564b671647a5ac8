"""Service settings: one pydantic-settings class, environment prefix ``WBC_``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WBC_", protected_namespaces=())

    model_dir: Path = Field(PROJECT_ROOT / "models" / "wbc-classifier",
                            description="model folder with numbered versions, or one version")
    device: Literal["auto", "cpu", "gpu"] = "auto"
    runtime: Literal["auto", "tensorflow", "tflite"] = "auto"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    max_image_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 256 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_batch: int = 64
    max_differential: int = 500
    review_threshold: float | None = Field(
        None, description="calibrated confidence below which a cell is flagged; "
                          "default: the value chosen on validation data (metadata.json)")
    api_key: str | None = None
    api_key_file: Path | None = None
    cors_origins: list[str] = []
    body_timeout_s: float = 30.0
    keep_alive_s: int = 75
    gil_switch_interval_s: float = 0.0005
    work_threads: int = Field(2, ge=1, description="threads per worker process that decode "
                              "and classify; more requests than this wait their turn")
    balance_connections: bool = Field(
        True, description="with several workers, one holding more than its share of "
                          "keep-alive connections closes one (Connection: close) so that "
                          "the client reconnects and they even out (app/balance.py)")
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="request line and headers larger than this get 431 "
                                        "and the connection is closed (app/protocol.py)")
    header_timeout_s: float = Field(
        20.0, gt=0, description="a new connection, or a request once started, must send its "
                                "request line and headers within this time, else 408 and "
                                "the connection is closed (app/protocol.py)")
    max_pending: int = Field(
        128, ge=0, description="classification requests a worker holds at once, in progress "
                               "or waiting; more are refused at once with 503 and "
                               "Retry-After (app/admission.py). 0: no bound")
    max_pending_bytes: int = Field(
        256 * 1024 * 1024, ge=0,
        description="upload bytes (declared Content-Length) those requests may hold at once "
                    "in a worker; a request alone is always admitted (up to its own limit)")
    inline_max_pixels: int = Field(
        1_000_000, ge=0,
        description="single images of up to this many pixels (read from the header) are "
                    "classified on the event loop itself: for a cell image the hop to a work "
                    "thread costs more CPU than it saves (reports/performance.md); larger "
                    "ones, and batches, go to the work threads so that they do not hold up "
                    "other connections. 0: always the work threads")


@lru_cache
def get_settings() -> Settings:
    return Settings()
