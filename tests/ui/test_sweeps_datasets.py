"""The sweep and datasets pages in chromium: a sweep's table cell for cell equal to the API's
markdown table, its compare chart and members; the datasets with their schema, an upload, the
API's refusal of a bad file, and delete; no console errors but the refusals asked for."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack, wait_for
from tests.ui.conftest import Browser

pytestmark = pytest.mark.timeout(600)  # a stack, a browser and training on a loaded machine

SWEEP = {
    "name": "ui-lr",
    "base": {"dataset": {"name": "spirals", "params": {"n_samples": 400}}, "model": {"hidden_layers": 2, "neurons": 8},
             "optimizer": {"name": "sgd", "lr": 0.01}, "batch_size": 20, "epochs": 15},
    "grid": {"optimizer.lr": [0.003, 0.03, 0.3]},
    "repeats": 2,
}  # fmt: skip


def markdown_cells(markdown: str) -> list[list[str]]:
    """The cells of a markdown table (header first, the rule dropped), `\\|` read back as `|`."""
    rows = []
    for line in markdown.strip().splitlines():
        cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if not all(re.fullmatch(r"-+:?", c) for c in cells):
            rows.append(cells)
    return rows


@pytest.fixture(scope="module")
def sweep(ui_stack: Stack) -> dict[str, Any]:
    response = ui_stack.client.post("/sweeps", json=SWEEP)
    assert response.status_code == 202, response.text

    def finished() -> dict[str, Any] | None:
        read = ui_stack.client.get(f"/sweeps/{response.json()['id']}").json()
        return read if read["status"] == "finished" else None

    return wait_for(finished, 300, interval=0.5, what="the sweep to finish")


def test_a_sweep_page_shows_the_apis_table(browser: Browser, ui_stack: Stack, sweep: dict[str, Any]) -> None:
    browser.open(f"/ui/sweeps/{sweep['id']}")
    browser.wait(lambda: browser.js("return document.querySelectorAll('#sweep-table tbody tr').length") == 3, "rows")
    shown = browser.js(
        "return [...document.querySelectorAll('#sweep-table tr')].map(tr => [...tr.cells].map(c => c.innerText.trim()))"
    )
    markdown = ui_stack.client.get(f"/sweeps/{sweep['id']}/table", params={"format": "markdown"}).text
    assert shown == markdown_cells(markdown)
    assert any("±" in cell for row in shown for cell in row)  # repeats: mean ± std
    assert sum(row[-1] == "✓" for row in shown[1:]) == 1
    # The compare chart has one point per row; the members their statuses in words.
    compare = "return document.querySelector('#h-compare ~ figure .chart')?.dataset.points"
    browser.wait(lambda: browser.js(compare) == "3", "the compare chart")
    browser.wait(lambda: browser.js("return document.querySelectorAll('#members tbody tr').length") == 6, "members")
    statuses = browser.js("return [...document.querySelectorAll('#members .cell-status')].map(c => c.innerText)")
    assert all(s.endswith("succeeded") for s in statuses)
    assert "finished" in browser.text("#sweep-status")
    # Overlay two members' curves.
    for experiment_id in sweep["experiment_ids"][:2]:
        browser.click(f"#pick-{experiment_id}")
    browser.wait(lambda: browser.js("return document.querySelectorAll('#h-overlay ~ figure .u-series').length") == 3,
                 "two overlaid curves")  # fmt: skip
    assert browser.console_errors() == []


def test_a_sweeps_members_turn_live(browser: Browser, ui_stack: Stack) -> None:
    """The page opened while the sweep runs: statuses change on it without a reload."""
    request = {**SWEEP, "name": "ui-live", "grid": {"optimizer.lr": [0.01, 0.1]}, "repeats": 1}
    request["base"] = {**SWEEP["base"], "epochs": 400}
    response = ui_stack.client.post("/sweeps", json=request)
    assert response.status_code == 202, response.text
    browser.open(f"/ui/sweeps/{response.json()['id']}")
    seen: set[str] = set()

    def finished() -> bool:
        statuses = browser.js("return [...document.querySelectorAll('#members tr')].map(r => r.dataset.status)")[1:]
        seen.update(statuses)
        return len(statuses) == 2 and set(statuses) == {"succeeded"} and "finished" in browser.text("#sweep-status")

    browser.wait(finished, "the sweep to finish on the page", timeout=300)
    assert seen & {"queued", "running"}, f"no member was seen unfinished: {seen}"
    browser.wait(lambda: "succeeded" in browser.text("#sweep-table tbody"), "the table read again")
    assert "-" not in [c.strip() for c in re.split(r"[\t\n]", browser.text("#sweep-table tbody"))]  # every metric
    assert browser.console_errors() == []


def test_cancel_a_sweep_from_its_page(browser: Browser, ui_stack: Stack) -> None:
    request = {**SWEEP, "name": "ui-cancel", "grid": {"optimizer.lr": [0.01, 0.1]}, "repeats": 1}
    request["base"] = {**SWEEP["base"], "epochs": 50000}
    response = ui_stack.client.post("/sweeps", json=request)
    assert response.status_code == 202, response.text
    sweep_id = response.json()["id"]
    browser.open(f"/ui/sweeps/{sweep_id}")
    browser.wait(lambda: browser.js("return document.getElementById('cancel-sweep')"), "the cancel button")
    browser.click("#cancel-sweep")
    browser.wait(lambda: "cancelled" in browser.text("#sweep-status"), "the cancelled sweep")

    def members() -> set[str]:
        items = ui_stack.client.get("/experiments", params={"sweep_id": sweep_id}).json()["items"]
        return {e["status"] for e in items}

    wait_for(lambda: members() == {"cancelled"}, 200, interval=0.5, what="every member cancelled")
    shown = "return [...document.querySelectorAll('#members tr')].map(r => r.dataset.status).slice(1)"
    browser.wait(lambda: set(browser.js(shown)) == {"cancelled"}, "the members cancelled on the page")
    assert not browser.js("return document.getElementById('cancel-sweep').checkVisibility()")
    assert browser.console_errors() == []


GOOD = "sqft,rooms,price\n" + "".join(f"{800 + 37 * i},{1 + i % 5},{90000 + 1500 * i + 7 * i * i}\n" for i in range(30))
BAD = "sqft,rooms,price\n" + "".join(f"{800 + i},{'three' if i == 4 else 3},{1000 * i}\n" for i in range(30))


def test_datasets_upload_refusal_and_delete(browser: Browser, ui_stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "ui-houses.csv").write_text(GOOD)
    (tmp_path / "ui-bad.csv").write_text(BAD)
    browser.open("/ui/datasets")
    browser.wait(lambda: browser.js("return document.querySelectorAll('#datasets tbody tr').length"), "the datasets")
    builtins = browser.js("return [...document.querySelectorAll('tr[data-kind=builtin]')].map(r => r.dataset.name)")
    api_builtins = [d["name"] for d in ui_stack.client.get("/datasets").json()["items"] if d["kind"] == "builtin"]
    assert builtins == api_builtins
    assert "Gr_Liv_Area" in browser.text("#datasets tr[data-name=house_prices]")

    from selenium.webdriver.common.by import By

    # A bad file: the API's refusal, as the API words it.
    browser.driver.find_element(By.ID, "upload-file").send_keys(str(tmp_path / "ui-bad.csv"))
    browser.driver.find_element(By.ID, "upload-target").send_keys("price")
    browser.click("#upload-form button[type=submit]")
    refusal = browser.wait(lambda: browser.text("#upload-result .refusal"), "the refusal")
    with (tmp_path / "ui-bad.csv").open("rb") as f:
        api = ui_stack.client.post("/datasets", files={"file": ("ui-bad.csv", f)}, data={"target": "price"})
    assert api.status_code == 422
    assert api.json()["detail"] in refusal
    assert "three" in refusal

    # A good one is stored and listed with its schema.
    browser.driver.find_element(By.ID, "upload-file").send_keys(str(tmp_path / "ui-houses.csv"))
    browser.driver.find_element(By.ID, "upload-target").clear()
    browser.driver.find_element(By.ID, "upload-target").send_keys("price")
    browser.click("#upload-form button[type=submit]")
    stored = browser.wait(lambda: browser.text("#upload-result [role=status]"), "the stored dataset")
    assert "regression" in stored
    row = "#datasets tr[data-name='ui-houses']"
    browser.wait(lambda: browser.text(row), "the upload in the table")
    assert "sqft, rooms" in browser.text(row)
    assert "18 / 6 / 6" in browser.text(row)

    # Delete, after the browser's confirmation.
    browser.click(f"{row} button.danger")
    browser.driver.switch_to.alert.accept()
    browser.wait(lambda: not browser.text(row), "the upload gone")
    assert all(d["name"] != "ui-houses" for d in ui_stack.client.get("/datasets").json()["items"])
    assert browser.console_errors(expected_statuses=(422,)) == []


def test_a_dataset_deep_link_shows_its_schema(browser: Browser) -> None:
    browser.open("/ui/datasets/house_prices")
    browser.wait(lambda: browser.text("main h1") == "house_prices", "the dataset page")
    assert "Sale_Price" in browser.text("main")
    assert "Gr_Liv_Area" in browser.text(".features")
    assert browser.console_errors() == []
