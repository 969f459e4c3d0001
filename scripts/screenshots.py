"""Screenshots of every dashboard page, taken in headless Chromium from the real server.

    python scripts/screenshots.py [--model default] [--data default] [--limit 256]
                                  [--out docs/screenshots] [--only Attention,Prune]
                                  [--widths 1024,1440]

Starts ``streamlit run dashboard/app.py`` on a free localhost port (result store in a temp
folder unless ``--store`` is given, so the shipped cached results are used and nothing is
written to the user's store), opens each page of the sidebar navigation with the chosen model
and data in the URL, waits until it has finished running and its charts have drawn, and writes
``<out>/<page>_<width>.png`` for every width (projector-sized 1024 px and a 1440 px laptop; the
Attention page twice: head view and model view; Model & data once more in demo mode), plus
``<out>/prune.png`` (the widest Prune shot, shown by the README). Each PNG is reduced to 256
colours so the committed files stay small. Without the embedded default checkpoint it falls
back to the tiny random test BERT, and says so.

Needs chromium + chromium-driver (Debian) and selenium (pip), like tests/e2e/test_browser.py.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.browser_util import (  # noqa: E402
    bertviz_drawn,
    chromium,
    dashboard_server,
    external_requests,
    missing_browser,
    nav_links,
    wait_for,
    wait_idle,
    with_query,
)

# extra URL parameters that make a page show something worth a picture
PAGE_QUERY = {
    "Importance": {"method": "magnitude"},
    "Prune": {"method": "magnitude", "sparsity": "0.3"},
    "Attention": {"mask": "magnitude", "sparsity": "0.3", "view": "head",
                  "text": "a gripping, funny and moving film with a weak plot"},
}
EXTRA_SHOTS = {"Attention": [("attention_model_view", {"view": "model"}),
                             # as the Importance page's link opens it: the chosen head alone
                             ("attention_one_head", {"layer": "1", "head": "7", "heads": "[7]"})],
               "Importance": [("importance_head", {"method": "magnitude", "layer": "1", "head": "7"})],
               # PINS at 50 % global empties layer 5: the hint and the keep-one toggle
               "Compare": [("compare_emptied_layer", {"methods": "pins,magnitude", "sparsity": "0.5"}),
                           # the curves of every shipped method, further down the page
                           ("compare_curves", {}, "versus sparsity")],
               "Model & data": [("model_data_demo", {"demo": "1"})],
               # the first finished run: its arms' bars (long variant names) and history lines
               "Training runs": [("training_runs_run", {}, "Run ")]}
README_SHOT = "prune"  # docs/screenshots/prune.png, at the widest width


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")


def _default_available() -> bool:
    return (ROOT / "analysis" / "default_checkpoint" / "manifest.json").exists()


def _tiny_fallback(folder: Path) -> tuple[str, str]:
    from tests.tiny import write_tiny_bert, write_tiny_csv

    model = write_tiny_bert(folder / "tiny_bert")
    data = write_tiny_csv(folder / "tiny.csv")
    return str(model), str(data)


def _settle(driver, title: str, timeout: float) -> None:
    from selenium.webdriver.common.by import By

    wait_for(driver, lambda d: any(title.split()[0] in (e.text or "")
                                   for e in d.find_elements(By.CSS_SELECTOR, "h1")),
             timeout, f"the title of {title}")
    time.sleep(1.0)
    wait_idle(driver, timeout)
    # at narrow widths the status widget says only "Stop" (no "Running…"): wait for it too
    wait_for(driver, lambda d: not any(e.is_displayed() and ("Stop" in (e.text or "") or "Running" in (e.text or ""))
                                       for e in d.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']")),
             timeout, "the app to stop running")
    if title == "Prune":
        wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "[data-testid='stMetric']"), timeout,
                 "the pruning numbers")
        wait_idle(driver, timeout)
    if title == "Attention":
        wait_for(driver, lambda d: (i := bertviz_drawn(d)) and i["lines"], timeout,
                 "the bertviz view")
    charts = driver.find_elements(By.CSS_SELECTOR, ".stPlotlyChart")
    if charts:
        wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".stPlotlyChart .main-svg"))
                 >= 1, timeout, "plotly charts")
    time.sleep(1.5)  # let plotly and bertviz finish their transitions
    # park the pointer on the page title: a chart under it would show its hover toolbar
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).move_to_element(driver.find_element(By.CSS_SELECTOR, "h1")).perform()
    time.sleep(0.3)


def shrink(path: Path) -> None:
    """Cut the empty space below the page and rewrite the screenshot as a 256-colour PNG (a
    third of the size or less, still sharp)."""
    try:
        from PIL import Image
    except ImportError:  # pillow missing: keep the full-colour file
        return
    from PIL import ImageChops

    with Image.open(path) as img:
        rgb = img.convert("RGB")
    # cut the empty page below the content (the window is taller than most pages)
    main = rgb.crop((rgb.width // 3, 0, rgb.width, rgb.height))
    background = Image.new("RGB", main.size, main.getpixel((main.width - 1, main.height - 1)))
    box = ImageChops.difference(main, background).getbbox()
    if box is not None and box[3] + 40 < rgb.height:
        rgb = rgb.crop((0, 0, rgb.width, box[3] + 40))
    small = rgb.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, optimize=True)


def take(driver, url: str, title: str, path: Path, timeout: float, scroll_to: str = "") -> None:
    """Open ``url``, wait for ``title``'s page to settle and save the window; ``scroll_to``: the
    text of a section heading the window is scrolled to first (a part far down a long page)."""
    driver.get(url)
    _settle(driver, title, timeout)
    if scroll_to:
        from selenium.webdriver.common.by import By

        heading = wait_for(driver, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "h2, h3")
                                              if scroll_to in (e.text or "")], timeout, f"'{scroll_to}'")[0]
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", heading)
        time.sleep(1.0)
    driver.save_screenshot(str(path))
    shrink(path)
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"wrote {shown} ({path.stat().st_size // 1024} KB)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", default="default")
    parser.add_argument("--limit", type=int, default=256, help="evaluation examples (0 = all)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshots"))
    parser.add_argument("--store", default=None, help="result store folder (default: a temp one)")
    parser.add_argument("--only", default="", help="comma-separated page titles")
    parser.add_argument("--widths", default="1024,1440",
                        help="comma-separated window widths in pixels (one shot of each page per width)")
    parser.add_argument("--height", type=int, default=2200,
                        help="window height: tall enough for the charts below the controls")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait per page")
    args = parser.parse_args(argv)

    reason = missing_browser()
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="prunelens-shots-"))
    model, data = args.model, args.data
    if model == "default" and not _default_available():
        print("the default checkpoint is missing; using the tiny random test BERT", file=sys.stderr)
        model, data = _tiny_fallback(work)
    query = {"model": model, "data": data}
    if args.limit:
        query["limit"] = str(args.limit)
    env = {"PRUNELENS_CACHE": args.store or str(work / "store")}
    only = {t.strip() for t in args.only.split(",") if t.strip()}
    widths = sorted({int(w) for w in args.widths.split(",") if w.strip()})
    if not widths:
        print("error: --widths names no width (give e.g. 1024,1440)", file=sys.stderr)
        return 2

    with dashboard_server(env=env, query=query, timeout=90) as server:
        for width in widths:
            with chromium(width, args.height) as driver:
                driver.get(server.url())
                # the very first run may still show Streamlit's legacy pages/ list ("app", ...)
                pages = wait_for(driver, lambda d: (links := nav_links(d)) and "Attention" in links
                                 and "app" not in links and links, 90, "the sidebar navigation")
                for title, url in pages.items():
                    if only and title not in only:
                        continue
                    page_query = {**query, **PAGE_QUERY.get(title, {})}
                    path = out / f"{slug(title)}_{width}.png"
                    take(driver, with_query(url, page_query), title, path, args.timeout)
                    if slug(title) == README_SHOT and width == widths[-1]:
                        (out / f"{README_SHOT}.png").write_bytes(path.read_bytes())
                    for name, extra, *scroll in EXTRA_SHOTS.get(title, []):
                        take(driver, with_query(url, {**page_query, **extra}), title,
                             out / f"{name}_{width}.png", args.timeout, *scroll)
                outside = [u for u in external_requests(driver) if "materialsymbols" not in u]
                if outside:
                    print(f"warning: requests left localhost: {outside[:5]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
