"""Hostile and careless clients against a real server set up as deployed (one worker, an
API key and an admin key), each case with the worker's peak resident memory during it.

    python -m bench.hostile [--out reports]

Before each case the worker's high-water mark of resident memory is reset (Linux:
``/proc/PID/clear_refs``), after it ``VmHWM`` is read: the most the case made the worker
hold, to set against the deployment's memory limit (2 GiB in compose and Kubernetes).
Then the service must still answer a real image. Writes reports/hostile.json and the
table of reports/reliability.md's "Hostile clients" section (``section``).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.images import real_images
from bench.server import PROJECT, Server

KEY = "bench-api-key"
ADMIN = "bench-admin-key"
AUTH = {"X-API-Key": KEY}
V2 = "/v2/models/wbc-classifier/infer"
LIMIT_MIB = 2048  # compose mem_limit and the Kubernetes memory limit


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def raw_connection(port: int, head: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head)
    return sock


def status_of(sock: socket.socket) -> int:
    sock.settimeout(30)
    line = sock.recv(4096).split(b"\r\n")[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/") else 0


def fp32_body(n: int, value: bytes = b"0") -> bytes:
    count = n * 150 * 150 * 3
    data = (value + b",") * (count - 1) + value
    return (
        b'{"inputs":[{"name":"image","shape":[' + str(n).encode() + b",150,150,3],"
        b'"datatype":"FP32","data":[' + data + b"]}]}"
    )


def case_batch0(url: str, port: int, image: bytes) -> str:
    body = {
        "inputs": [{"name": "image", "shape": [0, 150, 150, 3], "datatype": "FP32", "data": [[]]}]
    }
    first = httpx.post(url + V2, json=body, headers=AUTH, timeout=30).status_code
    statuses = [
        httpx.post(
            url + "/predict/batch", files=[("files", ("a.jpg", image))], headers=AUTH, timeout=30
        ).status_code
        for _ in range(20)
    ]
    return f"batch-0 request: {first}; then 20 batches: {statuses.count(200)} answered 200"


def case_unknown_paths(url: str, port: int, image: bytes) -> str:
    with httpx.Client(base_url=url, timeout=30) as http:
        codes = [http.get(f"/v2/models/m{i}/infer").status_code for i in range(5000)]
        codes += [http.get(f"/v1/models/m{i}").status_code for i in range(5000)]
        size = len(http.get("/metrics", headers=AUTH).content)
    return (
        f"10,000 made-up paths without a key: {codes.count(401)} answered 401; "
        f"/metrics afterwards {size / 1024:.0f} KiB"
    )


def case_keyless_big_json(url: str, port: int, image: bytes) -> str:
    start = time.perf_counter()
    sock = raw_connection(
        port,
        f"POST {V2} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        f"content-length: {240 * 1024 * 1024}\r\n\r\n".encode()
        + b'{"inputs":[' * 1000,
    )
    status = status_of(sock)
    sock.close()
    took = time.perf_counter() - start
    ready = httpx.get(url + "/health/ready", timeout=5).status_code
    return f"a keyless 240 MB JSON body: {status} after {took * 1000:.0f} ms; ready {ready}"


def case_keyless_slots(url: str, port: int, image: bytes) -> str:
    socks = [
        raw_connection(
            port,
            f"POST {path} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
            f"content-length: {256 * 1024 * 1024}\r\n\r\n{{".encode(),
        )
        for path in (V2, "/predict/batch") * 3
    ]
    refused = [status_of(s) for s in socks]
    ok = [
        httpx.post(
            url + "/predict",
            content=image,
            headers={**AUTH, "content-type": "image/jpeg"},
            timeout=30,
        ).status_code
        for _ in range(20)
    ]
    for s in socks:
        s.close()
    return (
        f"six keyless connections announcing 256 MiB: {refused.count(401)} answered 401 "
        f"at once; then 20 keyed /predict: {ok.count(200)} answered 200"
    )


def case_fp32_1800(url: str, port: int, image: bytes) -> str:
    body = fp32_body(1800)
    start = time.perf_counter()
    r = httpx.post(url + V2, content=body, headers=AUTH, timeout=120)
    return (
        f"keyed v2 FP32 N=1800 ({len(body) / 1e6:.0f} MB of JSON): {r.status_code} after "
        f"{time.perf_counter() - start:.1f} s"
    )


def case_fp32_max(url: str, port: int, image: bytes) -> str:
    body = fp32_body(64, b"254.5")
    start = time.perf_counter()
    r = httpx.post(url + V2, content=body, headers=AUTH, timeout=120)
    return (
        f"keyed v2 FP32 at the batch limit, N=64 ({len(body) / 1e6:.0f} MB of JSON): "
        f"{r.status_code} after {time.perf_counter() - start:.1f} s"
    )


def case_bytes_40000(url: str, port: int, image: bytes) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    one = base64.b64encode(buf.getvalue()).decode()
    body = {
        "inputs": [
            {"name": "image_bytes", "shape": [40000], "datatype": "BYTES", "data": [one] * 40000}
        ]
    }
    start = time.perf_counter()
    r = httpx.post(url + V2, json=body, headers=AUTH, timeout=120)
    return (
        f"keyed v2 BYTES, 40,000 one-pixel PNGs: {r.status_code} after "
        f"{time.perf_counter() - start:.1f} s"
    )


def case_png16(url: str, port: int, image: bytes) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((5000, 8000), np.uint16)).save(buf, "PNG")
    start = time.perf_counter()
    r = httpx.post(
        url + "/predict",
        content=buf.getvalue(),
        headers={**AUTH, "content-type": "image/png"},
        timeout=120,
    )
    return (
        f"a 16-bit 40-megapixel PNG of {len(buf.getvalue()) / 1024:.0f} KB: {r.status_code} "
        f"after {time.perf_counter() - start:.1f} s"
    )


def case_multipart_v2(url: str, port: int, image: bytes) -> str:
    with httpx.Client(base_url=url, timeout=30) as http:
        r = http.post(V2, files={"f": ("x.bin", b"\0" * (5 * 1024 * 1024))}, headers=AUTH)
        after = http.get("/v2/models/wbc-classifier/ready", headers=AUTH).status_code
    return f"a 5 MB multipart body to v2: {r.status_code}; the same connection then: {after}"


def case_bomb(url: str, port: int, image: bytes) -> str:
    buf = io.BytesIO()
    Image.new("L", (20000, 20000)).save(buf, "PNG")  # 400 megapixels of zeros
    r = httpx.post(
        url + "/predict",
        content=buf.getvalue(),
        headers={**AUTH, "content-type": "image/png"},
        timeout=60,
    )
    return f"a {len(buf.getvalue()) / 1024:.0f} KB PNG of 400 megapixels: {r.status_code}"


CASES: list[tuple[str, Callable[[str, int, bytes], str]]] = [
    ("v2 FP32 batch of 0", case_batch0),
    ("made-up paths", case_unknown_paths),
    ("keyless 240 MB JSON", case_keyless_big_json),
    ("keyless upload slots", case_keyless_slots),
    ("v2 FP32 N=1800", case_fp32_1800),
    ("v2 FP32 N=64 (the limit)", case_fp32_max),
    ("v2 BYTES x 40,000", case_bytes_40000),
    ("16-bit 40 MP PNG", case_png16),
    ("multipart to v2", case_multipart_v2),
    ("decompression bomb", case_bomb),
]


def run_cases() -> list[dict]:
    image = real_images(1)[0]
    env = {"WBC_API_KEY": KEY, "WBC_ADMIN_KEY": ADMIN, "WBC_WORKERS": "1"}
    rows = []
    with Server(env=env) as server:
        assert server.proc
        pid = server.proc.pid
        for name, case in CASES:
            reset_peak(pid)
            try:
                outcome = case(server.url, server.port, image)
            except Exception as exc:  # noqa: BLE001 - a case that breaks is a finding
                outcome = f"client error: {type(exc).__name__}: {str(exc)[:120]}"
            peak = peak_mib(pid)
            after = httpx.post(
                server.url + "/predict",
                content=image,
                headers={**AUTH, "content-type": "image/jpeg"},
                timeout=60,
            ).status_code
            rows.append(
                {
                    "case": name,
                    "outcome": outcome,
                    "peak_mib": round(peak, 1),
                    "predict_after": after,
                    "alive": server.proc.poll() is None,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def section(rows: list[dict], command: str = "python -m bench.hostile") -> list[str]:
    lines = [
        "## Hostile clients",
        "",
        f"Produced by `{command}` (one worker with an API key and an admin key, "
        "as deployed; real server on loopback). Peak: the worker's resident high-water mark "
        f"during the case (reset before it); the deployment's limit is {LIMIT_MIB} MiB. "
        "After each case the worker must still classify a real image.",
        "",
        "| case | what happened | worker peak, MiB | /predict after |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['outcome']} | {r['peak_mib']:.0f} | {r['predict_after']} |"
        )
    worst = max(r["peak_mib"] for r in rows)
    lines += ["", f"Largest peak: **{worst:.0f} MiB** of the {LIMIT_MIB} MiB limit.", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROJECT / "reports")
    args = parser.parse_args()
    rows = run_cases()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hostile.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(section(rows)))


if __name__ == "__main__":
    main()
