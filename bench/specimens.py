"""The specimen store under load: adding 100 cell images to a specimen and reading its
differential back, on SQLite and on PostgreSQL; and /predict with the database configured
against the same server without one, in the same run.

    python -m bench.specimens [--specimens 10] [--seconds 10]

A real server on loopback (one worker, no keys), real TEST images, PostgreSQL from Debian's
packages on a temporary cluster (tests/postgres.py). Writes reports/specimens.md and
reports/specimens.json. A benchmark, not a test: it asserts no speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.images import real_image_paths
from bench.load import run_wrk
from bench.server import PROJECT, Server
from model_training import machine

BATCH = 50  # images per POST /specimens/{id}/images (two per specimen)


def specimen_round(url: str, images: list[bytes], n: int) -> dict:
    """``n`` specimens of 100 images each: the time of each add and of each read."""
    add_ms, read_ms, total_s = [], [], 0.0
    with httpx.Client(base_url=url, timeout=120) as http:
        start = time.perf_counter()
        for s in range(n):
            accession = f"BENCH-{dt.datetime.now().strftime('%H%M%S%f')}-{s}"
            sid = http.post("/specimens", json={"accession": accession}).json()["id"]
            for b in range(0, 100, BATCH):
                files = [
                    ("files", (f"{i}.jpg", images[(b + i) % len(images)], "image/jpeg"))
                    for i in range(BATCH)
                ]
                t = time.perf_counter()
                r = http.post(f"/specimens/{sid}/images", files=files)
                add_ms.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 201, r.text[:300]
            t = time.perf_counter()
            got = http.get(f"/specimens/{sid}").json()
            read_ms.append((time.perf_counter() - t) * 1000)
            assert len(got["cells"]) == 100
        total_s = time.perf_counter() - start
    return {
        "specimens": n,
        "images_per_s": round(100 * n / total_s, 1),
        "add_50_p50_ms": round(statistics.median(add_ms), 1),
        "read_100_p50_ms": round(statistics.median(read_ms), 1),
    }


def predict_rate(url: str, seconds: float) -> dict:
    row = run_wrk(url, real_image_paths(), 8, seconds)
    return {"images_per_s": row["throughput"], "p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"]}


def main() -> None:
    from tests.postgres import postgres_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specimens", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--out", type=Path, default=PROJECT / "reports")
    args = parser.parse_args()
    images = [p.read_bytes() for p in real_image_paths()[:100]]
    results: dict = {}
    with postgres_server() as pg_url:
        sqlite_url = f"sqlite:///{Path('/tmp') / f'wbc-bench-{time.time_ns()}.sqlite3'}"
        backends = {"SQLite": sqlite_url, "PostgreSQL": pg_url}
        for name, url in backends.items():
            env = {"WBC_DATABASE_URL": url, "WBC_MAX_BATCH": str(BATCH)}
            if name == "PostgreSQL":  # production migrates before the service starts
                subprocess.run(
                    [sys.executable, "-m", "app", "db", "upgrade"],
                    check=True,
                    env={**os.environ, **env},
                    capture_output=True,
                )
            with Server(env=env) as server:
                results[name] = specimen_round(server.url, images, args.specimens)
                print(name, json.dumps(results[name]), flush=True)
        predict: dict = {}
        for label, url in (
            ("PostgreSQL configured", pg_url),
            ("no database (unreachable)", "postgresql+psycopg://x@127.0.0.1:9/none"),
            ("PostgreSQL configured, again", pg_url),
        ):
            with Server(env={"WBC_DATABASE_URL": url}) as server:
                predict[label] = predict_rate(server.url, args.seconds)
                print(label, json.dumps(predict[label]), flush=True)
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "store": results,
        "predict_8_clients": predict,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "specimens.json").write_text(json.dumps(record, indent=2) + "\n")
    command = f"python -m bench.specimens --specimens {args.specimens} --seconds {args.seconds:g}"
    lines = [
        "# Specimen store",
        "",
        f"Produced by `{command}` on {record['date']} ({record['machine']}; one worker, "
        "loopback, PostgreSQL 15 from Debian on the same machine).",
        "",
        f"## 100 images per specimen ({args.specimens} specimens, {BATCH} images a request)",
        "",
        "| database | images/s, add and read | p50 ms, add 50 images | p50 ms, read 100 cells |",
        "|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['images_per_s']:.0f} | {r['add_50_p50_ms']:.0f} | "
            f"{r['read_100_p50_ms']:.0f} |"
        )
    lines += [
        "",
        "## /predict at 8 clients, with and without the database",
        "",
        "/predict never touches the database; this shows configuring one costs it nothing.",
        "",
        "| server | images/s | p50 ms | p99 ms |",
        "|---|---|---|---|",
    ]
    for label, r in predict.items():
        lines.append(
            f"| {label} | {r['images_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    (args.out / "specimens.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
