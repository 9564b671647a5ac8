"""Keep-alive connections shared evenly between worker processes.

With one ``SO_REUSEPORT`` socket per worker the kernel assigns each new connection to a
worker by a hash of its addresses, so a few long-lived keep-alive connections (an LIS, a
load generator) can all land on one worker while another core idles (two clients: in 4
of 6 rounds, reports/experiments/performance-variants/connection-balance). Each worker publishes how
many connections it holds in a small array shared with the others; a worker holding more
than its share answers with ``Connection: close``, the client opens a new connection and
the kernel draws again. Balanced workers close nothing.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence

REFRESH_S = 0.02  # how often a worker publishes its connection count
MIN_GAP_S = 0.01  # at most one closed connection per worker per this time
NOT_SERVING = -1  # the slot of a worker that is starting, restarting or gone


class Balancer:
    def __init__(self, counts: Sequence[int], index: int) -> None:
        self.counts = counts  # multiprocessing.Array('i', workers): one slot per worker
        self.index = index
        self._last_close = 0.0

    def publish(self, connections: int) -> None:
        self.counts[self.index] = connections  # type: ignore[index]

    def should_close(self, now: float | None = None) -> bool:
        """True when this worker holds more than its fair share of the connections of the
        workers now serving (a starting worker takes no connections yet)."""
        now = time.monotonic() if now is None else now
        serving = [c for c in self.counts if c != NOT_SERVING]
        mine = self.counts[self.index]
        if (
            mine == NOT_SERVING
            or mine <= math.ceil(sum(serving) / len(serving))
            or now - self._last_close < MIN_GAP_S
        ):
            return False
        self._last_close = now
        self.counts[self.index] = mine - 1  # type: ignore[index]  # until the next publish
        return True

    def start_publishing(
        self, count: Callable[[], int], serving: Callable[[], bool]
    ) -> threading.Thread:
        def loop() -> None:
            while True:
                self.publish(count() if serving() else NOT_SERVING)
                time.sleep(REFRESH_S)

        thread = threading.Thread(target=loop, name="balance", daemon=True)
        thread.start()
        return thread


BALANCER: Balancer | None = None  # set in multi-worker processes by app.serve
