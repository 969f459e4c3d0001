"""Anytime evaluation on the Prune slider (issue 14, item 2): the first estimate's size follows the
model's cost, larger stages follow on a large model, and each stage's error bar is the paired
standard error of its own sample (the Prune page showing the stages in order is tested in
tests/unit/test_method_views.py, beside the single-estimate flow)."""

from __future__ import annotations

import numpy as np
import pytest

from prunelens.analysis.evaluate import (
    DEFAULT_ENCODER_PARAMS,
    ESTIMATE_SIZE,
    MIN_ESTIMATE_SIZE,
    Evaluator,
    first_estimate_size,
)
from prunelens.analysis.gates import Masks
from prunelens.analysis.methods.base import BERT_BASE



def test_first_estimate_size_follows_the_encoders_cost(default_loaded):
    assert default_loaded.inventory.encoder_params == DEFAULT_ENCODER_PARAMS
    assert first_estimate_size(DEFAULT_ENCODER_PARAMS) == ESTIMATE_SIZE == 96
    assert first_estimate_size(BERT_BASE.encoder_params) == MIN_ESTIMATE_SIZE == 16  # 96 / 8 = 12, floored at 16
    assert first_estimate_size(2 * DEFAULT_ENCODER_PARAMS) == 48
    assert first_estimate_size(1_000) == ESTIMATE_SIZE  # a tiny model: never more than 96


def test_a_shared_layer_model_costs_every_depth_it_runs(tmp_path):
    """ALBERT runs its one layer at every depth: the first estimate is sized by the parameters a
    token passes through (a 12-layer ALBERT-base costs what BERT-base does: 16 examples), not by
    the unique ones (it had 96, seven times BERT's first-estimate time)."""
    from prunelens.analysis.layout import encoder_layers
    from prunelens.analysis.models import load_model
    from tests.tiny import write_tiny_family

    loaded = load_model(str(write_tiny_family(tmp_path / "albert", "albert")))
    layers = encoder_layers(loaded.model)
    one_layer = sum(p.numel() for p in layers[0].parameters())
    inventory = loaded.inventory
    assert len(layers) == 3 and inventory.sharing == ((0, 1, 2),)
    assert inventory.encoder_params == one_layer and inventory.cost_params == 3 * one_layer
    ev = Evaluator.__new__(Evaluator)
    ev.loaded = _Loaded(DEFAULT_ENCODER_PARAMS, cost_params=12 * DEFAULT_ENCODER_PARAMS // 6)
    assert ev.estimate_size == 48  # sized by the cost, not by the unique parameters (96)


class _Inventory:
    def __init__(self, encoder_params, cost_params=None):
        self.encoder_params = encoder_params
        self.cost_params = encoder_params if cost_params is None else cost_params


class _Loaded:
    def __init__(self, encoder_params, cost_params=None):
        self.inventory = _Inventory(encoder_params, cost_params)


@pytest.mark.parametrize("params, n, stages", [
    (DEFAULT_ENCODER_PARAMS, 872, [96]),  # the default: one estimate, then the full data
    (BERT_BASE.encoder_params, 872, [16, 64]),  # BERT-base: 16, then 64, then all 872
    (BERT_BASE.encoder_params, 5000, [16, 64, 256, 1024]),  # 4096 would be over a quarter of 5000
    (BERT_BASE.encoder_params, 200, [16]),
    (DEFAULT_ENCODER_PARAMS, 96, []),  # no subset is smaller than the data
    (DEFAULT_ENCODER_PARAMS, 128, []),  # issue 30: not an estimate on 96 of 128, then all 128
    (BERT_BASE.encoder_params, 31, []),
])
def test_anytime_stages_grow_by_four_up_to_a_quarter_of_the_data(params, n, stages):
    ev = Evaluator.__new__(Evaluator)
    ev.loaded, ev.data = _Loaded(params), list(range(n))
    assert ev.estimate_sizes == stages


def test_each_stage_is_its_own_fixed_subset_with_a_paired_error_bar(tiny_session):
    ev = tiny_session.evaluator
    mask = np.ones(tiny_session.loaded.inventory.unit_shape("head"), dtype=np.float32)
    mask[0, :2] = 0
    masks = Masks.for_unit("head", mask)
    for size in (8, 32):
        est = ev.estimate(masks, size)
        rows = ev.subset_rows(size, 0)
        base, pruned = ev.base_outputs, ev.outputs(masks)
        diff = pruned.loss[rows] - base.loss[rows]
        assert est.pruned.n == size
        assert est.delta["loss"] == pytest.approx(diff.mean(), abs=1e-5)
        assert est.delta["loss_se"] == pytest.approx(diff.std(ddof=1) / np.sqrt(size), abs=1e-5)


def test_the_bench_judges_a_bert_base_sized_model_by_its_own_targets():
    from prunelens.analysis.bench import format_table

    out = {"first_estimate_s": 0.4, "rss_mb": 3100.0, "eval_p50_s": 4.6, "ratio": 10.4}
    default = format_table({**out, "encoder_params": DEFAULT_ENCODER_PARAMS})
    large = format_table({**out, "encoder_params": BERT_BASE.encoder_params})
    assert "<= 0.3  MISSED" in default and "<= 2048  MISSED" in default and "<= 1  MISSED" in default
    assert "<= 0.5  ok" in large and "<= 4096  ok" in large and ">= 7  ok" in large
    assert "<= 1  " not in large  # the full-data move has the ratio target only


def test_record_is_evaluate_with_each_examples_correctness(tiny_loaded, tiny_session):
    from prunelens.analysis.eval_results import correct_flags, correctness
    from prunelens.analysis.evaluate import Evaluator
    from prunelens.analysis.gates import Masks

    ev = Evaluator(tiny_loaded, tiny_session.data, batch_size=8)
    mask = Masks(head=np.array([[1, 0, 1, 1], [0, 1, 1, 1]], dtype=np.float32))
    record = ev.record(mask)
    assert {k: v for k, v in record.items() if k != "correct"} == ev.evaluate(mask).as_dict()
    out = ev.outputs(mask)
    by_hand = "".join("1" if int(np.argmax(row)) == label else "0"
                      for row, label in zip(out.logits, tiny_session.data.labels))
    assert record["correct"] == correctness(out) == by_hand
    assert correct_flags(record["correct"]) == [int(np.argmax(row)) == label  # the inverse
                                                for row, label in zip(out.logits, tiny_session.data.labels)]
    assert ev.compare(mask).correct == by_hand
    assert ev.record()["correct"] == correctness(ev.base_outputs)
