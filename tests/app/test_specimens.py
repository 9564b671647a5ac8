"""The specimen API on SQLite and on a real PostgreSQL server: created by a machine,
reviewed and signed by a person, amended with a reason, reported as JSON, FHIR and HL7 v2,
every change audited; and what it refuses."""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.accounts import add_user, delete_user
from app.main import create_app
from tests.app.conftest import make_settings
from tests.postgres import binaries, postgres_server
from tests.synthetic import class_image

KEY = "lis-key"
PASSWORD = "a long enough passphrase"
MACHINE = {"X-API-Key": KEY}


def postgres_url() -> Iterator[str]:
    if binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed")
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'wbc.sqlite3'}"
        return
    if binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL is not installed (apt-get install postgresql)")
        pytest.skip("PostgreSQL is not installed")
    from app.db import upgrade

    with postgres_server() as url:
        upgrade(url)  # production runs the migrations before the service starts
        yield url


@pytest.fixture(scope="module")
def service(tiny_model: Path, database_url: str) -> Iterator[TestClient]:
    app = create_app(
        make_settings(tiny_model, api_key=KEY, database_url=database_url, login_max_failures=3)
    )
    with TestClient(app) as client:
        assert app.state.db is not None, app.state.db_error
        with app.state.db.session() as session:
            add_user(session, "alice", "reviewer", PASSWORD)
            add_user(session, "bob", "reviewer", PASSWORD)
        yield client


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    class_image(seed % 4, seed).save(buf, "JPEG")
    return buf.getvalue()


def sign_in(client: TestClient, name: str = "alice") -> dict[str, str]:
    """Sign in; returns the CSRF header (the cookie stays in the client)."""
    r = client.post("/auth/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def new_specimen(client: TestClient, accession: str, images: int = 3) -> dict:
    r = client.post("/specimens", json={"accession": accession, "patient": "p-17"}, headers=MACHINE)
    assert r.status_code == 201, r.text
    files = [("files", (f"c{i}.jpg", jpeg(i), "image/jpeg")) for i in range(images)]
    r = client.post(f"/specimens/{r.json()['id']}/images", files=files, headers=MACHINE)
    assert r.status_code == 201, r.text
    return r.json()


def test_a_machine_creates_adds_and_reads(service: TestClient) -> None:
    body = new_specimen(service, "ACC-1")
    assert body["status"] == "open" and len(body["added"]) == 3 and body["rejected"] == []
    cell = body["added"][0]
    assert cell["machine_label"] == cell["label"]
    assert set(cell["probabilities"]) == {"eosinophil", "lymphocyte", "monocyte", "neutrophil"}
    assert cell["model_version"] == "1"
    got = service.get(f"/specimens/{body['id']}", headers=MACHINE).json()
    assert got["version"] == body["version"] and len(got["cells"]) == 3
    assert got["differential"]["classified"] + got["differential"]["unknown"] == 3
    image = service.get(f"/specimens/{body['id']}/cells/{cell['id']}/image", headers=MACHINE)
    assert image.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(image.content)).size == (150, 150)


def test_an_accession_is_never_twinned(service: TestClient) -> None:
    first = service.post("/specimens", json={"accession": "ACC-TWIN"}, headers=MACHINE).json()
    again = service.post("/specimens", json={"accession": "ACC-TWIN"}, headers=MACHINE)
    assert again.status_code == 409
    assert str(first["id"]) in again.json()["detail"]
    assert again.json()["current"]["id"] == first["id"]


@pytest.mark.parametrize(
    "body,status",
    [
        ({"accession": "bad accession!"}, 422),
        ({"accession": "../etc"}, 422),
        ({}, 422),
        ({"accession": "A-9", "patient": "p\r\nx"}, 422),
        ({"accession": "A-9", "collected_at": "yesterday"}, 422),
    ],
)
def test_malformed_specimens_are_refused(service: TestClient, body: dict, status: int) -> None:
    r = service.post("/specimens", json=body, headers=MACHINE)
    assert r.status_code == status and r.json()["detail"]


