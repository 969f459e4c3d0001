"""Eight dashboard sessions at once against one real server on localhost.

The server is started with ``python -m prunelens dashboard`` (the real command line) and driven
by websocket clients speaking Streamlit's own protocol (the protobuf messages its browser client
sends): each session opens the Prune page with its own model, data limit, method and sparsity,
moves the slider, then opens the Model & data page. Every number a session sees must equal what
this process computes for that session's settings on a freshly loaded model: no cross-talk of
state between sessions, and no session's gates left on the shared cached model.
Bounded: 8 sessions, 3 moves each, every wait has a timeout; waits end when the answer comes and
their bounds are generous, so a machine busy with other work makes the test slower, not red
(no websocket keepalive pings: under load they time out while the server is merely busy).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self
from urllib.parse import urlencode

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRUNE_PAGE = "live-pruning"  # url path of the Prune page in dashboard/app.py
SUCCESS, ERROR = 4, 1  # streamlit Alert.Format values


# ---------------------------------------------------------------------------------------------
# a minimal Streamlit websocket client


@dataclass
class Page:
    """What one script run drew: elements in order, and how the run ended."""

    elements: list = field(default_factory=list)  # (fragment_id, Element proto)
    status: int = -1

    def of(self, kind: str) -> list:
        return [el for _, el in self.elements if el.WhichOneof("type") == kind]

    def alerts(self, fmt: int) -> list[str]:
        return [a.alert.body for a in self.of("alert") if a.alert.format == fmt]

    def metrics(self) -> dict[str, str]:
        return {m.metric.label: m.metric.body for m in self.of("metric")}

    def slider(self, label_start: str):
        for fragment, el in self.elements:
            if el.WhichOneof("type") == "slider" and el.slider.label.startswith(label_start):
                return fragment, el.slider
        kinds = [el.WhichOneof("type") for _, el in self.elements]
        raise AssertionError(f"no slider '{label_start}' on the page (status {self.status}; "
                             f"alerts {[a.alert.body[:200] for a in self.of('alert')]}; "
                             f"exceptions {self.exceptions()}; elements {kinds})")

    def exceptions(self) -> list[str]:
        return [e.exception.message for e in self.of("exception")]


class StreamlitClient:
    """One browser tab: a websocket session that asks for script runs and reads what they draw."""

    def __init__(self, port: int, timeout: float = 600.0):
        self.url = f"ws://127.0.0.1:{port}/_stcore/stream"
        self.timeout = timeout
        self.ws = None

    async def __aenter__(self) -> Self:
        import websockets

        self.ws = await asyncio.wait_for(
            websockets.connect(self.url, subprotocols=["streamlit"], max_size=None,
                               ping_interval=None), self.timeout)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()

    async def run(self, query: dict, page: str = "", widgets: dict | None = None,
                  fragment_id: str = "") -> Page:
        """Rerun with ``query`` as the URL, optionally setting widgets (id -> float) and rerunning
        only one fragment, as the browser does when a slider inside ``st.fragment`` moves."""
        await self.send(query, page, widgets, fragment_id)
        return await self.read_run()

    async def send(self, query: dict, page: str = "", widgets: dict | None = None,
                   fragment_id: str = "") -> None:
        """Ask for a rerun without waiting for it (a browser does not wait between moves)."""
        from streamlit.proto.BackMsg_pb2 import BackMsg

        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = urlencode(query)
        state.page_name = page
        state.fragment_id = fragment_id
        for widget_id, value in (widgets or {}).items():
            w = state.widget_states.widgets.add()
            w.id = widget_id
            w.double_array_value.data.extend([value])
        await self.ws.send(msg.SerializeToString())

    async def read_run(self) -> Page:
        """What the next script run draws, until it finishes (for any reason)."""
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        result = Page()
        deadline = time.monotonic() + self.timeout
        while True:
            raw = await asyncio.wait_for(self.ws.recv(), max(1.0, deadline - time.monotonic()))
            fm = ForwardMsg()
            fm.ParseFromString(raw)
            kind = fm.WhichOneof("type")
            if kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                result.elements.append((fm.delta.fragment_id, fm.delta.new_element))
            elif kind == "script_finished":
                result.status = fm.script_finished
                return result


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    port: int
    proc: subprocess.Popen
    log: Path

    def processes(self):
        """The ``prunelens dashboard`` process and the streamlit server it started."""
        import psutil

        parent = psutil.Process(self.proc.pid)
        return [parent, *parent.children(recursive=True)]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self.processes())


def start_server(tmp: Path, extra_env: dict | None = None) -> Server:
    port = _free_port()
    log = tmp / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PRUNELENS_CACHE": str(tmp / "store"),
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
           **(extra_env or {})}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "prunelens", "dashboard", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(port, proc, log)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return server
        except OSError:
            time.sleep(0.5)
    stop_server(server)
    raise AssertionError(f"server did not answer in 300 s: {log.read_text()[-2000:]}")


def stop_server(server: Server) -> None:
    """Stop the streamlit child and then the launcher, each by its own pid."""
    import psutil

    try:
        procs = server.processes()
    except psutil.NoSuchProcess:
        procs = []
    for p in reversed(procs):
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=15)
    for p in alive:
        p.kill()
    server.proc.wait(timeout=15)


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory):
    """A real ``prunelens dashboard`` on a free localhost port, stopped after the module."""
    tmp = tmp_path_factory.mktemp("server")
    server = start_server(tmp)
    yield server
    stop_server(server)


@pytest.mark.slow
def test_server_binds_localhost_only(dashboard_server):
    import psutil

    addresses = {c.laddr.ip for p in dashboard_server.processes()
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    assert addresses == {"127.0.0.1"}


# ---------------------------------------------------------------------------------------------
# eight sessions


@dataclass(frozen=True)
class Plan:
    model: str  # "a" or "b": two tiny BERTs with different weights
    limit: int
    method: str
    sparsities: tuple[float, ...]  # first from the URL, the rest by moving the slider


PLANS = [
    Plan("a", 40, "magnitude", (0.5, 0.25, 0.75)),
    Plan("b", 40, "magnitude", (0.5, 0.25, 0.75)),
    Plan("a", 24, "random", (0.25, 0.5, 0.0)),
    Plan("b", 16, "random", (0.75, 0.5, 0.25)),
    Plan("a", 32, "magnitude", (0.0, 0.5, 0.25)),
    Plan("b", 8, "magnitude", (0.25, 0.75, 0.5)),
    Plan("a", 16, "random", (0.5, 0.0, 0.75)),
    Plan("b", 24, "random", (0.0, 0.25, 0.5)),
]


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    from tests.tiny import write_tiny_bert

    root = tmp_path_factory.mktemp("models")
    return {"a": write_tiny_bert(root / "a", seed=1), "b": write_tiny_bert(root / "b", seed=2)}


def _expected(plans, models, csv, store_dir: Path) -> dict:
    """What each session must show, computed here on freshly loaded models."""
    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.models import load_model
    from prunelens.analysis.operations import open_session, prune

    loaded = {name: load_model(str(path)) for name, path in models.items()}
    out = {}
    for plan in plans:
        session = open_session(data=str(csv), limit=plan.limit, loaded=loaded[plan.model],
                               store=ResultStore(store_dir, shipped_dir=None))
        base = session.evaluator.base
        out[("base", plan.model, plan.limit)] = {"loss": f"{base.loss:.3f}", "margin": f"{base.margin:.3f}",
                                                 "fingerprint": loaded[plan.model].fingerprint}
        for s in plan.sparsities:
            r = prune(session, plan.method, s, "head")
            out[(plan.model, plan.limit, plan.method, s)] = {
                "loss": f"{r['pruned']['loss']:.3f}",
                "margin": f"{r['pruned']['margin']:.3f}",
                "accuracy": f"{r['pruned']['accuracy']:.3f}"}
    return out


async def _drive(port: int, plan: Plan, models: dict, csv: Path) -> list[dict]:
    """One session's whole visit; returns what it saw at each step."""
    query = {"model": str(models[plan.model]), "data": str(csv), "limit": str(plan.limit),
             "method": plan.method, "unit": "head", "sparsity": str(plan.sparsities[0])}
    seen = []
    async with StreamlitClient(port) as tab:
        page = await tab.run(query, PRUNE_PAGE)
        seen.append({"step": "open", "sparsity": plan.sparsities[0], "page": page})
        fragment, slider = page.slider("Sparsity")
        for s in plan.sparsities[1:]:
            moved = await tab.run(query, PRUNE_PAGE, widgets={slider.id: s}, fragment_id=fragment)
            seen.append({"step": "move", "sparsity": s, "page": moved})
        seen.append({"step": "model", "page": await tab.run(query, "")})
    return seen


