"""The dashboard's files as the API serves them: the page at every deep link, the redirect of a
browser asking for `/`, no file outside ui/, public files but keyed data, and the size budget."""

from __future__ import annotations

import gzip
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import Stack, api_process

UI = Path(__file__).resolve().parents[2] / "ui"
DEEP_LINKS = ["/ui/", "/ui/experiments/abc123", "/ui/sweeps/abc123", "/ui/datasets", "/ui/datasets/spirals", "/ui/new"]


def test_every_deep_link_answers_the_page(ui_stack: Stack) -> None:
    index = (UI / "index.html").read_text()
    for path in DEEP_LINKS:
        response = ui_stack.client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert response.text == index
        assert "default-src 'self'" in response.headers["content-security-policy"]
    app = ui_stack.client.get("/ui/js/app.js")
    assert app.status_code == 200
    assert app.headers["content-type"].startswith("text/javascript")
    assert ui_stack.client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"


def test_a_browser_asking_for_the_root_is_sent_to_the_dashboard(ui_stack: Stack) -> None:
    browser = ui_stack.client.get("/", headers={"Accept": "text/html,application/xhtml+xml"}, follow_redirects=False)
    assert browser.status_code == 307
    assert browser.headers["location"] == "/ui/"
    plain = ui_stack.client.get("/")
    assert plain.status_code == 404
    assert plain.json()["error"] == "NotFound"


def test_no_file_outside_the_dashboard_is_served(ui_stack: Stack) -> None:
    outside = ["/ui/js/%2e%2e/%2e%2e/pyproject.toml", "/ui/..%2fpyproject.toml", "/ui/nope.js", "/ui/vendor/none.css"]
    for path in outside:
        response = ui_stack.client.get(path)
        assert response.status_code == 404, path
        assert response.json()["error"] == "NotFound"


def test_files_are_public_and_data_needs_a_key(ui_stack: Stack, tmp_path: Path) -> None:
    env = {"LABTRAIN_API_KEYS": "alice:alice-key-0123456789"}
    with api_process(ui_stack, env, tmp_path / "api.log", {}) as client:
        assert client.get("/ui/experiments/abc").status_code == 200
        assert client.get("/ui/js/api.js").status_code == 200
        assert client.get("/experiments").status_code == 401
        assert client.get("/experiments", headers={"X-API-Key": "alice-key-0123456789"}).status_code == 200


def test_the_download_stays_under_300_kb_gzipped() -> None:
    files = [p for p in UI.rglob("*") if p.is_file()]
    total = sum(len(gzip.compress(p.read_bytes(), 9)) for p in files)
    assert any(p.name == "uPlot.LICENSE" for p in files)  # the vendored library keeps its license
    assert total < 300 * 1024, f"{total} bytes gzipped"


def test_an_installed_wheel_carries_the_dashboard(tmp_path: Path) -> None:
    """pyproject.toml's package data: a wheel built from the sources holds every file of ui/
    (built from a copy, so the checkout gets no build/ folder)."""
    root = UI.parent
    source = tmp_path / "src"
    skip = shutil.ignore_patterns(
        ".*", "var", "build", "dist", "*.egg-info", "__pycache__", "tests", "studies", "bench", "docs"
    )
    shutil.copytree(root, source, ignore=skip)
    # The venv's setuptools when it has one (no download); else pip fetches the build backend.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], check=True, capture_output=True, timeout=600)
    wheel = next(tmp_path.glob("labtrain-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(root)) for p in UI.rglob("*") if p.is_file()}
    assert expected <= names, sorted(expected - names)
    assert "api/routes/ui.py" in names
