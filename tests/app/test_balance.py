"""Keep-alive connections end up shared evenly between worker processes (app/balance.py)."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from app.balance import MIN_GAP_S, NOT_SERVING, Balancer
from bench.server import Server, established_per_process


def test_a_worker_over_its_share_closes_one_connection_at_a_time() -> None:
    counts = [11, 5]
    heavy = Balancer(counts, 0)
    assert heavy.should_close(now=100.0)  # 11 > ceil(16 / 2)
    assert counts[0] == 10  # counted as gone until the worker next publishes
    assert not heavy.should_close(now=100.0 + MIN_GAP_S / 2)  # one per MIN_GAP_S
    assert heavy.should_close(now=100.0 + 2 * MIN_GAP_S)
    assert not Balancer(counts, 1).should_close(now=200.0)  # under its share


def test_balanced_or_lone_connections_are_left_alone() -> None:
    assert not Balancer([8, 8], 0).should_close(now=1.0)
    assert not Balancer([9, 8], 0).should_close(now=1.0)  # ceil(17 / 2) = 9
    assert not Balancer([1, 0], 0).should_close(now=1.0)  # one client: nothing to share
    assert Balancer([2, 0], 0).should_close(now=1.0)  # two clients on one of two workers
    assert not Balancer([5], 0).should_close(now=1.0)  # a single worker


def test_a_worker_that_is_not_serving_has_no_share() -> None:
    """While the other worker (re)starts, the serving one keeps its connections: closing
    them would only bring them back to it."""
    assert not Balancer([6, NOT_SERVING], 0).should_close(now=1.0)
    assert Balancer([6, NOT_SERVING, 2], 0).should_close(now=1.0)  # ceil(8 / 2) = 4
    assert not Balancer([NOT_SERVING, 3], 0).should_close(now=1.0)


def test_publish_writes_this_workers_slot() -> None:
    counts = [0, 0, 0]
    Balancer(counts, 2).publish(7)
    assert counts == [0, 0, 7]


def test_two_workers_end_up_holding_equal_shares_of_keep_alive_connections(
    tiny_model: Path, cell_jpeg: bytes
) -> None:
    """Three rounds of 16 fresh keep-alive clients: however the kernel first spread them
    (an even 8/8 by chance about one round in five), each round ends 8/8. Without the
    balancer all three rounds would start and stay even about once in a hundred runs."""
    running = Server(workers=2, env={"WBC_MODEL_DIR": str(tiny_model)}).start()
    try:
        for _ in range(3):
            clients = [
                http.client.HTTPConnection("127.0.0.1", running.port, timeout=30) for _ in range(16)
            ]
            held: dict[int, int] = {}
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                for client in clients:  # a request on each; a closed one reconnects
                    client.request(
                        "POST", "/predict", body=cell_jpeg, headers={"content-type": "image/jpeg"}
                    )
                    response = client.getresponse()
                    response.read()
                    assert response.status == 200
                held = {
                    pid: n
                    for pid, n in established_per_process(running.port, running.pids()[1:]).items()
                    if n
                }
                if sorted(held.values()) == [8, 8]:
                    break
            for client in clients:
                client.close()
            assert sorted(held.values()) == [8, 8], held
            time.sleep(0.2)  # the closed connections leave the workers' counts
    finally:
        running.stop()


def test_the_balancer_runs_in_each_worker_unless_turned_off(monkeypatch) -> None:
    """WBC_BALANCE_CONNECTIONS=false leaves the kernel's hash alone (no Connection: close)."""
    import uvicorn

    from app import balance, serve
    from app.config import get_settings

    monkeypatch.setattr(serve, "stop_with_parent", lambda: None)
    monkeypatch.setattr(serve, "reuseport_socket", lambda host, port: None)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    monkeypatch.setattr(balance.Balancer, "start_publishing", lambda self, count, serving: None)
    found = {}
    for setting in ("true", "false"):
        monkeypatch.setenv("WBC_BALANCE_CONNECTIONS", setting)
        monkeypatch.setattr(balance, "BALANCER", None)
        get_settings.cache_clear()
        serve.run_worker([NOT_SERVING, NOT_SERVING], 1)
        found[setting] = balance.BALANCER
    get_settings.cache_clear()
    assert isinstance(found["true"], Balancer) and found["true"].index == 1
    assert found["false"] is None
