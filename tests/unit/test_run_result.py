"""``prunelens.analysis.run_result``: every stored training-run shape read as one RunResult (issue 16, item 4)."""

from __future__ import annotations

import json

import pytest

from prunelens.analysis.run_result import ORDER_KEY, SHAPE_KEYS, normalise, shaped

M = {"accuracy": 0.8, "loss": 0.5, "n": 10}


def test_admm_runs_are_variants_by_name_with_their_labels_and_two_histories():
    run = {"method": "admm", "params": {"n": 2}, "evaluation": {"dense": M, "oneshot": {**M, "accuracy": 0.6}},
           "labels": {"dense": "dense model", "oneshot": "one-shot 2:4"},
           "history": [{"step": 1, "residual": 0.1}], "finetune_history": [{"step": 1, "loss": 0.3}],
           "scores": [[1.0, 2.0]], "constraint": {"pattern": "2:4"}}
    r = normalise(run)
    assert r.variant_rows() == [{"variant": "dense model", "accuracy": 0.8, "loss": 0.5, "n": 10},
                                {"variant": "one-shot 2:4", "accuracy": 0.6, "loss": 0.5, "n": 10}]
    assert list(r.histories) == ["ADMM", "fine-tune"] and r.scores == {"head": [[1.0, 2.0]]}
    assert r.extras == {"constraint": {"pattern": "2:4"}}


def test_pins_runs_are_dense_each_run_and_the_baseline():
    run = {"method": "pins", "params": {}, "base": M,
           "runs": {"pins_self_reg": {"evaluation": {**M, "accuracy": 0.7}, "history": [{"step": 1, "loss": 1}]}},
           "baseline": {"criterion": "magnitude", "training": "gradual", "evaluation": {**M, "accuracy": 0.65}},
           "scores": {"head": [[1.0]], "ffn": [0.5]}, "self_reg_gain": 0.01}
    r = normalise(run)
    assert list(r.variants) == ["dense", "pins_self_reg", "baseline"]
    assert r.label("baseline") == "baseline (magnitude, gradual)" and r.label("pins_self_reg") == "pins self reg"
    assert list(r.histories) == ["pins_self_reg"] and set(r.scores) == {"head", "ffn"}
    # what the baseline holds besides its evaluation stays, under its old name
    assert r.extras == {"self_reg_gain": 0.01, "baseline": {"criterion": "magnitude", "training": "gradual"}}


def test_snip_runs_are_untrained_trained_and_the_control():
    run = {"method": "snip", "params": {}, "evaluation": M, "evaluation_without_training": {**M, "accuracy": 0.9},
           "history": [{"step": 1, "loss": 1}], "control": {"evaluation": {**M, "accuracy": 0.85},
                                                          "history": [{"step": 1, "loss": 2}]},
           "scores": {"head": [[1.0]], "relative": True}}
    r = normalise(run)
    assert list(r.variants) == ["untrained", "trained", "control"] and r.label("control") == "λ = 0 control"
    assert list(r.histories) == ["trained", "control"] and r.scores == {"head": [[1.0]]}


def test_the_shape_itself_passes_through_and_a_bare_history_is_a_run():
    shaped = {"method": "x", "params": {}, "variants": {"a": M, "junk": {"no": 1}}, "histories": {"a": [{"step": 1}]},
              "scores": {"head": [[0.0]]}, "extras": {"k": 1}, "seconds": 3}
    r = normalise(shaped)
    assert list(r.variants) == ["a"] and r.histories == {"a": [{"step": 1}]} and r.extras == {"k": 1}
    bare = normalise({"method": "y", "history": [{"step": 1, "loss": 1}], "evaluation": {"note": "n/a"}})
    assert bare.histories == {"run": [{"step": 1, "loss": 1}]} and bare.variants == {}


# ----------------------------------------------------------------------------------------------
# the trainers return the shape: shaped(0.1 record) reads back exactly as the 0.1 record does

BOOK = {"method": "m", "params": {"seed": 0}, "model": {"name": "tiny"}, "data": {"name": "d", "n": 2},
        "seconds": 1.5}


def _ev(accuracy: float, **more) -> dict:
    return {**M, "accuracy": accuracy, "correct": ["1", "0"], **more}


