"""The dashboard under API keys in chromium: a key prompt on the first 401, the key kept in the
tab's session storage and sent as a header (never in a URL), bob sees none of alice's runs or
uploads, a refused key is said so, and sign-out forgets the key."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.conftest import Stack, api_process
from tests.ui.conftest import MODEL22, Browser

pytestmark = pytest.mark.timeout(600)
ALICE, BOB = "alice-ui-key-0123456789", "bob-ui-key-9876543210"


@pytest.fixture(scope="module")
def keyed_api(ui_stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A second API on the UI service's database with keys for alice and bob; its client is alice's."""
    env = {"LABTRAIN_API_KEYS": f"alice:{ALICE},bob:{BOB}"}
    with api_process(ui_stack, env, tmp_path_factory.mktemp("keyed") / "api.log", {"X-API-Key": ALICE}) as client:
        yield client


def sign_in(browser: Browser, key: str) -> None:
    from selenium.webdriver.common.by import By

    browser.wait(lambda: browser.js("return document.getElementById('key-dialog').open"), "the key prompt")
    field = browser.driver.find_element(By.ID, "key-input")
    field.clear()
    field.send_keys(key)
    browser.click("#key-form button[type=submit]")


def test_bob_sees_none_of_alices_runs(browser_factory: Callable[[str], Browser], keyed_api: httpx.Client) -> None:
    created = keyed_api.post("/experiments", json={**MODEL22, "name": "alice-secret", "epochs": 3})
    assert created.status_code == 202, created.text
    alice_id = created.json()["id"]
    rows = "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40))
    upload = keyed_api.post("/datasets", files={"file": ("alice-data.csv", "a,b,y\n" + rows)}, data={"target": "y"})
    assert upload.status_code == 201, upload.text

    browser = browser_factory(str(keyed_api.base_url).rstrip("/"))
    browser.open("/ui/")
    sign_in(browser, BOB)
    browser.wait(lambda: "No experiments here yet" in browser.text("#experiments"), "bob's empty table")
    assert "alice" not in browser.text("main")
    assert browser.js("return sessionStorage.getItem('labtrain.apiKey')") == BOB
    browser.open(f"/ui/experiments/{alice_id}")
    browser.wait(lambda: f"No experiment {alice_id}" in browser.text("main"), "the refusal of alice's run")
    assert "alice-secret" not in browser.text("main")
    browser.open("/ui/datasets")
    browser.wait(lambda: browser.js("return document.querySelectorAll('#datasets tbody tr').length"), "the datasets")
    assert "alice-data" not in browser.text("#datasets")

    # Sign out: the key is gone from the tab; a wrong key is refused in words; alice sees her run.
    browser.click("#sign-out")
    assert browser.js("return sessionStorage.getItem('labtrain.apiKey')") is None
    browser.open("/ui/")
    sign_in(browser, "not-a-key")
    browser.wait(lambda: "refused" in browser.text("#key-error"), "the refusal of a wrong key")
    sign_in(browser, ALICE)
    browser.wait(lambda: "alice-secret" in browser.text("#experiments"), "alice's run")
    browser.open("/ui/datasets")
    browser.wait(lambda: "alice-data" in browser.text("#datasets"), "alice's upload")
    urls = browser.js("return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])")
    assert urls
    assert not any(ALICE in u or BOB in u for u in urls), "a key went into a URL"
    assert browser.console_errors(expected_statuses=(401, 404)) == []


