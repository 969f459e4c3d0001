"""Method-specific views (dashboard/method_views/), their figure builders, and the Prune page's
first estimate, on the tiny random BERT.

The views are drawn inside ``AppTest.from_function`` scripts against a temp store that holds real
(tiny-budget) finished training runs of snip, admm and pins, so the result keys the views read
are the ones the trainers write.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from prunelens.analysis.evaluate import ESTIMATE_SIZE
from streamlit.testing.v1 import AppTest

from prunelens.dashboard import figures

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
TINY_RUNS = {
    "snip": {"steps": 2, "batch_size": 4},
    "admm": {"iterations": 2, "steps": 1, "finetune_steps": 2, "batch_size": 4},
    "pins": {"steps": 10, "batch_size": 4, "prune_every": 2, "target_sparsity": 0.5},
}


@pytest.fixture(scope="module")
def run_store(tmp_path_factory, tiny_loaded, tiny_csv):
    """A store with one finished tiny training run of snip, admm and pins."""
    import torch

    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.operations import open_session
    from prunelens.analysis.training import train_command

    folder = tmp_path_factory.mktemp("runs_store")
    session = open_session(data=str(tiny_csv), loaded=tiny_loaded,
                           store=ResultStore(folder, shipped_dir=None))
    torch.manual_seed(0)
    runs = {name: train_command(session, name, params) for name, params in TINY_RUNS.items()}
    return folder, runs


def _view_script(model: str, data: str, store_dir: str, which: str, method_name: str, unit: str,
                 params: dict) -> None:
    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.methods import get_method
    from prunelens.analysis.operations import compute_scores, open_session
    from prunelens.dashboard import method_views

    session = open_session(model, data, store=ResultStore(store_dir, shipped_dir=None))
    method = get_method(method_name)
    params = method.validate(params)
    if which == "about":
        scores = compute_scores(session, method_name, unit, params).scores.tolist()
        method_views.render_about(session, method, unit, params, scores, key="t")
    else:
        for i, run in enumerate(method_views.runs_of(session, method_name)):
            method_views.render_run(session, run, key=f"t{i}")


def _view(tiny_bert_dir, tiny_csv, store_dir, which, method, unit="head", params=None) -> AppTest:
    at = AppTest.from_function(_view_script, default_timeout=60,
                               args=(str(tiny_bert_dir), str(tiny_csv), str(store_dir), which, method,
                                     unit, params or {}))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _charts(at: AppTest) -> list[dict]:
    import json

    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_snip_about_abs_vs_rel_threshold_and_training_comparison(tiny_bert_dir, tiny_csv, run_store):
    store_dir, runs = run_store
    at = _view(tiny_bert_dir, tiny_csv, store_dir, "about", "snip")
    titles = [c["layout"]["title"]["text"] for c in _charts(at)]
    assert "snip head norms" in titles  # absolute vs relative, and the histogram
    absrel = next(c for c in _charts(at) if c["layout"]["title"]["text"] == "snip head norms"
                  and c["data"][0]["type"] == "heatmap")
    assert [a["text"] for a in absrel["layout"]["annotations"][:2]] == ["absolute ||F(x)||",
                                                                        "relative ||F(x)||/||x||"]
    assert np.allclose(absrel["data"][0]["z"], runs["snip"]["extras"]["scores_without_training"]["head"])
    hist = next(c for c in _charts(at) if c["data"][0]["type"] == "histogram")
    threshold = at.slider(key="t.snip.threshold").value
    assert hist["layout"]["shapes"][0]["x0"] == pytest.approx(threshold)
    # moving the threshold changes the share of units below it
    caption = next(c.value for c in at.caption if "would be pruned" in c.value)
    at.slider(key="t.snip.threshold").set_value(at.slider(key="t.snip.threshold").min).run()
    assert not at.exception
    assert "0% of the 8 head units" in next(c.value for c in at.caption if "would be pruned" in c.value)
    assert caption != next(c.value for c in at.caption if "would be pruned" in c.value) or "0% of" in caption
    # the finished SN training run: with vs without, heatmaps and block bars
    assert "Head function norms" in [c["layout"]["title"]["text"] for c in _charts(at)]
    frames = [d.value for d in at.dataframe]  # (the first is the method's deviation table)
    evaluation = next(f for f in frames if "model" in f.columns)
    assert list(evaluation["model"]) == ["without SN training (as loaded)",
                                         "after SN + identity-prior training",
                                         "λ = 0 control (same steps and SN, no identity prior)"]
    assert evaluation["accuracy"][1] == pytest.approx(runs["snip"]["variants"]["trained"]["accuracy"])
    assert evaluation["accuracy"][2] == pytest.approx(runs["snip"]["variants"]["control"]["accuracy"])
    pruned = next(f for f in frames if "sparsity" in f.columns)  # each model pruned by its own norms
    assert list(pruned.columns) == ["unit", "sparsity", "SN + identity prior", "untrained (as loaded)",
                                    "λ = 0 control"]
    assert list(pruned["sparsity"]) == ["30%", "50%", "50%", "50%"]
    assert pruned["λ = 0 control"][1] == pytest.approx(round(runs["snip"]["extras"]["pruned"][1]["control"]["accuracy"], 4))


def test_admm_about_pattern_shares_and_pattern_accuracy_button(tiny_bert_dir, tiny_csv, run_store):
    store_dir, runs = run_store
    at = _view(tiny_bert_dir, tiny_csv, store_dir, "about", "admm")
    charts = _charts(at)
    pattern = next(c for c in charts if c["layout"]["title"]["text"].startswith("layer 0 query: 2:4"))
    mask = np.array(pattern["data"][0]["z"])
    assert mask.shape == (16, 16)  # the tiny BERT's query matrix is 16 × 16
    assert (mask.reshape(16, 4, 4).sum(-1) == 2).all()  # exactly 2 of every 4 kept
    shares = next(c for c in charts if c["layout"]["title"]["text"].startswith("share of each head"))
    assert np.array(shares["data"][0]["z"]).shape == (2, 4)
    assert not at.dataframe or "pattern" not in at.dataframe[0].value.columns  # not computed yet
    at.button(key="t.admm.acc").click().run()
    assert not at.exception
    table = next(d.value for d in at.dataframe if "pattern" in d.value.columns)
    assert list(table["pattern"]) == ["dense", "1:4", "2:4", "3:4", "2:8", "4:8"]
    at.run()  # now from the store: no button needed
    assert any("pattern" in d.value.columns for d in at.dataframe)


def test_admm_run_view_evaluation_history_and_shares(tiny_bert_dir, tiny_csv, run_store):
    store_dir, runs = run_store
    at = _view(tiny_bert_dir, tiny_csv, store_dir, "run", "admm")
    run = runs["admm"]
    table = at.dataframe[0].value
    order = ["dense", "oneshot", "oneshot_finetuned", "admm_projected", "admm"]
    assert list(table["model"]) == [run["labels"][k] for k in order]
    assert table["accuracy"].tolist() == pytest.approx([run["variants"][k]["accuracy"] for k in order])
    charts = {c["layout"]["title"]["text"]: c for c in _charts(at)}
    history = charts["ADMM iterations"]
    assert [a["text"] for a in history["layout"]["annotations"]] == ["residual", "loss", "rho"]
    assert history["data"][0]["y"] == pytest.approx([h["residual"] for h in run["histories"]["ADMM"]])
    shares = charts["Per-head share of surviving weight norm (one colour scale)"]
    assert np.allclose(shares["data"][1]["z"], run["extras"]["shares"]["head"])
    assert np.allclose(shares["data"][0]["z"], run["extras"]["shares_oneshot"]["head"])


def test_pins_run_view_with_without_self_reg_and_baseline(tiny_bert_dir, tiny_csv, run_store):
    store_dir, runs = run_store
    at = _view(tiny_bert_dir, tiny_csv, store_dir, "run", "pins")
    run = runs["pins"]
    table = at.dataframe[0].value
    assert list(table["model"]) == ["unpruned", "PINS with self-regularization",
                                    "PINS without self-regularization",
                                    "magnitude, gradual (same schedule and budget)"]  # the default baseline
    assert table["accuracy"][2] == pytest.approx(run["variants"]["pins_no_self_reg"]["accuracy"])
    assert table["weight sparsity"][1] == pytest.approx(0.5, abs=1e-3)
    charts = {c["layout"]["title"]["text"]: c for c in _charts(at)}
    sparsity = charts["Realized sparsity per layer and matrix (PINS + self-reg)"]
    assert np.array(sparsity["data"][0]["z"]).shape == (2, 6)
    assert {t["name"] for t in charts["Training history"]["data"]} == {
        "PINS with self-regularization", "PINS without self-regularization", "magnitude (gradual)"}


def test_smp_about_shows_top_half_per_layer(tiny_bert_dir, tiny_csv, tmp_path):
    at = _view(tiny_bert_dir, tiny_csv, tmp_path, "about", "smp",
               params={"samples": 16, "batch_size": 8})
    table = at.dataframe[-1].value
    assert list(table["kept"]) == [2, 2] and list(table["of"]) == [4, 4]


def test_generic_view_for_an_unregistered_method(tiny_bert_dir, tiny_csv, tmp_path):
    from prunelens.dashboard import method_views

    assert "magnitude" not in method_views.VIEWS
    at = _view(tiny_bert_dir, tiny_csv, tmp_path, "about", "magnitude")
    assert any("Units: head" in c.value for c in at.caption)
    assert set(method_views.registered()) >= {"snip", "smp", "admm", "admm-quant", "pins", "magnitude"}


def test_run_time_estimate_scales_with_the_budget(tiny_session):
    from prunelens.dashboard import method_views

    small = method_views.run_time_estimate(tiny_session, "pins", {
        "steps": 10, "batch_size": 4, "compare_self_reg": False, "baseline": "none"})
    big = method_views.run_time_estimate(tiny_session, "pins", {
        "steps": 10, "batch_size": 4, "compare_self_reg": True, "baseline": "gradual"})
    assert small["train_examples"] == round(40 * 1.33) and big["train_examples"] == round(40 * 3.33)
    assert big["seconds"] > small["seconds"] > 0
    admm = method_views.run_time_estimate(tiny_session, "admm", {
        "iterations": 6, "steps": 10, "finetune_steps": 40, "batch_size": 16, "finetune_baseline": False})
    assert admm["train_examples"] == (60 + 40) * 16


# ----------------------------------------------------------------------------------------------
# figure builders


def test_paired_heatmaps_and_grouped_bars():
    fig = figures.paired_heatmaps(np.ones((2, 3)), np.zeros((2, 3)), ("a", "b"), "t", shared_scale=True,
                                  zmin=0, zmax=1)
    assert [type(t) for t in fig.data] == [go.Heatmap, go.Heatmap]
    assert np.array(fig.data[1].z).shape == (2, 3) and fig.data[0].coloraxis == "coloraxis"
    assert [a.text for a in fig.layout.annotations] == ["a", "b"]
    bars = figures.grouped_bars({"x": [1, 2], "y": [3, 4]}, [0, 1], "g", "norm", "layer")
    assert [t.name for t in bars.data] == ["x", "y"] and bars.layout.barmode == "group"
    assert list(bars.data[1].y) == [3.0, 4.0]


def test_pattern_heatmap_draws_block_boundaries():
    mask = np.tile([1, 1, 0, 0], (3, 2))
    fig = figures.pattern_heatmap(mask, mask * 0.5, 2, 4, row_start=0, col_start=4)
    assert np.array(fig.data[0].z).shape == (3, 8)
    assert list(fig.data[0].x) == list(range(4, 12))
    assert [s.x0 for s in fig.layout.shapes] == [7.5]  # one boundary between the two blocks
    assert fig.layout.title.text == "2:4 pattern (green = kept)"


def test_evaluation_bars_history_panels_and_sparsity_heatmap():
    rows = [{"label": "a", "accuracy": 0.5, "accuracy_se": 0.1, "loss": 1.0},
            {"label": "b", "accuracy": 0.7, "accuracy_se": 0.05, "loss": 0.8}]
    fig = figures.evaluation_bars(rows, ("accuracy", "loss"))
    assert list(fig.data[0].x) == ["a", "b"] and list(fig.data[0].error_y.array) == [0.1, 0.05]
    assert list(fig.data[1].error_y.array) == [0.0, 0.0]
    hist = figures.history_panels({"r1": [{"step": 1, "loss": 2.0, "rho": 0.1}, {"step": 2, "loss": 1.0}]},
                                  ("loss", "rho", "absent"))
    assert [a.text for a in hist.layout.annotations] == ["loss", "rho"]
    assert list(hist.data[0].y) == [2.0, 1.0] and list(hist.data[1].x) == [1]
    heat = figures.sparsity_heatmap([[0.5, 0.25]], ["query", "key"])
    assert heat.data[0].text[0] == ("50%", "25%") or list(heat.data[0].text[0]) == ["50%", "25%"]
    chart = figures.history_chart([{"iteration": 1, "loss": 1.0}, {"iteration": 2, "loss": 0.5}])
    assert list(chart.data[0].x) == [1, 2] and chart.layout.xaxis.title.text == "iteration"


# ----------------------------------------------------------------------------------------------
# the Prune page's first estimate


@pytest.fixture()
def big_csv(tmp_path):
    from tests.tiny import write_tiny_csv

    return write_tiny_csv(tmp_path / "big.csv", n=200)


def _prune_page(tiny_bert_dir, data, tmp_path, monkeypatch, **query) -> AppTest:
    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update({"model": str(tiny_bert_dir), "data": str(data), "method": "magnitude",
                            **query})
    at.session_state["prunelens.page"] = "prune"
    return at


def _estimate_sizes_seen(monkeypatch) -> list[int]:
    """The sample size of every ``Evaluator.estimate`` call from now on, in order."""
    from prunelens.analysis.evaluate import Evaluator

    sizes = []
    original = Evaluator.estimate

    def spy(self, masks=None, size=None, seed=0):
        out = original(self, masks, size, seed)
        sizes.append(out.pruned.n)
        return out

    monkeypatch.setattr(Evaluator, "estimate", spy)
    return sizes


def test_prune_page_shows_the_estimate_then_full_numbers(tiny_bert_dir, big_csv, tmp_path, monkeypatch):
    sizes = _estimate_sizes_seen(monkeypatch)
    at = _prune_page(tiny_bert_dir, big_csv, tmp_path, monkeypatch, sparsity="0.5")
    at.run()
    assert not at.exception and not at.error
    assert sizes == [ESTIMATE_SIZE]  # the estimate ran on the fixed subset first
    labels = [m.label for m in at.metric]
    assert "accuracy" in labels and not any(label.startswith("≈") for label in labels)
    assert any(c.value.startswith("Full data: 200 examples.") for c in at.caption)
    at.slider(key="prune.sparsity").set_value(0.25).run()
    assert sizes == [ESTIMATE_SIZE, ESTIMATE_SIZE]
    at.slider(key="prune.sparsity").set_value(0.5).run()
    assert sizes == [ESTIMATE_SIZE, ESTIMATE_SIZE]  # the full result is memoized: no estimate again
    assert any(c.value.startswith("Full data: 200 examples.") for c in at.caption)


def test_prune_page_shows_every_anytime_stage_then_the_full_numbers(tiny_bert_dir, big_csv, tmp_path,
                                                                    monkeypatch):
    from prunelens.analysis.evaluate import Evaluator

    sizes = _estimate_sizes_seen(monkeypatch)
    monkeypatch.setattr(Evaluator, "estimate_sizes", property(lambda self: [12, 48]))
    at = _prune_page(tiny_bert_dir, big_csv, tmp_path, monkeypatch, sparsity="0.5")
    at.run()
    assert not at.exception and not at.error
    assert sizes == [12, 48]  # the growing subsets, in order, before the full data
    assert any(c.value.startswith("Full data: 200 examples.") for c in at.caption)


def test_prune_page_estimate_stays_labelled_if_the_full_run_fails(tiny_bert_dir, big_csv, tmp_path,
                                                                  monkeypatch):
    from prunelens.analysis.errors import ParamError
    from prunelens.dashboard import results

    def fail(*args, **kwargs):
        raise ParamError("full evaluation interrupted")

    monkeypatch.setattr(results, "prune_result", fail)
    at = _prune_page(tiny_bert_dir, big_csv, tmp_path, monkeypatch, sparsity="0.35")
    at.run()
    assert not at.exception
    assert [e.value for e in at.error] == ["full evaluation interrupted"]
    labels = [m.label for m in at.metric]
    assert "≈ accuracy" in labels and "accuracy" not in labels
    assert any(f"**Estimate on {ESTIMATE_SIZE} sentences**" in m.value for m in at.markdown)
    assert any(f"First estimate on {ESTIMATE_SIZE} sentences (a fixed random subset of 200)" in c.value
               for c in at.caption)


def test_prune_page_small_data_needs_no_estimate(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch):
    at = _prune_page(tiny_bert_dir, tiny_csv, tmp_path, monkeypatch, sparsity="0.5")
    at.run()
    assert not at.exception
    assert any(c.value.startswith("Full data: 40 examples.") for c in at.caption)
    assert not any("estimate" in m.label for m in at.metric)


def test_prune_estimate_matches_the_evaluator_subset(tiny_loaded, big_csv, store):
    from prunelens.analysis.gates import Masks
    from prunelens.analysis.operations import compute_scores, mask_for, open_session, prune_estimate

    session = open_session(data=str(big_csv), loaded=tiny_loaded, store=store)
    est = prune_estimate(session, "magnitude", sparsity=0.5)
    mask = mask_for(compute_scores(session, "magnitude").scores, 0.5)
    direct = session.evaluator.estimate(Masks.for_unit("head", mask))
    assert est["estimate"] == {"n": ESTIMATE_SIZE, "of": 200}
    assert est["pruned"]["accuracy"] == pytest.approx(direct.pruned.accuracy)
    assert est["delta"]["loss_se"] == pytest.approx(direct.delta["loss_se"], rel=1e-5)
    assert est["sparsity"] == 0.5
    from prunelens.analysis.operations import prune

    prune(session, "magnitude", sparsity=0.5)  # the full answer for this mask is now stored
    assert prune_estimate(session, "magnitude", sparsity=0.5) is None


def test_capture_hooks_hold_the_model_lock(tiny_loaded):
    """snip's capture hooks on the shared model exclude other threads' gated forwards (the
    dashboard crashed when a page evaluated the model while snip measured it)."""
    import threading

    from prunelens.analysis.hooks import model_lock
    from prunelens.analysis.spectral import captured

    model = tiny_loaded.model

    def try_lock(out: list) -> None:
        lock = model_lock(model)
        got = lock.acquire(timeout=0.2)
        out.append(got)
        if got:
            lock.release()

    with captured(model):
        during: list = []
        thread = threading.Thread(target=try_lock, args=(during,))
        thread.start()
        thread.join()
    after: list = []
    thread = threading.Thread(target=try_lock, args=(after,))
    thread.start()
    thread.join()
    assert during == [False] and after == [True]
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_run_headlines_name_the_comparison(run_store):
    from prunelens.dashboard import method_views

    _, runs = run_store
    admm = runs["admm"]["variants"]
    assert method_views.headline(runs["admm"]) == (
        f"2:4: ADMM {admm['admm']['accuracy']:.3f}, one-shot "
        f"{admm['oneshot']['accuracy']:.3f}, dense {admm['dense']['accuracy']:.3f}")
    assert method_views.headline(runs["pins"]).startswith("PINS+SR ")
    assert ", magnitude " in method_views.headline(runs["pins"])
    half = runs["snip"]["extras"]["pruned"][1]
    assert method_views.headline(runs["snip"]).endswith(
        f"(without: {runs['snip']['variants']['untrained']['accuracy']:.3f}); 50% heads pruned: "
        f"{half['trained']['accuracy']:.3f} vs λ=0 {half['control']['accuracy']:.3f}, "
        f"untrained {half['untrained']['accuracy']:.3f}")
    assert method_views.headline({"method": "new", "evaluation": {"accuracy": 0.5}}) == "accuracy 0.500"
    shaped = {"method": "new", "variants": {"smp_pruner": {"accuracy": 0.755}, "random": {"accuracy": 0.717}}}
    assert method_views.headline(shaped) == "smp pruner 0.755, random 0.717"  # a RunResult-shaped run


@pytest.mark.parametrize("name", ["pins", "platon", "michel"])
def test_the_method_page_lists_what_the_method_really_computes(name, tiny_bert_dir, tiny_csv, tmp_path):
    """The deviations a method declares are the table its page shows (docs/FIDELITY.md too)."""
    from prunelens.analysis.methods import get_method

    method = get_method(name)
    at = _view(tiny_bert_dir, tiny_csv, tmp_path, "about", name, params={"batches": 1, "batch_size": 4}
               if name != "michel" else {"examples": 8})
    tables = [d.value for d in at.dataframe if "prunelens" in d.value.columns]
    assert tables, "no deviation table on the page"
    assert list(tables[0]["aspect"]) == [d.aspect for d in method.deviations]
    assert list(tables[0]["prunelens"]) == [d.prunelens for d in method.deviations]


# ----------------------------------------------------------------------------------------------
# old stored runs: read through normalise, they display exactly as their RunResult shape does


def _one_run_script(model: str, data: str, store_dir: str, run_file: str) -> None:
    import json

    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.operations import open_session
    from prunelens.dashboard import method_views

    session = open_session(model, data, store=ResultStore(store_dir, shipped_dir=None))
    with open(run_file, encoding="utf-8") as f:
        method_views.render_run(session, json.load(f), key="t")


def _shown(tiny_bert_dir, tiny_csv, tmp_path, run: dict, name: str) -> dict:
    """Everything a run's view draws but its JSON download (the stored run itself), the run
    written as the store writes it (keys sorted)."""
    import json

    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(run, sort_keys=True), encoding="utf-8")  # as the store keeps it
    at = AppTest.from_function(_one_run_script, default_timeout=60,
                               args=(str(tiny_bert_dir), str(tiny_csv), str(tmp_path / "store"), str(path)))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return {"tables": [d.value.to_dict("list") for d in at.dataframe], "charts": _charts(at),
            "text": [(e.type, e.value) for e in (*at.caption, *at.markdown)]}


@pytest.mark.parametrize("method", ["admm", "admm-quant", "pins", "platon", "snip"])
def test_a_shipped_old_run_displays_as_its_run_result_shape(method, tiny_bert_dir, tiny_csv, tmp_path):
    """The shipped store holds runs of the 0.1 trainers' own shapes; their views (headline too)
    read them through normalise exactly as they read the shape the trainers return now."""
    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.run_result import BOOKKEEPING, shaped
    from prunelens.dashboard import method_views

    old = [e["result"] for e in ResultStore(tmp_path / "none").entries("train-run")
           if e["result"].get("method") == method and "variants" not in e["result"]]
    if not old:
        pytest.skip(f"no {method} run of the old shape in the shipped store")
    run = old[0]
    new = {**{k: v for k, v in run.items() if k in BOOKKEEPING and k != "notes"}, **shaped(run)}
    assert method_views.headline(new) == method_views.headline(run) != ""
    shown = _shown(tiny_bert_dir, tiny_csv, tmp_path, run, "old")
    assert shown["tables"] and shown["charts"]
    assert _shown(tiny_bert_dir, tiny_csv, tmp_path, new, "new") == shown
