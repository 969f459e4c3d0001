"""``michel``: gradient head importance of Michel et al. (2019), "Are Sixteen Heads Really Better
than One?".

A gate ξ = 1 multiplies every unit; importance is E|∂L/∂ξ| over batches of the task loss (the
batch-mean cross-entropy), then L2-normalized within each layer as in their released code.
One backward pass gives heads, whole blocks and FFN neurons at once.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from analysis.gates import Masks, gated
from analysis.methods.base import Context, Method, Param, Work


def gate_gradients(ctx: Context, unit: str, batches=None) -> np.ndarray:
    """Sum over batches of |∂(batch-mean loss)/∂gate| for every gate of ``unit``, divided by the
    number of batches."""
    loaded = ctx.loaded
    model = loaded.model
    shape = loaded.inventory.unit_shape(unit)
    gate = torch.ones(shape, requires_grad=True)
    total = torch.zeros(shape, dtype=torch.float64)
    batches = batches if batches is not None else ctx.get_evaluator().batches
    with torch.enable_grad(), gated(model, Masks.for_unit(unit, gate)):
        for i, batch in enumerate(batches):
            logits = model(**batch.to(ctx.device).model_inputs()).logits
            loss = F.cross_entropy(logits, batch.labels.to(logits.device))
            (grad,) = torch.autograd.grad(loss, gate)
            total += grad.detach().abs().double().cpu()
            ctx.progress((i + 1) / len(batches), f"{unit} gradients, batch {i + 1}/{len(batches)}")
    return (total / max(1, len(batches))).numpy()


class Michel(Method):
    def compute(self, ctx, unit, params):
        scores = gate_gradients(ctx, unit)
        if params["normalize"] and scores.ndim == 2:
            norms = np.sqrt((scores**2).sum(-1, keepdims=True))
            scores = scores / (norms + 1e-20)
        return scores


METHOD = Michel(
    name="michel",
    title="Michel et al. gradient importance",
    plain="Give each unit a volume knob and measure how strongly the loss reacts when the knob is nudged: a strong reaction means an important unit.",
    summary="E|dL/dξ| for a gate ξ=1 on each unit, on the task loss; L2-normalized per layer.",
    units=("head", "attention", "ffn", "neuron"),
    params=(Param("normalize", "bool", True, "L2-normalize scores within each layer (as in their code)"),),
    # a forward and a backward to the gates (not to the weights) over the evaluation data
    cost=lambda params, inventory, unit: Work(passes=2.0),
    paper="Michel, Levy & Neubig, NeurIPS 2019 (arXiv 1905.10650)",
)
