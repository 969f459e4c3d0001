"""Bounded work (issue 15, "one link or click can exhaust the server"; SECURITY.md rows 8+):
declared bounds on every parameter held alike by the CLI, sweep specs and dashboard links; an
expensive flag derived from the work a setting implies; a per-server cap on background runs; a
real Cancel; runs that stop when their session is gone; training batches tokenized one batch at a
time; a per-model load lock.

Each test says in one line what the code before this change did that the test catches."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

import prunelens.analysis.methods.base as base
from prunelens.analysis.errors import ParamError, PrunelensError
from prunelens.analysis.methods import all_methods, get_method
from prunelens.analysis.training import get_trainer, train_command, trainable_methods

NUMERIC = ("int", "float")


def _declarations():
    """(who, params, validate, cost, budget) for every method's scoring and training params."""
    for name, method in all_methods().items():
        cost = getattr(method, "cost", None)
        yield (f"{name}", method.params, method.validate,
               None if cost is None else (lambda v, c=cost: c(v, base.BERT_BASE, None)),
               getattr(base, "MAX_SCORE_WORK", None))
    for name, trainer in trainable_methods().items():
        yield (f"{name} (training)", trainer.params, trainer.validate, getattr(trainer, "cost", None),
               getattr(base, "MAX_TRAIN_WORK", None))


def _corners(params, seed: int = 0, samples: int = 300):
    """Settings at the edges of the declared box: every numeric parameter at its maximum with
    every bool/choice option, plus seeded random points with each numeric at its low or high."""
    options = {p.name: (list(p.choices) if p.kind == "choice" else [False, True])
               for p in params if p.kind not in NUMERIC}
    top = {p.name: p.high for p in params if p.kind in NUMERIC}
    for combo in itertools.product(*options.values()):
        yield {**top, **dict(zip(options, combo))}
    rng = np.random.default_rng(seed)
    for _ in range(samples):
        point = {p.name: (p.high if rng.random() < 0.5 else p.low) for p in params if p.kind in NUMERIC}
        point.update({k: v[rng.integers(len(v))] for k, v in options.items()})
        yield point


# 1. bounds ------------------------------------------------------------------------------------

def test_every_numeric_param_is_bounded_and_its_worst_case_fits_the_budget():
    # old: pins batches 1..1000 x batch_size 1..512 (a 5 GB link), snip steps 1..100000 x batch
    # 1..1024 were accepted, and no method or trainer declared a cost, so no product was bounded
    checked = 0
    for who, params, validate, cost, budget in _declarations():
        assert cost is not None, f"{who} declares no cost: its worst case is unbounded"
        for p in params:
            if p.kind in NUMERIC:
                assert p.low is not None and p.high is not None, (who, p.name)
                assert np.isfinite(p.low) and np.isfinite(p.high) and p.low <= p.default <= p.high, (who, p.name)
        for point in _corners(params):
            try:
                values = validate(point)
            except ParamError as exc:
                assert "budget" in str(exc) or "must" in str(exc), (who, point, exc)
                continue
            work = cost(values)
            assert work.fixed <= budget, (who, point, work)
            assert work.batch_tokens <= base.MAX_BATCH_TOKENS, (who, point, work)
            checked += 1
    assert checked > 100
    # the named products: a PINS score is at most MAX_SCORE_WORK / 3 examples (forward + backward)
    pins = get_method("pins")
    worst = max(b * s for b in range(1, 129) for s in (1, 16, 32, 64)
                if _accepts(pins.validate, {"batches": b, "batch_size": s}))
    assert worst * 3 <= base.MAX_SCORE_WORK
    assert 3 * 8 * 16 <= base.MAX_SCORE_WORK  # the default stays allowed


def _accepts(validate, raw) -> bool:
    try:
        validate(raw)
        return True
    except ParamError:
        return False


