"""Performance benchmark: real server under closed-loop load, and raw runtimes, one run.

    python -m bench.run [--seconds 15] [--workers 1] [--out reports] [--baseline-ref REF]

With ``--baseline-ref``, the same load is also run against the service as it was at git
commit REF (a worktree of it, its own code and models, the same interpreter), right after,
and both sides go into the report. Writes reports/performance.md, reports/performance.png
and appends one JSON line to reports/performance.jsonl. A benchmark, not a test: it asserts
no speed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from app.config import Settings
from app.predictor import resolve_version_dir
from bench import ceiling
from bench.images import real_image_paths, real_images
from bench.load import run_load, run_wrk
from bench.server import PROJECT, Server
from model_training import machine


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conc = [r["concurrency"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(conc, [r["throughput"] for r in rows], "o-")
    a.set_xscale("log", base=2)
    a.set_xlabel("concurrent clients")
    a.set_ylabel("images / s")
    a.set_title("HTTP throughput")
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        b.plot(conc, [r[key] for r in rows], "o-", label=key[:-3])
    b.set_xscale("log", base=2)
    b.set_yscale("log")
    b.set_xlabel("concurrent clients")
    b.set_ylabel("latency, ms")
    b.set_title("Latency percentiles")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def serve_and_load(
    args: argparse.Namespace, env: dict[str, str], cwd: Path, use_wrk: bool, images: list[bytes]
) -> dict:
    """Start the service in ``cwd``, run each concurrency level, read its memory."""
    rows = []
    with Server(workers=args.workers, env=env, cwd=cwd) as server:
        for c in args.concurrency:
            cpu0 = server.cpu_seconds()
            if use_wrk:
                row = run_wrk(server.url, real_image_paths(), c, args.seconds)
            else:
                row = asyncio.run(run_load(server.url, images, c, args.seconds)).summary()
            # CPU the server itself spent per answered request: unlike images/s, not
            # skewed by the load generator sharing the same cores
            row["server_cpu_ms_per_request"] = round(
                (server.cpu_seconds() - cpu0) * 1000 / max(1, row["requests"]), 2
            )
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
        return {
            "http": rows,
            "rss_mb_total": round(server.rss_mb(), 1),
            "rss_mb_worker_max": round(server.worker_rss_mb(), 1),
            "cold_start_s": round(server.cold_start_s, 2),
        }


def median_of(runs: list[dict]) -> dict:
    """Several ``serve_and_load`` results as one: each figure's median over the runs
    (memory: the largest)."""
    if len(runs) == 1:
        return runs[0]
    rows = []
    for level in zip(*(r["http"] for r in runs), strict=True):
        row = dict(level[0])
        for key in ("throughput", "p50_ms", "p90_ms", "p99_ms", "server_cpu_ms_per_request"):
            row[key] = float(np.median([x[key] for x in level]))
        for key in ("requests", "errors", "non_2xx", "timeouts"):
            if key in row:
                row[key] = int(sum(x.get(key, 0) for x in level))
        rows.append(row)
    return {
        "http": rows,
        "rss_mb_total": max(r["rss_mb_total"] for r in runs),
        "rss_mb_worker_max": max(r["rss_mb_worker_max"] for r in runs),
        "cold_start_s": float(np.median([r["cold_start_s"] for r in runs])),
        "runs": len(runs),
    }


def baseline_worktree(ref: str) -> Path:
    """A detached git worktree of ``ref`` under /tmp (made once, reused)."""
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref],
        cwd=PROJECT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    path = Path(tempfile.gettempdir()) / f"wbc-baseline-{sha}"
    if not (path / "app").is_dir():
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--force", str(path), sha],
            cwd=PROJECT,
            check=True,
            capture_output=True,
        )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="per concurrency level")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--runtime-seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=PROJECT / "reports")
    parser.add_argument(
        "--model",
        type=Path,
        default=PROJECT / "models" / "wbc-classifier",
        help="model folder to serve and to run raw (default: the shipped one)",
    )
    parser.add_argument(
        "--work-threads",
        type=int,
        default=None,
        help="WBC_WORK_THREADS for the server (default: the setting's default)",
    )
    parser.add_argument(
        "--inline-max-pixels",
        type=int,
        default=None,
        help="WBC_INLINE_MAX_PIXELS for the server (0: every request goes "
        "through the work threads; default: the setting's default)",
    )
    parser.add_argument(
        "--baseline-ref",
        default=None,
        help="also load the service as it was at this git commit, same run (old vs new)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="with --baseline-ref: rounds of this checkout then the baseline; medians",
    )
    parser.add_argument(
        "--ceiling-seconds",
        type=float,
        default=4.0,
        help="per measure of the in-process ceiling (bench/ceiling.py)",
    )
    parser.add_argument("--no-write", action="store_true", help="print only (CI smoke)")
    parser.add_argument(
        "--python-client",
        action="store_true",
        help="use the httpx load generator even when wrk is installed",
    )
    args = parser.parse_args()
    images = real_images()
    use_wrk = shutil.which("wrk") is not None and not args.python_client

    env = {"WBC_MODEL_DIR": str(args.model.resolve())}
    if args.work_threads:
        env["WBC_WORK_THREADS"] = str(args.work_threads)
    if args.inline_max_pixels is not None:
        env["WBC_INLINE_MAX_PIXELS"] = str(args.inline_max_pixels)
    version_dir = resolve_version_dir(args.model)
    cores = os.cpu_count() or 1
    ceilings = []  # measured beside each round of this checkout: the machine drifts
    if not args.baseline_ref:
        served = serve_and_load(args, env, PROJECT, use_wrk, images)
        ceilings.append(ceiling.measure(images, version_dir, cores, args.ceiling_seconds))
        baseline = None
    else:  # alternate this checkout and the baseline, round after round: a noisy machine
        tree = baseline_worktree(args.baseline_ref)  # slows both sides alike
        base_env = {**env, "WBC_MODEL_DIR": str(tree / "models" / "wbc-classifier")}
        ours, theirs = [], []
        for _ in range(args.rounds):
            ours.append(serve_and_load(args, env, PROJECT, use_wrk, images))
            ceilings.append(ceiling.measure(images, version_dir, cores, args.ceiling_seconds))
            theirs.append(serve_and_load(args, base_env, tree, use_wrk, images))
        served = median_of(ours)
        baseline = {"ref": args.baseline_ref, "rounds": args.rounds, **median_of(theirs)}
    rows, rss, cold = served["http"], served["rss_mb_total"], served["cold_start_s"]

    from bench.runtimes import measure
    from wbc_core.preprocessing import preprocess_bytes

    arrays = np.stack([preprocess_bytes(b).array for b in images[:32]])
    raw = measure(version_dir, arrays, args.runtime_seconds)
    print(json.dumps(raw), flush=True)
    from bench.stages import profile

    stages = profile(images[:100], version_dir, repeats=1 if args.no_write else 3)
    print(json.dumps(stages), flush=True)

    by_c = {r["concurrency"]: r for r in rows}
    onnx_b1 = raw.get("onnxruntime", {}).get("batch1")
    record = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine.describe(),
        "workers": args.workers,
        "model": str(version_dir),
        "arch": json.loads((version_dir / "metadata.json").read_text()).get("arch"),
        "work_threads": args.work_threads or Settings().work_threads,
        "inline_max_pixels": (
            Settings().inline_max_pixels
            if args.inline_max_pixels is None
            else args.inline_max_pixels
        ),
        "load_generator": "wrk" if use_wrk else "httpx",
        "seconds_per_level": args.seconds,
        "cold_start_s": round(cold, 2),
        "rss_mb_total": round(rss, 1),
        "rss_mb_per_worker": round(rss / max(1, args.workers), 1),
        "rss_mb_worker_max": served["rss_mb_worker_max"],
        "http": rows,
        "baseline": baseline,
        "raw": raw,
        "stages_ms": stages,
        "ratio_c8_to_onnx_b1": (by_c[8]["throughput"] / onnx_b1) if onnx_b1 and 8 in by_c else None,
        # the same work without HTTP: every core running the request's stages back to back
        "inprocess_ceiling": cores * 1000 / stages["sum"],  # one thread's stages x cores
        # ... and measured: a process per core running the request's work at once
        "inprocess_ceiling_measured": float(np.median([c["all"] for c in ceilings])),
        "inprocess_one_process": float(np.median([c["one"] for c in ceilings])),
        "ceiling_rounds": [{k: round(v, 1) for k, v in c.items()} for c in ceilings],
    }
    for key, ceiling_key in (
        ("ratio_c8_to_inprocess_ceiling", "inprocess_ceiling"),
        ("ratio_c8_to_measured_ceiling", "inprocess_ceiling_measured"),
    ):
        record[key] = by_c[8]["throughput"] / record[ceiling_key] if 8 in by_c else None
    print(json.dumps(record))
    if args.no_write:
        return
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "performance.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")
    plot(rows, args.out / "performance.png")
    write_markdown(args.out / "performance.md", record, args)


def extra_flags(args: argparse.Namespace) -> str:
    """The non-default flags of this run, for the report's command line."""
    flags = f" --work-threads {args.work_threads}" if args.work_threads else ""
    if args.inline_max_pixels is not None:
        flags += f" --inline-max-pixels {args.inline_max_pixels}"
    if args.model.resolve() != (PROJECT / "models" / "wbc-classifier").resolve():
        flags += f" --model {args.model}"
    if args.baseline_ref:
        flags += f" --baseline-ref {args.baseline_ref} --rounds {args.rounds}"
    if args.out.resolve() != (PROJECT / "reports").resolve():
        flags += f" --out {args.out}"
    return flags


