"""Signed reports to the LIS under load: sign N specimens through the API with the MLLP
destination up, then sign M more with it down for a while and bring it back.

    python -m bench.delivery [--specimens 1000] [--down-seconds 60]

A real server (one worker, SQLite), the stand-in LIS of bench/lis.py on loopback. Reports
the delivery throughput, the delay from the finalise answer to the LIS receiving the
message (p50, p99), and, after the outage, that the backlog drained with nothing lost and
nothing twice. Writes reports/delivery.md. A benchmark, not a test: it asserts no speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from bench.images import real_image_paths
from bench.lis import Lis
from bench.server import PROJECT, Server, add_reviewer, free_port
from model_training import machine

PASSWORD = "a long enough passphrase"


def accession(message: str) -> str:
    """OBR-3 of an ORU^R01."""
    obr = next(seg for seg in message.split("\r") if seg.startswith("OBR|"))
    return obr.split("|")[3]


def sign(http: httpx.Client, csrf: str, accession: str, image: bytes) -> float:
    """Create, add one image, finalise: returns time.monotonic() of the finalise answer."""
    sid = http.post(
        "/specimens", json={"accession": accession}, headers={"X-CSRF-Token": csrf}
    ).json()["id"]
    version = http.post(
        f"/specimens/{sid}/images",
        files=[("files", ("c.jpg", image))],
        headers={"X-CSRF-Token": csrf},
    ).json()["version"]
    r = http.post(
        f"/specimens/{sid}/finalise", json={"version": version}, headers={"X-CSRF-Token": csrf}
    )
    assert r.status_code == 200, r.text
    return time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specimens", type=int, default=1000)
    parser.add_argument("--outage", type=int, default=100, help="specimens signed while down")
    parser.add_argument("--down-seconds", type=float, default=60)
    parser.add_argument("--out", type=Path, default=PROJECT / "reports")
    args = parser.parse_args()
    port = free_port()
    db = Path(tempfile.mkdtemp()) / "wbc.sqlite3"
    env = {
        "WBC_DATABASE_URL": f"sqlite:///{db}",
        "WBC_HL7_MLLP_ADDRESS": f"127.0.0.1:{port}",
        "WBC_DELIVERY_POLL_S": "0.05",
        "WBC_DELIVERY_BACKOFF_S": "1",
    }
    add_reviewer(env, "bench", PASSWORD)
    images = [p.read_bytes() for p in real_image_paths(50)]
    lis = Lis(port).start()
    with Server(env=env) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        csrf = http.post("/auth/login", json={"username": "bench", "password": PASSWORD}).json()[
            "csrf_token"
        ]
        signed: dict[str, float] = {}
        start = time.monotonic()
        for i in range(args.specimens):
            signed[f"UP-{i}"] = sign(http, csrf, f"UP-{i}", images[i % len(images)])
        deadline = time.monotonic() + 120
        while len(lis.messages) < args.specimens and time.monotonic() < deadline:
            time.sleep(0.1)
        up_seconds = time.monotonic() - start
        arrived = {accession(m): t for m, t in zip(lis.messages, lis.arrived, strict=True)}
        delays = [1000 * (arrived[a] - signed[a]) for a in signed if a in arrived]
        lis.stop()
        outage_start = time.monotonic()
        for i in range(args.outage):
            sign(http, csrf, f"DOWN-{i}", images[i % len(images)])
        time.sleep(max(0.0, args.down_seconds - (time.monotonic() - outage_start)))
        waiting = http.get("/deliveries?status=pending").json()["total"]
        lis = Lis(port).start()
        back = time.monotonic()
        deadline = back + 600
        while len(lis.messages) < args.outage and time.monotonic() < deadline:
            time.sleep(0.1)
        drained = time.monotonic() - back
        time.sleep(2)
        status = http.get("/deliveries?status=pending").json()["total"]
        lis.stop()
    accessions = [accession(m) for m in lis.messages]
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    command = (
        f"python -m bench.delivery --specimens {args.specimens} --outage {args.outage} "
        f"--down-seconds {args.down_seconds:g}"
    )
    lines = [
        "# Delivery to the LIS",
        "",
        f"Produced by `{command}` on {stamp} ({machine.describe()}; one worker, SQLite, "
        "the stand-in LIS of bench/lis.py on loopback answering AA).",
        "",
        f"- {args.specimens} specimens signed through the API (create, one image, finalise) "
        f"with the LIS up: {len(delays)} messages received in {up_seconds:.1f} s "
        f"({len(delays) / up_seconds:.0f} a second, the signing included); delay from the "
        f"finalise answer to the LIS receiving it: p50 **{np.percentile(delays, 50):.0f} ms**, "
        f"p99 **{np.percentile(delays, 99):.0f} ms**.",
        f"- {args.outage} specimens signed with the LIS down for {args.down_seconds:g} s "
        f"({waiting} pending when it came back); the backlog drained in {drained:.1f} s (the "
        f"retry backoff sets this, not throughput: after a minute down a message's next try "
        f"is up to a minute away): {len(accessions)} received, "
        f"{len(set(accessions))} distinct (nothing twice), "
        f"{args.outage - len(set(accessions))} missing, {status} still pending.",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "delivery.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