def test_unknown_specimen_and_cell_are_404(service: TestClient) -> None:
    assert service.get("/specimens/999999", headers=MACHINE).status_code == 404
    body = new_specimen(service, "ACC-404", images=1)
    r = service.get(f"/specimens/{body['id']}/cells/999999/image", headers=MACHINE)
    assert r.status_code == 404
    files = [("files", ("a.jpg", jpeg(1), "image/jpeg"))]
    assert service.post("/specimens/999999/images", files=files, headers=MACHINE).status_code == 404


def test_a_bad_image_is_reported_and_the_good_ones_kept(service: TestClient) -> None:
    sid = service.post("/specimens", json={"accession": "ACC-BAD"}, headers=MACHINE).json()["id"]
    files = [
        ("files", ("good.jpg", jpeg(2), "image/jpeg")),
        ("files", ("bad.jpg", b"not an image", "image/jpeg")),
    ]
    r = service.post(f"/specimens/{sid}/images", files=files, headers=MACHINE).json()
    assert len(r["added"]) == 1 and r["rejected"][0]["filename"] == "bad.jpg"


def test_only_a_signed_in_person_with_the_csrf_token_changes_a_specimen(
    service: TestClient,
) -> None:
    body = new_specimen(service, "ACC-AUTH", images=1)
    sid, cell, version = body["id"], body["added"][0]["id"], body["version"]
    change = {"label": "monocyte", "version": version}
    assert (
        service.patch(f"/specimens/{sid}/cells/{cell}", json=change, headers=MACHINE).status_code
        == 401
    )
    csrf = sign_in(service)
    r = service.patch(f"/specimens/{sid}/cells/{cell}", json=change)
    assert r.status_code == 403 and "CSRF" in r.json()["detail"]
    r = service.patch(
        f"/specimens/{sid}/cells/{cell}", json=change, headers={"X-CSRF-Token": "wrong"}
    )
    assert r.status_code == 403
    r = service.patch(f"/specimens/{sid}/cells/{cell}", json=change, headers=csrf)
    assert r.status_code == 200, r.text
    assert r.json()["cell"]["label"] == "monocyte" and r.json()["cell"]["changed_by"] == "alice"
    assert r.json()["version"] == version + 1


def test_a_stale_version_never_overwrites(service: TestClient) -> None:
    body = new_specimen(service, "ACC-STALE", images=2)
    sid, version = body["id"], body["version"]
    csrf = sign_in(service)
    first = service.patch(
        f"/specimens/{sid}/cells/{body['added'][0]['id']}",
        json={"label": "eosinophil", "version": version},
        headers=csrf,
    )
    assert first.status_code == 200
    second = service.patch(
        f"/specimens/{sid}/cells/{body['added'][1]['id']}",
        json={"label": "eosinophil", "version": version},
        headers=csrf,
    )
    assert second.status_code == 409
    assert second.json()["current"]["version"] == version + 1


@pytest.mark.parametrize(
    "change,status",
    [
        ({"label": "basophil", "version": 1}, 422),
        ({"label": "monocyte"}, 422),
        ({"label": "monocyte", "version": "one"}, 422),
        ({"label": "monocyte", "version": 10**30}, 422),  # no integer overflow: a 422
    ],
)
def test_bad_changes_are_refused(service: TestClient, change: dict, status: int) -> None:
    body = new_specimen(service, f"ACC-BAD-{uuid.uuid4().hex[:10]}", images=1)
    csrf = sign_in(service)
    r = service.patch(
        f"/specimens/{body['id']}/cells/{body['added'][0]['id']}", json=change, headers=csrf
    )
    assert r.status_code == status and r.json()["detail"]


