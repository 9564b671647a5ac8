"""Schema fuzzing: schemathesis against the app's own OpenAPI schema on a real server,
bounded in examples and time; no 5xx allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bench.server import Server
from tests.conftest import PROJECT


def test_no_server_errors_under_schema_fuzzing(tiny_model: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        if os.environ.get("CI") == "true":
            pytest.fail("schemathesis is not installed")
        pytest.skip("schemathesis is not installed")
    with Server(env={"WBC_MODEL_DIR": str(tiny_model)}) as server:
        result = subprocess.run(
            [
                cli,
                "run",
                f"{server.url}/openapi.json",
                "--checks",
                "not_a_server_error",
                "--max-examples",
                "25",
                "--request-timeout",
                "20",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=PROJECT,
        )
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert httpx.get(f"{server.url}/health/ready", timeout=5).status_code == 200
