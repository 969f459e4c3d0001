"""``analysis.run_result``: every stored training-run shape read as one RunResult (issue 16, item 4)."""

from __future__ import annotations

from analysis.run_result import normalise

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
    assert r.extras == {"self_reg_gain": 0.01}


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