def test_the_issue_link_is_refused_alike_by_cli_sweep_and_param_parse(tmp_path, capsys):
    # old: batches=1000, batch_size=512 and steps=100000 x batch_size=1024 parsed fine (in range);
    # the CLI went on to load the model (so this nonexistent folder gave a model error instead)
    from prunelens.analysis.cli import main
    from prunelens.analysis.sweep.spec import parse_spec

    with pytest.raises(ParamError, match=r"'batches' must be in \[1, 128\]"):
        get_method("pins").validate({"batches": 1000, "batch_size": 512})
    with pytest.raises(ParamError, match="budget"):
        get_method("pins").validate({"batches": 128, "batch_size": 64})  # each in range, together too much
    with pytest.raises(ParamError, match=r"'steps' must be in"):
        get_trainer("snip").validate({"steps": 100_000, "batch_size": 1024})
    missing = str(tmp_path / "no_model")
    code = main(["score", "--method", "pins", "--param", "batches=1000", "--param", "batch_size=512",
                 "--model", missing])
    err = capsys.readouterr().err
    assert code == 2 and "parameter 'batches' must be in" in err and "no_model" not in err
    code = main(["train", "--method", "pins", "--param", "steps=10000", "--param", "batch_size=64",
                 "--model", missing])
    err = capsys.readouterr().err
    assert code == 2 and "budget" in err and "no_model" not in err
    with pytest.raises(PrunelensError, match="must be in"):
        parse_spec({"models": ["default"], "data": ["default"],
                    "methods": {"pins": {"params": {"batches": 1000, "batch_size": 512}}}})
    with pytest.raises(PrunelensError, match="budget"):
        parse_spec({"models": ["default"], "data": ["default"],
                    "train": [{"method": "snip", "params": {"steps": 10_000, "batch_size": 64}}]})


def test_a_huge_training_setting_is_refused_before_anything_runs(tiny_session, monkeypatch):
    # old: pins steps=10000 x batch_size=64 was in range, so train_command tokenized 640,000
    # examples up front and started training
    calls = _spy_tokenizer(tiny_session, monkeypatch, limit=64)
    with pytest.raises(ParamError, match="budget of 100,000"):
        train_command(tiny_session, "pins", {"steps": 10_000, "batch_size": 64}, use_store=False)
    with pytest.raises(ParamError, match="tokens per gradient batch"):
        train_command(tiny_session, "pins", {"steps": 10, "batch_size": 64, "max_length": 512},
                      use_store=False)
    assert calls == []  # nothing was tokenized, nothing ran
    assert tiny_session.store.get(tiny_session.key("train-run", "pins", "", {})) is None


# 2. expensive, derived from the work ----------------------------------------------------------

def test_expensive_is_derived_from_the_work_of_a_setting(tiny_session):
    # old: `expensive` was a hand-set field (pins False), with no work estimate behind it
    inv, n = tiny_session.loaded.inventory, len(tiny_session.data)
    pins, magnitude, michel = get_method("pins"), get_method("magnitude"), get_method("michel")
    assert pins.work(None, inv, n) == 3 * 8 * 16 > base.EXPENSIVE_WORK
    assert pins.is_expensive(None, inv, n) and pins.expensive
    assert not pins.is_expensive({"batches": 2, "batch_size": 8}, inv, n)  # the setting decides
    assert magnitude.work(None, inv, n) == 0 and not magnitude.is_expensive(None, inv, n)
    assert not michel.is_expensive(None, inv, n)  # 2 passes over 40 examples
    assert michel.is_expensive(None, inv, 872)  # ... but not over the default's 872
    assert get_method("ablation").is_expensive(None, inv, n) and get_method("smp").expensive


def test_pins_from_a_link_waits_for_the_click_and_magnitude_starts(open_page, monkeypatch):
    # old: PINS was not marked expensive, so a link computed its scores at once, no click.
    # Expensive is work over EXPENSIVE_WORK *and* over a minute here (issue 30 item 2): a slow
    # machine is pinned (1 s per example: PINS' 384 passes take minutes)
    import prunelens.analysis.analyze as analyze_mod
    import prunelens.analysis.methods.magnitude as magnitude_mod
    import prunelens.analysis.methods.pins as pins_mod

    monkeypatch.setattr(analyze_mod, "measured_example_seconds", lambda session: 1.0)

    pins_calls, magnitude_calls = [], []
    real_weights, real_compute = pins_mod.score_weights, magnitude_mod.Magnitude.compute
    monkeypatch.setattr(pins_mod, "score_weights",
                        lambda *a, **k: pins_calls.append(1) or real_weights(*a, **k))
    monkeypatch.setattr(magnitude_mod.Magnitude, "compute",
                        lambda self, *a: magnitude_calls.append(1) or real_compute(self, *a))
    at = open_page("importance", method="pins")
    assert pins_calls == []
    assert any("starts only when you click" in i.value and "about 6 min on this machine" in i.value
               for i in at.info)
    at.button(key="imp.pins.head.compute").click().run()
    assert not at.exception and pins_calls == [1]

    at = open_page("importance", method="magnitude")
    assert magnitude_calls and not [b for b in at.button if b.key == "imp.magnitude.head.compute"]


