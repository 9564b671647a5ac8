"""How evenly the worker processes share keep-alive connections.

Each round opens ``--clients`` new keep-alive connections (wrk) for a few seconds, counts
the connections each worker holds at the end of the round (from /proc) and reads every
worker's CPU time: a worker that holds most connections does most of the work and
answers late, and the other core idles. ``--no-balance`` turns the connection balancer
(app/balance.py) off, to see what the kernel's hash alone does.

    python -m bench.worker_balance --rounds 6 --clients 8 --seconds 6
    python -m bench.worker_balance --rounds 6 --clients 32 --seconds 4 [--no-balance]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path

from bench.load import run_wrk
from bench.server import Server, established_per_process


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def workers(server: Server) -> list[int]:
    """Worker processes: children of the server that serve requests (uvicorn also starts
    a multiprocessing helper, which uses no CPU under load)."""
    return server.pids()[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/kaggle-blood-cells"))
    parser.add_argument(
        "--no-balance",
        action="store_true",
        help="WBC_BALANCE_CONNECTIONS=false: the kernel's hash alone",
    )
    args = parser.parse_args()
    images = sorted((args.data / "TEST").glob("*/*"))[:200]
    env = {"WBC_BALANCE_CONNECTIONS": "false"} if args.no_balance else {}
    server = Server(workers=args.workers, env=env).start()
    try:
        for round_ in range(args.rounds):
            pids = workers(server)
            before = [cpu_seconds(p) for p in pids]
            held: dict[int, int] = {}
            sampler = threading.Timer(
                args.seconds - 0.5,
                lambda held=held, pids=pids: held.update(
                    established_per_process(server.port, pids)
                ),
            )
            sampler.start()
            result = run_wrk(server.url, images, args.clients, args.seconds)
            sampler.join()
            used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
            busy = sorted((u for u in used if u > 0.01), reverse=True)
            print(
                json.dumps(
                    {
                        "round": round_ + 1,
                        "images_per_s": round(result["throughput"]),
                        "p50_ms": result["p50_ms"],
                        "p99_ms": result["p99_ms"],
                        "connections_at_end": sorted(held.values(), reverse=True),
                        "worker_cpu_s": [round(u, 2) for u in busy],
                    }
                ),
                flush=True,
            )
    finally:
        assert server.proc
        server.proc.terminate()
        server.proc.wait(30)


if __name__ == "__main__":
    main()
