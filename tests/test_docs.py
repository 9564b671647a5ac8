"""The project's text: links that resolve, a README of at most 200 lines, a settings table
that matches the settings class, and no project history outside the experiments' dates."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from app import settings_doc

PROJECT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def markdown_files() -> list[Path]:
    files = [PROJECT / "README.md", PROJECT / "CONTRIBUTING.md"]
    files += sorted((PROJECT / "docs").glob("*.md"))
    files += sorted((PROJECT / "reports").rglob("*.md"))
    return files


def test_every_relative_link_resolves() -> None:
    broken = []
    for md in markdown_files():
        text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)  # code blocks hold no links
        for target in LINK.findall(text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor
            path = (md.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{md.relative_to(PROJECT)} -> {target}")
    assert not broken, broken


def test_link_checker_catches_a_broken_link(tmp_path: Path) -> None:
    md = tmp_path / "x.md"
    md.write_text("see [this](missing.md) and [ok](x.md)")
    targets = [t for t in LINK.findall(md.read_text()) if not (md.parent / t).resolve().exists()]
    assert targets == ["missing.md"]


def test_readme_is_short() -> None:
    assert len((PROJECT / "README.md").read_text().splitlines()) <= 200


def test_settings_table_is_generated_from_the_settings_class() -> None:
    """Fails when a setting changed and `python -m app.settings_doc --write
    docs/operations.md` was not run."""
    doc = (PROJECT / "docs" / "operations.md").read_text()
    assert settings_doc.rendered(doc) == doc
    for name in settings_doc.Settings.model_fields:
        assert f"`WBC_{name.upper()}`" in doc


def test_no_project_history_in_the_text() -> None:
    found = subprocess.run(
        ["git", "grep", "-n", "-i", "-E", r"sessions? [0-9]"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
    ).stdout
    assert found == "", found
