"""The experiment pages in chromium: model22 submitted through the editor with its curves growing
live, its plots and a prediction, a test evaluation behind its confirmation, a bad spec's field
errors, the table's live status, keyboard use and a 390 px screen, and no console errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Stack
from tests.ui.conftest import MODEL22, Browser

pytestmark = pytest.mark.timeout(600)  # a stack, a browser and training on a loaded machine


@pytest.fixture(scope="module")
def model22(ui_stack: Stack) -> dict[str, Any]:
    """model22, submitted over the API and trained."""
    created = ui_stack.submit({**MODEL22, "name": "model22-api"})
    done = ui_stack.wait_terminal(created["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    return done


def set_editor(browser: Browser, spec: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    editor = browser.driver.find_element(By.ID, "spec-editor")
    editor.send_keys(Keys.CONTROL, "a")
    editor.send_keys(Keys.DELETE)
    browser.js("arguments[0].value = arguments[1]", editor, json.dumps(spec, indent=2))


def points(browser: Browser, quantity: str) -> int:
    value = browser.js(f"const c = document.querySelector('figure[data-quantity=\"{quantity}\"] .chart');"
                       " return c && c.dataset.points ? Number(c.dataset.points) : 0")  # fmt: skip
    return int(value)


def test_model22_through_the_editor_grows_its_curves_live(browser: Browser, ui_stack: Stack) -> None:
    browser.open("/ui/new")
    browser.wait(lambda: browser.js("return document.getElementById('spec-editor')?.value"), "the editor")
    assert json.loads(browser.js("return document.getElementById('spec-editor').value")) == MODEL22
    browser.click("#submit-spec")
    experiment_id = browser.wait(
        lambda: (p := browser.js("return location.pathname")).startswith("/ui/experiments/") and p.rsplit("/", 1)[1],
        "the experiment's page",
    )
    assert ui_stack.experiment(experiment_id)["name"] == "model22"

    # Follow the loss chart while it trains: the number of epochs drawn grows before the end.
    seen: list[int] = []

    def finished() -> bool:
        seen.append(points(browser, "loss"))
        return "succeeded" in browser.text("#status")

    browser.wait(finished, "model22 to succeed on the page", timeout=300)
    browser.wait(lambda: points(browser, "loss") == 300, "the 300th epoch on the chart")
    growing = sorted({n for n in seen if 0 < n < 300})
    assert len(growing) >= 2, f"the chart did not grow while training (epochs drawn: {sorted(set(seen))})"
    assert seen == sorted(seen), "the curve never shrinks"
    assert points(browser, "accuracy") == 300
    assert browser.text("#epochs") == "epoch 300/300"
    served = ui_stack.experiment(experiment_id)["metrics"]
    kept = (served.get("served") or served["best"])["epoch"]
    browser.wait(lambda: f"epoch, {kept}" in browser.text("figure[data-quantity=loss] .chart-note"), "the kept epoch")
    assert len(ui_stack.epochs(experiment_id)) == 300

    # The table shows it finished, in words.
    browser.open("/ui/")
    row = f"tr[data-id='{experiment_id}']"
    browser.wait(lambda: "succeeded" in browser.text(f"{row} .cell-status"), "the table's status")
    assert "300/300" in browser.text(row)
    assert browser.console_errors() == []


def test_plots_prediction_a_counted_test_look_and_the_model(
    browser: Browser, ui_stack: Stack, model22: dict[str, Any], tmp_path: Path
) -> None:
    experiment_id = model22["id"]
    browser.open(f"/ui/experiments/{experiment_id}")
    for kind in ("learning-curves", "decision-boundary", "confusion"):
        image = f"figure[data-kind='{kind}'] img"
        loaded = f"const i = document.querySelector(\"{image}\"); return i && i.complete && i.naturalWidth > 100"
        browser.wait(lambda loaded=loaded: browser.js(loaded), f"the {kind} plot")

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    # The curves: the legend reads the latest epoch, the one under the pointer on hover; log scale.
    legend = "return [...document.querySelectorAll('[data-quantity=loss] .u-value')].map(v => v.textContent)"
    browser.wait(lambda: browser.js(legend) and browser.js(legend)[0] == "300", "the legend at the last epoch")
    over = browser.driver.find_element(By.CSS_SELECTOR, "figure[data-quantity=loss] .u-over")
    ActionChains(browser.driver).move_to_element_with_offset(over, -over.size["width"] // 4, 0).perform()
    hovered = browser.wait(lambda: browser.js(legend)[0] not in ("300", "-") and browser.js(legend), "hover values")
    epoch = int(hovered[0])
    assert 1 <= epoch < 300
    assert float(hovered[1]) == pytest.approx(ui_stack.epochs(experiment_id)[epoch - 1]["train_loss"], rel=1e-4)
    browser.click("figure[data-quantity=loss] .log-toggle")
    browser.wait(lambda: browser.js("return document.querySelector('figure[data-quantity=loss] .chart').dataset.scale")
                 == "log", "the log scale")  # fmt: skip

    row = {"x1": 0.5, "x2": -0.25}
    for i, value in enumerate(row.values()):
        browser.driver.find_element(By.ID, f"feature-{i}").send_keys(str(value))
    browser.click("#predict button[type=submit]")
    shown = browser.wait(lambda: browser.text("#prediction"), "the prediction")
    answer = ui_stack.client.post(f"/experiments/{experiment_id}/predictions", json={"inputs": [row]}).json()
    expected = answer["predictions"][0]
    assert f"label {expected['label']}" in shown
    assert f"1: {100 * expected['probabilities'][1]:.1f}%" in shown

    # A test look asks first, and says it is counted; "Not now" looks at nothing.
    browser.click("#evaluate-test")
    dialog = browser.wait(lambda: browser.js("return document.getElementById('test-confirm').open"), "the confirmation")
    assert dialog
    assert "counted" in browser.text("#test-confirm")
    browser.click("#test-confirm button[value=cancel]")
    assert ui_stack.experiment(experiment_id)["test_evaluations"] == 0
    browser.click("#evaluate-test")
    browser.wait(lambda: browser.js("return document.getElementById('test-confirm').open"), "the confirmation")
    browser.click("#test-confirm-yes")
    browser.wait(lambda: browser.text("#test-count") == "Test evaluations so far: 1", "the count")
    assert ui_stack.experiment(experiment_id)["test_evaluations"] == 1
    browser.wait(lambda: "test" in browser.text("#evaluations tbody"), "the evaluation in the list")

    # The model download: the same bytes as the API's, under the API's file name.
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    browser.click("#download")
    saved = browser.wait(lambda: [p for p in downloads.glob("*.safetensors") if p.stat().st_size], "the download")
    model = ui_stack.client.get(f"/experiments/{experiment_id}/model")
    assert saved[0].name == f"model22-api-{experiment_id}.safetensors"
    assert saved[0].read_bytes() == model.content
    assert browser.console_errors() == []


def test_cancel_from_the_page(browser: Browser, ui_stack: Stack) -> None:
    long = ui_stack.submit({**MODEL22, "name": "long-run", "epochs": 50000})
    browser.open(f"/ui/experiments/{long['id']}")
    browser.wait(lambda: "running" in browser.text("#status"), "the run to start", timeout=200)
    browser.wait(lambda: points(browser, "loss") > 0, "its first epochs on the chart")
    browser.click("#cancel")
    browser.wait(lambda: "cancelled" in browser.text("#status"), "the cancelled status", timeout=200)
    assert ui_stack.experiment(long["id"])["status"] == "cancelled"
    browser.wait(lambda: not browser.js("return document.getElementById('cancel')"), "the cancel button gone")
    assert browser.console_errors() == []


def test_a_bad_spec_shows_its_field_errors(browser: Browser, ui_stack: Stack) -> None:
    before = len(ui_stack.client.get("/experiments", params={"limit": 200}).json()["items"])
    bad = {**MODEL22, "model": {**MODEL22["model"], "neurons": 0}, "batch_size": -3}
    browser.open("/ui/new")
    browser.wait(lambda: browser.js("return document.getElementById('spec-editor')?.value"), "the editor")
    set_editor(browser, bad)
    browser.click("#submit-spec")
    browser.wait(lambda: browser.js("return document.querySelectorAll('#field-errors li').length"), "the field errors")
    refusal = ui_stack.client.post("/experiments", json=bad)
    assert refusal.status_code == 422
    api_paths = {".".join(str(p) for p in e["loc"][1:]) for e in refusal.json()["errors"]}
    shown = browser.js("return [...document.querySelectorAll('#field-errors li')].map(li => li.dataset.loc)")
    assert set(shown) == api_paths
    assert any(p.endswith("neurons") for p in shown)
    # The editor's gutter marks the field's line.
    text = browser.js("return document.getElementById('spec-editor').value")
    neurons_line = text[: text.index('"neurons": 0')].count("\n") + 1
    marked = browser.js("return [...document.querySelectorAll('.gutter .bad')].map(s => s.textContent)")
    assert f"✗ {neurons_line}" in marked
    # Each error leads to its field in the editor.
    from selenium.webdriver.common.by import By

    items = browser.driver.find_elements(By.CSS_SELECTOR, "#field-errors li")
    item = next(li for li in items if li.get_attribute("data-loc").endswith("neurons"))
    item.find_element(By.TAG_NAME, "button").click()
    selection = "const e = document.activeElement; return e.value.slice(e.selectionStart, e.selectionEnd)"
    selected = browser.js(selection)
    assert selected.strip().startswith('"neurons": 0')
    assert browser.js("return document.activeElement.id") == "spec-editor"
    assert browser.js("return location.pathname") == "/ui/new"
    assert len(ui_stack.client.get("/experiments", params={"limit": 200}).json()["items"]) == before
    assert browser.console_errors(expected_statuses=(422,)) == []


def test_the_tables_filters(browser: Browser, ui_stack: Stack, model22: dict[str, Any]) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.open("/ui/")
    browser.wait(lambda: browser.js("return document.querySelectorAll('tr[data-id]').length"), "the table's rows")
    Select(browser.driver.find_element(By.ID, "f-status")).select_by_value("succeeded")
    api = ui_stack.client.get("/experiments", params={"status": "succeeded", "limit": 50}).json()["items"]

    def shown() -> list[tuple[str, str]]:
        rows = "return [...document.querySelectorAll('tr[data-id]')]"
        return browser.js(rows + ".map(r => [r.dataset.id, r.dataset.status])")

    browser.wait(lambda: {i for i, _ in shown()} == {e["id"] for e in api}, "the succeeded experiments")
    assert {status for _, status in shown()} == {"succeeded"}
    assert "status=succeeded" in browser.js("return location.search")  # the filter is in the link
    browser.driver.find_element(By.ID, "f-name").send_keys("model22-api")
    browser.click("form.filters button[type=submit]")
    browser.wait(lambda: [i for i, _ in shown()] == [model22["id"]], "the name filter")
    # Sorting by parameters puts the largest first, then the smallest.
    browser.driver.find_element(By.ID, "f-name").clear()
    browser.click("form.filters button[type=submit]")
    browser.wait(lambda: len(shown()) == len(api), "every succeeded row again")
    browser.click("button[data-sort=params]")
    counts = browser.js("return [...document.querySelectorAll('tr[data-id] td:nth-child(4)')].map(c => c.innerText)")
    numbers = [int(c.replace(",", "")) for c in counts]
    assert numbers == sorted(numbers, reverse=True)
    assert browser.js("return document.querySelector('th[aria-sort]').getAttribute('aria-sort')") == "descending"
    assert browser.console_errors() == []


def test_keyboard_and_a_narrow_screen(
    browser_factory: Callable[[str], Browser], ui_stack: Stack, model22: dict[str, Any]
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    browser = browser_factory(ui_stack.base_url)
    browser.open("/ui/")
    browser.wait(lambda: browser.js("return document.querySelectorAll('tr[data-id]').length"), "the table's rows")
    # Tab reaches the skip link, then the sections; the focused one is outlined; Enter follows it.
    names = []
    for _ in range(5):
        ActionChains(browser.driver).send_keys(Keys.TAB).perform()
        names.append(browser.js("return document.activeElement.textContent.trim()"))
    assert names[:2] == ["Skip to content", "labtrain"]
    assert "Datasets" in names
    while browser.js("return document.activeElement.textContent.trim()") != "Datasets":
        ActionChains(browser.driver).send_keys(Keys.SHIFT, Keys.TAB).perform()
    outline = browser.js("const s = getComputedStyle(document.activeElement); return [s.outlineStyle, s.outlineWidth]")
    assert outline[0] != "none"
    assert outline[1] != "0px"
    ActionChains(browser.driver).send_keys(Keys.ENTER).perform()
    browser.wait(lambda: browser.js("return location.pathname") == "/ui/datasets", "the datasets page")

    browser.driver.set_window_size(390, 844)
    for path in ("/ui/", f"/ui/experiments/{model22['id']}", "/ui/datasets", "/ui/new"):
        browser.open(path)
        browser.wait(lambda: browser.js("return document.querySelector('main h1')?.textContent"), f"{path}")
        browser.wait(lambda: not browser.js("return document.querySelector('main .loading')"), "the page drawn")
        assert browser.no_horizontal_scroll(), f"{path} scrolls sideways at 390 px"
    assert browser.console_errors() == []
