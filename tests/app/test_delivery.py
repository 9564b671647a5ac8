"""Signed reports reach the LIS through the outbox: a real MLLP listener (TCP, framed, an
ACK per message) and a real HTTP server validating FHIR bundles with fhir.resources stand
in for the LIS. Down then up: delivered once; AE: failed, recorded, re-sent by an admin;
killed with SIGKILL after signing: delivered after the restart; two workers on one
PostgreSQL database: each message once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from app.accounts import add_user
from app.main import create_app
from bench.lis import Lis
from bench.server import Server, add_reviewer, free_port
from tests.app.conftest import make_settings
from tests.app.test_specimens import jpeg
from tests.postgres import binaries, postgres_server

PASSWORD = "a long enough passphrase"


def wait_until(condition, seconds: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def signed_specimen(client: TestClient, accession: str, headers: dict[str, str]) -> int:
    client.cookies.clear()  # the machine's calls; then a reviewer signs
    sid = client.post("/specimens", json={"accession": accession}, headers=headers).json()["id"]
    files = [("files", (f"{i}.jpg", jpeg(i), "image/jpeg")) for i in range(3)]
    body = client.post(f"/specimens/{sid}/images", files=files, headers=headers).json()
    csrf = client.post("/auth/login", json={"username": "dana", "password": PASSWORD}).json()
    r = client.post(
        f"/specimens/{sid}/finalise",
        json={"version": body["version"]},
        headers={"X-CSRF-Token": csrf["csrf_token"]},
    )
    assert r.status_code == 200, r.text
    return sid


@pytest.fixture()
def service(tiny_model: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    settings = make_settings(
        tiny_model,
        admin_key="adm",
        database_url=f"sqlite:///{tmp_path / 'wbc.sqlite3'}",
        hl7_mllp_address=f"127.0.0.1:{port}",
        delivery_backoff_s=0.2,
        delivery_poll_s=0.05,
        delivery_timeout_s=2,
        delivery_max_attempts=50,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        with app.state.db.session() as session:
            add_user(session, "dana", "reviewer", PASSWORD)
        yield client, port


def deliveries(client: TestClient, status: str | None = None) -> list[dict]:
    query = f"?status={status}" if status else ""
    return client.get(f"/deliveries{query}").json()["deliveries"]


def test_a_report_signed_while_the_lis_is_down_arrives_once_when_it_is_up(service) -> None:  # type: ignore[no-untyped-def]
    from hl7apy.parser import parse_message

    client, port = service
    sid = signed_specimen(client, "DOWN-1", {})
    wait_until(lambda: any(d["attempts"] >= 2 for d in deliveries(client)))
    pending = deliveries(client, "pending")
    assert len(pending) == 1 and "Refused" in pending[0]["last_error"]
    lis = Lis(port).start()
    try:
        wait_until(lambda: deliveries(client, "delivered"))
        time.sleep(0.5)  # nothing more arrives
        assert lis.control_ids() == [pending[0]["control_id"]]  # once, with its control id
        message = parse_message(lis.messages[0], find_groups=True)
        order = message.oru_r01_patient_result.oru_r01_order_observation
        assert order.obr.obr_3.value == "DOWN-1" and order.obr.obr_25.value == "F"
        report = client.get(f"/specimens/{sid}/report").json()["differential"]["counts"]
        values = [float(o.obx.obx_5.value) for o in order.oru_r01_observation]
        expected = [
            report[c]["percent"] for c in ("neutrophil", "lymphocyte", "monocyte", "eosinophil")
        ]
        assert values == expected
        metrics = client.get("/metrics").text
        assert 'wbc_deliveries_total{destination="hl7",outcome="delivered"}' in metrics
    finally:
        lis.stop()


def test_a_refused_report_is_parked_and_an_admin_sends_it_again(service) -> None:  # type: ignore[no-untyped-def]
    client, port = service
    lis = Lis(port, code="AE").start()
    try:
        signed_specimen(client, "REFUSED-1", {})
        wait_until(lambda: deliveries(client, "failed"))
        failed = deliveries(client, "failed")[0]
        assert failed["attempts"] == 1 and "AE" in failed["last_error"]  # not retried
        assert client.post(f"/deliveries/{failed['id']}/retry").status_code == 401
        lis.code = "AA"
        r = client.post(f"/deliveries/{failed['id']}/retry", headers={"X-API-Key": "adm"})
        assert r.status_code == 200 and r.json()["status"] == "pending"
        wait_until(lambda: deliveries(client, "delivered"))
        assert lis.control_ids() == [failed["control_id"]] * 2  # the same id both times
    finally:
        lis.stop()


def test_a_report_signed_just_before_sigkill_is_delivered_after_the_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {
        "WBC_MODEL_DIR": str(Path(__file__).resolve().parents[2] / "models" / "wbc-classifier"),
        "WBC_DATABASE_URL": f"sqlite:///{tmp_path / 'wbc.sqlite3'}",
        "WBC_HL7_MLLP_ADDRESS": f"127.0.0.1:{port}",
        "WBC_DELIVERY_BACKOFF_S": "0.2",
        "WBC_DELIVERY_POLL_S": "0.05",
        # SIGKILL may land between a claim and its outcome: the claim then holds its lease,
        # and only its expiry frees the message for the restarted worker.
        "WBC_DELIVERY_LEASE_S": "1",
    }
    add_reviewer(env, "dana", PASSWORD)
    with Server(env=env) as server:
        http = httpx.Client(base_url=server.url, timeout=30)
        sid = http.post("/specimens", json={"accession": "KILLED-1"}).json()["id"]
        files = [("files", ("a.jpg", jpeg(1), "image/jpeg"))]
        version = http.post(f"/specimens/{sid}/images", files=files).json()["version"]
        csrf = http.post("/auth/login", json={"username": "dana", "password": PASSWORD}).json()
        r = http.post(
            f"/specimens/{sid}/finalise",
            json={"version": version},
            headers={"X-CSRF-Token": csrf["csrf_token"]},
        )
        assert r.status_code == 200
        os.kill(server.proc.pid, signal.SIGKILL)  # the LIS is down: nothing was delivered
        server.proc.wait(10)
    lis = Lis(port).start()
    try:
        with Server(env=env) as again:
            wait_until(lambda: lis.messages)
            time.sleep(0.5)
            statuses = httpx.get(f"{again.url}/deliveries").json()["deliveries"]
        assert len(lis.messages) == 1 and "KILLED-1" in lis.messages[0]
        assert [d["status"] for d in statuses] == ["delivered"]
    finally:
        lis.stop()


class Fhir(BaseHTTPRequestHandler):
    """A FHIR endpoint: validates each Bundle with fhir.resources, answers ``codes`` in turn."""

    received: list[dict] = []
    codes: list[int] = []

    def do_POST(self) -> None:  # noqa: N802
        from fhir.resources.bundle import Bundle

        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        Bundle.model_validate(body)
        assert self.headers["authorization"] == "Bearer fhir-token"
        Fhir.received.append(body)
        code = Fhir.codes.pop(0) if Fhir.codes else 200
        self.send_response(code)
        self.send_header("content-type", "application/fhir+json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


def test_fhir_destination_retries_5xx_and_parks_4xx(tiny_model: Path, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Fhir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Fhir.received, Fhir.codes = [], [503, 200, 400]
    settings = make_settings(
        tiny_model,
        database_url=f"sqlite:///{tmp_path / 'wbc.sqlite3'}",
        fhir_base_url=f"http://127.0.0.1:{server.server_address[1]}/fhir",
        fhir_token="fhir-token",
        delivery_backoff_s=0.1,
        delivery_poll_s=0.05,
    )
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            with app.state.db.session() as session:
                add_user(session, "dana", "reviewer", PASSWORD)
            signed_specimen(client, "FHIR-1", {})
            wait_until(lambda: deliveries(client, "delivered"))
            assert len(Fhir.received) == 2  # 503, then 200
            first, second = Fhir.received
            assert first == second  # the same bundle: the report's identifier is stable
            bundle = first
            assert bundle["type"] == "transaction"
            report = bundle["entry"][1]
            assert report["request"]["ifNoneExist"].startswith("identifier=")
            signed_specimen(client, "FHIR-2", {})
            wait_until(lambda: deliveries(client, "failed"))
            assert "400" in deliveries(client, "failed")[0]["last_error"]
    finally:
        server.shutdown()


def test_two_workers_on_postgresql_deliver_each_message_once() -> None:
    if binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed")
    from types import SimpleNamespace

    from app import delivery, outbox
    from app.db import Database, upgrade
    from app.records import Specimen

    port = free_port()
    lis = Lis(port).start()
    try:
        with postgres_server() as url:
            upgrade(url)
            db = Database(url)
            with db.session() as session:
                for i in range(40):
                    specimen = Specimen(
                        accession=f"PG-{i}", status="final", version=2, amendments=0
                    )
                    session.add(specimen)
                    session.flush()
                    detail = {
                        "accession": specimen.accession,
                        "patient": None,
                        "finalised_by": "dana",
                        "collected_at": None,
                        "differential": {
                            "classified": 0,
                            "reclassified": 0,
                            "flagged": 0,
                            "counts": {
                                c: {"count": 0, "percent": 0.0}
                                for c in ("eosinophil", "lymphocyte", "monocyte", "neutrophil")
                            },
                        },
                    }
                    outbox.enqueue(session, specimen, detail, "final", ["hl7"], "wbc test")
            settings = SimpleNamespace(
                hl7_mllp_address=f"127.0.0.1:{port}",
                fhir_base_url=None,
                fhir_token=None,
                delivery_timeout_s=5,
                delivery_lease_s=60,
                delivery_max_attempts=5,
                delivery_backoff_s=0.1,
            )

            def worker() -> None:
                while delivery.deliver_one(db, settings):
                    pass

            threads = [threading.Thread(target=worker) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            ids = lis.control_ids()
            assert len(ids) == 40 and len(set(ids)) == 40  # every message, each once
            db.dispose()
    finally:
        lis.stop()


def test_the_service_classifies_when_its_database_cannot_open(
    tiny_model: Path, tmp_path: Path, cell_jpeg: bytes
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    app = create_app(make_settings(tiny_model, store_dir=blocked / "store"))
    with TestClient(app) as client:
        assert client.get("/health/ready").status_code == 200
        r = client.post("/predict", content=cell_jpeg, headers={"content-type": "image/jpeg"})
        assert r.status_code == 200
        r = client.post("/specimens", json={"accession": "X-1"})
        assert r.status_code == 503 and "database" in r.json()["detail"]


ORDER = (
    "MSH|^~\\&|LIS|LAB|WBC|LAB|20261206120000||{kind}|{control}|P|2.5.1\r"
    "PID|||PAT-9||DOE^JANE\r"
    "ORC|NW|PLC-1|{accession}\r"
    "OBR|1|PLC-1|{accession}|57023-4^Auto Differential panel - Blood^LN\r"
)


def send_order(port: int, text: str) -> str:
    """One MLLP exchange: the order out, the ACK's MSA segment back."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x0b" + text.encode() + b"\x1c\x0d")
        reply = b""
        while b"\x1c\x0d" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    from hl7apy.parser import parse_message

    ack = parse_message(reply.strip(b"\x0b\x1c\x0d").decode(), find_groups=False)
    return f"{ack.msa.msa_1.value}|{ack.msa.msa_2.value}|{ack.msa.msa_3.value}"


