"""The BERT layer layout: its six matrices, the prunable units, what each unit owns, where gates act.

One place for what every method, the gates, the fast path and the parameter accounting assume
about an encoder layer (``BertLayer`` and the layouts that share it: RoBERTa, MiniLM, ...):

- :data:`MATRICES`: the six dense layers, by name — Q, K, V, the attention output, the FFN's
  intermediate and output — and :func:`layer_matrices` to reach them in a layer;
- :data:`UNIT_SIZES` (and :data:`UNITS`, :data:`BLOCK_UNITS` derived from it): the one list of
  prunable units, in the one order every listing, method declaration and control uses, and what
  counts them in a layer (``Inventory.unit_shape`` answers from it);
- :data:`OWNS`: what a unit owns. A **head** owns its ``head_size`` rows of Q, K
  and V (weights and biases) and the same columns of the attention-output weight; a **neuron** its
  row of the intermediate weight (and bias entry) and its column of the output weight; an
  **attention** / **FFN** block every weight and bias of its matrices (the LayerNorms stay);
- :func:`per_unit`: the one reduction of per-weight scores (a tensor shaped like each weight) to
  per-unit scores, used by ``magnitude``, ``pins``/``platon``, ``admm``'s shares and the
  parameter counts (:class:`prunelens.analysis.models.Inventory` agrees with it, a test ties them);
- :data:`GATE_POINTS`: where a unit's gate multiplies — the input of the attention-output
  (heads) or output (neurons) dense layer, or the output of that layer (blocks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from prunelens.analysis.errors import ModelError

MATRICES = ("query", "key", "value", "attention_output", "intermediate", "output")
ATTENTION_MATRICES = MATRICES[:4]
FFN_MATRICES = MATRICES[4:]
# the prunable units, in the one order every listing uses: name -> the Inventory size that counts
# a layer's units (None: one per layer, a whole block). Scores of a unit are shaped (layers,) or
# (layers, that size): :meth:`prunelens.analysis.models.Inventory.unit_shape`
UNIT_SIZES: dict[str, str | None] = {"head": "heads", "attention": None, "ffn": None, "neuron": "ffn"}
UNITS = tuple(UNIT_SIZES)
BLOCK_UNITS = tuple(u for u, size in UNIT_SIZES.items() if size is None)  # one per layer: attention, ffn

ROWS, COLUMNS, ALL = "rows", "columns", "all"  # which part of a matrix a unit's index runs over
OWNS: dict[str, dict[str, str]] = {
    "head": {"query": ROWS, "key": ROWS, "value": ROWS, "attention_output": COLUMNS},
    "neuron": {"intermediate": ROWS, "output": COLUMNS},
    "attention": dict.fromkeys(ATTENTION_MATRICES, ALL),
    "ffn": dict.fromkeys(FFN_MATRICES, ALL),
}
# (matrix, "input" | "output"): a head / neuron gate scales its slice of the matrix's input (a
# forward pre-hook), a block gate the matrix's output (before the residual add)
GATE_POINTS = {"head": ("attention_output", "input"), "neuron": ("output", "input"),
               "attention": ("attention_output", "output"), "ffn": ("output", "output")}


# where each matrix sits in a BertLayer-like module (attribute path)
_PATHS = {"query": ("attention", "self", "query"), "key": ("attention", "self", "key"),
          "value": ("attention", "self", "value"), "attention_output": ("attention", "output", "dense"),
          "intermediate": ("intermediate", "dense"), "output": ("output", "dense")}


def _follow(module: nn.Module, path: tuple[str, ...]) -> nn.Module:
    for part in path:
        module = getattr(module, part)
    return module


def matrix(layer: nn.Module, name: str) -> nn.Module:
    """One matrix of the layer, by name (only that one is looked up)."""
    return _follow(layer, _PATHS[name])


def layer_matrices(layer: nn.Module) -> dict[str, nn.Linear]:
    """The six dense layers of one encoder layer, by the names in :data:`MATRICES`."""
    return {name: matrix(layer, name) for name in MATRICES}


def set_matrix(layer: nn.Module, name: str, linear: nn.Module) -> None:
    """Put ``linear`` in place of the layer's matrix ``name`` (physical pruning)."""
    *parents, attr = _PATHS[name]
    setattr(_follow(layer, tuple(parents)), attr, linear)


def keep_owned(layer: nn.Module, unit: str, index: torch.Tensor, keep_rows, keep_columns) -> None:
    """Replace every matrix ``unit`` (head or neuron) owns part of by its kept rows / columns
    (``index``: the kept rows of a row-owned matrix, the kept columns of a column-owned one)."""
    for name, part in OWNS[unit].items():
        keep = keep_rows if part == ROWS else keep_columns
        set_matrix(layer, name, keep(matrix(layer, name), index))


def gate_module(layer: nn.Module, unit: str) -> nn.Linear:
    """The dense layer at whose input (heads, neurons) or output (blocks) ``unit``'s gate acts."""
    return layer_matrices(layer)[GATE_POINTS[unit][0]]


def check_unit(unit: str) -> str:
    if unit not in OWNS:
        raise ValueError(f"unknown unit {unit!r}: one of {', '.join(UNITS)}")
    return unit


def per_unit(weight_scores: Sequence[Mapping[str, torch.Tensor]], inventory, unit: str,
             bias_scores: Sequence[Mapping[str, torch.Tensor]] | None = None) -> np.ndarray:
    """Per-unit sums of per-weight scores, shaped ``inventory.unit_shape(unit)`` (float64).

    ``weight_scores[layer][matrix]``: a tensor shaped like that matrix's weight (out × in), for
    every matrix ``unit`` owns (:data:`OWNS`; others are ignored). ``bias_scores``, optional, the
    same for the biases (a column-owning unit owns no bias entry). Sums run in :data:`MATRICES`
    order, in float64.
    """
    owns = OWNS[check_unit(unit)]
    rows = []
    for i, layer in enumerate(weight_scores):
        biases = bias_scores[i] if bias_scores is not None else {}
        if unit not in BLOCK_UNITS:
            total = None
            for name in MATRICES:
                if name not in owns:
                    continue
                part = layer[name].detach().double().sum(1 if owns[name] == ROWS else 0)
                if owns[name] == ROWS and name in biases:
                    part = part + biases[name].detach().double()
                total = part if total is None else total + part
            if unit == "head":
                total = total.reshape(inventory.heads, inventory.head_size).sum(1)
            rows.append(total.cpu().numpy())
        else:
            total = 0.0
            for name in MATRICES:
                if name in owns:
                    total = total + layer[name].detach().double().sum()
                    if name in biases:
                        total = total + biases[name].detach().double().sum()
            rows.append(float(total))
    return np.asarray(rows, dtype=np.float64)


def encoder_layers(model: nn.Module) -> list[nn.Module]:
    """The encoder's layers (``model.base_model.encoder.layer``) of a BERT-style model."""
    base = getattr(model, "base_model", model)
    try:
        return list(base.encoder.layer)
    except AttributeError:
        raise ModelError("model has no BERT-style encoder.layer list") from None


class NoHeads(nn.Module):
    """Stands in for a self-attention module whose heads were all pruned: outputs width 0."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states.new_zeros(*hidden_states.shape[:-1], 0), None


def encoder_matrices(model: nn.Module) -> list[dict[str, nn.Linear]]:
    """:func:`layer_matrices` of every encoder layer of ``model``."""
    return [layer_matrices(layer) for layer in encoder_layers(model)]
