"""``magnitude``: the L2 norm of the weights a unit owns.

A head owns its rows of Q, K, V and its columns of the attention-output weight; a neuron its row
of the intermediate weight and its column of the output weight; a block all of its matrices
(:data:`prunelens.analysis.layout.OWNS`, biases not counted). Needs no data.
"""

from __future__ import annotations

import numpy as np

from prunelens.analysis.layout import UNITS, encoder_matrices, per_unit
from prunelens.analysis.methods.base import Method, Work


class Magnitude(Method):
    def compute(self, ctx, unit, params):
        squares = [{name: lin.weight.detach().double() ** 2 for name, lin in matrices.items()}
                   for matrices in encoder_matrices(ctx.loaded.model)]
        return np.sqrt(per_unit(squares, ctx.loaded.inventory, unit))


METHOD = Magnitude(
    name="magnitude",
    title="Weight magnitude",
    plain="Units with bigger weights count as more important: the simplest possible guess.",
    summary="L2 norm of the weights each unit owns (a head: its Q/K/V rows and O columns).",
    units=UNITS,
    params=(),
    cost=lambda params, inventory, unit: Work(),  # the weights only: no data, no forward pass
)
