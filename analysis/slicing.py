"""Cutting units out of the weights: :func:`physically_prune` returns a *copy* of a model with
heads sliced out of Q/K/V/O (of each family's matrices, :mod:`prunelens.analysis.layout`) and
neurons out of the FFN, which computes what the masked model computes (to float tolerance).

Core (like the export-folder format that rebuilds sliced shapes through it,
:mod:`prunelens.analysis.pruned_folder`); :mod:`prunelens.analysis.pruning` re-exports it beside
the selection of masks and the compression accounting.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from prunelens.analysis.errors import ParamError
from prunelens.analysis.gates import Masks
from prunelens.analysis.hooks import private_copy
from prunelens.analysis.layout import (
    ATTENTION_OUTPUT,
    FFN_OUTPUT,
    encoder_layers,
    family_of,
    keep_owned,
    matrix,
    no_heads,
    present_heads,
    set_head_count,
    set_matrix,
    set_submodule,
    sharing_groups,
    slice_shared_head_inputs,
    submodule,
    unique_parameters,
)


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    new = torch.nn.utils.skip_init(nn.Linear, linear.in_features, len(rows), bias=linear.bias is not None)
    new.weight.data = linear.weight.data[rows].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data[rows].clone()
    return new


def _keep_cols(linear: nn.Linear, cols: torch.Tensor) -> nn.Linear:
    new = torch.nn.utils.skip_init(nn.Linear, len(cols), linear.out_features, bias=linear.bias is not None)
    new.weight.data = linear.weight.data[:, cols].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data.clone()
    return new


class GatedLinear(nn.Linear):
    """A dense layer of a shared-layer view (ALBERT) that keeps a fixed gate: the heads or neurons
    one depth removes while another depth sharing the weights keeps them (``in_gate``, per input
    column), or a whole block removed at this depth alone (``out_gate`` 0). It shares the weights."""

    def __init__(self, linear: nn.Linear, in_gate: torch.Tensor | None = None, out_gate: float | None = None):
        nn.Module.__init__(self)
        base = linear.linear if isinstance(linear, GatedLinear) else linear
        self.in_features, self.out_features = base.in_features, base.out_features
        object.__setattr__(self, "linear", base)
        self.weight, self.bias = base.weight, base.bias
        self.in_gate, self.out_gate = in_gate, out_gate

    def forward(self, x):
        if self.in_gate is not None:
            x = x * self.in_gate.to(x.dtype)
        y = nn.functional.linear(x, self.weight, self.bias)
        return y if self.out_gate is None else y * self.out_gate


def _mask_array(value) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float32)
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ParamError("physical pruning needs 0/1 masks")
    return arr


def _block_rows(kept_local: np.ndarray, size: int) -> torch.Tensor:
    rows = [np.arange(h * size, (h + 1) * size) for h in kept_local]
    return torch.as_tensor(np.concatenate(rows) if rows else np.zeros(0, int), dtype=torch.long)


def _prune_layer(layer: nn.Module, family, present: np.ndarray, keep_heads: np.ndarray, size: int,
                 attention_off: bool, keep_neurons: np.ndarray | None, ffn_off: bool) -> None:
    """Slice one layer (a registered layer: for a shared-layer family, the owner of the weights)."""
    if len(keep_heads) < len(present):
        local = np.flatnonzero(np.isin(present, keep_heads))
        keep_owned(layer, "head", _block_rows(local, size), _keep_rows, _keep_cols, len(present) * size)
        attention = submodule(layer, family.attention)
        if len(keep_heads) == 0:
            set_submodule(layer, family.attention, no_heads(layer))
        else:
            set_head_count(attention, len(keep_heads), size)
            slice_shared_head_inputs(layer, keep_heads)
    if attention_off and matrix(layer, ATTENTION_OUTPUT).bias is not None:
        matrix(layer, ATTENTION_OUTPUT).bias.data.zero_()
    width = matrix(layer, FFN_OUTPUT).in_features
    if keep_neurons is not None and len(keep_neurons) < width:
        keep_owned(layer, "neuron", torch.as_tensor(keep_neurons, dtype=torch.long), _keep_rows, _keep_cols, width)
    if ffn_off and matrix(layer, FFN_OUTPUT).bias is not None:
        matrix(layer, FFN_OUTPUT).bias.data.zero_()


def physically_prune(model: nn.Module, masks: Masks) -> nn.Module:
    """A smaller copy of ``model`` without the masked heads and neurons (0/1 masks only).

    Masks are on the original layers × heads grid (a head the model no longer has is ignored);
    the copy's ``config.pruned_heads`` lists every head gone. Whole attention/FFN blocks masked
    to 0 are pruned by removing all their heads/neurons *and* the output bias, so the block adds
    exactly nothing, as the gate does. Shared layers (ALBERT): a head or neuron leaves the shared
    weights only when every depth sharing them removes it; the others become fixed gates of
    their depth's view (:class:`GatedLinear`), so the copy computes what the masks do.
    """
    pruned = private_copy(model)
    family = family_of(pruned)
    layers = encoder_layers(pruned)
    config = pruned.config
    size = family.head_size(config)
    head, neuron = _mask_array(masks.head), _mask_array(masks.neuron)
    attention, ffn = _mask_array(masks.attention), _mask_array(masks.ffn)
    if family.shared_layers:
        head, neuron, attention, ffn = _with_earlier_gates(pruned, head, neuron, attention, ffn)
    present = present_heads(pruned)

    def heads_kept(i: int) -> np.ndarray:
        if attention is not None and attention[i] == 0:
            return np.zeros(0, dtype=np.int64)
        return present[i] if head is None else present[i][head[i][present[i]] != 0]

    def neurons_kept(i: int) -> np.ndarray | None:
        if ffn is not None and ffn[i] == 0:
            return np.zeros(0, dtype=np.int64)
        return None if neuron is None else np.flatnonzero(neuron[i])

    groups = sharing_groups(pruned) if family.shared_layers else [[i] for i in range(len(layers))]
    owner_neurons: list[np.ndarray] = []  # per group: the neurons its weights keep
    for group in groups:
        owner = pruned.base_model.encoder.owner_of(group[0]) if family.shared_layers else layers[group[0]]
        kept = sorted(set().union(*(set(heads_kept(i).tolist()) for i in group)))
        width = matrix(owner, FFN_OUTPUT).in_features
        if neuron is not None and neuron.shape[1] != width:
            raise ParamError(f"neuron mask has {neuron.shape[1]} neurons per layer but layer {group[0]} "
                             f"has {width} (score the model as it is now)")
        per_depth = [neurons_kept(i) for i in group]
        neurons = None if any(n is None for n in per_depth) else np.array(
            sorted(set().union(*(set(n.tolist()) for n in per_depth))), dtype=np.int64)
        owner_neurons.append(np.arange(width) if neurons is None else neurons)
        _prune_layer(owner, family, present[group[0]], np.asarray(kept, dtype=np.int64), size,
                     all(attention is not None and attention[i] == 0 for i in group),
                     neurons, all(ffn is not None and ffn[i] == 0 for i in group))
        for i in group:
            gone = sorted(set(range(int(config.num_attention_heads))) - set(kept))
            if gone:
                config.pruned_heads = {**(getattr(config, "pruned_heads", None) or {}), i: gone}
    if family.shared_layers:
        _fixed_gates(pruned, groups, owner_neurons, heads_kept, neurons_kept, attention, ffn, size)
        pruned.prunelens_depth_masks = {  # what an export folder needs to rebuild the gates
            name: None if value is None else value.tolist()
            for name, value in (("head", head), ("neuron", neuron), ("attention", attention), ("ffn", ffn))}
    pruned.eval()
    for p in pruned.parameters():
        p.requires_grad_(False)
    return pruned


def _with_earlier_gates(model, head, neuron, attention, ffn):
    """Shared layers: the masks of an earlier physical pruning (kept as per-depth gates) combined
    with these (a unit goes when either removes it)."""
    earlier = getattr(model, "prunelens_depth_masks", None)
    if not earlier:
        return head, neuron, attention, ffn
    if earlier.get("neuron") is not None and neuron is not None:
        raise ParamError("this shared-layer model already has neurons gated per depth: prune its heads or "
                         "blocks, or prune the neurons of the original checkpoint")

    def both(new, old):
        old = None if old is None else np.asarray(old, dtype=np.float32)
        return old if new is None else (new if old is None else new * old)

    return (both(head, earlier.get("head")), both(neuron, earlier.get("neuron")),
            both(attention, earlier.get("attention")), both(ffn, earlier.get("ffn")))


def _fixed_gates(pruned, groups, owner_neurons, heads_kept, neurons_kept, attention, ffn, size) -> None:
    """Shared layers: rebuild the views of the sliced weights; at each depth, gate what that
    depth removes but the weights keep for another depth."""
    pruned.base_model.encoder.rebuild_views()
    layers = encoder_layers(pruned)
    present = present_heads(pruned)
    for group, kept_neurons in zip(groups, owner_neurons):
        for i in group:
            layer = layers[i]
            out = matrix(layer, ATTENTION_OUTPUT)
            gate = torch.as_tensor(np.isin(present[i], heads_kept(i)), dtype=torch.float32)
            block = 0.0 if attention is not None and attention[i] == 0 else None
            if len(present[i]) and (not bool(gate.all()) or block is not None):
                set_matrix(layer, ATTENTION_OUTPUT, GatedLinear(out, gate.repeat_interleave(size), block))
            down = matrix(layer, FFN_OUTPUT)
            kept_here = neurons_kept(i)  # which of the weights' kept neurons this depth keeps
            n_gate = torch.ones(down.in_features) if kept_here is None else \
                torch.as_tensor(np.isin(kept_neurons, kept_here), dtype=torch.float32)
            block = 0.0 if ffn is not None and ffn[i] == 0 else None
            if down.in_features and (not bool(n_gate.all()) or block is not None):
                set_matrix(layer, FFN_OUTPUT, GatedLinear(down, n_gate, block))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in unique_parameters(encoder_layers(model)))