def test_sign_amend_and_report(service: TestClient) -> None:
    from fhir.resources.bundle import Bundle
    from hl7apy.parser import parse_message

    body = new_specimen(service, "ACC-SIGN", images=4)
    sid = body["id"]
    csrf = sign_in(service)
    report = service.get(f"/specimens/{sid}/report?format=fhir", headers=MACHINE).json()
    assert Bundle.model_validate(report).type == "transaction"
    statuses = {e["resource"]["resourceType"]: e["resource"].get("status") for e in report["entry"]}
    assert statuses["DiagnosticReport"] == "preliminary"
    r = service.post(f"/specimens/{sid}/finalise", json={"version": body["version"]}, headers=csrf)
    assert r.status_code == 200 and r.json()["status"] == "final"
    assert r.json()["finalised_by"] == "alice"
    version = r.json()["version"]
    again = service.post(f"/specimens/{sid}/finalise", json={"version": version}, headers=csrf)
    assert again.status_code == 409
    locked = service.patch(
        f"/specimens/{sid}/cells/{body['added'][0]['id']}",
        json={"label": "monocyte", "version": version},
        headers=csrf,
    )
    assert locked.status_code == 409 and "final" in locked.json()["detail"]
    hl7 = service.get(f"/specimens/{sid}/report?format=hl7", headers=MACHINE)
    assert hl7.headers["content-type"].startswith("x-application/hl7-v2+er7")
    message = parse_message(hl7.text.strip("\r"), find_groups=True)
    order = message.oru_r01_patient_result.oru_r01_order_observation
    assert order.obr.obr_3.value == "ACC-SIGN" and order.obr.obr_25.value == "F"
    values = [float(o.obx.obx_5.value) for o in order.oru_r01_observation]
    assert len(values) == 4 and abs(sum(values) - 100.0) < 0.5
    no_reason = service.post(f"/specimens/{sid}/amend", json={"version": version}, headers=csrf)
    assert no_reason.status_code == 422
    r = service.post(
        f"/specimens/{sid}/amend",
        json={"reason": "cell 1 is a monocyte", "version": version},
        headers=csrf,
    )
    assert r.status_code == 200 and r.json()["status"] == "open"
    version = r.json()["version"]
    r = service.patch(
        f"/specimens/{sid}/cells/{body['added'][0]['id']}",
        json={"label": "monocyte", "version": version},
        headers=csrf,
    )
    version = r.json()["version"]
    r = service.post(f"/specimens/{sid}/finalise", json={"version": version}, headers=csrf)
    assert r.status_code == 200
    report = service.get(f"/specimens/{sid}/report?format=fhir", headers=MACHINE).json()
    bundle = Bundle.model_validate(report)
    kinds = {e.resource.get_resource_type(): e.resource for e in bundle.entry}
    assert kinds["DiagnosticReport"].status == "amended"
    assert kinds["Specimen"].identifier[0].value == "ACC-SIGN"
    assert bundle.entry[0].request.ifNoneExist.endswith("|ACC-SIGN")
    hl7 = service.get(f"/specimens/{sid}/report?format=hl7", headers=MACHINE).text
    obr = parse_message(hl7.strip("\r"), find_groups=True)
    assert obr.oru_r01_patient_result.oru_r01_order_observation.obr.obr_25.value == "C"
    events = service.get(f"/specimens/{sid}/audit", headers=MACHINE).json()["events"]
    assert [e["action"] for e in events] == [
        "created",
        "images_added",
        "finalised",
        "amended",
        "reclassified",
        "finalised",
    ]
    assert events[3]["detail"]["reason"] == "cell 1 is a monocyte"
    assert events[4]["actor"] == "user:alice" and events[4]["model_version"] == "1"
    assert events[1]["actor"] == "api-key"


def test_the_audit_trail_cannot_be_changed(service: TestClient) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    new_specimen(service, "ACC-AUDIT", images=1)
    db = service.app.state.db
    for statement in ("UPDATE audit_events SET actor = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"), db.session() as session:
            session.execute(text(statement))


def test_listing_filters_and_pages(service: TestClient) -> None:
    for i in range(3):
        service.post("/specimens", json={"accession": f"LIST-{i}"}, headers=MACHINE)
    page = service.get("/specimens?limit=2&offset=0&status=open", headers=MACHINE).json()
    assert len(page["specimens"]) == 2 and page["total"] >= 3
    one = service.get("/specimens?accession=LIST-1", headers=MACHINE).json()
    assert [s["accession"] for s in one["specimens"]] == ["LIST-1"]
    assert service.get("/specimens?status=odd", headers=MACHINE).status_code == 422


