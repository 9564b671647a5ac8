"""Schema fuzzing: schemathesis against the app's own OpenAPI schema on a real server with
API and admin keys set, every check on, bounded in examples and time: no 5xx, no
undocumented status code or content type, no response outside its schema.

One check is left out: ``positive_data_acceptance`` expects every schema-valid request to
be accepted, but an image body is schema-valid as any bytes, and bytes that are not an
image are rightly refused (400, 415), as a v2 tensor whose data does not fit its shape
is (400, 422): no OpenAPI schema can say "a decodable image"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.server import Server, add_reviewer
from tests.conftest import PROJECT

KEY = "fuzz-api-key"
ADMIN = "fuzz-admin-key"


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    tiny_model: Path, tmp_path: Path
) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        if os.environ.get("CI") == "true":
            pytest.fail("schemathesis is not installed")
        pytest.skip("schemathesis is not installed")
    env = {
        "WBC_MODEL_DIR": str(tiny_model),
        "WBC_API_KEY": KEY,
        "WBC_ADMIN_KEY": ADMIN,
        "WBC_DATABASE_URL": f"sqlite:///{tmp_path / 'wbc.sqlite3'}",
    }
    add_reviewer(
        env, "fuzz", "a long enough passphrase"
    )  # a reviewer, for the routes only a signed-in person may call
    with Server(env=env) as server:
        login = httpx.post(
            f"{server.url}/auth/login",
            json={"username": "fuzz", "password": "a long enough passphrase"},
        )
        session, csrf = login.cookies["wbc_session"], login.json()["csrf_token"]
        result = subprocess.run(
            [
                cli,
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "all",
                "--exclude-checks",
                "positive_data_acceptance",
                # sign-in is tested on its own (tests/app/test_specimens.py): fuzzed, it
                # refuses made-up credentials and would sign the session above out
                "--exclude-path-regex",
                "^/auth/log(in|out)$",
                # the API key for the API, the admin key for /admin (each route takes
                # whichever header holds its own credential)
                "-H",
                f"Authorization: Bearer {KEY}",
                "-H",
                f"X-API-Key: {ADMIN}",
                "-H",  # and a reviewer's session with its CSRF token
                f"Cookie: wbc_session={session}",
                "-H",
                f"X-CSRF-Token: {csrf}",
                "--max-examples",
                "25",
                "--seed",  # the same cases every run: CI does not pass or fail by chance
                "20261206",
                "--request-timeout",
                "20",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=400,
            cwd=PROJECT,
        )
        report = result.stdout[-6000:] + result.stderr[-2000:]
        assert result.returncode == 0, report
        assert "Authentication failed" not in result.stdout, report  # every route was reached
        assert httpx.get(f"{server.url}/health/ready", timeout=5).status_code == 200