@pytest.mark.slow
def test_eight_sessions_no_cross_talk(dashboard_server, two_models, tiny_csv, tmp_path):
    expected = _expected(PLANS, two_models, tiny_csv, tmp_path / "expected-store")

    async def all_sessions():
        return await asyncio.wait_for(asyncio.gather(
            *(_drive(dashboard_server.port, plan, two_models, tiny_csv) for plan in PLANS)), 600)

    results = asyncio.run(all_sessions())
    assert len(results) == 8
    for plan, seen in zip(PLANS, results):
        for step in seen:
            page = step["page"]
            assert page.exceptions() == [], (plan, page.exceptions())
            assert page.alerts(ERROR) == [], (plan, page.alerts(ERROR))
            metrics = page.metrics()
            if step["step"] == "model":
                want = expected[("base", plan.model, plan.limit)]
                (ok,) = page.alerts(SUCCESS)
                assert str(two_models[plan.model]) in ok and f"{plan.limit} examples" in ok
                assert want["fingerprint"][:8] in ok
                assert metrics["loss"] == want["loss"] and metrics["margin"] == want["margin"], plan
            else:
                want = expected[(plan.model, plan.limit, plan.method, step["sparsity"])]
                got = {k: metrics.get(k) for k in want}
                assert got == want, (plan, step["step"], step["sparsity"])
                if step["step"] == "open":
                    (ok,) = page.alerts(SUCCESS)
                    assert str(two_models[plan.model]) in ok and f"{plan.limit} examples" in ok
    print(f"sessions held: {len(results)}, runs answered: {sum(len(s) for s in results)}")


