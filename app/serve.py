"""Serve with host, port, workers and log level from WBC_* settings (``python -m app``).

With ``WBC_WORKERS`` > 1 every worker process listens on a socket of its own, bound with
``SO_REUSEPORT``, so the kernel spreads new connections over the workers. uvicorn's own
``--workers`` share one socket, and the first worker to wake accepts every pending
connection: 8 keep-alive clients often all landed on one worker while the other core
idled (``python -m bench.worker_balance``). The kernel's hash still splits a few
keep-alive clients unevenly (two clients often both on one worker), so the workers share
their connection counts and one holding more than its share closes a connection
(``app/balance.py``).
Their Prometheus metrics go to files in a shared folder so that ``/metrics`` reports all
workers (``app/observability.py``). This process supervises the workers: it
restarts one that dies, and passes SIGTERM/SIGINT (graceful stop) and SIGHUP (model
reload) on to them.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from typing import Any

import uvicorn
from prometheus_client.multiprocess import mark_process_dead

from app import balance
from app.config import Settings, get_settings
from app.protocol import BoundedHeadersProtocol

log = logging.getLogger("app.supervisor")


def server_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "http": BoundedHeadersProtocol.with_limits(
            settings.max_header_bytes, settings.header_timeout_s
        ),
        "log_level": settings.log_level.lower(),
        "timeout_graceful_shutdown": 30,
        # uvicorn's default of 5 s raced with busy clients under the soak (a keep-alive
        # close crossing the next request: client ReadErrors)
        "timeout_keep_alive": settings.keep_alive_s,
    }


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) that other workers may bind too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def stop_with_parent() -> None:
    """Linux: this process gets SIGTERM (a graceful stop) when the supervisor dies, even by
    SIGKILL, so that no worker is left serving on its own."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_worker(counts: Any = None, index: int = 0, reloads: Any = None) -> None:
    stop_with_parent()
    from app import lifecycle  # here: the supervisor itself imports no model code

    lifecycle.RELOADS = reloads  # POST /admin/reload in any worker reaches this one
    settings = get_settings()
    sock = reuseport_socket(settings.host, settings.port)
    config = uvicorn.Config("app.main:app", **server_options(settings))
    server = uvicorn.Server(config)
    if counts is not None and settings.balance_connections:
        balance.BALANCER = balance.Balancer(counts, index)
        balance.BALANCER.start_publishing(
            lambda: len(server.server_state.connections), lambda: server.started
        )
    server.run(sockets=[sock])


def supervise(workers: int, settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    # fail fast when the port is taken; the bound (not listening) socket gets no connections
    guard = reuseport_socket(settings.host, settings.port)
    # metrics of every worker in files here, summed by whichever answers /metrics
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="wbc-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # inherited by the workers
    context = multiprocessing.get_context("spawn")
    # connections held, one slot per worker (app/balance.py)
    counts = context.Array("i", [balance.NOT_SERVING] * workers, lock=False)
    reloads = context.Value("i", 0)  # reloads announced (app/lifecycle.py)

    def worker(i: int) -> Any:
        return context.Process(target=run_worker, args=(counts, i, reloads), name=f"worker-{i}")

    procs = [worker(i) for i in range(workers)]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
            signum = signal.SIGTERM  # a terminal's Ctrl-C reached them already: stay graceful
        for proc in procs:
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for proc in procs:
        proc.start()
    log.info("serving on %s:%d with %d workers", settings.host, settings.port, workers)
    while not stopping:
        for i, proc in enumerate(procs):
            if not proc.is_alive() and not stopping:
                log.warning("%s exited with code %s; starting a new one", proc.name, proc.exitcode)
                counts[i] = balance.NOT_SERVING
                mark_process_dead(proc.pid)  # its gauges no longer count
                procs[i] = worker(i)
                procs[i].start()
                time.sleep(2)  # a worker that cannot start is retried, not spun on
        time.sleep(0.5)
    for proc in procs:
        proc.join(timeout=60)
    guard.close()
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def main() -> None:
    settings = get_settings()
    workers = settings.workers
    if workers > 1 and hasattr(socket, "SO_REUSEPORT"):
        supervise(workers, settings)
    else:
        uvicorn.run("app.main:app", **server_options(settings))