def comparison(rec: dict) -> list[str]:
    """This checkout and the baseline commit, same run, same load."""
    base = rec["baseline"]
    new_c = {r["concurrency"]: r for r in rec["http"]}
    old_c = {r["concurrency"]: r for r in base["http"]}
    rows = [
        ("cold start to ready, s", rec["cold_start_s"], base["cold_start_s"], "{:.2f}"),
        (
            "resident memory, largest worker, MiB",
            rec["rss_mb_worker_max"],
            base["rss_mb_worker_max"],
            "{:.0f}",
        ),
        (
            "resident memory, all processes, MiB",
            rec["rss_mb_total"],
            base["rss_mb_total"],
            "{:.0f}",
        ),
    ]
    for c in sorted(set(new_c) & set(old_c)):
        rows.append(
            (f"images/s at {c} clients", new_c[c]["throughput"], old_c[c]["throughput"], "{:.0f}")
        )
        rows.append((f"p50 ms at {c} clients", new_c[c]["p50_ms"], old_c[c]["p50_ms"], "{:.1f}"))
        rows.append((f"p99 ms at {c} clients", new_c[c]["p99_ms"], old_c[c]["p99_ms"], "{:.1f}"))
    out = [
        f"## This checkout against commit `{base['ref']}`, same run",
        "",
        f"{base['rounds']} rounds, each this checkout then `{base['ref']}` (its own code and "
        "model folder, the same interpreter and load); medians of the rounds (memory: the "
        "largest). The requests column above sums the rounds.",
        "",
        f"| | this checkout | `{base['ref']}` |",
        "|---|---|---|",
    ]
    out += [f"| {name} | {fmt.format(a)} | {fmt.format(b)} |" for name, a, b, fmt in rows]
    return out + [""]


