"""Start to ready, its CPU time and resident memory once ready, of the real service: this checkout
against another commit, alternating, so that both meet the machine in the same state.

Each round starts ``python -m app`` with 1 worker and then with ``--workers``, waits until
``/health/ready`` answers 200 and every worker listens (``bench.server.Server``), reads
the CPU time all its processes used to get there and the largest worker's resident
memory (no request served yet), and stops it; then the same
for the commit ``--baseline-ref`` (a worktree of it: its own code and model folder, the
same interpreter). Prints every measure and the medians as JSON.

    python -m bench.cold_start --baseline-ref 3ff7d1d --rounds 9 --workers 2
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from bench.run import baseline_worktree
from bench.server import PROJECT, Server


def measure(cwd: Path, workers: int) -> tuple[float, float, float]:
    """Start to ready (s), CPU time to ready (s), largest worker's resident memory (MiB).
    The CPU time moves less than the wall time with what else the machine runs."""
    with Server(workers=workers, cwd=cwd) as server:
        return server.cold_start_s, server.cpu_seconds(), server.worker_rss_mb()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-ref", required=True)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    trees = {"this checkout": PROJECT, args.baseline_ref: baseline_worktree(args.baseline_ref)}
    counts = sorted({1, args.workers})
    seen: dict[tuple[str, int], list[tuple[float, float, float]]] = {
        (name, n): [] for name in trees for n in counts
    }
    for _ in range(args.rounds):
        for name, tree in trees.items():
            for n in counts:
                seen[(name, n)].append(measure(tree, n))
    for (name, n), runs in seen.items():
        starts = [round(s, 2) for s, _, _ in runs]
        cpu = [round(c, 2) for _, c, _ in runs]
        print(
            json.dumps(
                {
                    "code": name,
                    "workers": n,
                    "start_to_ready_s": starts,
                    "median_s": round(statistics.median(starts), 2),
                    "cpu_to_ready_s": cpu,
                    "cpu_median_s": round(statistics.median(cpu), 2),
                    "largest_worker_rss_mib_median": round(
                        statistics.median(m for _, _, m in runs), 1
                    ),
                }
            )
        )


if __name__ == "__main__":
    main()
