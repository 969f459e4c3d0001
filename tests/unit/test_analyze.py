"""``prunelens analyze``: the plan, the estimate, the order, the lock, resuming after a kill, and
the dashboard's "Analyse this model" panel (issue 14, item 1)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from prunelens.analysis.analyze import (
    BLOCK_SPARSITIES,
    CURVE_SPARSITIES,
    MASK_EVAL_PASSES,
    EXTRA_TRAINING,
    AnalysisBusy,
    PairLock,
    analysis_spec,
    cost_order,
    estimate,
    plan_analysis,
    read_status,
    run_analysis,
)
from prunelens.analysis.methods import all_methods, get_method
from prunelens.analysis.sweep.spec import Target

ROOT = Path(__file__).resolve().parents[2]


def entries(store_dir: Path) -> dict[str, bytes]:
    return {p.stem: p.read_bytes() for p in Path(store_dir).glob("*/*.json")}


def target_of(tiny_bert_dir, tiny_csv) -> Target:
    return Target(str(tiny_bert_dir), str(tiny_csv))


def test_spec_is_every_method_unit_with_the_slider_grid(tiny_bert_dir, tiny_csv):
    spec = analysis_spec(target_of(tiny_bert_dir, tiny_csv))
    got = {(g.method, g.units): (g.scopes, g.sparsities, g.params) for g in spec.methods}
    want = {}
    for name, method in all_methods().items():
        for unit in method.units:
            grid = {"head": (("global", "layer"), CURVE_SPARSITIES),
                    "attention": (("global",), BLOCK_SPARSITIES),
                    "ffn": (("global",), BLOCK_SPARSITIES)}.get(unit, (("global",), ()))
            want[(name, (unit,))] = (*grid, (method.validate({}),))
    assert got == want
    assert CURVE_SPARSITIES == tuple(round(0.05 * i, 2) for i in range(20))  # the Prune slider's steps
    assert spec.training == ()
    trained = analysis_spec(target_of(tiny_bert_dir, tiny_csv), ["pins", "magnitude"], training=True)
    assert [(t.method, len(t.params)) for t in trained.training] == [("pins", 1)]  # analyze: defaults only
    shipped = analysis_spec(target_of(tiny_bert_dir, tiny_csv), ["pins", "magnitude"], training=True,
                            extra_training=True)  # precompute: plus the fidelity report's seeds
    assert [(t.method, len(t.params)) for t in shipped.training] == [("pins", 1 + len(EXTRA_TRAINING["pins"]))]
    assert len({json.dumps(p, sort_keys=True) for p in shipped.training[0].params}) == len(shipped.training[0].params)


def test_unknown_method_is_refused_before_anything_loads(tmp_path):
    done = subprocess.run([sys.executable, "-m", "prunelens.analysis.cli", "analyze", "--methods", "magnitude,nope",
                           "--model", str(tmp_path / "missing"), "--store", str(tmp_path / "s")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unknown method 'nope'" in done.stderr and "loading model" not in done.stderr


def test_estimate_is_declared_work_times_the_measured_forward(tiny_session, tiny_bert_dir, tiny_csv):
    _, plan = plan_analysis(tiny_session, target_of(tiny_bert_dir, tiny_csv), ["magnitude", "michel"])
    est = estimate(plan, tiny_session, example_seconds=0.01)
    n, inv = tiny_session.evaluator.n, tiny_session.loaded.inventory
    path = "bf16" if tiny_session.evaluator.masked_precision == "bf16" else "fp32"
    assert est.mask_eval_seconds == pytest.approx(MASK_EVAL_PASSES[path] * n * 0.01)
    for task in plan.todo:
        want = get_method(task.method).work(task.param_dict(), inv, n, task.unit) * 0.01
        assert est.of(task) == pytest.approx(want)  # michel and magnitude: every pass counts in full
    # two methods: heads at 2 scopes x 20 points, attention and FFN blocks at 2 points each
    assert est.waiting == plan.waiting == 2 * (2 * 20 + 2 + 2)
    assert est.total_seconds == pytest.approx(sum(est.seconds.values()) + plan.waiting * est.mask_eval_seconds)
    _, plan = plan_analysis(tiny_session, target_of(tiny_bert_dir, tiny_csv), ["ablation"])
    est = estimate(plan, tiny_session, example_seconds=0.01)
    [heads] = [t for t in plan.todo if t.unit == "head"]
    from prunelens.analysis.methods.ablation import PASS_SHARE

    assert est.of(heads) == pytest.approx((1 + inv.layers * inv.heads) * n * PASS_SHARE * 0.01)


def test_every_model_call_and_the_work_beside_the_encoder_count(tiny_session, tiny_bert_dir, tiny_csv,
                                                                 monkeypatch):
    """Issue 30: on a tiny model a call's fixed cost and smp-pruner's CNN are the time (estimated
    1 s, took 21 s): each declared call costs the measured call time, one more per task, and
    the CNN its kept measurement, which a second estimate reads instead of timing again."""
    import prunelens.analysis.analyze as analyze_mod
    from prunelens.analysis.evaluate import FAST_BATCH_ROWS
    from prunelens.analysis.methods import smp_pruner

    _, plan = plan_analysis(tiny_session, target_of(tiny_bert_dir, tiny_csv), ["michel", "smp", "smp-pruner"])
    n, inv = tiny_session.evaluator.n, tiny_session.loaded.inventory
    timed = []
    monkeypatch.setattr(smp_pruner, "time_cnn_map", lambda ndf: timed.append(ndf) or 0.5)
    est = estimate(plan, tiny_session, example_seconds=0.01, call_seconds=0.002)
    by = {(t.method, t.unit): est.of(t) for t in plan.todo if t.kind == "scores"}
    michel = get_method("michel").validate({})
    calls = 3 * -(-n // michel["batch_size"])  # forward + backward per batch of batch_size
    assert by["michel", "head"] == pytest.approx(3 * n * 0.01 + (calls + 1) * 0.002)
    smp = get_method("smp").validate({})
    chunks = (smp["samples"] + 1) * smp["batches"] * -(-smp["batch_size"] // 8)
    assert by["smp", "head"] == pytest.approx((smp["samples"] + 1) * smp["batch_size"] * 0.01
                                              + (chunks + 1) * 0.002)
    p = get_method("smp-pruner").validate({})
    maps = inv.layers * inv.heads * p["batch_size"]
    assert by["smp-pruner", "head"] == pytest.approx(
        (4 * p["steps"] + p["score_batches"]) * p["batch_size"] * 0.01
        + (4 * p["steps"] + p["score_batches"] + 1) * 0.002
        + maps * (p["steps"] + p["score_batches"] / 3) * 0.5)
    passes = MASK_EVAL_PASSES["bf16" if tiny_session.evaluator.masked_precision == "bf16" else "fp32"]
    assert est.mask_eval_seconds == pytest.approx(passes * n * 0.01 + (-(-n // FAST_BATCH_ROWS) + 1) * 0.002)
    assert timed == [p["ndf"]]
    analyze_mod._MEASURED.clear()  # another process: reads the kept measurement, times nothing
    estimate(plan, tiny_session, example_seconds=0.01, call_seconds=0.002)
    assert timed == [p["ndf"]]
    kept = json.loads(analyze_mod.timing_path(tiny_session.store, tiny_session).read_text())
    assert kept["side"] == {f"smp-pruner cnn map, ndf {p['ndf']}": 0.5} and kept["call_seconds"] >= 0


def test_cheap_methods_and_their_curves_run_before_expensive_ones(tiny_session, tiny_bert_dir, tiny_csv):
    _, plan = plan_analysis(tiny_session, target_of(tiny_bert_dir, tiny_csv),
                            ["ablation", "michel", "magnitude"])
    est = estimate(plan, tiny_session, example_seconds=0.01)
    key = cost_order(plan, est)
    heads = [t for t in plan.todo if t.unit == "head"]
    ordered = sorted(heads, key=key)
    assert ordered[0].method == "magnitude"  # free: first
    cost = {m: sum(est.of(t) for t in plan.todo if t.method == m and t.kind == "scores")
            for m in ("ablation", "michel", "magnitude")}
    assert [t.method for t in ordered] == sorted(cost, key=cost.get)  # by each method's estimated cost
    from prunelens.analysis.sweep.tasks import Task

    curve_point = Task("mask-eval", heads[0].target, "magnitude", "head", label="x")
    order = sorted([*heads, curve_point], key=key)
    assert [t.method for t in order[:2]] == ["magnitude", "magnitude"] and order[1] is curve_point


def test_analyze_fills_what_the_pages_read_and_a_rerun_does_nothing(tiny_session, tiny_bert_dir,
                                                                     tiny_csv, capsys):
    from prunelens.analysis.operations import compute_scores, curve

    target = target_of(tiny_bert_dir, tiny_csv)
    done = run_analysis(tiny_session, target, ["magnitude", "random", "michel"], progress=True)
    # (40: on the 8-head tiny model the masks of 0.9 and 0.95 keep one head, as 0.85's do)
    assert done.report.count("failed") == 0 and done.report.count("done") >= 40
    err = capsys.readouterr().err
    assert "estimated" in err and "to compute" in err
    before = entries(tiny_session.store.user_dir)
    for scope in ("global", "layer"):
        curve(tiny_session, ["magnitude", "random", "michel"], list(CURVE_SPARSITIES), "head", scope)
    for unit in ("attention", "ffn"):
        curve(tiny_session, ["magnitude", "random"], list(BLOCK_SPARSITIES), unit)
    assert compute_scores(tiny_session, "michel", "neuron").cached
    assert entries(tiny_session.store.user_dir) == before  # nothing new: every read was a hit
    again = run_analysis(tiny_session, target, ["magnitude", "random", "michel"], progress=False)
    assert again.report.count("done") == 0
    assert again.report.notes == [f"nothing to do: all {len(again.report.records)} entries are already in the store"]
    status = read_status(tiny_session.store, tiny_session)
    assert status["state"] == "done" and status["fraction"] == 1.0 and status["running"] is False


def test_a_second_job_on_the_same_pair_is_refused_with_the_first_ones_progress(
        tiny_session, tiny_bert_dir, tiny_csv):
    with PairLock(tiny_session.store, tiny_session) as lock:
        lock.write(state="done", pid=4242, host="lab-1", fraction=0.4, eta_seconds=600)
        assert read_status(tiny_session.store, tiny_session)["running"] is False  # not "running"
        lock.write(state="running", pid=4242, host="lab-1", fraction=0.4, eta_seconds=600)
        lock._written = 0
        lock.write(state="running")
        assert read_status(tiny_session.store, tiny_session)["running"] is True
        with pytest.raises(AnalysisBusy, match=r"pid 4242 on lab-1, 40% done, about 10 min left"):
            run_analysis(tiny_session, target_of(tiny_bert_dir, tiny_csv), ["magnitude"], progress=False)
    assert not entries(tiny_session.store.user_dir)  # refused before computing anything
    assert read_status(tiny_session.store, tiny_session)["running"] is False  # released


def test_a_killed_job_resumes_without_recomputing_finished_entries(tmp_path, tiny_bert_dir, tiny_csv):
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "prunelens.analysis.cli", "analyze", "--model", str(tiny_bert_dir),
           "--data", str(tiny_csv), "--methods", "magnitude,random,michel,ablation",
           "--store", str(store), "--json", str(tmp_path / "a.json")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(list(store.glob("*/*.json"))) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # no clean-up at all
    proc.communicate(timeout=60)
    kept = entries(store)
    assert len(kept) >= 5
    for raw in kept.values():
        json.loads(raw)  # every entry whole: nothing half-written (a write cut by the kill can
    # only leave a hidden ``.<digest>.*.tmp`` file, which is never read as an entry)
    assert all(p.name.startswith(".") for p in store.glob("*/*.tmp"))
    rerun = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads((tmp_path / "a.json").read_text())
    total = len(summary["tasks"])
    assert len(kept) < total  # it really was killed mid-way
    assert summary["counts"] == {"stored": len(kept), "done": total - len(kept), "failed": 0}
    assert {k: v for k, v in entries(store).items() if k in kept} == kept  # finished ones untouched
    assert "estimated" in rerun.stdout and "every page now answers from the store" in rerun.stdout


def test_model_data_page_estimates_then_analyses_in_the_background(open_page, tmp_path, monkeypatch):
    from prunelens.dashboard import jobs

    at = open_page("model_data")
    [plan] = [b for b in at.button if b.key == "analyze.plan"]
    plan.click().run()
    [info] = [i for i in at.info if "to compute" in i.value]
    assert "entries stored" in info.value and "about" in info.value
    [start] = [b for b in at.button if b.key == "analyze.start"]
    start.click().run()
    [job] = [j for j in jobs.BOARD.jobs() if j.method == "analyze" and j.status == jobs.RUNNING] or \
        [j for j in jobs.BOARD.jobs() if j.method == "analyze"][:1]
    jobs.BOARD.wait(job.id, timeout=600)
    assert job.status == jobs.DONE, job.error
    assert job.result["computed"] > 100 and job.result["failed"] == 0
    at.run()
    assert any("Analysis finished" in s.value for s in at.success)
    assert len(list((tmp_path / "store").glob("*/*.json"))) == job.result["computed"]


def test_the_shipped_store_is_what_analyze_produces_for_the_default(default_loaded, tmp_path, monkeypatch):
    from prunelens.analysis.cache import SHIPPED_DIR, ResultStore
    from prunelens.analysis.operations import open_session
    from prunelens.analysis.training import trainable_methods

    monkeypatch.setenv("PRUNELENS_PRECISION", "auto")  # as a user runs it: checked-bf16 entries count
    session = open_session(loaded=default_loaded, store=ResultStore(tmp_path / "empty", SHIPPED_DIR))
    _, plan = plan_analysis(session, Target("default", "default"), training=True, extra_training=True)
    assert len(plan.records) > 300
    assert plan.todo == [] and plan.waiting == 0  # every entry of precompute's job is shipped
    trained = [r for r in plan.records.values() if r.task.kind == "train-run"]
    assert len(trained) == sum(1 + len(EXTRA_TRAINING.get(m, [])) for m in trainable_methods())


def test_a_training_run_is_estimated_at_its_measured_cost_per_pass(tiny_session, tiny_bert_dir, tiny_csv):
    from prunelens.analysis.analyze import TRAINING_PASS_COST
    from prunelens.analysis.training import get_trainer

    _, plan = plan_analysis(tiny_session, target_of(tiny_bert_dir, tiny_csv), ["snip"], training=True,
                            extra_training=True)
    est = estimate(plan, tiny_session, example_seconds=0.01)
    runs = [t for t in plan.todo if t.kind == "train-run"]
    [run] = [t for t in runs if t.param_dict() == get_trainer("snip").validate({})]  # the default run
    assert est.of(run) == pytest.approx(get_trainer("snip").work(run.param_dict()) * TRAINING_PASS_COST * 0.01)
    # the fidelity report's arms ship too: SN + prior and SN off over 5 seeds, exact SN once
    arms = sorted((t.param_dict()["sn"], t.param_dict()["seed"]) for t in runs)
    assert arms == [("cap", s) for s in range(5)] + [("exact", 0)] + [("off", s) for s in range(5)]
    _, user_plan = plan_analysis(tiny_session, target_of(tiny_bert_dir, tiny_csv), ["snip"], training=True)
    assert [t.param_dict()["seed"] for t in user_plan.todo if t.kind == "train-run"] == [0]  # analyze: defaults


def test_analyze_stores_the_spectral_page_so_it_opens_without_computing(tiny_session, tiny_bert_dir,
                                                                       tiny_csv, open_page, monkeypatch):
    from prunelens.analysis import spectral_store
    from prunelens.analysis.spectral import spectral_norms

    target = target_of(tiny_bert_dir, tiny_csv)
    spec = analysis_spec(target)
    assert spec.views == ("spectral",) and analysis_spec(target, ["magnitude"]).views == ()
    done = run_analysis(tiny_session, target, ["magnitude"], progress=False, views=True)
    views = [r for r in done.report.records if r.task.kind == "view"]
    assert len(views) == len(spectral_store.ANALYZED) == 9 and all(r.status == "done" for r in views)
    for part, params in spectral_store.ANALYZED:
        assert spectral_store.is_stored(tiny_session, part, params)
    stored = spectral_store.sigmas(tiny_session)
    assert stored == spectral_norms(tiny_session.loaded).to_dict("records")  # what the page computed before

    def computed(*args, **kwargs):
        raise AssertionError("the Spectral page computed instead of reading the store")

    for name in ("spectral_norms", "activation_statistics", "spectrally_normalized"):
        monkeypatch.setattr(spectral_store, name, computed)
    at = open_page("spectral")  # the page at its defaults, and the normalized model evaluated
    at.toggle(key="spec.evaluate").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    assert set(at.dataframe[-1].value["version"]) == {"plain", "normalized"}
    at.checkbox(key="spec.exact").set_value(True).run()  # exact normalization: stored too
    assert not at.exception, [e.value for e in at.exception]
    with pytest.raises(AssertionError, match="computed instead"):  # a position analyze did not store
        spectral_store.activations(tiny_session, 0.5, 64)


def test_stored_activation_statistics_round_trip_and_bad_entries_are_refused(tiny_session):
    from prunelens.analysis import spectral_store
    from prunelens.analysis.spectral import activation_statistics
    from prunelens.analysis.store_schema import result_problem

    stats = activation_statistics(tiny_session.loaded, tiny_session.data, c=1.0, limit=16)
    stored = spectral_store.activations_as_dict(stats)
    back = spectral_store.activations_from_dict(json.loads(json.dumps(stored)))
    assert back.table().equals(stats.table())
    for la, lb in zip(stats.plain, back.plain):
        assert (la.gelu.counts == lb.gelu.counts).all() and (la.gelu.edges == lb.gelu.edges).all()
    assert result_problem("activations", stored) is None
    stored["plain"][0]["gelu"]["edges"] = stored["plain"][0]["gelu"]["edges"][:-1]
    assert "edges for" in result_problem("activations", stored)
    assert "finite sigma" in result_problem("spectral-sigmas", {"rows": [{"matrix": "query", "sigma": "x"}]})


def test_the_shipped_store_holds_what_precompute_ships_for_default_embedding(tmp_path):
    """default-embedding (the un-fine-tuned sentence encoder, embedding objective) opens without
    computing: every entry of its precompute job (:data:`~prunelens.analysis.precompute.EMBEDDING_SHIPPED`)
    is in cached_results/."""
    from prunelens.analysis.cache import SHIPPED_DIR, ResultStore
    from prunelens.analysis.operations import open_session
    from prunelens.analysis.precompute import EMBEDDING_SHIPPED

    session = open_session("default-embedding", store=ResultStore(tmp_path / "empty", SHIPPED_DIR))
    assert session.objective == "embedding"
    shipped = EMBEDDING_SHIPPED
    _, plan = plan_analysis(session, Target("default-embedding", "default"), training=shipped["include_training"],
                            head_scopes=shipped["head_scopes"], curve_sparsities=shipped["curve_sparsities"])
    assert len(plan.records) > 40
    assert plan.todo == [] and plan.waiting == 0


def test_one_estimate_for_the_page_and_the_cli_that_never_grows_as_work_is_done(
        open_page, tiny_session, tiny_bert_dir, tiny_csv, tmp_path):
    # issue 30 item 3: the page said 14 s, then 7 min, the CLI 12 s in the same state
    from prunelens.analysis.analyze import timing_path
    from prunelens.dashboard.analysis_view import PLAN_KEY

    target = target_of(tiny_bert_dir, tiny_csv)
    at = open_page("model_data")
    [b for b in at.button if b.key == "analyze.plan"][0].click().run()
    page = at.session_state[PLAN_KEY][1]["seconds"]
    assert timing_path(tiny_session.store, tiny_session).is_file()  # the one measurement, kept
    cli = run_analysis(tiny_session, target, dry_run=True, progress=False).estimated_seconds
    assert abs(page - cli) <= 0.2 * cli
    seen = [cli]
    for methods in (["magnitude", "random"], ["michel"], ["pins"]):
        run_analysis(tiny_session, target, methods, progress=False)
        seen.append(run_analysis(tiny_session, target, dry_run=True, progress=False).estimated_seconds)
    assert all(later <= earlier + 1e-9 for earlier, later in zip(seen, seen[1:])), seen
    assert seen[-1] < seen[0]
    at.session_state[PLAN_KEY] = None  # the page's next estimate reads the same measurement
    at.run()
    [b for b in at.button if b.key == "analyze.plan"][0].click().run()
    assert abs(at.session_state[PLAN_KEY][1]["seconds"] - seen[-1]) <= 0.2 * seen[-1]


def test_a_small_users_model_draws_importance_and_prune_without_a_click(open_page):
    # issue 30 item 2: PINS is over EXPENSIVE_WORK on the tiny model, but takes seconds here
    from prunelens.analysis.analyze import COMPUTE_WITHOUT_CLICK_S
    from prunelens.analysis.methods import get_method
    from prunelens.dashboard.controls import EXPENSIVE_WORK

    assert get_method("pins").work(None, None, 40) > EXPENSIVE_WORK
    assert COMPUTE_WITHOUT_CLICK_S <= 180  # what a page runs unasked stays well under 3 min
    at = open_page("importance", method="pins")
    assert not at.exception and not [b for b in at.button if b.key == "imp.pins.head.compute"]
    assert any("Click a head in the heatmap" in i.value for i in at.info)  # drawn: scores exist
    at = open_page("prune", method="pins")
    assert not at.exception and not [b for b in at.button if b.key == "prune.pins.head.compute"]
    assert any(m.label == "units cut" for m in at.metric)
