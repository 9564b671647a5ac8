"""Load and fault checks on the real server, loopback only, bounded in time and count.

    python -m bench.reliability [--soak-seconds 600]

1. soak: closed-loop load at concurrency 32; resident memory sampled every 10 s;
2. graceful shutdown: SIGTERM while 16 requests are in flight; every accepted request
   must get its answer;
3. bad model folders at start: missing and corrupt; the server must stay up, log a
   clear line and answer /health/ready with 503;
4. hot reload: a new model version appears; POST /admin/reload under load; no request
   may fail and the new version must be served;
5. hostile clients (bench/hostile.py): each case's answer and the worker's peak memory.
Writes reports/reliability.md, reports/reliability_memory.png and reliability.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from app.predictor import resolve_version_dir
from bench import hostile
from bench.images import real_images
from bench.load import run_load
from bench.server import PROJECT, Server

MODEL = PROJECT / "models" / "wbc-classifier"


async def soak(server: Server, images: list[bytes], seconds: float) -> dict:
    samples: list[tuple[float, float]] = []
    start = time.perf_counter()

    async def sample() -> None:
        while time.perf_counter() - start < seconds:
            samples.append((time.perf_counter() - start, server.rss_mb()))
            await asyncio.sleep(10)

    sampler = asyncio.create_task(sample())
    result = await run_load(server.url, images, 32, seconds)
    sampler.cancel()
    samples.append((time.perf_counter() - start, server.rss_mb()))
    half = [m for t, m in samples if t >= seconds / 2]
    return {
        "load": result.summary(),
        "statuses": result.statuses,
        "rss_samples": samples,
        "rss_growth_second_half_mb": (max(half) - min(half)) if half else None,
    }


async def graceful_shutdown(images: list[bytes]) -> dict:
    server = Server().start()
    assert server.proc
    answered: list[int] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:

        async def one(i: int) -> None:
            try:
                r = await http.post(
                    "/predict",
                    content=images[i % len(images)],
                    headers={"content-type": "image/jpeg"},
                )
                answered.append(r.status_code)
            except httpx.HTTPError:
                answered.append(0)

        tasks = [asyncio.create_task(one(i)) for i in range(16)]
        await asyncio.sleep(0.05)  # requests are on the wire
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*tasks)
    code = server.proc.wait(timeout=60)
    return {
        "sent": 16,
        "answered_200": answered.count(200),
        "failed": 16 - answered.count(200),
        "exit_code": code,
    }


def bad_model_dirs() -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        corrupt = Path(tmp) / "corrupt"
        (corrupt / "1").mkdir(parents=True)
        (corrupt / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
        # the shipped model's own metadata, so that the SavedModel itself is what is refused
        # (an empty one is refused earlier, by the crop check, as a model of another crop)
        shutil.copy(resolve_version_dir(MODEL) / "metadata.json", corrupt / "1" / "metadata.json")
        for name, path in (("missing", Path(tmp) / "nothing"), ("corrupt", corrupt)):
            server = Server(env={"WBC_MODEL_DIR": str(path), "WBC_LOG_LEVEL": "INFO"})
            proc = subprocess.Popen(
                [sys.executable, "-m", "app"],
                cwd=PROJECT,
                env=server.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            status, detail = None, None
            for _ in range(200):
                try:
                    r = httpx.get(f"{server.url}/health/ready", timeout=1)
                    if r.status_code == 503 and "loading" not in r.text:
                        status, detail = r.status_code, r.json()["detail"]
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
            alive = proc.poll() is None
            live = httpx.get(f"{server.url}/health/live", timeout=2).status_code if alive else 0
            proc.terminate()
            logs = proc.communicate(timeout=30)[0].decode(errors="replace")
            line = next((ln for ln in logs.splitlines() if "model not loaded" in ln), "")
            out[name] = {
                "ready_status": status,
                "detail": detail,
                "process_alive": alive,
                "live_status": live,
                "log_line": line[:300],
            }
    return out


async def hot_reload(images: list[bytes]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "wbc-classifier"
        shutil.copytree(resolve_version_dir(MODEL), models / "1")
        server = Server(env={"WBC_MODEL_DIR": str(models)}).start()
        try:
            load = asyncio.create_task(run_load(server.url, images, 8, 20))
            await asyncio.sleep(5)
            new = models / "2"
            shutil.copytree(models / "1", new)
            meta = json.loads((new / "metadata.json").read_text())
            meta["version"] = "2"
            (new / "metadata.json").write_text(json.dumps(meta))
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as http:
                reload = await http.post("/admin/reload")
                served = (await http.get("/v1/models/wbc-classifier")).json()["version"]
            result = (await load).summary()
        finally:
            server.stop()
    return {
        "reload_status": reload.status_code,
        "served_version_after": served,
        "load_during_reload": result,
    }


def plot_memory(samples: list[tuple[float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot([t / 60 for t, _ in samples], [m for _, m in samples], "o-")
    ax.set_xlabel("minutes under load (32 clients)")
    ax.set_ylabel("resident memory, MiB")
    ax.set_title("Server memory during the soak")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soak-seconds", type=float, default=600)
    parser.add_argument("--out", type=Path, default=PROJECT / "reports")
    args = parser.parse_args()
    images = real_images()
    with Server() as server:
        soak_result = asyncio.run(soak(server, images, args.soak_seconds))
    print(json.dumps(soak_result["load"]), flush=True)
    shutdown = asyncio.run(graceful_shutdown(images))
    print(json.dumps(shutdown), flush=True)
    bad = bad_model_dirs()
    print(json.dumps(bad), flush=True)
    reload = asyncio.run(hot_reload(images))
    print(json.dumps(reload), flush=True)
    hostile_rows = hostile.run_cases()
    record = {
        "soak": soak_result,
        "graceful_shutdown": shutdown,
        "bad_model_dirs": bad,
        "hot_reload": reload,
        "hostile": hostile_rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reliability.json").write_text(json.dumps(record, indent=2) + "\n")
    plot_memory(soak_result["rss_samples"], args.out / "reliability_memory.png")
    s = soak_result["load"]
    command = f"python -m bench.reliability --soak-seconds {args.soak_seconds:g}"
    lines = [
        "# Reliability",
        "",
        f"Produced by `{command}` "
        "(real server on loopback, 2-core machine shared with the load generator).",
        "",
        "## Soak",
        "",
        f"{args.soak_seconds / 60:.1f} min at 32 concurrent clients: {s['requests']} requests, "
        f"**{s['errors']} errors**, {s['throughput']:.0f} images/s, p50 {s['p50_ms']:.1f} ms, "
        f"p99 {s['p99_ms']:.1f} ms. Resident memory "
        f"{soak_result['rss_samples'][0][1]:.0f} MiB at start, "
        f"{soak_result['rss_samples'][-1][1]:.0f} MiB at the end; growth over the second half: "
        f"**{soak_result['rss_growth_second_half_mb']:.1f} MiB**.",
        "",
        "![memory](reliability_memory.png)",
        "",
        "## Graceful shutdown",
        "",
        f"SIGTERM with 16 requests in flight: {shutdown['answered_200']} of 16 answered 200, "
        f"{shutdown['failed']} lost; exit code {shutdown['exit_code']}.",
        "",
        "## Bad model folder at start",
        "",
    ]
    for name, r in bad.items():
        lines.append(
            f"- {name}: process alive {r['process_alive']}, /health/live "
            f"{r['live_status']}, /health/ready {r['ready_status']} "
            f"(`{r['detail']}`); log: `{r['log_line'][:200]}`"
        )
    lr = reload["load_during_reload"]
    lines += [
        "",
        "## Hot reload",
        "",
        f"New version dropped in, `POST /admin/reload` under load at 8 clients: reload "
        f"status {reload['reload_status']}, served version after: "
        f"{reload['served_version_after']}; during the 20 s: {lr['requests']} requests, "
        f"**{lr['errors']} errors**, p99 {lr['p99_ms']:.0f} ms.",
        "",
        *hostile.section(hostile_rows, command),
    ]
    (args.out / "reliability.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