def test_an_out_of_range_link_is_clamped_visibly_and_never_computed(open_page, monkeypatch):
    # old: p.pins.batches=1000&p.pins.batch_size=512 were in range and computed at once
    import prunelens.analysis.analyze as analyze_mod
    import prunelens.analysis.methods.pins as pins_mod

    monkeypatch.setattr(analyze_mod, "measured_example_seconds", lambda session: 1.0)
    calls = []
    monkeypatch.setattr(pins_mod, "score_weights", lambda *a, **k: calls.append(1))
    at = open_page("importance", method="pins", **{"p.pins.batches": "1000", "p.pins.batch_size": "512"})
    widgets = {w.key: w.value for w in [*at.number_input, *at.slider]}
    assert widgets["imp.pins.batches"] == 128 and widgets["imp.pins.batch_size"] == 64
    warnings = " ".join(w.value for w in at.warning)
    assert "p.pins.batches=1000" in warnings and "outside [1, 128]: using 128" in warnings
    assert any("budget" in e.value for e in at.error)  # 128 x 64 together: refused, page stopped
    assert calls == [] and not [b for b in at.button if b.key == "imp.pins.head.compute"]


# 3. job cap, Cancel, session end --------------------------------------------------------------

class _Blocking:
    """A fake run that makes steps (progress calls) until released."""

    def __init__(self):
        self.release, self.steps = threading.Event(), 0

    def __call__(self, session, method, params, progress):
        while not self.release.is_set():
            self.steps += 1
            progress(0.5, f"step {self.steps}")
            time.sleep(0.01)
        return {"ok": True}


def test_jobs_over_the_per_server_cap_are_refused(tiny_session, monkeypatch):
    # old: no cap: a third (and a fourth: 8.2 GB) concurrent run started
    from prunelens.dashboard import jobs

    monkeypatch.delenv("PRUNELENS_MAX_JOBS", raising=False)
    board, run = jobs.JobBoard(), _Blocking()
    first = board.start(tiny_session, "snip", {}, run=run)
    board.start(tiny_session, "snip", {}, run=run)
    with pytest.raises(getattr(jobs, "JobLimitError", PrunelensError), match="PRUNELENS_MAX_JOBS=2"):
        board.start(tiny_session, "snip", {}, run=run)
    board.cancel(first.id)
    board.wait(first.id, timeout=10)
    assert first.status == jobs.CANCELLED
    third = board.start(tiny_session, "snip", {}, run=run)  # a slot is free again
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "3")
    fourth = board.start(tiny_session, "snip", {}, run=run)
    run.release.set()
    for job in (third, fourth):
        assert board.wait(job.id, timeout=10).status == jobs.DONE


@pytest.mark.parametrize("method,params", [
    ("snip", {"steps": 400, "batch_size": 4}),
    ("admm", {"iterations": 50, "steps": 8, "finetune_steps": 0, "batch_size": 4}),  # no progress in a W-step
])
def test_cancel_stops_a_training_run_at_its_next_step_and_stores_nothing(tiny_session, method, params):
    # old: no Cancel: a run could only be stopped by killing the server
    from prunelens.analysis.training import finished_runs, run_key
    from prunelens.dashboard import jobs

    board, seen, started = jobs.JobBoard(), [], threading.Event()

    def run(session, name, params, progress):
        def spy(fraction, message=""):
            seen.append(message)
            if len(seen) >= 3:
                started.set()
            progress(fraction, message)
        return train_command(session, name, params, progress=spy)

    job = board.start(tiny_session, method, params, run=run)
    assert started.wait(60)
    board.cancel(job.id)
    at_cancel = len(seen)
    board.wait(job.id, timeout=60)
    assert job.status == jobs.CANCELLED and "nothing stored" in job.message
    assert len(seen) <= at_cancel + 1  # stopped at the next step (or the progress call after it)
    key = run_key(tiny_session, method, get_trainer(method).validate(params))
    assert tiny_session.store.get(key) is None and finished_runs(tiny_session.store) == []