def write_markdown(path: Path, rec: dict, args: argparse.Namespace) -> None:
    lines = [
        "# Performance",
        "",
        f"Produced by `python -m bench.run --seconds {args.seconds:g} --workers "
        f"{args.workers}{extra_flags(args)}` on {rec['date']} ({rec['machine']}; "
        f"load generator: {rec['load_generator']}, closed loop, on the same 2 cores as "
        "the server).",
        "",
        "## End to end over HTTP (raw image body, real TEST images: upload, decode, "
        "white balance (models from v5), localise, resize, inference, JSON)",
        "",
        "| clients | requests | errors | images/s | p50 ms | p90 ms | p99 ms | "
        "server CPU ms / request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rec["http"]:
        lines.append(
            f"| {r['concurrency']} | {r['requests']} | {r['errors']} | "
            f"{r['throughput']:.0f} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['server_cpu_ms_per_request']:.2f} |"
        )
    lines += [
        "",
        f"Cold start to ready: **{rec['cold_start_s']} s**. Resident memory after the "
        f"load: **{rec['rss_mb_worker_max']} MiB in the largest worker**, "
        f"{rec['rss_mb_total']} MiB for all processes ({rec['workers']} worker(s), "
        f"{rec['work_threads']} work threads each; uploads up to "
        f"{rec['inline_max_pixels']} pixels classified on the event loop). "
        f"Model: `{rec['model']}` "
        f"(arch `{rec['arch']}`).",
        "",
        "![throughput and latency](performance.png)",
        "",
    ]
    if rec.get("baseline"):
        lines += comparison(rec)
    lines += [
        "## Raw runtimes, same weights (images/s)",
        "",
        "| runtime | batch 1 | batch 32 |",
        "|---|---|---|",
    ]
    for name, r in rec["raw"].items():
        if "error" in r:
            lines.append(f"| {name} | unavailable: {r['error'][:120]} | |")
        else:
            lines.append(f"| {name} | {r['batch1']:.0f} | {r['batch32']:.0f} |")
    lines += [
        "",
        "## Where the time goes (one request, one thread, median ms per image)",
        "",
        "| " + " | ".join(rec["stages_ms"]) + " |",
        "|" + "---|" * len(rec["stages_ms"]),
        "| " + " | ".join(f"{v:.2f}" for v in rec["stages_ms"].values()) + " |",
        "",
        "Measured by `bench/stages.py` inside the same run; HTTP parsing and the "
        "framework add the difference between this sum and the p50 at 1 client.",
    ]
    if rec["ratio_c8_to_onnx_b1"]:
        lines += [
            "",
            f"HTTP throughput at 8 clients / raw ONNX Runtime batch 1: "
            f"**{rec['ratio_c8_to_onnx_b1']:.2f}**.",
        ]
    if rec.get("ratio_c8_to_inprocess_ceiling"):
        lines += [
            "",
            f"HTTP throughput at 8 clients / the same stages in process on every "
            f"core with no HTTP and no load generator ({rec['inprocess_ceiling']:.0f}"
            f" images/s = cores x 1000 / the sum above): "
            f"**{rec['ratio_c8_to_inprocess_ceiling']:.2f}**.",
        ]
    if rec.get("ratio_c8_to_measured_ceiling"):
        rounds = ", ".join(f"{c['all']:.0f}" for c in rec["ceiling_rounds"])
        lines += [
            "",
            f"HTTP throughput at 8 clients / the in-process ceiling measured "
            f"(`bench/ceiling.py`: a process per core running a worker's `POST /predict` "
            f"work, header to JSON, on the same images at once, no HTTP and no load "
            f"generator; {rec['inprocess_ceiling_measured']:.0f} images/s, median of "
            f"{len(rec['ceiling_rounds'])} measure(s), one beside each round of this "
            f"checkout: {rounds}; one process alone: "
            f"{rec['inprocess_one_process']:.0f}): "
            f"**{rec['ratio_c8_to_measured_ceiling']:.2f}**.",
        ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