def test_an_order_from_the_lis_opens_its_specimen_once(tiny_model: Path, tmp_path: Path) -> None:
    """WBC_HL7_LISTEN_PORT: an ORM^O01 over MLLP opens the specimen its accession names and
    is acknowledged AA; the same order again gets AA and no twin; what is not a usable
    order gets AE with the reason."""
    port = free_port()
    app = create_app(
        make_settings(
            tiny_model, hl7_listen_port=port, database_url=f"sqlite:///{tmp_path / 'wbc.sqlite3'}"
        )
    )
    with TestClient(app) as client:
        order = ORDER.format(kind="ORM^O01^ORM_O01", control="MSG1", accession="ORD-77")
        wait_until(lambda: _listening(port))
        first = send_order(port, order)
        assert first.startswith("AA|MSG1|specimen ")
        assert send_order(port, order.replace("MSG1", "MSG2")) == "AA|MSG2|" + first[8:]
        listed = client.get("/specimens?accession=ORD-77").json()
        assert listed["total"] == 1 and listed["specimens"][0]["patient"] == "PAT-9"
        oml = ORDER.format(kind="OML^O21^OML_O21", control="MSG3", accession="ORD-78")
        assert send_order(port, oml).startswith("AA|MSG3|")
        adt = ORDER.format(kind="ADT^A01^ADT_A01", control="MSG4", accession="ORD-79")
        assert send_order(port, adt).startswith("AE|MSG4|not an order")
        bad = ORDER.format(kind="ORM^O01^ORM_O01", control="MSG5", accession="bad accession!")
        assert send_order(port, bad).startswith("AE|MSG5|accession must be")


