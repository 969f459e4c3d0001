"""``ablation``: leave-one-out importance, the reference ranking.

Each unit is masked alone and the evaluation metric is measured against the unpruned model on the
same examples; importance is the loss increase (or the accuracy/margin drop). Expensive (one
evaluation per unit), so it is cached and shipped.
"""

from __future__ import annotations

import numpy as np

from analysis.gates import Masks
from analysis.methods.base import Method, Param, Work


def ablation_cost(params: dict, inventory, unit: str | None) -> Work:
    """One evaluation of the data per unit (the costliest unit when ``unit`` is None), plus the
    unpruned one."""
    units = [unit] if unit else ["head", "attention", "ffn"]
    return Work(passes=1.0 + max(int(np.prod(inventory.unit_shape(u))) for u in units))


class Ablation(Method):
    def compute(self, ctx, unit, params):
        evaluator = ctx.get_evaluator()
        shape = ctx.loaded.inventory.unit_shape(unit)
        metric = params["metric"]
        base = getattr(evaluator.base, metric)
        scores = np.zeros(shape)
        total = int(np.prod(shape))
        for k, idx in enumerate(np.ndindex(*shape)):
            mask = np.ones(shape, dtype=np.float32)
            mask[idx] = 0
            value = getattr(evaluator.evaluate(Masks.for_unit(unit, mask)), metric)
            # higher = more important: loss goes up, accuracy and margin go down
            scores[idx] = value - base if metric == "loss" else base - value
            ctx.progress((k + 1) / total, f"ablating {unit} {k + 1}/{total}")
        return scores


METHOD = Ablation(
    name="ablation",
    title="Leave-one-out ablation",
    plain="Switch each unit off on its own and measure how much worse the model gets: slow, but the most direct answer.",
    summary="Loss increase when each unit alone is masked: the reference ranking. Expensive, cached.",
    units=("head", "attention", "ffn"),
    params=(Param("metric", "choice", "loss", "what the ablation measures", choices=("loss", "accuracy", "margin")),),
    cost=ablation_cost,
    evaluates_masks=True,
)
