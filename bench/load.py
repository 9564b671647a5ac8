"""Closed-loop HTTP load: N clients each POST an image, wait for the answer, repeat."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, float | int]:
        lat = np.array(self.latencies_ms or [float("nan")])
        return {
            "concurrency": self.concurrency,
            "requests": len(self.latencies_ms),
            "errors": self.errors,
            "throughput": len(self.latencies_ms) / self.seconds,
            "p50_ms": float(np.percentile(lat, 50)),
            "p90_ms": float(np.percentile(lat, 90)),
            "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()),
            "error_kinds": self.error_kinds,
        }


async def _client(
    http: httpx.AsyncClient,
    url: str,
    images: list[bytes],
    offset: int,
    deadline: float,
    max_requests: int,
    result: LoadResult,
) -> None:
    i = offset
    while time.perf_counter() < deadline and len(result.latencies_ms) < max_requests:
        body = images[i % len(images)]
        i += 1
        start = time.perf_counter()
        try:
            r = await http.post(url, content=body, headers={"content-type": "image/jpeg"})
            status = r.status_code
        except httpx.HTTPError as exc:
            status = 0
            kind = f"{type(exc).__name__}: {str(exc)[:80]}"
            result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status == 200:
            result.latencies_ms.append((time.perf_counter() - start) * 1000)
        else:
            result.errors += 1


async def run_load(
    base_url: str,
    images: list[bytes],
    concurrency: int,
    seconds: float,
    max_requests: int = 1_000_000,
) -> LoadResult:
    """Bounded in time and count; loopback only."""
    assert base_url.startswith(("http://127.", "http://localhost")), "loopback only"
    result = LoadResult(concurrency, seconds)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as http:
        for _ in range(min(concurrency, 4)):  # warm connections
            await http.post("/predict", content=images[0], headers={"content-type": "image/jpeg"})
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(
            *(
                _client(http, "/predict", images, k * 7, deadline, max_requests, result)
                for k in range(concurrency)
            )
        )
        result.seconds = time.perf_counter() - start
    return result


WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")


def _ms(text: str) -> float:
    value, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]", "", text)  # type: ignore[union-attr]
    return value * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def run_wrk(
    base_url: str,
    image_paths: list[Path],
    concurrency: int,
    seconds: float,
    timeout_s: float = 30,
    honour_retry_after: bool = False,
) -> dict:
    """The same closed loop with wrk (C, one thread): a load generator that leaves the
    two cores to the server. Returns the summary() shape, plus ``non_2xx`` and
    ``timeouts`` (requests given up after ``timeout_s``), both also in ``errors``."""
    assert base_url.startswith(("http://127.", "http://localhost")), "loopback only"
    env = {
        **os.environ,
        "WRK_IMAGES": ":".join(str(p) for p in image_paths),
        "WRK_HONOUR_RETRY_AFTER": "1" if honour_retry_after else "0",
    }
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "--timeout",
            f"{timeout_s:g}s",
            "-s",
            str(WRK_SCRIPT),
            f"{base_url}/predict",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    pct = dict(re.findall(r"^\s+(\d+)%\s+(\S+)\s*$", out, re.M))  # "1.12s " above 1 s
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = int(non2xx.group(1)) if non2xx else 0
    socket_errors = [int(n) for n in sock.groups()] if sock else [0, 0, 0, 0]
    errors = non_2xx + sum(socket_errors)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return {
        "concurrency": concurrency,
        "requests": total,
        "errors": errors,
        "throughput": rate,
        "p50_ms": _ms(pct["50"]),
        "p90_ms": _ms(pct["90"]),
        "p99_ms": _ms(pct["99"]),
        "max_ms": float("nan"),
        "client": "wrk",
        "non_2xx": non_2xx,
        "timeouts": socket_errors[3],
    }