def test_a_job_whose_session_ended_is_cancelled(tiny_session, monkeypatch):
    # old: a run kept computing after its tab closed (BOARD.start took no way to tell)
    from prunelens.dashboard import jobs

    monkeypatch.setattr(jobs, "ALIVE_CHECK_S", 0.0)
    session_open = threading.Event()
    session_open.set()
    board, run = jobs.JobBoard(), _Blocking()
    job = board.start(tiny_session, "snip", {}, run=run, alive=session_open.is_set)
    time.sleep(0.1)
    assert job.status == jobs.RUNNING
    session_open.clear()  # Streamlit no longer knows the session
    board.wait(job.id, timeout=10)
    run.release.set()
    assert job.status == jobs.CANCELLED and "session ended" in job.message


def test_session_liveness_reads_streamlits_session_manager(monkeypatch):
    # old: nothing asked Streamlit whether a job's session still existed
    import streamlit.runtime as runtime_mod
    import streamlit.runtime.scriptrunner_utils.script_run_context as ctx_mod

    from prunelens.dashboard import run_control

    known = {"s1"}

    class Manager:
        def get_session_info(self, sid):
            return object() if sid in known else None

    class FakeRuntime:
        _session_mgr = Manager()

        @classmethod
        def exists(cls):
            return True

        @classmethod
        def instance(cls):
            return cls

    monkeypatch.setattr(runtime_mod, "Runtime", FakeRuntime)
    monkeypatch.setattr(ctx_mod, "get_script_run_ctx", lambda suppress_warning=False: type("C", (), {"session_id": "s1"}))
    alive = run_control.session_liveness()
    assert alive is not None and alive()
    known.clear()  # disconnected longer than the reconnect window: gone
    assert not alive()
    monkeypatch.setattr(ctx_mod, "get_script_run_ctx", lambda suppress_warning=False: None)
    assert run_control.session_liveness() is None  # outside a server run: nothing to watch


def test_the_training_page_refuses_a_run_over_the_cap_with_a_message(open_page, monkeypatch):
    # old: the Start button always started another run
    from prunelens.dashboard import jobs

    board = jobs.JobBoard()
    monkeypatch.setattr(jobs, "BOARD", board)
    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "1")
    run = _Blocking()
    board.start(type("S", (), {"loaded": type("L", (), {"name": "m"}), "data": type("D", (), {"name": "d"})}),
                "snip", {}, run=run)
    at = open_page("training", method="snip")
    at.button(key="train.start").click().run()
    assert not at.exception
    assert any("PRUNELENS_MAX_JOBS=1" in e.value for e in at.error)
    assert len(board.jobs()) == 1
    cancel = [b for b in at.button if b.key and b.key.startswith("train.cancel.")]
    assert cancel, "a running job has a Cancel button"
    cancel[0].click().run()
    board.wait(board.jobs()[0].id, timeout=10)
    run.release.set()
    assert board.jobs()[0].status == jobs.CANCELLED


# 4. streamed tokenization ---------------------------------------------------------------------

def _spy_tokenizer(session, monkeypatch, limit: int | None = None) -> list[int]:
    """Record the number of texts of every tokenizer call made through ``session.loaded``; a
    call with more than ``limit`` texts fails at once (instead of tokenizing them)."""
    # the fingerprint first: the tokenizer's digest includes its last truncation setting, and
    # tiny_loaded is shared by the whole test session
    assert session.loaded.fingerprint
    assert session.evaluator.batches  # the evaluation data is tokenized once, before the spy
    real = session.loaded.tokenizer
    calls: list[int] = []

    class Spy:
        def __call__(self, texts, *args, **kwargs):
            calls.append(len(texts) if isinstance(texts, list) else 1)
            if limit is not None and calls[-1] > limit:
                raise AssertionError(f"{calls[-1]} texts tokenized in one call")
            return real(texts, *args, **kwargs)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(session.loaded, "tokenizer", Spy())
    return calls


