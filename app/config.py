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

    model_dir: Path = Field(
        PROJECT_ROOT / "models" / "wbc-classifier",
        description="model folder with numbered versions, or one version",
    )
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto",
        description="`auto` uses a GPU on a host with an NVIDIA device and TensorFlow "
        "installed; `cpu`; `gpu` (TensorFlow; fails the load without a GPU)",
    )
    runtime: Literal["auto", "litert", "tensorflow", "tflite"] = Field(
        "auto",
        description="CPU: the version's model.tflite in the LiteRT runtime (no "
        "TensorFlow imported); GPU: TensorFlow and the SavedModel. `tensorflow` forces "
        "TensorFlow; `tflite` is another name for `litert`",
    )
    host: str = Field("127.0.0.1", description="address `python -m app` listens on")
    port: int = Field(8000, description="port `python -m app` listens on")
    log_level: str = Field("INFO", description="log level of the JSON log lines on stdout")
    workers: int = Field(
        1,
        ge=1,
        description="worker processes `python -m app` runs, each on "
        "its own `SO_REUSEPORT` socket under a supervisor that restarts a "
        "dead one (about one per core)",
    )
    max_image_bytes: int = Field(10 * 1024 * 1024, description="largest image file (413 above)")
    max_request_bytes: int = Field(
        256 * 1024 * 1024, description="largest request body (413 above)"
    )
    max_pixels: int = Field(
        40_000_000,
        description="largest image in pixels, read from its header before decoding (413 above)",
    )
    max_batch: int = Field(64, description="files per `/predict/batch`")
    max_differential: int = Field(500, description="files per `/differential`")
    review_threshold: float | None = Field(
        None,
        description="calibrated confidence below which a cell is flagged; "
        "default: the value chosen on validation data (metadata.json)",
    )
    ood_specimen_share: float = Field(
        0.25,
        ge=0,
        le=1,
        description="a differential whose share of out-of-distribution cells exceeds this is "
        "outside the validated domain: a warning in JSON, and the FHIR report "
        "stays preliminary with a note",
    )
    api_key: str | None = Field(
        None,
        description="when set (or `api_key_file`), every route "
        "but `/health/*` needs `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>`",
    )
    api_key_file: Path | None = Field(
        None, description="a file of API keys, one a line; re-read when it changes"
    )
    database_url: str | None = Field(
        None,
        description="where specimens, cells, the audit trail and reviewer accounts are kept: "
        "`postgresql+psycopg://user:password@host/db` in production; default an SQLite "
        "file in `store_dir` (migrated at start)",
    )
    store_dir: Path = Field(
        Path("data"), description="the SQLite database's folder when `database_url` is unset"
    )
    session_hours: float = Field(
        8.0, gt=0, description="a reviewer's session lasts this long after signing in"
    )
    cookie_secure: bool = Field(
        False, description="mark the session cookie Secure (set it behind HTTPS)"
    )
    login_max_failures: int = Field(
        5,
        ge=1,
        description="failed sign-ins allowed per account, and per address, in "
        "`login_window_s`; more answer 429",
    )
    login_window_s: int = Field(900, ge=1, description="the window of `login_max_failures`")
    hl7_mllp_address: str | None = Field(
        None,
        pattern=r"^[^\s:]+:\d{1,5}$",
        description="`host:port` of the LIS's HL7 v2 MLLP listener: each signed report is "
        "sent there as ORU^R01 (docs/lis-delivery.md)",
    )
    hl7_listen_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="a port on which to take HL7 v2 ORM^O01/OML^O21 orders over MLLP and "
        "open their specimens (off when unset; docs/lis-delivery.md)",
    )
    fhir_base_url: str | None = Field(
        None,
        description="a FHIR R4 base URL: each signed report is POSTed there as a "
        "transaction Bundle",
    )
    fhir_token: str | None = Field(None, description="bearer token for `fhir_base_url`")
    delivery_max_attempts: int = Field(
        10, ge=1, description="tries per report message before it is parked as failed"
    )
    delivery_backoff_s: float = Field(
        2.0, gt=0, description="first retry delay; doubled each try (with jitter), at most 600 s"
    )
    delivery_timeout_s: float = Field(10.0, gt=0, description="connect and ACK timeout")
    delivery_lease_s: float = Field(
        60.0, gt=0, description="a claimed message is another worker's again after this"
    )
    delivery_poll_s: float = Field(0.5, gt=0, description="the outbox is checked this often")
    admin_key: str | None = Field(
        None,
        description="the credential of `/admin/*` (reload), sent like an API key; API keys "
        "never open those routes, and with API keys set and no admin key they are closed",
    )
    admin_key_file: Path | None = Field(
        None, description="a file of admin keys, one a line; re-read when it changes"
    )
    cors_origins: list[str] = Field(
        [], description="origins allowed by CORS, as a JSON list; none by default"
    )
    body_timeout_s: float = Field(
        30.0, description="time allowed to send a request body (then 408)"
    )
    keep_alive_s: int = Field(75, description="idle keep-alive between requests, seconds")
    gil_switch_interval_s: float = Field(
        0.0005,
        description="Python's thread switch interval "
        "in the workers (shorter: fairer to the event loop)",
    )
    work_threads: int = Field(
        2,
        ge=1,
        description="threads per worker process that decode "
        "and classify; more requests than this wait their turn",
    )
    balance_connections: bool = Field(
        True,
        description="with several workers, one holding more than its share of "
        "keep-alive connections closes one (Connection: close) so that "
        "the client reconnects and they even out (app/balance.py)",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="request line and headers larger than this get 431 "
        "and the connection is closed (app/protocol.py)",
    )
    header_timeout_s: float = Field(
        20.0,
        gt=0,
        description="a new connection, or a request once started, must send its "
        "request line and headers within this time, else 408 and "
        "the connection is closed (app/protocol.py)",
    )
    max_pending: int = Field(
        128,
        ge=0,
        description="classification requests a worker holds at once, in progress "
        "or waiting; more are refused at once with 503 and "
        "Retry-After (app/admission.py). 0: no bound",
    )
    max_pending_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="upload bytes (declared Content-Length) those requests may hold at once "
        "in a worker; a request alone is always admitted (up to its own limit)",
    )
    inline_max_pixels: int = Field(
        1_000_000,
        ge=0,
        description="single images of up to this many pixels (read from the header) are "
        "classified on the event loop itself: for a cell image the hop to a work "
        "thread costs more CPU than it saves (reports/performance.md); larger "
        "ones, and batches, go to the work threads so that they do not hold up "
        "other connections. 0: always the work threads",
    )


@lru_cache
def get_settings() -> Settings:
    return Settings()
