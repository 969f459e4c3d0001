"""``magnitude``: the L2 norm of the weights a unit owns.

A head owns its rows of Q, K, V and its columns of the attention-output weight; a neuron its row
of the intermediate weight and its column of the output weight; a block all of its matrices.
Needs no data.
"""

from __future__ import annotations

import numpy as np
import torch

from analysis.methods.base import Method, Work


def _sq(t: torch.Tensor) -> torch.Tensor:
    return t.detach().double() ** 2


class Magnitude(Method):
    def compute(self, ctx, unit, params):
        inv = ctx.loaded.inventory
        rows = []
        for layer in ctx.loaded.layers():
            attn, out = layer.attention.self, layer.attention.output.dense
            w1, w2 = layer.intermediate.dense.weight, layer.output.dense.weight
            if unit == "head":
                d = inv.head_size
                per_row = _sq(attn.query.weight).sum(1) + _sq(attn.key.weight).sum(1) + _sq(attn.value.weight).sum(1)
                per_col = _sq(out.weight).sum(0)
                rows.append((per_row + per_col).reshape(inv.heads, d).sum(1).sqrt().numpy())
            elif unit == "neuron":
                rows.append((_sq(w1).sum(1) + _sq(w2).sum(0)).sqrt().numpy())
            elif unit == "attention":
                rows.append(float(sum(_sq(m.weight).sum() for m in (attn.query, attn.key, attn.value, out)).sqrt()))
            else:
                rows.append(float((_sq(w1).sum() + _sq(w2).sum()).sqrt()))
        return np.asarray(rows)


METHOD = Magnitude(
    name="magnitude",
    title="Weight magnitude",
    plain="Units with bigger weights count as more important: the simplest possible guess.",
    summary="L2 norm of the weights each unit owns (a head: its Q/K/V rows and O columns).",
    units=("head", "attention", "ffn", "neuron"),
    params=(),
    cost=lambda params, inventory, unit: Work(),  # the weights only: no data, no forward pass
)
