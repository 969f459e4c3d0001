"""``l1-norm``: the L1 norm of the weights a unit owns, a prunelens method from a plug-in.

Registered through the ``prunelens.methods`` entry point in this folder's pyproject.toml; after
``pip install`` it appears in ``prunelens methods``, ``prunelens score --method l1-norm`` and the
dashboard, and prunelens's method contract tests hold it like a built-in method.
"""

from __future__ import annotations

import torch

from prunelens.analysis.layout import encoder_matrices, per_unit
from prunelens.analysis.methods.base import Method, Param, Work


class L1Norm(Method):
    def compute(self, ctx, unit, params):
        layers = [{name: lin.weight.detach().double() for name, lin in matrices.items()}
                  for matrices in encoder_matrices(ctx.loaded.model)]
        inventory = ctx.loaded.inventory
        norms = per_unit([{n: w.abs() for n, w in layer.items()} for layer in layers], inventory, unit)
        if params["mean"]:  # per weight, so units that own more weights are not favoured
            owned = per_unit([{n: torch.ones_like(w) for n, w in layer.items()} for layer in layers],
                             inventory, unit)
            norms = norms / owned
        return norms


METHOD = L1Norm(
    name="l1-norm",
    title="L1 weight norm (plug-in example)",
    plain="Units whose weights add up to more (in absolute value) count as more important.",
    summary="L1 norm of the weights each unit owns; with mean=true, per weight.",
    units=("head", "attention", "ffn", "neuron"),
    params=(Param("mean", "bool", False, "divide by the number of weights the unit owns"),),
    cost=lambda params, inventory, unit: Work(),  # the weights only: no data, no forward pass
)
