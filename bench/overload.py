"""More clients than the machine can serve: with the admission bound and without it.

    python -m bench.overload [--seconds 10] [--clients 32,256,1000] [--timeout 2]

One worker (the container's setting) on loopback; wrk keeps N requests of real cell
images outstanding, each client giving up after ``--timeout`` seconds as an LIS with a
request timeout would, and sending its next request at once; after a 503 it either
waits the second that Retry-After asks for (an LIS that honours it) or not (the worst
client). For each level it records the answers (200),
refusals (503), requests given up, latency of all answers, images the server classified
(from /metrics) and how long a readiness probe takes right after the clients have gone.
Writes reports/overload.md, reports/overload.png and a JSON line to reports/overload.jsonl.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import time
from pathlib import Path

import httpx

from bench.images import real_image_paths
from bench.load import run_wrk
from bench.server import PROJECT, Server

# name: (server environment, clients wait the Retry-After of a 503)
VARIANTS = {
    "bounded, clients wait Retry-After": ({}, True),
    "bounded, clients retry at once": ({}, False),
    "unbounded": ({"WBC_MAX_PENDING": "0"}, False),
}


def classified(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=300).text
    return sum(
        float(v) for v in re.findall(r"^wbc_images_classified_total\{.*\} (\S+)$", text, re.M)
    )


def probe_seconds(url: str) -> float:
    """Seconds until /health/ready answers on a new connection."""
    t0 = time.perf_counter()
    httpx.get(f"{url}/health/ready", timeout=300)
    return time.perf_counter() - t0


def level(server: Server, clients: int, seconds: float, timeout: float, wait: bool) -> dict:
    before = classified(server.url)
    row = run_wrk(
        server.url, real_image_paths(), clients, seconds, timeout_s=timeout, honour_retry_after=wait
    )
    row["probe_after_s"] = probe_seconds(server.url)  # the clients have just gone
    time.sleep(timeout + 1)  # let the server finish what is still queued
    row["classified"] = classified(server.url) - before
    row["answered"] = row["requests"] - row["non_2xx"]
    row["unanswered_work"] = max(0.0, row["classified"] - row["answered"])
    return row


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    colours = ("tab:blue", "tab:green", "tab:orange", "tab:red")
    for variant, colour in zip(variants, colours, strict=False):
        mine = [r for r in rows if r["variant"] == variant]
        xs = [r["concurrency"] for r in mine]
        left.plot(
            xs,
            [r["answered"] / r["seconds"] for r in mine],
            "o-",
            color=colour,
            label=f"{variant}: answered (200) /s",
        )
        left.plot(
            xs,
            [r["timeouts"] / r["seconds"] for r in mine],
            "x--",
            color=colour,
            label=f"{variant}: given up /s",
        )
        right.plot(xs, [r["probe_after_s"] for r in mine], "o-", color=colour, label=variant)
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("clients")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    left.set_ylabel("requests / s")
    right.set_ylabel("readiness probe right after the load, s")
    fig.suptitle("Overload: one worker, clients give up after the timeout")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--clients", default="32,256,1000")
    parser.add_argument("--timeout", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=PROJECT / "reports")
    parser.add_argument(
        "--baseline-ref",
        default=None,
        help="also run the default variant against the service as it was at this git "
        "commit (a worktree: its own code and models), same run",
    )
    parser.add_argument("--no-write", action="store_true", help="print only (CI smoke)")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    rows = []
    runs = [(variant, env, wait, PROJECT) for variant, (env, wait) in VARIANTS.items()]
    if args.baseline_ref:
        from bench.run import baseline_worktree

        tree = baseline_worktree(args.baseline_ref)
        env, wait = VARIANTS["bounded, clients wait Retry-After"]
        runs.insert(
            1,
            (
                f"bounded, clients wait Retry-After, at `{args.baseline_ref}`",
                {**env, "WBC_MODEL_DIR": str(tree / "models" / "wbc-classifier")},
                wait,
                tree,
            ),
        )
    for variant, env, wait, cwd in runs:
        with Server(env=env, cwd=cwd) as server:
            for clients in levels:
                row = {
                    "variant": variant,
                    "seconds": args.seconds,
                    **level(server, clients, args.seconds, args.timeout, wait),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.no_write:
        return
    command = (
        f"python -m bench.overload --seconds {args.seconds:g} --clients {args.clients} "
        f"--timeout {args.timeout:g}"
        + (f" --baseline-ref {args.baseline_ref}" if args.baseline_ref else "")
    )
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "overload.jsonl").open("a") as f:
        f.write(json.dumps({"time": stamp, "command": command, "rows": rows}) + "\n")
    plot(rows, args.out / "overload.png")
    lines = [
        "# Overload",
        "",
        f"Produced by `{command}` on {stamp} (one worker, loopback, 2 cores shared with "
        "wrk). `bounded` is the default (`WBC_MAX_PENDING=128` classification requests "
        "per worker, in progress or waiting; more get 503 with `Retry-After: 1` at once), "
        "with clients that wait that second after a 503 before their next request and "
        "with clients that do not; `unbounded` is `WBC_MAX_PENDING=0`. Clients give up "
        f"after {args.timeout:g} s and otherwise send their next request at once.",
        "",
        "| variant | clients | answered 200 /s | refused 503 /s | given up | "
        "p50 ms | p99 ms | classified | classified, nobody waiting | "
        "readiness probe after, s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(
            f"| {r['variant']} | {r['concurrency']} | {r['answered'] / s:.0f} | "
            f"{r['non_2xx'] / s:.0f} | {r['timeouts']} | {r['p50_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['classified']:.0f} | "
            f"{r['unanswered_work']:.0f} | {r['probe_after_s']:.2f} |"
        )
    lines += [
        "",
        "p50 and p99 are over every answer, 503s included (wrk does not split "
        "them); *given up*: requests the client abandoned after the timeout; "
        "*classified, nobody waiting*: images classified beyond the 200s that reached a "
        "client: work done for clients that had given up, and for the requests still "
        "in flight when wrk stopped (at most one per client).",
        "",
        "![overload](overload.png)",
        "",
    ]
    (args.out / "overload.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
