"""``michel``: gradient head importance of Michel et al. (2019), "Are Sixteen Heads Really Better
than One?".

A gate ξ = 1 multiplies every unit; importance is the expected absolute gradient of the task loss
(cross-entropy; under another objective its gradient loss,
:func:`prunelens.analysis.objectives.gradient_losses`) with respect to it, then L2-normalized within each layer as in their released
code (pmichel31415/are-16-heads-really-better-than-1). ``per`` says over what the absolute value
is taken, and the choice is part of the stored result's key:

- ``example`` (default, the paper): I_h = E_x |∂L(x)/∂ξ_h|. One gate per example and unit, so a
  single backward pass of the summed loss gives every example's own gradient;
- ``token`` (the official code's gating): one gate per token position; the absolute values are
  summed over an example's tokens, then averaged over examples;
- ``batch`` (prunelens 0.1): |∂(batch-mean loss)/∂ξ_h| averaged over batches, which lets
  examples' gradients of opposite sign cancel before the absolute value.

Data: ``examples`` seeded examples of the *training* split (:func:`prunelens.analysis.batches.training_data`:
the default data's train split; other data sets have none known, so their own examples are used
and the scores are label-using importance on the evaluation data, which the notes say).
One backward pass per batch gives heads, whole blocks and FFN neurons together (``joint``: the
operations store all four units' scores from it).
"""

from __future__ import annotations

import numpy as np
import torch

from prunelens.analysis.batches import training_sample
from prunelens.analysis.gates import Masks, gated
from prunelens.analysis.layout import UNITS
from prunelens.analysis.methods.base import SEED, Session, Deviation, Method, Param, Work
from prunelens.analysis.objectives import gradient_losses, model_output

PER = ("example", "token", "batch")


def gate_gradients(ctx: Session, unit: str, batches=None, per: str = "batch") -> np.ndarray:
    """E|∂L/∂gate| for every gate of ``unit`` (see :func:`unit_gate_gradients`)."""
    return unit_gate_gradients(ctx, (unit,), batches, per)[unit]


def unit_gate_gradients(ctx: Session, units, batches=None, per: str = "batch") -> dict[str, np.ndarray]:
    """E|∂L/∂gate| for every gate of each of ``units`` over ``batches`` (default: the
    evaluator's), the absolute value taken per example, per token or per batch (see the module
    docstring). All gates sit at 1 at once, so one backward pass per batch gives every unit's
    gradients, each exactly what it would be with its gates alone."""
    if per not in PER:
        raise ValueError(f"per must be one of {PER}, got {per!r}")
    model = ctx.loaded.model
    shapes = {unit: ctx.loaded.inventory.unit_shape(unit) for unit in units}
    totals = {unit: torch.zeros(shape, dtype=torch.float64) for unit, shape in shapes.items()}
    count = 0
    batches = batches if batches is not None else ctx.evaluator.batches
    device = next(model.parameters()).device  # gradients run where the model is
    label = "/".join(units)
    for i, batch in enumerate(batches):
        inputs = batch.to(device).model_inputs()
        rows, tokens = inputs["input_ids"].shape
        extra = {"batch": (), "example": (rows,), "token": (rows, tokens)}[per]
        gates = {unit: torch.ones((shape[0], *extra, *shape[1:]), requires_grad=True)
                 for unit, shape in shapes.items()}
        with torch.enable_grad(), gated(model, Masks(**gates)):
            # the objective's gradient loss: gold labels, the unpruned class or vector
            losses = gradient_losses(ctx.objective, model_output(model, inputs, ctx.loaded.pooling),
                                     batch.labels)
            # summed, each example's loss reaches only its own gates: their gradients are its own
            grads = torch.autograd.grad(losses.mean() if per == "batch" else losses.sum(),
                                        list(gates.values()))
        for unit, grad in zip(gates, grads):
            grad = grad.detach().abs().double().cpu()
            totals[unit] += grad if per == "batch" else grad.sum(dim=tuple(range(1, 1 + len(extra))))
        count += 1 if per == "batch" else rows
        ctx.progress((i + 1) / len(batches), f"{label} gradients, batch {i + 1}/{len(batches)}")
    return {unit: (total / max(1, count)).numpy() for unit, total in totals.items()}


def training_batches(ctx: Session, params: dict):
    """``examples`` seeded examples of the training split, in length-bucketed batches."""
    return training_sample(ctx, params["examples"], params["batch_size"], params["seed"])


class Michel(Method):
    def joint_units(self, params, unit):
        # per-token neuron gates are (layers, batch, tokens, FFN): on BERT-base ~0.6 GB a batch, so
        # with per="token" neurons are computed on their own and never ride along
        if params["per"] == "token":
            return ("neuron",) if unit == "neuron" else (
                unit, *(u for u in self.units if u not in (unit, "neuron")))
        return super().joint_units(params, unit)

    def compute_units(self, ctx, units, params):
        out = {}
        for unit, scores in unit_gate_gradients(ctx, units, training_batches(ctx, params), params["per"]).items():
            if params["normalize"] and scores.ndim == 2:
                norms = np.sqrt((scores**2).sum(-1, keepdims=True))
                scores = scores / (norms + 1e-20)
            out[unit] = scores
        return out


METHOD = Michel(
    needs_classes=True,
    joint=True,
    name="michel",
    training_split=True,  # scores from the training split alone (the store keys them by it)
    title="Michel et al. gradient importance",
    plain="Give each unit a volume knob and measure how strongly the loss reacts when the knob is nudged: a strong reaction means an important unit.",
    summary="E_x|dL(x)/dξ| for a gate ξ=1 on each unit (per example, per token or per batch), on "
            "the training split; L2-normalized per layer.",
    units=UNITS,
    params=(
        Param("per", "choice", "example", "where |·| is taken: example (paper), token (official "
              "code's gating) or batch (prunelens 0.1)", choices=PER),
        Param("examples", "int", 1024, "training-split examples the gradients are averaged over", 8, 8192),
        Param("batch_size", "int", 32, "examples per backward pass", 1, 128),
        Param("normalize", "bool", True, "L2-normalize scores within each layer (as in their code)"),
        SEED,
    ),
    # a forward and a backward to the gates (not to the weights) per chosen training example,
    # counted as passes over a set the size of the loaded data (by default the two are alike:
    # 1024 training examples beside the default's 872; a data set without a train split is used
    # whole, capped at ``examples``)
    cost=lambda params, inventory, unit: Work(passes=3.0, batch_tokens=params["batch_size"] * 128,
                                              pass_rows=params["batch_size"]),
    paper="Michel, Levy & Neubig, NeurIPS 2019 (arXiv 1905.10650)",
    deviations=(
        Deviation("absolute value", "per example, E_x|∂L(x)/∂ξ_h| (paper); per token in the official gating",
                  "per example by default; per token and per batch (0.1) as options, recorded in the key"),
        Deviation("data", "the training set", "1024 seeded training-split examples (a data set without "
                  "a known train split: its own examples)"),
        Deviation("normalization", "L2 within each layer (official code)", "the same (optional)"),
        Deviation("loss", "cross-entropy against the gold labels",
                  "the same under the labels objective; without labels the objective's gradient loss: "
                  "cross-entropy against the unpruned model's top class (agreement, TextPruner's "
                  "self-supervised mode) or the in-batch contrastive loss against the unpruned "
                  "sentence vectors (embedding)"),
    ),
)
