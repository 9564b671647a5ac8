"""What the API acknowledged is stored: a real server is killed with SIGKILL in the middle
of a run of reclassifications; after a restart every acknowledged change is there, in
order, with its audit event (SQLite in WAL mode with synchronous=FULL, and PostgreSQL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from bench.server import Server, add_reviewer
from tests.app.test_specimens import jpeg
from tests.postgres import binaries, postgres_server

KEY = "durability-key"
PASSWORD = "a long enough passphrase"


def run_and_kill(env: dict[str, str]) -> None:
    add_reviewer(env, "carol", PASSWORD)
    with Server(env=env) as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        machine = {"X-API-Key": KEY}
        sid = http.post("/specimens", json={"accession": "KILL-1"}, headers=machine).json()["id"]
        files = [("files", (f"{i}.jpg", jpeg(i), "image/jpeg")) for i in range(4)]
        added = http.post(f"/specimens/{sid}/images", files=files, headers=machine).json()
        cells = [c["id"] for c in added["added"]]
        csrf = http.post("/auth/login", json={"username": "carol", "password": PASSWORD}).json()[
            "csrf_token"
        ]
        acknowledged: list[tuple[int, str, int]] = []  # cell, label, version after
        version = added["version"]
        labels = ["eosinophil", "lymphocyte", "monocyte", "neutrophil"]
        killer = threading.Timer(1.5, lambda: os.kill(server.proc.pid, signal.SIGKILL))
        killer.start()
        i = 0
        while True:
            cell, label = cells[i % len(cells)], labels[i % 3]
            try:
                r = http.patch(
                    f"/specimens/{sid}/cells/{cell}",
                    json={"label": label, "version": version},
                    headers={"X-CSRF-Token": csrf},
                )
            except httpx.TransportError:
                break  # killed
            assert r.status_code == 200, r.text
            version = r.json()["version"]
            acknowledged.append((cell, label, version))
            i += 1
        killer.join()
        server.proc.wait(10)
    assert len(acknowledged) > 5, "the server was killed before enough changes"
    with Server(env=env) as again:
        http = httpx.Client(base_url=again.url, timeout=30)
        got = http.get(f"/specimens/{sid}", headers={"X-API-Key": KEY}).json()
        events = http.get(f"/specimens/{sid}/audit", headers={"X-API-Key": KEY}).json()["events"]
    reclassified = [
        (e["detail"]["cell"], e["detail"]["to"]) for e in events if e["action"] == "reclassified"
    ]
    # every acknowledged change, in order; at most one more (committed, its answer lost)
    assert reclassified[: len(acknowledged)] == [(c, label) for c, label, _ in acknowledged]
    assert len(reclassified) - len(acknowledged) in (0, 1)
    assert got["version"] >= acknowledged[-1][2]
    current = {c["id"]: c["label"] for c in got["cells"]}
    last = {}
    for cell, label in reclassified:
        last[cell] = label
    assert all(current[cell] == label for cell, label in last.items())


def test_sqlite_keeps_every_acknowledged_change_through_sigkill(tmp_path: Path) -> None:
    env = {
        "WBC_MODEL_DIR": str(Path(__file__).resolve().parents[2] / "models" / "wbc-classifier"),
        "WBC_API_KEY": KEY,
        "WBC_DATABASE_URL": f"sqlite:///{tmp_path / 'wbc.sqlite3'}",
    }
    run_and_kill(env)


def test_postgresql_keeps_every_acknowledged_change_through_sigkill() -> None:
    if binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed")
    with postgres_server() as url:
        env = {
            "WBC_MODEL_DIR": str(Path(__file__).resolve().parents[2] / "models" / "wbc-classifier"),
            "WBC_API_KEY": KEY,
            "WBC_DATABASE_URL": url,
        }
        subprocess.run(
            [sys.executable, "-m", "app", "db", "upgrade"],
            check=True,
            capture_output=True,
            env={**os.environ, **env},
        )
        run_and_kill(env)
