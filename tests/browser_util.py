"""Helpers to run the real dashboard server and drive it with headless Chromium (selenium).

Used by ``tests/e2e/test_browser.py`` and ``scripts/screenshots.py``. Needs the Debian packages
``chromium`` and ``chromium-driver`` and the pip package ``selenium``; selenium is pointed at
``/usr/bin/chromedriver`` explicitly, so it never downloads a driver. The browser resolves every
host except localhost to "not found", and :func:`external_requests` lists any request that left
localhost, so a test can assert the page needs no network.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "app.py"
# the browser's own pages never leave the machine (a newer Chromium's new-tab page loads
# ``chrome-untrusted://new-tab-page/...`` by itself, before the app is opened)
LOCAL_PREFIXES = ("http://127.0.0.1", "http://localhost", "ws://127.0.0.1", "ws://localhost",
                  "data:", "blob:", "about:", "chrome:", "chrome-untrusted:", "chrome-extension:",
                  "devtools:")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
)


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def chromedriver_binary() -> str | None:
    return shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)


def missing_browser() -> str | None:
    """Why a browser test cannot run here, or None when it can."""
    if chromium_binary() is None:
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if chromedriver_binary() is None:
        return "chromedriver is not installed (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``streamlit run dashboard/app.py`` on localhost."""

    process: subprocess.Popen
    port: int
    log_path: Path
    query: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, page: str = "", **extra: str) -> str:
        query = {**self.query, **extra}
        return f"{self.base}/{page}" + (f"?{urlencode(query)}" if query else "")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


@contextmanager
def dashboard_server(env: dict[str, str] | None = None, query: dict[str, str] | None = None,
                     timeout: float = 45.0):
    """Start the dashboard on a free localhost port; stop it (and only it) on exit."""
    port = free_port()
    log_dir = Path(tempfile.mkdtemp(prefix="prunelens-server-"))
    log_path = log_dir / "server.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP),
           "--server.address", "127.0.0.1", "--server.port", str(port),
           "--server.headless", "true", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false", "--server.runOnSave", "false",
           "--global.developmentMode", "false"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(process, port, log_path, dict(query or {}))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the dashboard server exited early:\n{server.log()}")
            try:
                with urllib.request.urlopen(f"{server.base}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the dashboard server did not start in {timeout:.0f} s:\n{server.log()}")
            time.sleep(0.3)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(log_dir, ignore_errors=True)


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium driven by selenium, with performance (network) logging on."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="prunelens-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_binary()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    service = Service(executable_path=chromedriver_binary())
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager must not go online
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(300)
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def external_requests(driver) -> list[str]:
    """URLs of requests (since the last call) that did not go to localhost."""
    import json

    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if not url.startswith(LOCAL_PREFIXES):
                urls.append(url)
    return urls


def wait_for(driver, condition, timeout: float = 300.0, what: str = "condition", poll: float = 0.25):
    """Poll ``condition(driver)`` until it returns something truthy; raise with ``what`` if not."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = condition(driver)
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - the DOM changes under us while Streamlit reruns
            last_error = exc
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                         + (f" (last error: {last_error})" if last_error else ""))


def nav_links(driver) -> dict[str, str]:
    """Sidebar navigation: page title -> its address (without the query string)."""
    from selenium.webdriver.common.by import By

    links = {}
    for a in driver.find_elements(By.CSS_SELECTOR, "[data-testid='stSidebarNav'] a"):
        title = (a.text or "").strip().splitlines()
        href = a.get_attribute("href") or ""
        if title and href:
            links[title[-1].strip()] = href.split("?", 1)[0]
    return links


def with_query(url: str, query: dict[str, str]) -> str:
    return url + (f"?{urlencode(query)}" if query else "")


def wait_idle(driver, timeout: float = 300.0) -> None:
    """Wait until Streamlit shows no running indicator and no spinner."""
    from selenium.webdriver.common.by import By

    def idle(d):
        running = d.find_elements(By.CSS_SELECTOR, "[data-testid='stStatusWidget']")
        spinners = d.find_elements(By.CSS_SELECTOR, "[data-testid='stSpinner']")
        return not any(e.is_displayed() and "Running" in (e.text or "") for e in running) \
            and not any(e.is_displayed() for e in spinners)

    wait_for(driver, idle, timeout, "the app to finish running")


def bertviz_drawn(driver) -> dict | None:
    """Inside the component iframe, the bertviz svg and what it holds (None if not drawn yet)."""
    from selenium.webdriver.common.by import By

    frames = driver.find_elements(By.CSS_SELECTOR, "iframe[title='st.iframe'], "
                                                   "[data-testid='stIFrame'] iframe, iframe")
    for frame in frames:
        try:
            driver.switch_to.frame(frame)
            info = driver.execute_script(
                "const root = document.querySelector(\"[id^='bertviz-']\");"
                "if (!root) { return null; }"
                "const svg = root.querySelector('#vis svg');"
                "if (!svg) { return null; }"
                "return {lines: svg.querySelectorAll('line').length,"
                "        rects: svg.querySelectorAll('rect').length,"
                "        texts: svg.querySelectorAll('text').length,"
                "        marked: svg.querySelectorAll('.prunelens-pruned').length,"
                "        d3: window.d3 ? window.d3.version : null,"
                "        jquery: window.jQuery ? window.jQuery.fn.jquery : null};")
        finally:
            driver.switch_to.default_content()
        if info:
            return info
    return None
