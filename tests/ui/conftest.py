"""A real browser on the dashboard: Debian's chromium driven by Selenium through chromedriver,
against a service of its own (SQLite, its own Redis database number, one worker).

Without chromium, chromedriver or selenium the browser tests skip with the reason, unless
LABTRAIN_TEST_REQUIRE_BROWSER=1 (set by .ci/run) makes that a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, fresh_database, reserved_redis_db, start_stack

ROOT = Path(__file__).resolve().parents[2]
MODEL22 = json.loads((ROOT / "examples" / "model22.json").read_text())
WAIT = 180.0  # seconds a browser condition may take on a loaded machine (tests get pytest.ini's timeout)


@pytest.fixture(scope="session")
def ui_stack(redis_base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The service the browser tests talk to: migrations, one worker, the API, on SQLite."""
    data = tmp_path_factory.mktemp("ui")
    with reserved_redis_db(redis_base_url) as redis_url, fresh_database("sqlite", data) as database_url:
        with start_stack(database_url, redis_url, data, workers=1) as stack:
            yield stack


def _browser_problem() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "the selenium package is not installed (pip install -e '.[dev]')"
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install chromium chromium-driver)"
    return None


class Browser:
    """A headless chromium page on the service, with the console's messages kept."""

    def __init__(self, base_url: str) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        self.base_url = base_url
        self.log: list[dict[str, Any]] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def wait(self, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        """Polls `condition` (a browser's state is asynchronous) until it is truthy."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; console: {self.console()}")
            time.sleep(0.1)

    def text(self, selector: str) -> str:
        return self.js("const el = document.querySelector(arguments[0]); return el ? el.innerText : ''", selector)

    def click(self, selector: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, selector).click()

    def console(self) -> list[dict[str, Any]]:
        self.log.extend(self.driver.get_log("browser"))
        return self.log

    def console_errors(self, expected_statuses: tuple[int, ...] = ()) -> list[str]:
        """Every error the console got: script errors always count; chromium also reports each
        4xx answer as a "network" error, which counts unless it is a refusal the test asked for."""
        errors = []
        for entry in self.console():
            if entry["level"] not in ("SEVERE", "ERROR"):
                continue
            message = entry["message"]
            if entry.get("source") == "network" and any(f"status of {s} " in message for s in expected_statuses):
                continue
            errors.append(message)
        return errors

    def no_horizontal_scroll(self) -> bool:
        return self.js("return document.documentElement.scrollWidth <= window.innerWidth")

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture
def browser_factory() -> Iterator[Callable[[str], Browser]]:
    """Opens browsers on a base URL; every one is closed at the end."""
    problem = _browser_problem()
    if problem:
        if os.environ.get("LABTRAIN_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{problem}, and LABTRAIN_TEST_REQUIRE_BROWSER=1")
        pytest.skip(problem)
    opened: list[Browser] = []

    def factory(base_url: str) -> Browser:
        opened.append(Browser(base_url))
        return opened[-1]

    yield factory
    for browser in opened:
        browser.quit()


@pytest.fixture
def browser(browser_factory: Callable[[str], Browser], ui_stack: Stack) -> Browser:
    """A browser on the UI service."""
    return browser_factory(ui_stack.base_url)
