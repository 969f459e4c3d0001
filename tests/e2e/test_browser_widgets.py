"""Method parameters in a real browser: switching methods neither leaks one method's settings
into another nor resets a method's widgets when it comes back (issue 18, items 1 and 2).

Headless Chromium against the real server, like tests/e2e/test_browser.py: the Importance page on
the tiny model with SMP, its batch size changed, then PINS picked in the method box, then SMP
again. PINS must show its own defaults (not SMP's batch size), and SMP must show what it had.
"""

from __future__ import annotations

import pytest

from tests.browser_util import (
    chromium,
    dashboard_server,
    missing_browser,
    nav_links,
    wait_for,
    wait_idle,
    with_query,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or "")]

WAIT = 300.0  # readiness-driven: each wait returns as soon as the page is ready


def _value(driver, label: str) -> str:
    """The value a number input or a slider (its range input) shows, '' while not drawn."""
    from selenium.webdriver.common.by import By

    found = driver.find_elements(By.CSS_SELECTOR, f"input[aria-label='{label}']")
    return found[0].get_attribute("value") if found else ""


def _read(driver, label: str) -> str:
    """The widget's value once the page has drawn it (a rerun shows skeletons meanwhile)."""
    wait_idle(driver, WAIT)
    return wait_for(driver, lambda d: _value(d, label), WAIT, f"the widget {label!r}")


def _pick_method(driver, name: str, appears: str, disappears: str) -> None:
    """Type the method's name into the Method box and take the one match (as a user would);
    return once the page shows the widget ``appears`` (only the new method has) and no longer
    the widget ``disappears`` (only the old one had): stale widgets are never read."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    def method_box(d):
        return d.find_elements(By.CSS_SELECTOR, "[data-testid='stMain'] [data-testid='stSelectbox']")[0]

    field = method_box(driver).find_element(By.CSS_SELECTOR, "input")
    field.click()
    field.send_keys(f"[{name}]")
    wait_for(driver, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "[role='option']")
                                if f"[{name}]" in o.text], WAIT, f"the option {name}")
    field.send_keys(Keys.ENTER)
    wait_for(driver, lambda d: f"[{name}]" in _value(d, "Method"), WAIT, f"{name} to be picked")
    wait_for(driver, lambda d: _value(d, appears) and not _value(d, disappears), WAIT,
             f"{name}'s own widgets")


def _set_number(driver, label: str, value: int) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.CSS_SELECTOR, f"input[aria-label='{label}']")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(str(value), Keys.ENTER)
    wait_for(driver, lambda d: _value(d, label) == str(value), WAIT, f"{label} = {value}")
    wait_idle(driver, WAIT)


def test_switching_methods_keeps_each_methods_own_settings(tiny_bert_dir, tiny_csv, tmp_path):
    query = {"model": str(tiny_bert_dir), "data": str(tiny_csv), "method": "smp"}
    with dashboard_server(env={"PRUNELENS_CACHE": str(tmp_path / "store")}, query=query,
                          timeout=WAIT) as server, chromium() as driver:
        try:
            driver.get(server.url())
            pages = wait_for(driver, lambda d: (links := nav_links(d)) and "Importance" in links
                             and links, WAIT, "the sidebar navigation")
            driver.get(with_query(pages["Importance"], query))
            wait_for(driver, lambda d: _value(d, "samples") == "160", WAIT, "SMP's samples widget")
            wait_idle(driver, WAIT)
            _set_number(driver, "samples", 200)
            assert _read(driver, "batch size") == "32"

            _pick_method(driver, "pins", appears="eta", disappears="samples")
            assert _read(driver, "batches") == "8"  # PINS' own default, not SMP's 1
            assert _read(driver, "batch size") == "16"  # not SMP's 32

            _pick_method(driver, "smp", appears="samples", disappears="eta")
            assert _read(driver, "samples") == "200"  # what it had, not its minimum 8
            assert _read(driver, "batch size") == "32"
            assert _read(driver, "keep rate") == "0.5"
        except BaseException:
            driver.save_screenshot(str(tmp_path / "failure.png"))
            print(f"screenshot: {tmp_path / 'failure.png'}\nserver log:\n{server.log()}")
            raise
