"""How evenly uvicorn's worker processes share keep-alive connections.

Each round opens ``--clients`` new keep-alive connections (wrk) for a few seconds and
reads every worker's CPU time from /proc: a worker that accepted most connections does
most of the work, and the other core idles.

    python -m bench.worker_balance --rounds 6 --clients 8 --seconds 6
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench.load import run_wrk
from bench.server import Server


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
    args = parser.parse_args()
    images = sorted((args.data / "TEST").glob("*/*"))[:200]
    server = Server(workers=args.workers).start()
    try:
        for round_ in range(args.rounds):
            pids = workers(server)
            before = [cpu_seconds(p) for p in pids]
            result = run_wrk(server.url, images, args.clients, args.seconds)
            used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
            busy = sorted((u for u in used if u > 0.01), reverse=True)
            print(json.dumps({"round": round_ + 1, "images_per_s": round(result["throughput"]),
                              "worker_cpu_s": [round(u, 2) for u in busy]}))
    finally:
        assert server.proc
        server.proc.terminate()
        server.proc.wait(30)


if __name__ == "__main__":
    main()