def _stored(result: dict) -> dict:
    """As the store gives it back: JSON, keys sorted."""
    return json.loads(json.dumps({**BOOK, **result}, sort_keys=True))


def _same_run(old: dict) -> dict:
    """``shaped(old)``: only the shape's keys, read back (fresh and stored) exactly as ``old``."""
    new = shaped(old)
    assert tuple(new) == SHAPE_KEYS
    assert normalise(new) == normalise(old)
    assert normalise(_stored(new)) == normalise(_stored(old)) == normalise({**BOOK, **old})
    assert list(normalise(_stored(new)).variants) == list(normalise(old).variants)  # order survives the store
    assert new["extras"].pop(ORDER_KEY) == list(normalise(old).variants)
    return new


def test_admm_record_and_its_shape_read_the_same():
    old = {"projection": "2:4", "initial_residual": 1.25,
           "labels": {"dense": "dense model", "oneshot": "one-shot magnitude 2:4",
                      "oneshot_finetuned": "one-shot magnitude 2:4 + 10 SR-STE steps (equal budget)",
                      "admm_projected": "ADMM 2:4, projected, before fine-tune",
                      "admm": "ADMM 2:4 after SR-STE fine-tune"},
           "evaluation": {"dense": {**M, "delta": {"accuracy": 0.0, "loss": 0.0, "margin": 0.0}},
                          **{name: _ev(0.5 + i / 10, delta={"accuracy": -0.1, "loss": 0.1, "margin": 0.0})
                             for i, name in enumerate(("oneshot", "oneshot_finetuned", "admm_projected", "admm"))}},
           "history": [{"iteration": 1, "rho": 0.02, "loss": 0.6, "penalty": 0.1, "dual_residual": 0.3,
                        "residual": 0.2}],
           "finetune_history": [{"step": 1, "loss": 0.4}, {"step": 2, "loss": 0.3}],
           "scores": [[0.5, 0.6]], "shares": {"head": [[0.5, 0.6]], "ffn": [0.4]},
           "shares_oneshot": {"head": [[0.4, 0.5]], "ffn": [0.3]},
           "constraint": {"pattern": "2:4", "exactly_n_fraction": 1.0, "sparsity": 0.5},
           "train": {"data": "d", "split": "train", "examples": 32, "steps": 4}}
    new = _same_run(old)
    assert new["variants"] == old["evaluation"] and new["labels"] == old["labels"]  # every key kept
    assert new["histories"] == {"ADMM": old["history"], "fine-tune": old["finetune_history"]}
    assert new["scores"] == {"head": [[0.5, 0.6]]}
    assert new["extras"] == {k: old[k] for k in ("projection", "initial_residual", "shares", "shares_oneshot",
                                                 "constraint", "train")}


def _pins_run(accuracy: float, self_reg: bool, criterion: str = "pins") -> dict:
    return {"criterion": criterion, "self_reg": self_reg, "steps": 8, "target_sparsity": 0.6,
            "weight_sparsity": 0.6, "pruned_weights": 6, "total_weights": 10, "zero_fraction": 0.6,
            "layer_sparsity": [[0.6] * 6], "layer_sparsity_columns": ["query"] * 6,
            "history": [{"step": 2, "sparsity": 0.3, "loss": 0.7, "task_loss": 0.6, "self_reg_loss": 0.1}],
            "evaluation": _ev(accuracy)}


def test_pins_record_and_its_shape_read_the_same():
    baseline = {**_pins_run(0.55, False, "magnitude"),
                "training": "same cubic schedule and fine-tuning budget, no self-regularization"}
    old = {"base": _ev(0.8), "runs": {"pins_self_reg": _pins_run(0.7, True), "pins_no_self_reg": _pins_run(0.65, False)},
           "baseline": baseline, "scores": {u: [[0.1, 0.2]] for u in ("head", "attention", "ffn", "neuron")},
           "train_data": {"name": "d", "split": "train", "examples_seen": 32}, "notes": ["trained on the dev split"],
           "self_reg_gain": {"accuracy": 0.05, "loss": -0.1, "margin": 0.2}}
    new = _same_run(old)
    assert list(new["variants"]) == ["dense", "pins_self_reg", "pins_no_self_reg", "baseline"]
    assert new["variants"]["baseline"] == baseline["evaluation"] and new["notes"] == old["notes"]
    assert new["labels"] == {"baseline": "baseline (magnitude, same cubic schedule and fine-tuning budget, "
                                         "no self-regularization)"}
    assert list(new["histories"]) == ["pins_self_reg", "pins_no_self_reg", "baseline"]
    extras = new["extras"]
    assert set(extras) == {"runs", "baseline", "train_data", "self_reg_gain"}
    summary = {k: v for k, v in _pins_run(0.7, True).items() if k not in ("evaluation", "history")}
    assert extras["runs"]["pins_self_reg"] == summary  # each run's summary, under its old name
    assert extras["baseline"]["criterion"] == "magnitude" and extras["baseline"]["weight_sparsity"] == 0.6
    assert extras["baseline"]["training"] == baseline["training"]


