"""A head picked on the Importance heatmap in a real browser (issue 30, items 1 and 6).

Headless Chromium against the real server, like tests/e2e/test_browser.py, on the tiny model
(2 layers x 4 heads) with magnitude scores: in a new session the URL names no head and the page
asks for a click; the FIRST click on a cell selects that head (its details, the URL); the
Attention link then opens that head alone, with every head one click away.
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


def _main_text(driver) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stMain']"))


def _click_cell(driver, layer: int, head: int, heads: int) -> None:
    """Click the heatmap's clickable overlay point of (layer, head), as a user clicks a cell."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    chart = driver.find_elements(By.CSS_SELECTOR, ".stPlotlyChart .js-plotly-plot")[0]
    traces = chart.find_elements(By.CSS_SELECTOR, ".scatterlayer .trace")
    points = traces[0].find_elements(By.CSS_SELECTOR, "path.point")  # the overlay: one per head
    ActionChains(driver).move_to_element(points[layer * heads + head]).click().perform()


def _chips(driver) -> list[str]:
    """The heads selected in the Attention page's "Heads shown" pills."""
    from selenium.webdriver.common.by import By

    return [c.text.strip() for c in driver.find_elements(
        By.CSS_SELECTOR, ".st-key-att-heads button[data-variant='pills'][aria-pressed='true']")]


def _click_button(driver, label: str) -> bool:
    """Click the first button whose text holds ``label``; False while there is none."""
    from selenium.webdriver.common.by import By

    buttons = [b for b in driver.find_elements(By.CSS_SELECTOR, "button") if label in b.text]
    if not buttons:
        return False
    buttons[0].click()
    return True


def test_first_click_on_the_heatmap_selects_that_head(tiny_bert_dir, tiny_csv, tmp_path):
    from selenium.webdriver.common.by import By

    query = {"model": str(tiny_bert_dir), "data": str(tiny_csv), "method": "magnitude"}
    with dashboard_server(env={"PRUNELENS_CACHE": str(tmp_path / "store")}, query=query,
                          timeout=WAIT) as server, chromium() as driver:
        try:
            driver.get(server.url())
            pages = wait_for(driver, lambda d: (links := nav_links(d)) and "Importance" in links
                             and links, WAIT, "the sidebar navigation")
            driver.get(with_query(pages["Importance"], query))
            wait_for(driver, lambda d: "Click a head in the heatmap" in _main_text(d), WAIT,
                     "the 'click a head' hint")
            wait_idle(driver, WAIT)
            assert "layer=" not in driver.current_url and "head=" not in driver.current_url

            _click_cell(driver, 1, 2, heads=4)  # the first click of this session
            wait_for(driver, lambda d: "Layer 1, head 2" in _main_text(d), 60,
                     "the first click to select layer 1, head 2")
            wait_idle(driver, WAIT)
            assert "layer=1" in driver.current_url and "head=2" in driver.current_url
            _click_cell(driver, 0, 3, heads=4)  # and the next one too
            wait_for(driver, lambda d: "Layer 0, head 3" in _main_text(d), 60,
                     "the second click to select layer 0, head 3")
            wait_idle(driver, WAIT)

            button = wait_for(driver, lambda d: [b for b in d.find_elements(By.CSS_SELECTOR, "button")
                                                 if "Attention pattern of layer 0, head 3" in b.text],
                              WAIT, "the Attention link")[0]
            button.click()
            wait_for(driver, lambda d: _chips(d), WAIT, "the Attention page's head chips")
            assert _chips(driver) == ["3"]  # the chosen head alone
            # found and clicked in one retried step: the page may rerun (and replace its buttons)
            # between finding the button and clicking it
            wait_for(driver, lambda d: _click_button(d, "All heads"), WAIT, "the 'All heads' button")
            wait_for(driver, lambda d: _chips(d) == ["0", "1", "2", "3"], WAIT, "every head shown")
        except BaseException:
            driver.save_screenshot(str(tmp_path / "failure.png"))
            print(f"screenshot: {tmp_path / 'failure.png'}\nserver log:\n{server.log()}")
            raise
