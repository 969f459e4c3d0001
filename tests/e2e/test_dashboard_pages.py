"""Every dashboard page under Streamlit's AppTest on the tiny random BERT.

The app is opened through ``dashboard/app.py`` (navigation + sidebar); the page to open is set
with ``st.session_state["prunelens.page"]`` and the model/data with query parameters, exactly
as a shared link would.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def test_model_data_page(open_page):
    at = open_page("model_data")
    assert at.title[0].value == "Model & data"
    assert not at.error
    assert "2 layers × 4 heads" in at.sidebar.success[0].value
    assert float(_metric(at, "accuracy")) >= 0.0
    assert at.sidebar.radio(key="sb.model_kind").value == "folder"
    assert at.sidebar.radio(key="sb.data_kind").value == "file"
    units = at.dataframe[0].value
    assert list(units["unit"]) == ["head", "attention", "ffn", "neuron"]  # layout.UNITS, the one order
    assert list(units["count"]) == [8, 2, 2, 48]


def test_bad_model_path_is_a_message(open_page, tmp_path):
    at = open_page("model_data", model=str(tmp_path / "no_such_model"))
    assert any("not found" in e.value for e in at.sidebar.error)
    assert any("Nothing loaded" in e.value for e in at.error)


def test_bad_upload_is_a_message(open_page):
    at = open_page("model_data")
    at.sidebar.radio(key="sb.data_kind").set_value("upload").run()
    at.file_uploader(key="sb.upload").set_value(("bad.csv", b"foo,bar\n1,2\n", "text/csv")).run()
    assert not at.exception
    assert any("needs columns 'text' and 'label'" in e.value for e in at.sidebar.error)


def test_good_upload_loads(open_page, tiny_csv):
    at = open_page("model_data")
    at.sidebar.radio(key="sb.data_kind").set_value("upload").run()
    at.file_uploader(key="sb.upload").set_value(("mine.csv", Path(tiny_csv).read_bytes(), "text/csv")).run()
    assert not at.exception and not at.error
    assert "mine.csv" in at.sidebar.success[0].value


def test_importance_page_controls_and_head_details(open_page):
    from prunelens.analysis.methods import all_methods

    at = open_page("importance", method="random", **{"p.random.seed": "3"})
    assert at.selectbox(key="imp.method").value == "random"
    assert at.number_input(key="imp.random.seed").value == 3  # restored from the URL
    assert at.query_params["p.random.seed"] in (["3"], "3")
    at.selectbox(key="imp.head").set_value(2).run()
    assert not at.exception
    table = at.dataframe[-1].value
    head_methods = [m for m in all_methods().values() if "head" in m.units]
    assert len(table) == len(head_methods)
    assert set(table["method"]) == {m.title or m.name for m in head_methods}


def test_importance_controls_follow_declarations(open_page):
    at = open_page("importance", method="michel")
    assert at.checkbox(key="imp.michel.normalize").value is True
    at.selectbox(key="imp.unit.michel").set_value("attention").run()
    assert not at.exception


def test_prune_slider_changes_numbers(open_page):
    at = open_page("prune", method="magnitude", sparsity="0.0")
    assert at.slider(key="prune.sparsity").value == 0.0
    assert _metric(at, "units cut") == "0.0%"
    loss_before = _metric(at, "loss")
    at.slider(key="prune.sparsity").set_value(0.75).run()
    assert not at.exception
    assert _metric(at, "units cut") == "75.0%"
    assert _metric(at, "params cut") != "0.0%"
    assert _metric(at, "loss") != loss_before
    assert at.query_params["sparsity"] in ("0.75", ["0.75"])


def test_prune_physical_and_threshold(open_page):
    at = open_page("prune", method="magnitude", sparsity="0.5", physical="true")
    timing = at.dataframe[0].value
    assert list(timing["model"]) == ["masked (gates on the full model)", "physically pruned (smaller copy)"]
    assert timing["accuracy"][0] == pytest.approx(timing["accuracy"][1])
    at.radio(key="prune.mode").set_value("threshold").run()
    assert not at.exception
    assert at.slider(key="prune.threshold") is not None


def test_compare_page(open_page):
    at = open_page("compare", methods="magnitude,random,michel")
    assert at.multiselect(key="cmp.methods").value == ["magnitude", "random", "michel"]
    jac_before = at.dataframe[-1].value["jaccard"].tolist()
    at.slider(key="cmp.sparsity").set_value(0.25).run()
    assert not at.exception
    assert at.dataframe[-1].value["jaccard"].tolist() != jac_before or jac_before == [1.0, 1.0, 1.0]
    at.button(key="cmp.draw").click().run()
    assert not at.exception and not at.error


def test_spectral_page(open_page):
    at = open_page("spectral")
    assert at.title[0].value == "Spectral"
    assert not at.error
    stats = at.dataframe[-1].value
    assert set(stats["version"]) == {"plain", "normalized"}
    before = stats["mean"].tolist()
    at.number_input(key="spec.cap").set_value(0.5).run()
    assert not at.exception
    assert at.dataframe[-1].value["mean"].tolist() != before


def test_training_page_runs_in_background(open_page, monkeypatch):
    from prunelens.analysis.methods import all_methods
    from prunelens.analysis.methods.base import Method, Param
    from prunelens.analysis.methods.base import Trainer
    from prunelens.dashboard import jobs

    def run(session, params, progress):
        for step in range(params["steps"]):
            progress((step + 1) / params["steps"], f"step {step}")
        return {"history": [{"step": s, "loss": 1.0 / (s + 1)} for s in range(params["steps"])],
                "evaluation": {"accuracy": 0.5}}

    fake = Method(name="faketrain", title="Fake trainer", units=("head",),
                  trainer=Trainer(params=(Param("steps", "int", 3, "steps", 1, 10),), run=run))
    monkeypatch.setitem(all_methods(), "faketrain", fake)
    at = open_page("training", method="faketrain")
    assert at.selectbox(key="train.method").value == "faketrain"
    at.slider(key="train.faketrain.steps").set_value(4).run()
    at.button(key="train.start").click().run()
    assert not at.exception
    job = jobs.BOARD.jobs()[0]
    jobs.BOARD.wait(job.id, timeout=30)
    assert job.status == jobs.DONE and job.result["params"] == {"steps": 4}
    at.run()
    assert not at.exception
    listing = at.dataframe[0].value
    assert "faketrain" in set(listing["method"])


def test_a_new_trainer_gets_a_real_view_of_its_run_result(open_page, monkeypatch):
    """A trainer that returns the RunResult shape (variants, histories, scores) gets a table of
    its variants, their bars, its histories and its head scores: no raw JSON view (issue 16)."""
    from prunelens.analysis.methods import all_methods
    from prunelens.analysis.methods.base import Method, Param, Trainer
    from prunelens.dashboard import jobs

    def run(session, params, progress):
        inv = session.loaded.inventory
        return {"variants": {"dense": {"accuracy": 0.8, "loss": 0.4},
                             "pruned": {"accuracy": 0.7, "loss": 0.6, "accuracy_se": 0.02}},
                "labels": {"pruned": "pruned at 50 %"},
                "histories": {"pruned": [{"step": s + 1, "loss": 1.0 / (s + 1)} for s in range(3)]},
                "scores": {"head": [[float(h) for h in range(inv.heads)]] * inv.layers}}

    fake = Method(name="newtrain", title="A new trainer", units=("head",),
                  trainer=Trainer(params=(Param("steps", "int", 3, "steps", 1, 10),), run=run))
    monkeypatch.setitem(all_methods(), "newtrain", fake)
    at = open_page("training", method="newtrain")
    at.button(key="train.start").click().run()
    job = jobs.BOARD.jobs()[0]
    jobs.BOARD.wait(job.id, timeout=30)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    tables = [d.value for d in at.dataframe if "variant" in d.value.columns]
    assert tables and list(tables[0]["variant"]) == ["dense", "pruned at 50 %"]
    assert list(tables[0]["accuracy"]) == [0.8, 0.7]
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) >= 3  # variant bars, history, head scores


def test_limit_from_url_restores_a_subset(open_page):
    at = open_page("model_data", limit="16")
    assert at.sidebar.number_input(key="sb.limit").value == 16
    assert "16 examples" in at.sidebar.success[0].value
    assert at.query_params["limit"] in ("16", ["16"])


def test_importance_about_this_method_and_attention_button(open_page):
    at = open_page("importance", method="admm", about="true")
    assert at.expander[-1].label.startswith("About this method: ADMM")
    assert any(c.value.startswith("Paper: Wang") for c in at.caption)
    assert at.selectbox(key="imp.about.admm.matrix").value == "query"  # the pattern view's controls
    at.selectbox(key="imp.head").set_value(2).run()
    assert not at.exception
    at.button(key="imp.to_attention").click().run()
    assert not at.exception
    assert at.title[0].value == "Attention"
    assert at.session_state["att.head"] == 2 and at.session_state["att.layer"] == 0


def test_training_page_shows_a_run_time_estimate(open_page):
    at = open_page("training", method="admm")
    estimate = next(i.value for i in at.info if "Estimated run time" in i.value)
    # ADMM's 100 steps x 16 and the equal-budget one-shot baseline's 100 x 16
    assert "on 2 CPU cores" in estimate and "3,200 training passes" in estimate


def test_importance_on_the_default_reads_shipped_scores_without_a_click(open_page, monkeypatch):
    """On the default model and data with an empty user store, expensive scores that ship
    (ablation's under the checked-bf16 key among them) are shown at once, with no Compute button."""
    monkeypatch.setenv("PRUNELENS_PRECISION", "auto")  # a user's default: checked-bf16 answers are read
    for method, unit in (("ablation", "head"), ("ablation", "ffn"), ("smp-pruner", "head"), ("pins", "head")):
        at = open_page("importance", model="default", data="default", method=method, unit=unit)
        assert [b.label for b in at.button if b.label.startswith("Compute")] == [], (method, unit)
        assert not [i.value for i in at.info if "not in the store yet" in i.value], (method, unit)


def test_the_demo_path_runs_start_to_end_on_the_default_without_a_click(open_page, monkeypatch):
    """Issue 30's done-when: every step of the guided demo opens on the default model and data
    (an empty user store, as a class's fresh install) with its answer drawn: no Compute or Draw
    button, nothing waiting for a click, and a link on to the next step."""
    from prunelens.dashboard.demo import STEPS

    monkeypatch.setenv("PRUNELENS_PRECISION", "auto")  # a user's default: checked-bf16 answers are read
    pages = ("model_data", "importance", "prune", "compare", "spectral", "attention")
    assert len(pages) == len(STEPS)
    for k, (page, step) in enumerate(zip(pages, STEPS)):
        at = open_page(page, model="default", data="default", demo="1")
        assert not at.exception and not at.error, (page, [e.value for e in at.error])
        texts = " ".join(m.value for m in [*at.markdown, *at.info])
        assert f"Guided demo · step {k + 1} of {len(STEPS)}: {step.title}." in texts, page
        waiting = [b.label for b in at.button if b.label.startswith(("Compute", "Draw"))]
        assert waiting == [] and "starts only when you click" not in texts, (page, waiting)
        links = [e.proto.label for e in at.get("page_link")]
        if k + 1 < len(STEPS):
            assert f"Next: {STEPS[k + 1].title}" in links, (page, links)
