"""The README's dashboard pictures (docs/img/ui-*.png), taken in chromium from a running service:
`python -m tests.ui.screenshots http://127.0.0.1:8000 MODEL22_ID SWEEP_ID HOUSES_ID`. Not a test:
the pages it shows are tested in this folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tests.ui.conftest import Browser

OUT = Path(__file__).resolve().parents[2] / "docs" / "img"


# A typical Ames house, asked of the Gaussian model in its picture.
HOUSE = {"Lot_Area": 9500, "Year_Built": 1975, "Year_Remod_Add": 1990, "Total_Bsmt_SF": 1000, "First_Flr_SF": 1100,
         "Gr_Liv_Area": 1500, "Full_Bath": 2, "Bedroom_AbvGr": 3, "TotRms_AbvGrd": 6, "Garage_Cars": 2}  # fmt: skip


def predict_house(browser: Browser) -> None:
    from selenium.webdriver.common.by import By

    for i, value in enumerate(HOUSE.values()):
        browser.driver.find_element(By.ID, f"feature-{i}").send_keys(str(value))
    browser.click("#predict button[type=submit]")
    browser.wait(lambda: "μ" in browser.text("#prediction"), "the prediction")


def bad_spec(browser: Browser) -> None:
    import json

    from tests.ui.conftest import MODEL22

    bad = {**MODEL22, "model": {**MODEL22["model"], "neurons": 0}, "loss": "hinge"}
    browser.js("const e = document.getElementById('spec-editor'); e.value = arguments[0];"
               " e.dispatchEvent(new Event('input'))", json.dumps(bad, indent=2))  # fmt: skip
    browser.click("#submit-spec")
    browser.wait(lambda: browser.js("return document.querySelectorAll('#field-errors li').length"), "the errors")


def shoot(
    browser: Browser, path: str, name: str, ready: str, width: int = 1280, height: int = 0, prepare: Any = None,
    expected_statuses: tuple[int, ...] = (),
) -> None:
    """Opens `path`, waits until the script `ready` is true, runs `prepare`, and saves the page at
    `width` wide (as tall as the page, or `height`)."""
    browser.driver.set_window_size(width, 800)
    browser.open(path)
    browser.wait(lambda: browser.js(ready), f"{path} to be drawn")
    if prepare:
        prepare(browser)
    browser.js("window.scrollTo(0, 0)")
    time.sleep(1.0)  # images decode, charts settle
    full = browser.js("return document.documentElement.scrollHeight")
    browser.driver.set_window_size(width, height or min(full, 2200))
    time.sleep(0.8)
    browser.driver.save_screenshot(str(OUT / f"ui-{name}.png"))
    errors = browser.console_errors(expected_statuses)
    assert not errors, errors
    browser.log.clear()  # each picture answers for its own page


def main(base_url: str, model22: str, sweep: str, houses: str) -> None:
    browser = Browser(base_url)
    plots = "return [...document.querySelectorAll('#plots img')].length > 0 && [...document.querySelectorAll('#plots img')].every(i => i.complete && i.naturalWidth)"  # noqa: E501
    try:
        shoot(browser, "/ui/", "experiments", "return document.querySelectorAll('tr[data-id]').length", height=800)
        shoot(browser, f"/ui/experiments/{model22}", "model22", plots, height=1500)
        shoot(browser, f"/ui/experiments/{houses}", "house-prices", plots, height=2000, prepare=predict_house)
        compare = "return document.querySelector('#h-compare ~ figure .chart')?.dataset.points"
        shoot(browser, f"/ui/sweeps/{sweep}", "sweep", compare, height=1250)
        shoot(browser, "/ui/new", "editor", "return document.getElementById('spec-editor')?.value", height=800,
              prepare=bad_spec, expected_statuses=(422,))  # fmt: skip
        shoot(browser, "/ui/datasets", "datasets", "return document.querySelectorAll('#datasets tbody tr').length")
        shoot(browser, f"/ui/experiments/{model22}", "model22-narrow", plots, width=390, height=1400)
    finally:
        browser.quit()


if __name__ == "__main__":
    main(*sys.argv[1:5])
