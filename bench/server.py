"""Start the real service as a subprocess on a free loopback port; time its cold start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

PROJECT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tcp_rows(port: int, state: str) -> list[list[str]] | None:
    """Rows of /proc/net/tcp{,6} for local ``port`` in ``state`` ("0A" listen, "01"
    established); None where there is no /proc (not Linux)."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            return None
        rows += [
            f for f in map(str.split, lines) if f[1].endswith(f":{port:04X}") and f[3] == state
        ]
    return rows


def listening_sockets(port: int) -> int:
    """TCP sockets in LISTEN state on ``port`` (Linux): one per worker that has loaded its
    model, as each worker has a socket of its own (app/serve.py)."""
    rows = _tcp_rows(port, "0A")
    return 1 << 30 if rows is None else len(rows)  # not Linux: readiness alone decides


def established_per_process(port: int, pids: list[int]) -> dict[int, int]:
    """Established TCP connections on local ``port`` held by each of ``pids`` (Linux)."""
    inodes = {f[9] for f in _tcp_rows(port, "01") or []}
    held = {}
    for pid in pids:
        count = 0
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                count += target.startswith("socket:[") and target[8:-1] in inodes
        except OSError:
            pass  # gone, or not ours to read
        held[pid] = count
    return held


class Server:
    """``python -m app`` in ``cwd`` (default: this checkout; a git worktree of another
    commit serves that commit's code and models with the same interpreter)."""

    def __init__(
        self, workers: int = 1, env: dict[str, str] | None = None, cwd: Path = PROJECT
    ) -> None:
        self.cwd = Path(cwd)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {
            **os.environ,
            "WBC_PORT": str(self.port),
            "WBC_HOST": "127.0.0.1",
            "WBC_WORKERS": str(workers),
            "WBC_LOG_LEVEL": "WARNING",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.cold_start_s = float("nan")

    def start(self, timeout: float = 120) -> Server:
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app"],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while time.perf_counter() - t0 < timeout:
            try:
                if (
                    httpx.get(f"{self.url}/health/ready", timeout=1).status_code == 200
                    and listening_sockets(self.port) >= self.workers
                ):
                    self.cold_start_s = time.perf_counter() - t0  # every worker serving
                    return self
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            time.sleep(0.1)
        self.proc.terminate()  # leave no server (or worker) behind
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        raise RuntimeError("server did not become ready")

    def pids(self) -> list[int]:
        """The server process and its worker processes."""
        assert self.proc
        pids = [self.proc.pid]
        try:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            pids += [int(p) for p in children.split()]
        except OSError:
            pass
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU time used so far by the server and its workers (Linux)."""
        ticks = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError, ValueError):
                pass
        return ticks / os.sysconf("SC_CLK_TCK")

    def rss_by_process(self) -> dict[int, float]:
        """Resident memory of the server process and of each worker process, MiB."""
        rss = {}
        for pid in self.pids():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss[pid] = int(line.split()[1]) / 1024
            except OSError:
                pass
        return rss

    def rss_mb(self) -> float:
        """Resident memory of the server and its worker processes, MiB."""
        return sum(self.rss_by_process().values())

    def worker_rss_mb(self) -> float:
        """The largest worker's resident memory, MiB (the process itself when it serves
        alone, with one worker)."""
        rss = self.rss_by_process()
        assert self.proc
        workers = [v for pid, v in rss.items() if pid != self.proc.pid] or list(rss.values())
        return max(workers)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_reviewer(env: dict[str, str], name: str, password: str) -> None:
    """``python -m app user add NAME`` with the password on standard input, against the
    database ``env`` names (before or beside a server started with the same ``env``)."""
    subprocess.run(
        [sys.executable, "-m", "app", "user", "add", name],
        input=password + "\n",
        text=True,
        check=True,
        capture_output=True,
        env={**os.environ, **env},
        cwd=PROJECT,
    )
