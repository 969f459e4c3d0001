"""The dashboard under attack (issue 15): foreign Host/Origin (DNS rebinding), SIGTERM during a
computation, server-side paths outside the data roots, file contents in messages, markdown and
plotly markup injected through user strings, and one session seeing another's jobs.

Real servers are started with the real command line (``tests/promises/test_concurrency.start_server``:
``python -m prunelens dashboard``) and spoken to over raw sockets, so every header is the test's
own; pages are opened with the AppTest opener of ``tests/conftest.py``. Each test says in one
comment what the code before this change did.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.promises.test_concurrency import StreamlitClient, start_server, stop_server

EVIL = "evil.example"
TRAINING_PAGE = "training-runs"  # url path of the Training runs page in dashboard/app.py


# ---------------------------------------------------------------------------------------------
# 1. foreign Host / Origin: DNS rebinding


def _first_line(port: int, host: str, origin: str | None = None, websocket: bool = False) -> str:
    """The status line the server answers a GET (or a websocket upgrade) with these headers."""
    lines = [f"GET {'/_stcore/stream' if websocket else '/'} HTTP/1.1", f"Host: {host}"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    if websocket:
        lines += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                  "Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)).decode(),
                  "Sec-WebSocket-Protocol: streamlit"]
    else:
        lines.append("Connection: close")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return sock.recv(256).split(b"\r\n", 1)[0].decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One real ``prunelens dashboard`` on a free localhost port for the Host/Origin cases."""
    running = start_server(tmp_path_factory.mktemp("attack-server"))
    yield running
    stop_server(running)


