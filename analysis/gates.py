"""Hook-based gates for heads, attention blocks, FFN blocks and FFN neurons.

transformers 5 accepts ``head_mask`` but ignores it, so prunelens gates units with hooks:

- a head is its slice of the input of the attention-output matrix (forward pre-hook);
- an FFN neuron is its input to the FFN output matrix (forward pre-hook);
- an attention block / FFN block is the output of the attention-output / FFN output matrix
  before the residual add (forward hook), so a removed block leaves the residual path and LayerNorm
  (the points are :data:`prunelens.analysis.layout.GATE_POINTS`; which module plays each role in
  each family is the family's entry in :mod:`prunelens.analysis.layout`).

Head masks are on the original layers × heads grid: in a layer that has lost heads (an
already-pruned checkpoint), the gate takes the values of the heads it still has.

:func:`gated` is the one context manager: it attaches the hooks through
:func:`prunelens.analysis.hooks.hooked` (under the model's lock) and removes every one of them on exit, also
when an exception is raised inside. Masks may be float tensors with ``requires_grad``,
so gradients with respect to gate values flow (Michel et al. importance, relaxed gates).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from prunelens.analysis.hooks import hooked
from prunelens.analysis.layout import GATE_POINTS, UNIT_SIZES, UNITS, encoder_layers, gate_module, present_heads


@dataclass
class Masks:
    """Gate values per unit kind; ``None`` means all ones. 1 keeps a unit, 0 removes it."""

    head: torch.Tensor | np.ndarray | None = None  # (layers, heads)
    attention: torch.Tensor | np.ndarray | None = None  # (layers,)
    ffn: torch.Tensor | np.ndarray | None = None  # (layers,)
    neuron: torch.Tensor | np.ndarray | None = None  # (layers, ffn)

    @classmethod
    def for_unit(cls, unit: str, mask) -> Masks:
        if unit not in UNITS:
            raise ValueError(f"no gate for unit '{unit}'")
        return cls(**{unit: mask})

    def is_empty(self) -> bool:
        return all(getattr(self, k) is None for k in UNITS)


def _as_tensor(value) -> torch.Tensor | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        return value if value.is_floating_point() else value.float()
    return torch.as_tensor(np.asarray(value, dtype=np.float32))


def _is_ones(row: torch.Tensor) -> bool:
    return not row.requires_grad and bool(torch.all(row == 1))


def _scale_input(gate: torch.Tensor, repeat: int, target: nn.Module | None = None):
    def hook(module, args):
        if target is not None and module is not target:
            return None  # in a deep copy made while the gate was on: not this gate's module
        x = args[0]
        g = gate.to(x.dtype)
        g = g.repeat_interleave(repeat, dim=-1) if repeat > 1 else g
        if g.dim() == 2:  # one gate row per example (batch, width): the same for all its tokens
            g = g[:, None, :]
        return (x * g,) + tuple(args[1:])

    return hook


def _scale_output(gate: torch.Tensor, target: nn.Module | None = None):
    def hook(module, args, output):
        if target is not None and module is not target:
            return None
        g = gate.to(output.dtype)  # a scalar, or per example (batch,) / per token (batch, tokens)
        return output * g.reshape(g.shape + (1,) * (output.dim() - g.dim())) if g.dim() else output * g

    return hook


@contextmanager
def gated(model: nn.Module, masks: Masks | None = None, **kinds):
    """Apply gate masks to ``model`` for the duration of the block.

    ``gated(model, Masks(head=m))`` or ``gated(model, head=m)``. Rows that are all ones with no
    gradient attach no hook, so an unpruned layer costs nothing. A gate may also carry one value
    per example or per token after its layer axis — head (layers, batch, heads) or (layers,
    batch, tokens, heads), a block (layers, batch) or (layers, batch, tokens) — so that one
    backward pass gives per-example or per-token gradients (``michel``).
    """
    masks = masks or Masks(**kinds)
    layers = encoder_layers(model)
    head = _as_tensor(masks.head)
    attention = _as_tensor(masks.attention)
    ffn = _as_tensor(masks.ffn)
    neuron = _as_tensor(masks.neuron)
    values = {"head": head, "attention": attention, "ffn": ffn, "neuron": neuron}
    for name in UNITS:
        value, dims = values[name], 1 if UNIT_SIZES[name] is None else 2
        if value is not None and (value.dim() not in (dims, dims + 1, dims + 2) or value.shape[0] != len(layers)):
            raise ValueError(f"{name} mask has shape {tuple(value.shape)}; expected {len(layers)} layers")
    pre, post = [], []
    gates = {"head": head, "attention": attention, "neuron": neuron, "ffn": ffn}
    present = present_heads(model) if head is not None else None
    for i, layer in enumerate(layers):
        for unit, value in gates.items():
            if value is None or _is_ones(value[i]):
                continue
            module = gate_module(layer, unit)
            row = value[i]
            if unit == "head" and len(present[i]) < value.shape[-1]:  # heads already cut out
                if not len(present[i]):
                    continue
                row = row.index_select(-1, torch.as_tensor(present[i], device=row.device))
            if GATE_POINTS[unit][1] == "input":  # a head's / neuron's slice of the input
                pre.append((module, _scale_input(row, module.in_features // row.shape[-1], module)))
            else:  # a block's output, before the residual add
                post.append((module, _scale_output(value[i], module)))
    with hooked(model, pre, post):
        yield model


def hook_count(model: nn.Module) -> int:
    """Number of hooks attached to the encoder's gate points (0 outside ``gated``)."""
    total = 0
    for layer in encoder_layers(model):
        modules = {id(m): m for m in (gate_module(layer, unit) for unit in GATE_POINTS)}
        for module in modules.values():
            total += len(module._forward_pre_hooks) + len(module._forward_hooks)
    return total
