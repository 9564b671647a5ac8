"""Schema fuzzing: schemathesis against the app's own OpenAPI schema on a real server,
bounded in examples and time; no 5xx allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.app.test_server import free_port
from tests.conftest import PROJECT


def test_no_server_errors_under_schema_fuzzing(tiny_model: Path) -> None:
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if cli is None:
        if os.environ.get("CI") == "true":
            pytest.fail("schemathesis is not installed")
        pytest.skip("schemathesis is not installed")
    port = free_port()
    env = {**os.environ, "WBC_MODEL_DIR": str(tiny_model), "WBC_PORT": str(port),
           "WBC_LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "app"], cwd=PROJECT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(240):
            try:
                if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        result = subprocess.run(
            [cli, "run", f"{url}/openapi.json", "--checks", "not_a_server_error",
             "--max-examples", "25", "--request-timeout", "20", "--workers", "1"],
            capture_output=True, text=True, timeout=240, cwd=PROJECT)
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
        assert httpx.get(f"{url}/health/ready", timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