# ---------------------------------------------------------------------------------------------
# the same guarantees in-process, fast: threads sharing one loaded model


def test_threads_sharing_a_model_do_not_see_each_others_gates(tiny_bert_dir, tiny_csv):
    """Gates are hooks on the shared model; ``gated`` holds a per-model lock so that concurrent
    evaluations (one thread per dashboard session) never combine their masks."""
    import threading

    import numpy as np

    from prunelens.analysis.data import load_data
    from prunelens.analysis.evaluate import Evaluator
    from prunelens.analysis.gates import Masks, hook_count
    from prunelens.analysis.fingerprints import weights_digest
    from prunelens.analysis.models import load_model

    loaded = load_model(str(tiny_bert_dir))  # a private copy: this test must not race others
    before = weights_digest(loaded.model)
    masks = [np.random.default_rng(i).integers(0, 2, (2, 4)) for i in range(4)]

    def job(limit: int, out: dict, barrier=None) -> None:
        evaluator = Evaluator(loaded, load_data(str(tiny_csv), limit=limit), fast=False)
        if barrier is not None:
            barrier.wait(timeout=300)
        out[limit] = [evaluator.evaluate(Masks(head=m)).loss for m in masks for _ in range(2)]

    limits = (10, 20, 30, 40)
    serial: dict = {}
    for limit in limits:
        job(limit, serial)
    parallel: dict = {}
    barrier = threading.Barrier(len(limits))
    threads = [threading.Thread(target=job, args=(limit, parallel, barrier)) for limit in limits]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert parallel == serial
    assert hook_count(loaded.model) == 0

    assert weights_digest(loaded.model) == before  # the shared model was never changed


def test_method_registry_is_filled_whole_under_threads(monkeypatch):
    """Sessions starting at once must all see every method (a half-filled registry once made a
    session silently fall back to another method)."""
    import threading

    import prunelens.analysis.methods as registry

    expected = dict(registry.all_methods())
    monkeypatch.setattr(registry, "_REGISTRY", {})
    seen: list = []
    barrier = threading.Barrier(8)

    def job() -> None:
        barrier.wait(timeout=300)
        seen.append(sorted(registry.all_methods()))

    threads = [threading.Thread(target=job) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert seen == [sorted(expected)] * 8


def test_copy_made_while_gated_carries_no_gates(tiny_bert_dir):
    """Methods deep-copy the shared model (physical pruning, training runs); a copy made while
    another session's gates are on must compute the ungated model, not inherit those gates."""
    import copy

    import numpy as np
    import torch

    from prunelens.analysis.gates import gated
    from prunelens.analysis.models import load_model

    loaded = load_model(str(tiny_bert_dir))
    model = loaded.model
    inputs = loaded.tokenizer(["good movie", "the plot was boring"], return_tensors="pt",
                              padding=True)
    with torch.no_grad():
        ungated = model(**inputs).logits
        head = np.array([[0, 1, 0, 1], [1, 0, 0, 1]])
        with gated(model, head=head, ffn=np.array([0, 1])):
            gated_logits = model(**inputs).logits
            copied = copy.deepcopy(model)
            assert torch.allclose(copied(**inputs).logits, ungated, atol=1e-6)  # gates still on
        assert torch.allclose(copied(**inputs).logits, ungated, atol=1e-6)  # and after
        assert not torch.allclose(gated_logits, ungated, atol=1e-4)  # the gates did act
        assert torch.allclose(model(**inputs).logits, ungated, atol=1e-6)
