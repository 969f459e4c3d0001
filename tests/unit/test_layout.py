"""``prunelens.analysis.layout``: the one description of a BERT layer's matrices, units and gate points
(issue 16, item 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prunelens.analysis.layout import GATE_POINTS, MATRICES, OWNS, UNITS, encoder_matrices, gate_module, per_unit


def _ones(loaded):
    weights = [{n: torch.ones_like(lin.weight) for n, lin in m.items()} for m in encoder_matrices(loaded.model)]
    biases = [{n: torch.ones_like(lin.bias) for n, lin in m.items()} for m in encoder_matrices(loaded.model)]
    return weights, biases


@pytest.mark.parametrize("unit", UNITS)
def test_per_unit_of_all_ones_is_the_inventorys_parameter_count(tiny_loaded, unit):
    inv = tiny_loaded.inventory
    weights, biases = _ones(tiny_loaded)
    counts = per_unit(weights, inv, unit, biases)
    assert counts.shape == inv.unit_shape(unit)
    assert (counts == inv.unit_params(unit)).all()  # weights and biases a unit owns, exactly


def test_per_unit_sums_exactly_the_owned_rows_and_columns(tiny_loaded):
    inv = tiny_loaded.inventory
    rng = np.random.default_rng(0)
    scores = [{n: torch.as_tensor(rng.random(tuple(lin.weight.shape))) for n, lin in m.items()}
              for m in encoder_matrices(tiny_loaded.model)]
    heads = per_unit(scores, inv, "head")
    d = inv.head_size
    for layer in range(inv.layers):
        s = scores[layer]
        for h in range(inv.heads):
            rows = slice(h * d, (h + 1) * d)
            want = sum(float(s[n][rows].sum()) for n in ("query", "key", "value")) \
                + float(s["attention_output"][:, rows].sum())
            assert heads[layer, h] == pytest.approx(want, rel=1e-12)
        neurons = per_unit(scores, inv, "neuron")[layer]
        j = 5
        assert neurons[j] == pytest.approx(float(s["intermediate"][j].sum() + s["output"][:, j].sum()), rel=1e-12)
        assert per_unit(scores, inv, "ffn")[layer] == pytest.approx(
            float(s["intermediate"].sum() + s["output"].sum()), rel=1e-12)
    with pytest.raises(ValueError, match="unknown unit 'weight'"):
        per_unit(scores, inv, "weight")


def test_every_unit_owns_only_known_matrices_and_gates_at_one_of_them(tiny_loaded):
    layer = tiny_loaded.layers()[0]
    for unit in UNITS:
        assert set(OWNS[unit]) <= set(MATRICES)
        name, side = GATE_POINTS[unit]
        assert name in OWNS[unit] and side in ("input", "output")
    assert gate_module(layer, "head") is layer.attention.output.dense
    assert gate_module(layer, "ffn") is layer.output.dense


def test_magnitude_is_the_norm_of_the_owned_weights(tiny_session):
    from prunelens.analysis.operations import compute_scores

    inv = tiny_session.loaded.inventory
    layer = tiny_session.loaded.layers()[1]
    a = layer.attention
    d, h = inv.head_size, 2
    rows = slice(h * d, (h + 1) * d)
    want = np.sqrt(sum(float((m.weight[rows].double() ** 2).sum()) for m in (a.self.query, a.self.key, a.self.value))
                   + float((a.output.dense.weight[:, rows].double() ** 2).sum()))
    got = np.asarray(compute_scores(tiny_session, "magnitude", "head").scores)
    assert got[1, h] == pytest.approx(want, rel=1e-12)


def test_one_unit_list_in_one_order():
    """layout's unit table is the one list: the method contract, the gates, the inventory and
    every method's declaration follow it (and its order)."""
    from prunelens.analysis import layout
    from prunelens.analysis.gates import Masks
    from prunelens.analysis.methods import all_methods, base

    assert layout.UNITS == ("head", "attention", "ffn", "neuron") and base.UNITS is layout.UNITS
    assert set(layout.OWNS) == set(layout.GATE_POINTS) == set(layout.UNITS)
    assert layout.BLOCK_UNITS == ("attention", "ffn")
    for method in all_methods().values():
        assert list(method.units) == [u for u in layout.UNITS if u in method.units], method.name
    shapes = {u: base.BERT_BASE.unit_shape(u) for u in layout.UNITS}
    assert shapes == {"head": (12, 12), "attention": (12,), "ffn": (12,), "neuron": (12, 3072)}
    with pytest.raises(KeyError):
        base.BERT_BASE.unit_shape("weight")
    with pytest.raises(ValueError, match="no gate for unit 'weight'"):
        Masks.for_unit("weight", np.ones(2))
