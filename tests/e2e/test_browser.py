"""The real server in a real browser: ``streamlit run dashboard/app.py`` on a free localhost port,
loaded in headless Chromium with every non-local host blocked. Checks that the app renders its
title, that a plotly chart draws, and that the bertviz attention view draws (offline, with pruned
heads marked) — and that the browser asked for nothing outside localhost.

Needs the Debian packages chromium + chromium-driver and the pip package selenium; skipped with
the reason when they are missing. Every wait returns as soon as the page is ready; the bounds are
generous (the whole test gives up after 600 s) so that a machine busy with other work only makes
it slower, never red.
"""

from __future__ import annotations

import time

import pytest

from tests.browser_util import (
    bertviz_drawn,
    chromium,
    dashboard_server,
    external_requests,
    missing_browser,
    nav_links,
    wait_for,
    with_query,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or "")]

BUDGET_S = 600.0


class Deadline:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self, cap: float = 300.0) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the browser test ran past its {BUDGET_S:.0f} s budget")
        return min(cap, remaining)


def _texts(driver, css: str) -> list[str]:
    from selenium.webdriver.common.by import By

    return [e.text for e in driver.find_elements(By.CSS_SELECTOR, css)]


def _is_material_icon(url: str) -> bool:
    return url.startswith("https://fonts.gstatic.com/s/i/") and "materialsymbols" in url \
        and url.endswith(".svg")


def _no_exception(driver) -> None:
    shown = _texts(driver, "[data-testid='stException']")
    assert not shown, f"the page shows a traceback: {shown[0][:500]}"


def test_dashboard_in_headless_chromium(tiny_bert_dir, tiny_csv, tmp_path):
    from selenium.webdriver.common.by import By

    deadline = Deadline(BUDGET_S)
    query = {"model": str(tiny_bert_dir), "data": str(tiny_csv)}
    env = {"PRUNELENS_CACHE": str(tmp_path / "store")}
    with dashboard_server(env=env, query=query, timeout=deadline.left(300)) as server, \
            chromium() as driver:
        try:
            # 1. the start page renders its title and the tiny model from the URL
            driver.get(server.url())
            wait_for(driver, lambda d: "Model & data" in " ".join(_texts(d, "h1")),
                     deadline.left(), "the title 'Model & data'")
            wait_for(driver, lambda d: any(tiny_bert_dir.name in t
                                           for t in _texts(d, "[data-testid='stSidebar']")),
                     deadline.left(), "the sidebar to show the tiny model")
            _no_exception(driver)
            pages = wait_for(driver, lambda d: (links := nav_links(d)) and "Attention" in links
                             and links, deadline.left(), "the sidebar navigation")
            assert "Importance" in pages

            # 2. a plotly chart draws (the importance heatmap of a cheap method)
            driver.get(with_query(pages["Importance"], {**query, "method": "magnitude"}))
            wait_for(driver, lambda d: d.find_elements(
                By.CSS_SELECTOR, ".stPlotlyChart .js-plotly-plot .main-svg"),
                deadline.left(), "a plotly chart on the Importance page")
            _no_exception(driver)

            # 3. the attention view draws inside its iframe, with the pruned heads marked
            driver.get(with_query(pages["Attention"], {**query, "view": "model", "mask": "magnitude",
                                                       "sparsity": "0.25"}))
            info = wait_for(driver, lambda d: (i := bertviz_drawn(d)) and i["lines"] and i["marked"]
                            and i, deadline.left(), "the bertviz model view")
            assert info["d3"] == "5.7.0" and info["jquery"].startswith("3.")
            # model view of 2 layers x 4 heads: a 3x3 line grid per thumbnail at least
            assert info["lines"] >= 2 * 4 * 3 * 3
            assert info["marked"] == 3 * 2  # 2 of 8 heads: a veil and two crossing lines each
            wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"),
                     deadline.left(), "the attention matrix chart")
            _no_exception(driver)

            driver.get(with_query(pages["Attention"], {**query, "view": "head"}))
            info = wait_for(driver, lambda d: (i := bertviz_drawn(d)) and i["lines"] and i,
                            deadline.left(), "the bertviz head view")
            assert info["marked"] == 0  # nothing pruned without a mask source

            # 4. nothing left localhost (bertviz's CDN loads were replaced by inlined copies);
            # the one tolerated exception is the browser tab's icon when st.set_page_config is
            # given a ":material/...:" page_icon (Streamlit fetches that svg from Google Fonts)
            outside = [u for u in external_requests(driver) if not _is_material_icon(u)]
            assert outside == [], f"requests left localhost: {outside[:5]}"
        except BaseException:
            driver.save_screenshot(str(tmp_path / "failure.png"))
            print(f"screenshot: {tmp_path / 'failure.png'}\nserver log:\n{server.log()}")
            raise