@pytest.mark.parametrize("method,params,batch_size", [
    # SNIP's function norms stream a training sample in batches of NORM_BATCH (32), fixed
    ("snip", {"steps": 6, "batch_size": 4}, 32),
    # teacher=latest: the default best_dev also tokenizes its fixed held-out selection set
    # (at most SELECTION_EXAMPLES = 256 sentences) once, before the first step
    ("pins", {"steps": 12, "batch_size": 4, "prune_every": 2, "compare_self_reg": False,
              "baseline": "none", "teacher": "latest"}, 4),
    ("admm", {"iterations": 2, "steps": 2, "finetune_steps": 2, "batch_size": 4}, 4),
])
def test_training_tokenizes_at_most_one_batch_per_call(tiny_session, monkeypatch, method, params, batch_size):
    # old: every trainer tokenized steps x batch_size texts in one call before the first step
    calls = _spy_tokenizer(tiny_session, monkeypatch, limit=batch_size)
    train_command(tiny_session, method, params, use_store=False)
    assert calls and max(calls) <= batch_size, calls


def test_streamed_batches_tokenize_nothing_up_front(tiny_session, monkeypatch):
    # old: building the batches tokenized them all (a Rust allocation failure aborted the process)
    import prunelens.analysis.methods.admm as admm_mod
    import prunelens.analysis.methods.pins as pins_mod
    import prunelens.analysis.methods.snip as snip_mod

    calls = _spy_tokenizer(tiny_session, monkeypatch, limit=16)
    tok, data = tiny_session.loaded.tokenizer, tiny_session.data
    streams = [pins_mod.shuffled_batches(tok, data, 16, 10_000, seed=0),
               snip_mod._train_batches(tok, data, 10_000, 16, 0),
               admm_mod._train_batches(tiny_session, data, 10_000, 16, 0)]
    assert calls == [] and [len(s) for s in streams] == [10_000] * 3
    for stream in streams:
        first = next(iter(stream))
        assert first.input_ids.shape[0] == 16
    assert max(calls) <= 16 and len(calls) <= 8 + 1 + 1  # pins reads one bucket of 8 batches


# 5. per-model load lock -----------------------------------------------------------------------

def test_a_slow_model_load_does_not_block_another_and_one_model_loads_once(monkeypatch):
    # old: one process-wide lock: model B waited for the whole of model A's load (138 s)
    import prunelens.analysis.models
    from prunelens.dashboard import loading

    loads, slow_started, release = [], threading.Event(), threading.Event()

    def fake(spec):
        loads.append(spec)
        if spec == "slow-model":
            slow_started.set()
            release.wait(20)
        return f"loaded {spec}"

    monkeypatch.setattr(prunelens.analysis.models, "_load_model", fake)
    loading.cached_model.clear()
    try:
        results = {}

        def session(name, spec):
            results[name] = loading.cached_model(spec)

        a1 = threading.Thread(target=session, args=("a1", "slow-model"))
        a2 = threading.Thread(target=session, args=("a2", "slow-model"))
        b = threading.Thread(target=session, args=("b", "small-model"))
        a1.start()
        assert slow_started.wait(20)
        a2.start()
        b.start()
        b.join(10)
        assert not b.is_alive() and results["b"] == "loaded small-model"  # B done while A loads
        assert a1.is_alive() and a2.is_alive()
        release.set()
        a1.join(10)
        a2.join(10)
        assert results["a1"] == results["a2"] == "loaded slow-model"
        assert loads.count("slow-model") == 1  # two sessions, one load
    finally:
        release.set()
        loading.cached_model.clear()


def test_load_model_locks_per_model(monkeypatch):
    # old: prunelens.analysis.models.load_model held one RLock for every spec
    import prunelens.analysis.models

    inside, release = threading.Event(), threading.Event()

    def fake(spec):
        if spec == "a":
            inside.set()
            release.wait(20)
        return spec

    monkeypatch.setattr(prunelens.analysis.models, "_load_model", fake)
    a = threading.Thread(target=prunelens.analysis.models.load_model, args=("a",))
    a.start()
    try:
        assert inside.wait(20)
        done = []
        b = threading.Thread(target=lambda: done.append(prunelens.analysis.models.load_model("b")))
        b.start()
        b.join(10)
        assert done == ["b"] and a.is_alive()
    finally:
        release.set()
        a.join(10)
