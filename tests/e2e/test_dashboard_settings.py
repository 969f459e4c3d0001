"""No silent wrong settings (issue 18, items 1, 3, 4, 5, 9): per-method URL keys, widgets that show
their declared defaults, training-run links by store key, a stale evaluation that can be stopped,
and masked vs physically pruned timed the same way. (Item 2, widgets reset on a method switch,
is tests/e2e/test_browser_widgets.py: AppTest keeps widget state where a browser does not.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from prunelens.analysis.methods import all_methods

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")


def _widget(at: AppTest, key: str):
    for kind in ("slider", "number_input", "checkbox", "selectbox"):
        for w in getattr(at, kind):
            if w.key == key:
                return w
    raise AssertionError(f"no widget {key}")


def _query(at: AppTest) -> dict:
    return {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}


# item 1 -----------------------------------------------------------------------------------------

def test_a_methods_settings_never_reach_another_method(open_page):
    at = open_page("importance", method="smp")
    assert _widget(at, "imp.smp.batch_size").value == 32 and _widget(at, "imp.smp.batches").value == 1
    at.selectbox(key="imp.method").set_value("pins").run()
    assert not at.exception
    pins = {p.name: p.default for p in all_methods()["pins"].params}
    for name in ("batches", "batch_size", "seed"):  # names SMP also has: PINS' own defaults
        assert _widget(at, f"imp.pins.{name}").value == pins[name], name
    query = _query(at)
    assert query["p.pins.batches"] == "8" and query["p.pins.batch_size"] == "16"
    assert not [k for k in query if k.startswith("p.") and not k.startswith("p.pins.")]


def test_a_link_with_another_methods_keys_is_ignored(open_page):
    at = open_page("importance", method="pins",
               **{"p.smp.batch_size": "64", "p.batch_size": "64", "p.pins.batches": "3"})
    assert _widget(at, "imp.pins.batch_size").value == 16
    assert _widget(at, "imp.pins.batches").value == 3


# item 3 -----------------------------------------------------------------------------------------

def _declared():
    for method in all_methods().values():
        for param in method.params:
            yield f"{method.name}.{param.name}", param
        for param in (method.trainer.params if method.trainer else ()):
            yield f"{method.name}.train.{param.name}", param


@pytest.mark.parametrize("name, param", [pytest.param(n, p, id=n) for n, p in _declared()
                                         if p.kind == "float"])
def test_every_float_widget_shows_its_default_and_steps_finely(name, param):
    from prunelens.dashboard.controls import widget_spec

    spec = widget_spec(param)
    kw = spec.kwargs
    shown = float(kw["format"] % param.default)
    assert shown == pytest.approx(param.default, rel=1e-9, abs=1e-300), (name, kw["format"])
    if spec.kind == "slider":  # the default is a point of the slider's grid
        grid = (param.default - kw["min_value"]) / kw["step"]
        assert abs(grid - round(grid)) < 1e-6, (name, kw["step"])
    if param.default:
        assert kw["step"] <= 0.1 * abs(param.default) + 1e-12, (name, kw["step"])


def test_small_values_are_declared_log_scale():
    from prunelens.analysis.methods import get_method

    pins_train = {p.name: p for p in get_method("pins").trainer.params}
    admm_train = {p.name: p for p in get_method("admm").trainer.params}
    assert pins_train["eta"].log and admm_train["decay"].log
    assert pins_train["temperature"].step == 0.1
    assert get_method("pins").describe()["params"][2]["scale"] == "log"  # eta, in `methods`


def test_training_page_shows_pins_eta_and_temperature_exactly(open_page):
    at = open_page("training", method="pins")
    eta, temperature = _widget(at, "train.pins.eta"), _widget(at, "train.pins.temperature")
    assert eta.value == pytest.approx(1e-4) and eta.proto.format == "%g"
    assert temperature.value == pytest.approx(2.0)


# item 4 -----------------------------------------------------------------------------------------

def test_training_run_links_name_the_run_not_its_position(tiny_loaded, tiny_csv, tmp_path, open_page):
    from prunelens.analysis.cache import ResultStore
    from prunelens.analysis.operations import open_session
    from prunelens.analysis.training import RUN_ID_LENGTH, finished_runs, train_command

    store = ResultStore(tmp_path / "store", shipped_dir=None)
    session = open_session(data=str(tiny_csv), loaded=tiny_loaded, store=store)
    short = {"iterations": 1, "steps": 1, "finetune_steps": 1, "batch_size": 4}
    for seed in (0, 1):
        train_command(session, "admm", {**short, "seed": seed})
    runs = finished_runs(store)
    assert all(len(r["run_id"]) == RUN_ID_LENGTH for r in runs)
    chosen = next(r for r in runs if r["params"]["seed"] == 1)
    at = open_page("training", run=chosen["run_id"])
    assert at.selectbox(key="train.run").value == chosen["run_id"]
    listing = at.dataframe[0].value
    settings = dict(zip(listing["run"], listing["setting"]))
    assert set(settings[chosen["run_id"]].split(", ")) == {"iterations=1", "steps=1", "finetune_steps=1",
                                                          "batch_size=4", "seed=1"}  # off the defaults
    # more runs finish; every position may shift, the link still names the same run
    for seed in (2, 3, 4):
        train_command(session, "admm", {**short, "seed": seed})
    at = open_page("training", run=chosen["run_id"])
    assert at.selectbox(key="train.run").value == chosen["run_id"]
    assert any(chosen["run_id"] in h.value for h in at.subheader)


# item 5 -----------------------------------------------------------------------------------------

def test_a_checkpoint_stops_an_evaluation_between_batches_and_leaves_it_consistent(tiny_session):
    from prunelens.analysis.checkpoints import checkpoints
    from prunelens.analysis.gates import Masks

    class Stop(BaseException):  # like Streamlit's rerun exception: not an Exception
        pass

    evaluator = tiny_session.evaluator
    evaluator.batch_size = 8
    mask = np.ones((2, 4))
    mask[0, 1] = mask[1, 2] = 0
    calls = []

    def newer_move() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise Stop

    with checkpoints(newer_move), pytest.raises(Stop):
        evaluator.outputs(Masks(head=mask))
    assert len(calls) == 2  # stopped at the second batch, not run to the end
    after = evaluator.outputs(Masks(head=mask)).logits
    reference = evaluator.reference_outputs(Masks(head=mask)).logits
    np.testing.assert_allclose(after, reference, atol=1e-5)
    seen = []
    with checkpoints(lambda: seen.append(1)):
        evaluator.reference_outputs(Masks(head=mask))
    assert len(seen) == len(evaluator.batches)  # one checkpoint per batch


# item 9 -----------------------------------------------------------------------------------------

def test_masked_and_physical_are_timed_the_same_way_even_from_the_store(tiny_session, monkeypatch):
    from prunelens.analysis.evaluate import Evaluator
    from prunelens.analysis.operations import prune

    prune(tiny_session, "magnitude", 0.5)  # the masked numbers are now in the store
    calls = []
    original = Evaluator.reference_outputs

    def spy(self, masks=None, model=None, limit_batches=None):
        calls.append("physical" if model is not None else "masked")
        return original(self, masks, model, limit_batches)

    monkeypatch.setattr(Evaluator, "reference_outputs", spy)
    from prunelens.analysis.timing import REPEATS, WARMUP

    seen = []
    out = prune(tiny_session, "magnitude", 0.5, physical=True, progress=lambda f, m="": seen.append(f))
    assert out["from_store"] is True
    # both computed now, on the same forward: once on the data (metrics, logit difference), then
    # the one timing protocol (issue 30 item 5): warm-up, then interleaved timed runs
    assert calls == ["masked", "physical"] * (1 + WARMUP + REPEATS)
    phys = out["physical"]
    assert len(phys["runs"]["masked"]) == len(phys["runs"]["physical"]) == REPEATS
    assert phys["masked_seconds"] == pytest.approx(sorted(phys["runs"]["masked"])[REPEATS // 2], abs=1e-4)
    ratios = sorted(a / b for a, b in zip(phys["runs"]["masked"], phys["runs"]["physical"]))
    assert phys["speedup"] == pytest.approx(ratios[REPEATS // 2], rel=0.01)  # the median ratio
    assert phys["speedup_range"] == pytest.approx([ratios[0], ratios[-1]], rel=0.01)
    assert "median of 3 interleaved runs after 1 warm-up" in phys["timed"]
    assert seen[-1] == 1.0 and seen == sorted(seen[seen.index(0.0):])  # one bar, forward only
    assert phys["max_abs_logit_difference"] < 1e-5


def test_prune_page_timing_table_has_no_store_read_beside_a_computed_time(open_page):
    at = open_page("prune", method="magnitude",
               sparsity="0.5")
    at.checkbox(key="prune.physical").set_value(True).run()
    assert not at.exception
    timing = at.dataframe[0].value
    assert list(timing["model"]) == ["masked (gates on the full model)", "physically pruned (smaller copy)"]
    assert all(timing["seconds"] > 0)
    assert any("Both timed now on the same forward pass" in c.value for c in at.caption)


# item 7 -----------------------------------------------------------------------------------------

@pytest.fixture()
def no_network(monkeypatch):
    """The hub unreachable (every connection refused), offline mode off, the probe forgotten;
    everything the probe switches is put back afterwards."""
    import socket

    import datasets.config
    import huggingface_hub.constants

    from prunelens.analysis import hub

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(hub, "_probe", None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)


def test_an_unreachable_hub_fails_a_hub_id_at_once(no_network, tmp_path, monkeypatch):
    import time

    import huggingface_hub.constants

    from prunelens.analysis.errors import ModelError
    from prunelens.analysis.models import load_model

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty local cache
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        load_model("nosuch-org/nosuch-bert")
    assert time.monotonic() - start < 10
    assert "not found in the local hub cache" in str(info.value)
    assert "the hub (huggingface.co) cannot be reached" in str(info.value)
    assert huggingface_hub.constants.HF_HUB_OFFLINE is True  # the rest of the process stays offline


def test_an_unreachable_hub_fails_glue_at_once(no_network, tmp_path, monkeypatch):
    import time

    from prunelens.analysis.data import load_data
    from prunelens.analysis.errors import DataError

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "hf" / "datasets")
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        load_data("glue:sst2")
    assert time.monotonic() - start < 15
    assert "not in the local datasets cache" in str(info.value) and "cannot be reached" in str(info.value)


def test_the_dashboard_loads_a_failing_hub_id_once(no_network, tiny_csv, tmp_path, monkeypatch):
    import prunelens.analysis.models

    calls = []
    original = prunelens.analysis.models._load_model

    def counting(spec):
        calls.append(spec)
        return original(spec)

    monkeypatch.setattr(prunelens.analysis.models, "_load_model", counting)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("PRUNELENS_CACHE", str(tmp_path / "store"))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["model"] = "nosuch-org/nosuch-bert"
    at.query_params["data"] = str(tiny_csv)
    at.session_state["prunelens.page"] = "model_data"
    at.run()
    assert not at.exception
    assert calls == ["nosuch-org/nosuch-bert"]  # the sidebar and the page: one load
    assert any("cannot be reached" in e.value for e in at.sidebar.error)
    assert any("cannot be reached" in e.value for e in at.error)


def test_the_importance_page_warns_when_every_score_is_equal(open_page, monkeypatch):
    """0.2's live PINS scores were all 0 with delta_t >= batches, and the page drew them silently."""
    from prunelens.dashboard import controls

    monkeypatch.setattr(controls, "obtain_scores", lambda *args, **kwargs: np.zeros((2, 4)))
    at = open_page("importance", method="pins")
    assert [w.value for w in at.warning if "rank nothing" in w.value] == [
        "every pins score is 0: these scores rank nothing (pruning by them would remove units in index "
        "order); try more batches or other parameters"]