def test_the_review_work_list_counts_cells_in_the_database_and_pages_signed_ones(
    service: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import specimens as sp

    classifier = service.app.state.classifier  # type: ignore[attr-defined]
    # every cell of WORK-A under a threshold no confidence reaches: flagged ones for certain
    monkeypatch.setattr(classifier, "review_threshold", 1.01)
    a = new_specimen(service, "WORK-A", images=3)
    monkeypatch.setattr(classifier, "review_threshold", 0.0)  # flagged only by other guards
    b = new_specimen(service, "WORK-B", images=2)
    csrf = sign_in(service)
    signed = service.post(
        f"/specimens/{b['id']}/finalise", json={"version": b["version"]}, headers=csrf
    )
    assert signed.status_code == 200
    monkeypatch.setattr(sp, "SIGNED_PER_PAGE", 1)
    with service.app.state.db.session() as session:  # type: ignore[attr-defined]
        first = sp.worklist(session)
        second = sp.worklist(session, signed_offset=1)
    rows = {r["accession"]: r for r in first["specimens"]}
    statuses = [r["status"] for r in first["specimens"]]
    assert statuses == sorted(statuses, key=lambda x: x != "open")  # open ones first
    cells = service.get(f"/specimens/{a['id']}", headers=MACHINE).json()["cells"]
    assert rows["WORK-A"]["cells"] == len(cells) == 3
    assert rows["WORK-A"]["flagged"] == sum(1 for c in cells if c["review_reasons"]) == 3
    b_cells = service.get(f"/specimens/{b['id']}", headers=MACHINE).json()["cells"]
    assert rows["WORK-B"]["flagged"] == sum(1 for c in b_cells if c["review_reasons"])
    # one signed specimen a page: the newest (WORK-B) on the first, an older one next
    assert [r["accession"] for r in first["specimens"] if r["status"] != "open"] == ["WORK-B"]
    assert rows["WORK-B"]["cells"] == 2
    assert first["signed_total"] >= 1 and first["signed_shown"] == 1
    assert "WORK-B" not in {r["accession"] for r in second["specimens"] if r["status"] != "open"}


def test_failed_sign_ins_are_limited_and_deleted_accounts_lose_their_session(
    service: TestClient,
) -> None:
    from sqlalchemy import delete

    from app.records import LoginFailure

    csrf = sign_in(service, "alice")
    for _ in range(3):
        r = service.post("/auth/login", json={"username": "bob", "password": "wrong"})
        assert r.status_code == 401 and "wrong user name or password" in r.json()["detail"]
    r = service.post("/auth/login", json={"username": "bob", "password": PASSWORD})
    assert r.status_code == 429  # even the right password, until the window passes
    assert "retry-after" in r.headers
    with service.app.state.db.session() as session:  # the window passes
        session.execute(delete(LoginFailure))
    assert service.get("/auth/me").json()["user"] == "alice"
    with service.app.state.db.session() as session:
        delete_user(session, "alice")
    r = service.post("/specimens", json={"accession": "AFTER-DELETE"}, headers=csrf)
    assert r.status_code == 401
    with service.app.state.db.session() as session:  # alice again, for the other tests
        from sqlalchemy import update

        from app.records import User

        session.execute(update(User).where(User.name == "alice").values(deleted_at=None))


def test_an_unknown_user_name_is_refused_as_a_wrong_password_is(service: TestClient) -> None:
    from sqlalchemy import delete

    from app import accounts
    from app.records import LoginFailure

    accounts.dummy_hash.cache_clear()  # the first sign-in makes the hash it verifies against
    for _ in range(2):
        r = service.post("/auth/login", json={"username": "nobody-here", "password": "x"})
        assert r.status_code == 401 and "wrong user name or password" in r.json()["detail"]
    assert accounts.dummy_hash.cache_info().currsize == 1
    assert accounts.HASHER.verify(accounts.dummy_hash(), "not a password of anyone")
    with service.app.state.db.session() as session:  # the failures count for no later test
        session.execute(delete(LoginFailure))


def test_no_password_token_or_patient_reaches_the_logs(
    service: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        r = service.post("/auth/login", json={"username": "alice", "password": PASSWORD})
        token = r.cookies.get("wbc_session") or ""
        service.post(
            "/specimens",
            json={"accession": "ACC-LOG", "patient": "secret-patient-7"},
            headers=MACHINE,
        )
    text = caplog.text
    assert PASSWORD not in text and "secret-patient-7" not in text
    assert not token or token not in text


def test_reviewed_cells_of_final_specimens_become_training_data(
    service: TestClient, tmp_path: Path
) -> None:
    """python -m model_training corrections: the reviewer's labels, a class-folder tree and
    a manifest; open specimens and unknown cells are left out."""
    import csv

    from model_training.corrections import export_corrections

    body = new_specimen(service, "ACC-TRAIN", images=3)
    new_specimen(service, "ACC-STILL-OPEN", images=2)
    csrf = sign_in(service)
    sid, cells = body["id"], [c["id"] for c in body["added"]]
    r = service.patch(
        f"/specimens/{sid}/cells/{cells[0]}",
        json={"label": "eosinophil", "version": body["version"]},
        headers=csrf,
    )
    r = service.patch(
        f"/specimens/{sid}/cells/{cells[1]}",
        json={"label": "unknown", "version": r.json()["version"]},
        headers=csrf,
    )
    r = service.post(
        f"/specimens/{sid}/finalise", json={"version": r.json()["version"]}, headers=csrf
    )
    assert r.status_code == 200
    export_corrections(service.app.state.db.url, tmp_path)
    rows = list(csv.DictReader((tmp_path / "manifest.csv").open()))
    mine = [row for row in rows if row["accession"] == "ACC-TRAIN"]
    assert len(mine) == 2  # the unknown cell is left out
    assert not [row for row in rows if row["accession"] == "ACC-STILL-OPEN"]
    first = next(row for row in mine if row["file"].endswith(f"_{cells[0]}.png"))
    assert first["final_label"] == "eosinophil" and first["reviewer"] == "alice"
    assert first["file"].startswith("eosinophil/")
    assert Image.open(tmp_path / first["file"]).size == (150, 150)


def test_images_over_the_limits_are_refused_and_nothing_is_stored(
    service: TestClient,
) -> None:
    """The upload limits of every other route apply: more files than WBC_MAX_BATCH, or a
    file over WBC_MAX_IMAGE_BYTES, is a 413 and the specimen keeps no cell of it."""
    sid = service.post("/specimens", json={"accession": "ACC-LIMITS"}, headers=MACHINE).json()["id"]
    limit = service.app.state.settings.max_batch
    many = [("files", (f"{i}.jpg", jpeg(i), "image/jpeg")) for i in range(limit + 1)]
    r = service.post(f"/specimens/{sid}/images", files=many, headers=MACHINE)
    assert r.status_code == 413 and r.json()["detail"]
    big = service.app.state.settings.max_image_bytes + 1
    r = service.post(
        f"/specimens/{sid}/images", files=[("files", ("big.jpg", b"\xff" * big))], headers=MACHINE
    )
    assert r.status_code == 413
    assert service.get(f"/specimens/{sid}", headers=MACHINE).json()["cells"] == []


def test_head_is_alembics_head_and_a_current_database_opens_without_alembic(
    tmp_path: Path,
) -> None:
    """Workers check the schema against ``app.db.HEAD`` and import alembic only when a
    migration is due: HEAD must name the newest migration."""
    import subprocess
    import sys

    from app.db import HEAD, head_revision, migrate_embedded

    url = f"sqlite:///{tmp_path / 'wbc.sqlite3'}"
    assert head_revision(url) == HEAD
    migrate_embedded(url)  # a new database: migrated
    check = (
        "import sys; from app.db import Database, migrate_embedded; "
        f"migrate_embedded({url!r}); assert Database({url!r}).is_current(); "
        "assert 'alembic' not in sys.modules, 'alembic imported'"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
