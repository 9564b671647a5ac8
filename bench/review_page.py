"""The review page with a 200-cell specimen of real images, in Debian's headless Chromium:
how long until every cell image has loaded, and how long from a key press to the cell in
its new group with the differential updated; and the README's screenshot.

    python -m bench.review_page [--cells 200] [--changes 10]

A real server (one worker, SQLite) on loopback. Writes reports/review.md and
docs/review.png. A benchmark, not a test: it asserts no speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import tempfile
from pathlib import Path

import httpx

from bench.browser import chrome, wait_for
from bench.images import real_image_paths
from bench.server import PROJECT, Server, add_reviewer
from model_training import machine

PASSWORD = "a long enough passphrase"


def main() -> None:
    from selenium.webdriver.common.by import By

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--out", type=Path, default=PROJECT / "reports")
    args = parser.parse_args()
    db = Path(tempfile.mkdtemp()) / "wbc.sqlite3"
    env = {"WBC_DATABASE_URL": f"sqlite:///{db}"}
    add_reviewer(env, "alice", PASSWORD)
    paths = real_image_paths(args.cells)
    with Server(env=env) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        sid = http.post("/specimens", json={"accession": "H26-004211"}).json()["id"]
        for start in range(0, len(paths), 50):
            files = [
                ("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths[start : start + 50]
            ]
            assert http.post(f"/specimens/{sid}/images", files=files).status_code == 201
        driver = chrome()
        try:
            driver.set_window_size(1600, 1000)
            driver.get(server.url + "/login")
            driver.find_element(By.ID, "username").send_keys("alice")
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
            wait_for(driver, lambda d: d.current_url.endswith("/review"))
            ready = []
            for _ in range(3):
                driver.get(f"{server.url}/review/{sid}")
                ready.append(
                    float(
                        wait_for(
                            driver,
                            lambda d: d.find_element(By.ID, "review").get_attribute(
                                "data-ready-ms"
                            ),
                            30,
                        )
                    )
                )
            changes = []
            for i in range(args.changes):
                cell = driver.find_element(By.CSS_SELECTOR, "li.cell.selected")
                label = ("eosinophil", "lymphocyte", "monocyte", "neutrophil")[i % 4]
                if cell.get_attribute("data-label") == label:
                    label = "monocyte" if label != "monocyte" else "lymphocyte"
                before = driver.find_element(By.ID, "review").get_attribute("data-version")
                driver.switch_to.active_element.send_keys(label[0])
                wait_for(
                    driver,
                    lambda d, b=before: (
                        d.find_element(By.ID, "review").get_attribute("data-version") != b
                    ),
                )
                changes.append(
                    float(driver.find_element(By.ID, "review").get_attribute("data-last-change-ms"))
                )
                driver.switch_to.active_element.send_keys("j")
            driver.get(f"{server.url}/review/{sid}")
            wait_for(
                driver, lambda d: d.find_element(By.ID, "review").get_attribute("data-ready-ms")
            )
            (PROJECT / "docs").mkdir(exist_ok=True)
            driver.save_screenshot(str(PROJECT / "docs" / "review.png"))
        finally:
            driver.quit()
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    command = f"python -m bench.review_page --cells {args.cells} --changes {args.changes}"
    lines = [
        "# The review page",
        "",
        f"Produced by `{command}` on {stamp} ({machine.describe()}; Debian's headless "
        "Chromium and the server on the same 2 cores, loopback, SQLite).",
        "",
        f"A specimen of {len(paths)} real cell images (Kaggle TEST):",
        "",
        f"- page ready, every cell image loaded (from navigation start, 3 loads): median "
        f"**{statistics.median(ready):.0f} ms** (each: {', '.join(f'{r:.0f}' for r in ready)})",
        f"- a reclassification by key press, saved through the API and shown (cell moved, "
        f"differential updated), {len(changes)} changes: median "
        f"**{statistics.median(changes):.0f} ms**, largest {max(changes):.0f} ms",
        "",
        "![the review page](../docs/review.png)",
        "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "review.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