HOST_CASES = {  # (Host, Origin) -> status; "{local}" is 127.0.0.1:<port>
    "http": {
        ("{local}", None): 200,
        ("localhost:{port}", None): 200,
        ("[::1]:{port}", None): 200,
        (EVIL, None): 403,
        (f"{EVIL}:{{port}}", None): 403,
    },
    "websocket": {
        ("{local}", "http://{local}"): 101,
        ("localhost:{port}", "http://localhost:{port}"): 101,
        ("{local}", None): 101,  # a non-browser client sends no Origin
        (EVIL, f"http://{EVIL}"): 403,  # the rebinding page: its own name in Host and Origin
        (f"{EVIL}:{{port}}", f"http://{EVIL}:{{port}}"): 403,
        ("{local}", f"http://{EVIL}"): 403,
        ("{local}", "null"): 403,
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", HOST_CASES)
def test_only_its_own_host_and_origin_are_answered(server, kind):
    # old: Host evil.example got 200 (HTTP) and 101 (websocket, with Origin http://evil.example)
    fill = {"local": f"127.0.0.1:{server.port}", "port": server.port}
    got = {}
    for host, origin in HOST_CASES[kind]:
        line = _first_line(server.port, host.format(**fill), origin and origin.format(**fill),
                           websocket=kind == "websocket")
        got[(host, origin)] = int(line.split(" ")[1])
    print(kind, got)
    assert got == HOST_CASES[kind]


def _asgi_status(address: str, host: str, origin: str | None = None, kind: str = "http",
                 port: int = 8501) -> int:
    """What :class:`prunelens.dashboard.server.HostGuard` answers one request (200 = passed through)."""
    from prunelens.dashboard.server import HostGuard

    sent = []

    async def app(scope, receive, send):
        sent.append({"type": "passed"})

    async def send(message):
        sent.append(message)

    headers = [(b"host", host.encode())] + ([(b"origin", origin.encode())] if origin else [])
    scope = {"type": kind, "headers": headers, "server": ("127.0.0.1", port), "path": "/"}
    asyncio.run(HostGuard(app, address)(scope, None, send))
    first = sent[0]
    if first["type"] == "passed":
        return 200
    return 403 if first["type"] == "websocket.close" else first["status"]


@pytest.mark.parametrize("address, host, origin, kind, status", [
    ("192.168.1.5", "192.168.1.5:8501", "http://192.168.1.5:8501", "websocket", 200),
    ("192.168.1.5", "192.168.1.5:8501", None, "http", 200),
    ("192.168.1.5", "localhost:8501", None, "http", 200),
    ("192.168.1.5", "192.168.1.6:8501", None, "http", 403),
    ("192.168.1.5", "192.168.1.5:8501", f"http://{EVIL}", "websocket", 403),
    ("::1", "[::1]:8501", "http://[::1]:8501", "websocket", 200),
    ("127.0.0.1", "127.0.0.1", None, "http", 403),  # no port: not this server (port 8501)
    ("127.0.0.1", "LOCALHOST:8501", None, "http", 200),
    ("0.0.0.0", f"{EVIL}:8501", None, "http", 403),
])
def test_a_bound_host_is_allowed_too(address, host, origin, kind, status):
    # old: no check at all (dashboard/server.py did not exist; every Host was answered)
    assert _asgi_status(address, host, origin, kind) == status


def test_the_cli_starts_the_guarded_server(monkeypatch):
    # old: the command was `python -m streamlit run`, without the Host/Origin check
    import prunelens.analysis.cli

    seen = {}
    monkeypatch.setattr(prunelens.analysis.cli, "_launch", lambda cmd, env=None: seen.setdefault("cmd", cmd) and 0)
    assert prunelens.analysis.cli.main(["dashboard", "--host", "192.168.1.5"]) == 0
    app = Path(prunelens.analysis.cli.__file__).resolve().parent.parent / "dashboard" / "app.py"
    assert seen["cmd"][1:6] == ["-P", "-m", "prunelens.dashboard.server", "run", str(app)]


@pytest.mark.parametrize("break_it, message", [
    (lambda mp, st, app: mp.setattr(st, "__version__", "1.56.0"),
     "error: streamlit 1.56.0 is too old for the dashboard's Host/Origin check"),
    (lambda mp, st, app: mp.delattr(app, "create_streamlit_middleware"),
     "has no streamlit.web.server.starlette.starlette_app.create_streamlit_middleware"),
])
def test_the_server_refuses_to_start_without_its_guard(break_it, message, monkeypatch, capsys):
    # old: on a Streamlit whose server never calls the guarded middleware the server started
    # unguarded; a renamed hook point gave an AttributeError traceback
    import streamlit
    from streamlit.web import bootstrap
    from streamlit.web.server.starlette import starlette_app

    from prunelens.dashboard import server

    started = []
    monkeypatch.setattr(bootstrap, "run", lambda *a, **k: started.append(a))
    break_it(monkeypatch, streamlit, starlette_app)
    with pytest.raises(SystemExit) as stopped:
        server.main(["run", "app.py"])
    assert stopped.value.code == 2 and started == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "pip install 'streamlit>=1.57'" in err


def test_pyprojects_streamlit_floor_has_the_guard():
    import tomllib

    from packaging.requirements import Requirement

    from prunelens.dashboard.server import GUARDED_SINCE

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (streamlit,) = [Requirement(d) for d in deps if d.startswith("streamlit")]
    (floor,) = [s.version for s in streamlit.specifier if s.operator == ">="]
    assert tuple(int(x) for x in floor.split(".")[:2]) >= GUARDED_SINCE


# ---------------------------------------------------------------------------------------------
# 2. SIGTERM while a training run computes


async def _start_training(port: int, query: dict) -> None:
    """Open the Training runs page and press Start, as a browser tab would."""
    from urllib.parse import urlencode

    from streamlit.proto.BackMsg_pb2 import BackMsg

    async with StreamlitClient(port, timeout=300) as tab:
        page = await tab.run(query, TRAINING_PAGE)
        (start,) = [el.button for el in page.of("button") if el.button.label.startswith("Start")]
        msg = BackMsg()
        msg.rerun_script.query_string = urlencode(query)
        msg.rerun_script.page_name = TRAINING_PAGE
        widget = msg.rerun_script.widget_states.widgets.add()
        widget.id, widget.trigger_value = start.id, True
        await tab.ws.send(msg.SerializeToString())
        page = await tab.read_run()
        assert any("admm on" in p.progress.text for p in page.of("progress")), page.exceptions()


@pytest.mark.slow
def test_sigterm_during_a_training_run_exits_promptly_and_cleanly(tmp_path, tiny_bert_dir, tiny_csv):
    # old: the server died of SIGABRT (exit -6, "terminate called without an active exception")
    import psutil

    running = start_server(tmp_path)
    try:
        processes = running.processes()
        query = {"model": str(tiny_bert_dir), "data": str(tiny_csv), "method": "admm",
                 "t.admm.finetune_steps": "5000", "t.admm.batch_size": "4",
                 "t.admm.finetune_baseline": "false"}  # one long run, inside the work budget
        asyncio.run(asyncio.wait_for(_start_training(running.port, query), 300))
        time.sleep(1.0)  # the run is in its training loop
        sent = time.monotonic()
        os.kill(running.proc.pid, signal.SIGTERM)
        code = running.proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if running.proc.poll() is None:
            stop_server(running)
    print(f"exit {code} after {took:.2f} s")
    assert code >= 0, f"killed by signal {-code}: {running.log.read_text()[-1500:]}"
    assert took < 10
    _, alive = psutil.wait_procs(processes, timeout=5)
    assert alive == []  # the server and anything it started are gone


# ---------------------------------------------------------------------------------------------
# 3. data roots: server-side paths confined, file contents never echoed


def _rendered(at) -> str:
    """Every element the run drew (main area and sidebar), as protobuf text."""
    out = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def _messages(at) -> list[str]:
    return [e.value for e in [*at.error, *at.sidebar.error]]


@pytest.fixture()
def roots(tmp_path, tiny_bert_dir, monkeypatch):
    """A data root with a valid data set in it; a secret data set and model outside."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.csv").write_text("text,label\nSECRET-ROW-one,0\nSECRET-ROW-two,1\n")
    (root / "ok.csv").write_text("text,label\ngood film,1\nbad film,0\n")
    (root / "link.csv").symlink_to(outside / "secret.csv")
    monkeypatch.setenv("PRUNELENS_DATA_ROOTS", os.pathsep.join([str(root), str(tiny_bert_dir)]))
    return root, outside


OUTSIDE_CASES = {
    "absolute": "{outside}/secret.csv",
    "dot-dot": "{root}/../outside/secret.csv",
    "symlink": "{root}/link.csv",
    "missing": "{outside}/nothere.csv",
    "home": "~/secret.csv",
}


@pytest.mark.parametrize("spec", OUTSIDE_CASES.values(), ids=OUTSIDE_CASES.keys())
def test_a_data_path_outside_the_roots_is_refused(open_page, roots, spec):
    # old: any path the server could read was loaded (its rows shown under "Examples")
    root, outside = roots
    at = open_page("model_data", data=spec.format(root=root, outside=outside))
    messages = _messages(at)
    assert messages and all("data file refused" in m for m in messages), messages
    assert "SECRET" not in _rendered(at)
    # the same words whether or not the path exists
    assert not any(w in " ".join(messages) for w in ("not found", "exist", "secret", "nothere"))
    at.sidebar.text_input(key="sb.data_file").set_value(str(root / "ok.csv"))
    at.run()
    assert _messages(at) == [] and "ok.csv" in at.sidebar.success[0].value  # inside a root: used


def test_a_model_folder_outside_the_roots_is_refused(open_page, roots, tmp_path, tiny_bert_dir):
    # old: any folder the server could read was loaded as a model
    import shutil

    root, outside = roots
    shutil.copytree(tiny_bert_dir, outside / "model")
    at = open_page("model_data", model=str(outside / "model"), data=str(root / "ok.csv"))
    messages = _messages(at)
    assert messages and all("model folder refused" in m for m in messages), messages
    from prunelens.dashboard import data_roots  # hub ids are not paths: they pass through

    assert data_roots.model_spec("default") == "default"
    assert data_roots.model_spec("prajjwal1/bert-tiny") == "prajjwal1/bert-tiny"
    assert not data_roots.is_model_path("bert-base-uncased")


NOT_DATA = {  # a file that is not a data set; SECRET must never be shown
    "notes.txt": "SECRET-FIRST-LINE of my notes\nmore SECRET lines\n",
    "table.csv": "SECRET_A,SECRET_B\n1,2\n3,4\n",
    "keys.json": json.dumps({"SECRET_KEY": ["x"], "SECRET_TOKEN": ["y"]}),
    "rows.jsonl": '{"SECRET_KEY": "abc"}\n{"SECRET_KEY": "def"}\n',
}


@pytest.mark.parametrize("name", NOT_DATA, ids=NOT_DATA)
def test_a_file_that_is_not_a_data_set_is_not_echoed(open_page, roots, name):
    # old: the message quoted the first line of a .txt, a CSV's header, a JSON file's keys
    root, _ = roots
    (root / name).write_text(NOT_DATA[name])
    at = open_page("model_data", data=str(root / name))
    messages = _messages(at)
    assert messages, "the file was taken for a data set"
    assert "SECRET" not in _rendered(at), messages
    assert all(name in m for m in messages), messages  # it still says which file


@pytest.mark.parametrize("argv, want", [
    (["--data-root", "{a}", "--data-root", "{b}"], ["{a}", "{b}"]),
    ([], ["{cwd}"]),
])
def test_the_cli_passes_its_data_roots_to_the_server(argv, want, tmp_path, monkeypatch):
    # old: `prunelens dashboard --data-root DIR` was an unknown option (exit 2)
    import prunelens.analysis.cli

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.delenv("PRUNELENS_DATA_ROOTS", raising=False)
    seen = {}
    monkeypatch.setattr(prunelens.analysis.cli, "_launch", lambda cmd, env=None: seen.setdefault("env", env) and 0)
    fill = {k: str((tmp_path / k).resolve()) for k in ("a", "b", "cwd")}
    assert prunelens.analysis.cli.main(["dashboard", *(a.format(**fill) for a in argv)]) == 0
    assert seen["env"]["PRUNELENS_DATA_ROOTS"] == os.pathsep.join(w.format(**fill) for w in want)


def test_the_cli_refuses_a_data_root_that_is_not_a_folder(tmp_path, capsys):
    # old: the option did not exist; now a missing folder is one error line before anything starts
    from prunelens.analysis.cli import main

    assert main(["dashboard", "--data-root", str(tmp_path / "nothere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# 4. user strings are text: markdown, plotly labels, the job board


def _markdown_nodes(body: str) -> set[str]:
    """Token types a CommonMark parser makes of ``body``, plus ``autolink`` when a text token
    still holds what GFM links after parsing (a bare URL, ``www.``, an e-mail address)."""
    from markdown_it import MarkdownIt

    kinds = set()
    for block in MarkdownIt("commonmark").parse(body):
        kinds.add(block.type)
        for tok in block.children or []:
            kinds.add(tok.type)
            if tok.type == "text" and re.search(r"https?://|www\.|[\w.+-]@[\w-]+\.\w", tok.content):
                kinds.add("autolink")
    return kinds


HOSTILE = {
    "image": "![x](http://evil.example/x.png)",
    "link": "[click](http://evil.example)",
    "html": "<img src=http://evil.example/x.png>",
    "bare-url": "see http://evil.example/login or www.evil.example or a@evil.example",
    "directive": ":red[alarm] $x^2$ **bold**",
}
ACTIVE = {"image", "link_open", "html_inline", "html_block", "autolink", "strong_open", "em_open"}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_escaped_markdown_is_inert(text):
    # old: the dashboard put such strings into markdown as they were
    pytest.importorskip("markdown_it")
    from prunelens.dashboard.escape import markdown

    assert _markdown_nodes(text) & ACTIVE  # unescaped, the parser makes markup of them
    assert not _markdown_nodes(markdown(text)) & ACTIVE
    assert markdown(text).replace("\\", "").replace("\u200b", "") == text  # shown as typed


def _bodies(at) -> list[str]:
    """Every markdown body the run drew: messages, captions, markdown, progress texts."""
    kinds = ("error", "success", "info", "warning", "caption", "markdown")
    out = [el.value for kind in kinds for el in [*getattr(at, kind), *getattr(at.sidebar, kind)]]
    return out + [p.proto.text for p in at.get("progress")]


def test_a_hostile_model_spec_from_the_url_is_shown_as_text(open_page, tiny_csv):
    # old: the sidebar error rendered ![x](http://evil.example/x.png): the browser fetched it
    pytest.importorskip("markdown_it")
    at = open_page("model_data", model=HOSTILE["image"] + " " + HOSTILE["link"], data=str(tiny_csv))
    errors = _messages(at)
    assert errors and any("\\!\\[x\\]" in e for e in errors), errors
    shown = [b for b in _bodies(at) if "evil" in b]
    assert len(shown) >= 2  # the sidebar's error and the page's "Nothing loaded"
    for body in shown:
        assert not _markdown_nodes(body) & ACTIVE, body


def test_a_hostile_data_file_name_is_shown_as_text(open_page, tmp_path, tiny_csv):
    # old: the file name in the sidebar and on the page became an image and a link
    pytest.importorskip("markdown_it")
    name = tmp_path / "![x](evil.example%2Fx.png) [click](evil.example).csv"
    name.write_bytes(Path(tiny_csv).read_bytes())
    at = open_page("model_data", data=str(name))
    assert _messages(at) == []
    shown = [b for b in _bodies(at) if "click" in b]
    assert len(shown) >= 2  # the sidebar and the Model & data page name the file
    for body in shown:
        assert not _markdown_nodes(body) & {"image", "link_open"}, body


def test_tokens_are_text_in_the_attention_matrix():
    # old: a token <b>x</b> was drawn bold and <a href=...> became a link in the tick labels
    from prunelens.analysis.attention import AttentionMaps
    from prunelens.dashboard.attention_view import head_figure

    tokens = ["[CLS]", "<b>x</b>", "<a href='http://evil.example'>y</a>", "a&b", "[SEP]"]
    n = len(tokens)
    maps = AttentionMaps(tokens, np.full((1, 1, n, n), 1.0 / n), np.ones((1, 1), dtype=np.int8))
    labels = list(head_figure(maps, 0, 0).data[0].x)
    assert labels == ["0:[CLS]", "1:&lt;b&gt;x&lt;/b&gt;",
                      "2:&lt;a href='http://evil.example'&gt;y&lt;/a&gt;", "3:a&amp;b", "4:[SEP]"]


def test_figure_category_labels_are_text():
    # old: labels went to plotly as they were (plotly draws <b>, <br>, <a> in them)
    from prunelens.dashboard import figures

    heat = figures.matrix_heatmap([[1.0, 0.5], [0.5, 1.0]], ["<b>m</b>", "n<br>"], "t")
    assert list(heat.data[0].x) == ["&lt;b&gt;m&lt;/b&gt;", "n&lt;br&gt;"]
    bars = figures.bars(["<a href='x'>y</a>"], [1.0], "t")
    assert list(bars.data[0].x) == ["&lt;a href='x'&gt;y&lt;/a&gt;"]


class _Held:
    """A training run that reports progress until released."""

    def __init__(self):
        self.release = threading.Event()

    def __call__(self, session, method, params, progress):
        while not self.release.wait(0.02):
            progress(0.5, "step")
        return {"ok": True}


def test_the_job_board_shows_each_session_only_its_own_jobs(open_page, monkeypatch, tmp_path,
                                                             tiny_bert_dir):
    # old: every session's Training page (and sidebar) listed every job, with its model path
    import shutil

    import prunelens.analysis.training
    from prunelens.dashboard import jobs

    private = shutil.copytree(tiny_bert_dir, tmp_path / "alices-private-model")

    monkeypatch.setattr(jobs, "BOARD", jobs.JobBoard())
    held = _Held()
    monkeypatch.setattr(prunelens.analysis.training, "train_command", held)
    try:
        a = open_page("training", model=str(private), method="snip")
        a.button(key="train.start").click().run()
        assert not a.exception
        (job,) = jobs.BOARD.jobs()  # outside a session: every job
        mine = [p.proto.text for p in a.get("progress")]
        assert any(f"#{job.id} snip on" in t for t in mine), mine

        b = open_page("training", method="snip")
        theirs = [p.proto.text for p in b.get("progress")]
        assert not any("snip on" in t or "training snip" in t for t in theirs), theirs
        assert any("No run started" in c.value for c in b.caption)
        assert "alices-private-model" in job.model and "alices-private-model" not in _rendered(b)
    finally:
        held.release.set()


@pytest.mark.slow
def test_a_hostile_link_makes_the_browser_fetch_nothing(tiny_csv, tmp_path):
    # old: Chromium requested http://evil.example/x.png and drew a link to evil.example
    from tests.browser_util import chromium, dashboard_server, external_requests, missing_browser, wait_for

    if missing_browser():
        pytest.skip(missing_browser())
    from selenium.webdriver.common.by import By

    query = {"model": HOSTILE["image"] + " " + HOSTILE["link"], "data": str(tiny_csv)}
    with dashboard_server(env={"PRUNELENS_CACHE": str(tmp_path / "store")}, query=query) as running, \
            chromium() as driver:
        driver.get(running.url())
        shown = wait_for(driver, lambda d: [e.text for e in d.find_elements(
            By.CSS_SELECTOR, "[data-testid='stSidebar'] [data-testid='stAlert']") if "not found" in e.text],
            240, "the sidebar's error about the model")
        time.sleep(1.0)  # an image would be asked for as soon as it is drawn
        assert [u for u in external_requests(driver) if "evil" in u] == []
        marked = driver.find_elements(By.CSS_SELECTOR, "a[href*='evil'], img[src*='evil']")
        assert [m.get_attribute("outerHTML") for m in marked] == []
        assert "![x](" in shown[0] and "[click](" in shown[0], shown  # the characters, as typed