def _listening(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def test_a_destination_that_never_answers_does_not_hold_up_the_api(
    tiny_model: Path, tmp_path: Path, cell_jpeg: bytes
) -> None:
    """Sending runs outside the classification threads: with one work thread and a LIS
    that takes the message and never acknowledges it, /predict (sent to a work thread)
    answers long before the delivery's 10 s timeout."""
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(8)  # accepts connections (the kernel does), never reads or answers
    port = holder.getsockname()[1]
    settings = make_settings(
        tiny_model,
        database_url=f"sqlite:///{tmp_path / 'wbc.sqlite3'}",
        hl7_mllp_address=f"127.0.0.1:{port}",
        delivery_timeout_s=10,
        delivery_poll_s=0.05,
        work_threads=1,
        inline_max_pixels=0,
    )
    app = create_app(settings)
    try:
        with TestClient(app) as client:
            with app.state.db.session() as session:
                add_user(session, "dana", "reviewer", PASSWORD)
            signed_specimen(client, "SLOW-1", {})
            wait_until(lambda: any(d["attempts"] >= 1 for d in deliveries(client)))
            answers: list[int] = []

            def predict() -> None:
                for _ in range(5):  # each would wait for the stuck send if it shared a thread
                    r = client.post(
                        "/predict", content=cell_jpeg, headers={"content-type": "image/jpeg"}
                    )
                    answers.append(r.status_code)

            asking = threading.Thread(target=predict)
            asking.start()
            asking.join(6)  # not a speed goal: blocked, they would wait out the 10 s send
            assert answers == [200] * 5
            assert deliveries(client)[0]["status"] == "pending"  # still waiting on the LIS
    finally:
        holder.close()
