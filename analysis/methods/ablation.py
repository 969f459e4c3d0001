"""``ablation``: leave-one-out importance, the reference ranking.

Each unit is masked alone and the metric is measured against the unpruned model on the same
examples; importance is the loss increase (or the accuracy/margin drop). Label-using importance
is measured on the *training* split (:func:`prunelens.analysis.batches.training_data`: the default data's
train split, its first ``examples`` rows; a data set without a known train split is measured on
its own examples, which the method's notes say), so a ranking is not fitted to the examples it is
then evaluated on. Expensive (one evaluation per unit), so it is cached and shipped.
"""

from __future__ import annotations

import numpy as np

from prunelens.analysis.batches import training_data
from prunelens.analysis.gates import Masks
from prunelens.analysis.layout import UNITS
from prunelens.analysis.methods.base import Deviation, Method, Param, Work


# one leave-one-out evaluation on the fast path, as a share of a forward pass: it restarts at the
# unit's layer (half the layers on average) from the cached unpruned inputs and slices the cached
# all-heads context (measured: 72 heads of the default in 19 forward passes' time, 0.26 each)
PASS_SHARE = 0.3
METHOD_UNITS = tuple(u for u in UNITS if u != "neuron")  # one evaluation per neuron would be too many


def ablation_cost(params: dict, inventory, unit: str | None) -> Work:
    """One evaluation of the data per unit (the costliest unit when ``unit`` is None), plus the
    unpruned one."""
    units = [unit] if unit else list(METHOD_UNITS)
    return Work(passes=1.0 + max(int(np.prod(inventory.unit_shape(u))) for u in units),
                pass_share=PASS_SHARE)


def measuring_evaluator(ctx, examples: int):
    """The evaluator of the data ablation measures on: the session's own when the training data
    is the session's data, else one over the first ``examples`` rows of the training split."""
    from prunelens.analysis.evaluate import Evaluator
    data, _ = training_data(ctx)
    if data is ctx.data:
        return ctx.evaluator
    return Evaluator(ctx.loaded, data.subset(examples), device=ctx.device, objective=ctx.objective)


class Ablation(Method):
    def compute(self, ctx, unit, params):
        evaluator = measuring_evaluator(ctx, params["examples"])
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
    training_split=True,  # scores from the training split alone (the store keys them by it)
    title="Leave-one-out ablation",
    plain="Switch each unit off on its own and measure how much worse the model gets: slow, but the most direct answer.",
    summary="Loss increase when each unit alone is masked: the reference ranking. Expensive, cached.",
    units=METHOD_UNITS,
    params=(Param("metric", "choice", "loss", "what the ablation measures", choices=("loss", "accuracy", "margin")),
            Param("examples", "int", 872, "training-split examples each unit is ablated on", 16, 8192)),
    cost=ablation_cost,
    evaluates_masks=True,
    deviations=(
        Deviation("data", "Michel et al. ablate on held-out data to show the effect; as an importance "
                  "criterion a ranking must not be measured on the data it is evaluated on",
                  "the first 872 rows of the training split by default (0.1: the evaluation split)"),
        Deviation("sign", "the loss change of removing a head alone", "the signed loss increase; heads whose "
                  "removal lowers the loss rank lowest (a diagnostic of over-confidence, see FIDELITY.md)"),
    ),
)
