"""The review page in Debian's headless Chromium (Selenium, chromium-driver) against a real
server with a real database and real cell images: sign in, keyboard review, reclassify,
sign, the final FHIR report; two reviewers on one specimen; escaping; no console errors."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.browser import chrome, wait_for
from bench.server import Server, add_reviewer

KEY = "page-key"
PASSWORD = "a long enough passphrase"
PROJECT = Path(__file__).resolve().parents[2]


def browser_or_skip() -> None:
    if shutil.which("chromium") and shutil.which("chromedriver"):
        try:
            import selenium  # noqa: F401

            return
        except ImportError:
            pass
    message = "headless Chromium, chromium-driver or selenium is not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Server]:
    browser_or_skip()
    db = tmp_path_factory.mktemp("db") / "wbc.sqlite3"
    env = {
        "WBC_MODEL_DIR": str(PROJECT / "models" / "wbc-classifier"),
        "WBC_API_KEY": KEY,
        "WBC_DATABASE_URL": f"sqlite:///{db}",
    }
    for name in ("alice", "bob"):
        add_reviewer(env, name, PASSWORD)
    with Server(env=env) as running:
        yield running


def real_specimen(
    server: Server,
    data_dir: Path,
    accession: str,
    per_class: int = 3,
    extra: list[tuple[str, bytes]] | None = None,
) -> int:
    http = httpx.Client(base_url=server.url, headers={"X-API-Key": KEY}, timeout=60)
    sid = http.post("/specimens", json={"accession": accession}).json()["id"]
    files = []
    for cls in ("EOSINOPHIL", "LYMPHOCYTE", "MONOCYTE", "NEUTROPHIL"):
        for path in sorted((data_dir / "TEST_SIMPLE" / cls).iterdir())[:per_class]:
            files.append(("files", (path.name, path.read_bytes(), "image/jpeg")))
    for name, data in extra or []:
        files.append(("files", (name, data, "image/jpeg")))
    r = http.post(f"/specimens/{sid}/images", files=files)
    assert r.status_code == 201, r.text
    return sid


def sign_in(driver, server: Server, name: str = "alice") -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    driver.get(server.url + "/review")
    assert driver.current_url.endswith("/login")  # no session: the login page
    driver.find_element(By.ID, "username").send_keys(name)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    wait_for(driver, lambda d: d.current_url.endswith("/review"))


def console_errors(driver) -> list[str]:  # type: ignore[no-untyped-def]
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def test_a_reviewer_reviews_reclassifies_and_signs_in_the_browser(
    server: Server, data_dir: Path
) -> None:
    from fhir.resources.bundle import Bundle
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    sid = real_specimen(server, data_dir, "BROWSER-1")
    driver = chrome()
    try:
        sign_in(driver, server)
        assert "BROWSER-1" in driver.page_source
        driver.find_element(By.LINK_TEXT, "BROWSER-1").click()
        wait_for(driver, lambda d: d.find_element(By.ID, "review").get_attribute("data-ready-ms"))
        first = driver.switch_to.active_element  # focus is on the first cell to review
        selected = driver.find_element(By.CSS_SELECTOR, "li.cell.selected")
        assert first.find_element(By.XPATH, "..").get_attribute(
            "data-cell"
        ) == selected.get_attribute("data-cell")
        flagged = driver.find_elements(By.CSS_SELECTOR, "li.cell.flagged")
        if flagged:  # the flagged cells are reachable first
            assert selected.get_attribute("data-cell") == flagged[0].get_attribute("data-cell")
        first.send_keys("j")  # move with the keyboard
        moved = driver.find_element(By.CSS_SELECTOR, "li.cell.selected")
        assert moved.get_attribute("data-cell") != selected.get_attribute("data-cell")
        driver.switch_to.active_element.send_keys(Keys.ARROW_UP)
        target = driver.find_element(By.CSS_SELECTOR, "li.cell.selected")
        cell_id = target.get_attribute("data-cell")
        new = "eosinophil" if target.get_attribute("data-label") != "eosinophil" else "monocyte"
        before = int(
            driver.find_element(By.CSS_SELECTOR, f'#differential tr[data-class="{new}"] .n').text
        )
        driver.switch_to.active_element.send_keys(new[0])  # e or m
        wait_for(
            driver,
            lambda d: (
                d.find_element(By.CSS_SELECTOR, f'li.cell[data-cell="{cell_id}"]').get_attribute(
                    "data-label"
                )
                == new
            ),
        )
        group = driver.find_element(
            By.CSS_SELECTOR, f'li.cell[data-cell="{cell_id}"]'
        ).find_element(By.XPATH, "ancestor::section")
        assert group.get_attribute("data-group") == new  # moved to its new group
        after = int(
            driver.find_element(By.CSS_SELECTOR, f'#differential tr[data-class="{new}"] .n').text
        )
        assert after == before + 1
        api = httpx.get(f"{server.url}/specimens/{sid}", headers={"X-API-Key": KEY}).json()
        stored = next(c for c in api["cells"] if str(c["id"]) == cell_id)
        assert stored["label"] == new and stored["changed_by"] == "alice"
        assert api["differential"]["counts"][new]["count"] == after
        # the selected cell's probabilities and heatmap
        assert driver.find_elements(By.CSS_SELECTOR, "#probabilities tr")
        assert "/explain" in driver.find_element(By.ID, "heatmap").get_attribute("src")
        # sign
        driver.find_element(By.ID, "sign").click()
        wait_for(
            driver,
            lambda d: d.find_element(By.ID, "review").get_attribute("data-status") == "final",
        )
        assert "signed by alice" in driver.page_source
        driver.switch_to.active_element.send_keys("n")  # refused: final
        wait_for(driver, lambda d: "signed" in d.find_element(By.ID, "notice").text)
        assert "finalised" in driver.find_element(By.CSS_SELECTOR, "ol.audit").text
        report = httpx.get(
            f"{server.url}/specimens/{sid}/report?format=fhir", headers={"X-API-Key": KEY}
        ).json()
        bundle = Bundle.model_validate(report)
        status = {e.resource.get_resource_type(): e.resource for e in bundle.entry}
        assert status["DiagnosticReport"].status == "final"
        assert console_errors(driver) == []
    finally:
        driver.quit()


def test_two_reviewers_on_one_specimen_see_the_conflict(server: Server, data_dir: Path) -> None:
    from selenium.webdriver.common.by import By

    sid = real_specimen(server, data_dir, "BROWSER-2", per_class=1)
    alice, bob = chrome(), chrome()
    try:
        sign_in(alice, server, "alice")
        sign_in(bob, server, "bob")
        for driver in (alice, bob):
            driver.get(f"{server.url}/review/{sid}")
            wait_for(
                driver, lambda d: d.find_element(By.ID, "review").get_attribute("data-ready-ms")
            )

        def relabel(driver) -> str:  # type: ignore[no-untyped-def]
            cell = driver.find_element(By.CSS_SELECTOR, "li.cell.selected")
            cell_id = cell.get_attribute("data-cell")
            label = "lymphocyte" if cell.get_attribute("data-label") != "lymphocyte" else "monocyte"
            driver.switch_to.active_element.send_keys(label[0])  # the page may reload at once
            return cell_id

        relabel(alice)
        wait_for(alice, lambda d: "Saved" in d.find_element(By.ID, "notice").text)
        relabel(bob)  # bob's page is one version behind
        wait_for(bob, lambda d: "stale=1" in d.current_url)
        assert "Someone else changed this specimen" in bob.find_element(By.ID, "stale").text
        assert (
            console_errors(alice) == [] and [e for e in console_errors(bob) if "409" not in e] == []
        )
    finally:
        alice.quit()
        bob.quit()


def test_pages_need_a_session_escape_what_they_show_and_send_security_headers(
    server: Server, data_dir: Path
) -> None:
    from selenium.webdriver.common.by import By

    hostile = "<img src=x onerror=alert(1)><script>alert(2)<script>.jpg"  # no separators
    cell = next((data_dir / "TEST_SIMPLE" / "MONOCYTE").iterdir()).read_bytes()
    sid = real_specimen(server, data_dir, "BROWSER-3", per_class=0, extra=[(hostile, cell)])
    r = httpx.get(f"{server.url}/review/{sid}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    driver = chrome()
    try:
        sign_in(driver, server)
        driver.get(f"{server.url}/review/{sid}")
        shown = driver.find_element(By.CSS_SELECTOR, "li.cell .source").text
        assert shown == hostile  # text, not a script
        assert driver.execute_script("return document.querySelectorAll('script').length") == 1
        assert not driver.find_elements(By.CSS_SELECTOR, 'img[src="x"]')
        page = httpx.get(f"{server.url}/review/{sid}", cookies=driver_cookies(driver))
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert "&lt;script&gt;" in page.text and "&lt;img src=x" in page.text
        assert console_errors(driver) == []
    finally:
        driver.quit()


def driver_cookies(driver) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c["name"]: c["value"] for c in driver.get_cookies()}