@pytest.mark.parametrize("baseline", ["oneshot", None])
def test_platon_record_and_its_shape_read_the_same(baseline):
    oneshot = {"criterion": "magnitude", "training": "none (one-shot, no fine-tuning)", "weight_sparsity": 0.6,
               "layer_sparsity": [[0.6] * 6], "evaluation": _ev(0.5)}
    old = {"base": _ev(0.8), "runs": {"platon": _pins_run(0.7, False, "platon")},
           "baseline": oneshot if baseline else None, "scores": {"head": [[0.1, 0.2]]},
           "train_data": {"name": "d"}, "notes": []}
    new = _same_run(old)
    assert list(new["variants"]) == ["dense", "platon"] + (["baseline"] if baseline else [])
    assert list(new["histories"]) == ["platon"]
    assert set(new["extras"]) == {"runs", "train_data"} | ({"baseline"} if baseline else set())


@pytest.mark.parametrize("control", [True, False])
def test_snip_record_and_its_shape_read_the_same(control):
    norms = {"head": [[1.0, 2.0]], "attention": [0.5], "ffn": [0.7], "tokens": 12, "relative": False}
    old = {"scores": norms, "scores_without_training": {**norms, "head": [[1.5, 2.5]]},
           "history": [{"step": 1, "loss": 0.7, "task_loss": 0.6, "penalty": 10.0}],
           "evaluation": _ev(0.75), "evaluation_without_training": {**M, "accuracy": 0.8},
           "pruned": [{"unit": "head", "sparsity": 0.5, "trained": _ev(0.6), "untrained": _ev(0.55)}],
           "control": {"scores": norms, "history": [{"step": 1, "loss": 0.6, "task_loss": 0.6, "penalty": 11.0}],
                       "evaluation": _ev(0.7)} if control else None,
           "sigma": {"before": [{"layer": 0, "matrix": "query", "sigma": 1.2}],
                     "after": [{"layer": 0, "matrix": "query", "sigma": 0.96}]},
           "train_data": {"name": "d", "split": "train", "n": 40, "note": "the train split"}}
    new = _same_run(old)
    assert list(new["variants"]) == ["untrained", "trained"] + (["control"] if control else [])
    assert list(new["histories"]) == ["trained"] + (["control"] if control else [])
    assert new["labels"] == ({"control": "λ = 0 control"} if control else {})
    assert new["scores"] == {"head": [[1.0, 2.0]], "attention": [0.5], "ffn": [0.7]}
    extras = new["extras"]
    assert extras["scores"] == {"tokens": 12, "relative": False}  # the norms' own fields, kept
    assert set(extras) == {"scores", "scores_without_training", "pruned", "sigma", "train_data"} | (
        {"control"} if control else set())
    if control:
        assert extras["control"] == {"scores": norms}


def test_a_stored_run_keeps_its_trainers_variant_order():
    import json

    from prunelens.analysis.run_result import RunResult

    metrics = {"accuracy": 0.5, "loss": 1.0}
    run = RunResult("x", {}, variants={"zeta": metrics, "alpha": metrics, "mid": metrics}).as_json()
    stored = json.loads(json.dumps(run, sort_keys=True))  # as the store writes it
    assert list(stored["variants"]) == ["alpha", "mid", "zeta"]
    read = normalise(stored)
    assert list(read.variants) == ["zeta", "alpha", "mid"]
    assert ORDER_KEY not in read.extras  # bookkeeping, not a result to show
    assert list(normalise({"variants": {"b": metrics, "a": metrics}}).variants) == ["b", "a"]  # no order: as given
