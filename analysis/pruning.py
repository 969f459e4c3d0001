"""From scores to masks, compression accounting, and physical pruning.

- :func:`select` turns importance scores (higher = more important) into a 0/1 keep-mask: the
  lowest scores globally, the same count in every layer, or everything below a threshold;
  optionally keeping at least one unit per layer. Counts are exact: ``round(sparsity * units)``.
- :func:`compression` counts the encoder parameters a mask removes, exactly.
- :func:`physically_prune` returns a *copy* of the model with heads sliced out of Q/K/V/O and
  neurons out of the FFN, which computes what the masked model computes (to float tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass

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
from prunelens.analysis.models import Inventory

SCOPES = ("global", "layer")


def check_sparsity(sparsity: float) -> float:
    try:
        sparsity = float(sparsity)
    except (TypeError, ValueError):
        raise ParamError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= sparsity < 1.0 or np.isnan(sparsity):
        raise ParamError(f"sparsity must be in [0, 1), got {sparsity} (0.5 removes half the units)")
    return sparsity


def check_threshold(threshold: float) -> float:
    """A finite score threshold >= 0 (NaN or inf would silently prune every unit or none)."""
    try:
        threshold = float(threshold)
    except (TypeError, ValueError):
        raise ParamError(f"threshold must be a number >= 0, got {threshold!r}") from None
    if not np.isfinite(threshold) or threshold < 0:
        raise ParamError(f"threshold must be a finite number >= 0, got {threshold}")
    return threshold


def check_selection(sparsity: float | None, threshold: float | None) -> None:
    """Exactly one of a sparsity in [0, 1) and a finite threshold >= 0 (what ``prune`` needs)."""
    if sparsity is None and threshold is None:
        raise ParamError("give --sparsity or --threshold")
    if sparsity is not None and threshold is not None:
        raise ParamError("give either a sparsity or a threshold, not both")
    if sparsity is not None:
        check_sparsity(sparsity)
    else:
        check_threshold(threshold)


def select(scores, sparsity: float | None = None, scope: str = "global",
           threshold: float | None = None, keep_one_per_layer: bool = False, present=None) -> np.ndarray:
    """Keep-mask (1 keep, 0 prune) of the same shape as ``scores``.

    ``scores`` is (layers, units) or (layers,). Exactly ``round(sparsity * total)`` units are
    removed (``global``), or ``round(sparsity * per_layer)`` in every layer (``layer``); ties go
    to the earlier index. With ``threshold``, units scoring strictly below it are removed.
    ``present`` (bool, the shape of ``scores``): the units the model has — one it no longer has
    (a head an already-pruned checkpoint lost) is never counted nor kept.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim not in (1, 2) or s.size == 0:
        raise ParamError(f"scores must be a (layers,) or (layers, units) array, got shape {s.shape}")
    if present is not None and not np.asarray(present, dtype=bool).all():
        s = np.where(np.asarray(present, dtype=bool), s, np.nan)
        if np.isnan(s[np.asarray(present, dtype=bool)]).any():
            raise ParamError("scores contain NaN (recompute them)")
        return _select_present(s, sparsity, scope, threshold, keep_one_per_layer)
    if scope not in SCOPES:
        raise ParamError(f"unknown scope '{scope}' (use global or layer)")
    if threshold is not None:
        if sparsity is not None:
            raise ParamError("give either a sparsity or a threshold, not both")
        threshold = check_threshold(threshold)
        mask = (s >= threshold).astype(np.int8)
    else:
        sparsity = check_sparsity(0.0 if sparsity is None else sparsity)
        mask = np.ones(s.shape, dtype=np.int8)
        if scope == "layer" and s.ndim == 2:
            remove = int(round(sparsity * s.shape[1]))
            if keep_one_per_layer:
                remove = min(remove, s.shape[1] - 1)
            for layer in range(s.shape[0]):
                mask[layer, np.argsort(s[layer], kind="stable")[:remove]] = 0
            return mask
        flat = s.reshape(-1)
        remove = int(round(sparsity * flat.size))
        order = np.argsort(flat, kind="stable")
        flat_mask = mask.reshape(-1)
        if keep_one_per_layer and s.ndim == 2:
            # remove in score order but skip a unit if it is the last one left in its layer
            left = np.full(s.shape[0], s.shape[1])
            removed = 0
            for idx in order:
                if removed == remove:
                    break
                layer = idx // s.shape[1]
                if left[layer] > 1:
                    flat_mask[idx] = 0
                    left[layer] -= 1
                    removed += 1
        else:
            flat_mask[order[:remove]] = 0
        mask = flat_mask.reshape(s.shape)
    if keep_one_per_layer and s.ndim == 2:
        for layer in range(s.shape[0]):
            if mask[layer].sum() == 0:
                mask[layer, int(np.argmax(s[layer]))] = 1
    return mask


def _select_present(s: np.ndarray, sparsity, scope, threshold, keep_one_per_layer) -> np.ndarray:
    """:func:`select` over the units the model has; NaN marks a unit it no longer has (a head an
    already-pruned checkpoint lost): never counted, never kept (0). Counts are over the units present."""
    present = ~np.isnan(s)
    mask = np.zeros(s.shape, dtype=np.int8)
    if threshold is not None or scope != "layer" or s.ndim == 1:
        if threshold is not None:
            mask[present] = select(s[present], threshold=threshold)
        else:
            mask[present] = select(s[present], sparsity=sparsity, scope="global")
        if keep_one_per_layer and s.ndim == 2:
            for layer in range(s.shape[0]):
                if present[layer].any() and mask[layer].sum() == 0:
                    row = np.where(present[layer], s[layer], -np.inf)
                    mask[layer, int(np.argmax(row))] = 1
        return mask
    for layer in range(s.shape[0]):
        if present[layer].any():
            mask[layer, present[layer]] = select(s[layer][present[layer]][None, :], sparsity=sparsity, scope="layer",
                                                 keep_one_per_layer=keep_one_per_layer)[0]
    return mask


def grid_json(values, present=None) -> list:
    """A mask or scores as JSON lists, ``null`` where ``present`` (same shape, bool) is False or a
    value is NaN (a unit the model no longer has)."""
    arr = np.asarray(values, dtype=np.float64)
    gone = np.isnan(arr) if present is None else (~np.asarray(present, dtype=bool) | np.isnan(arr))
    out = np.asarray(values).astype(object)
    out[gone] = None
    return out.tolist()


@dataclass
class Compression:
    removed: int
    total: int

    @property
    def fraction(self) -> float:
        return self.removed / self.total if self.total else 0.0

    def as_dict(self) -> dict:
        return {"removed": self.removed, "total": self.total, "fraction": self.fraction}


def compression(inventory: Inventory, unit: str, mask) -> Compression:
    """Encoder parameters removed by ``mask`` over ``unit`` (LayerNorms and embeddings stay)."""
    removed = getattr(inventory, "removed_params", None)
    if removed is None:  # a bare inventory (tests): every masked unit owns its own weights
        m = np.asarray(mask)
        return Compression(removed=int(m.size - np.count_nonzero(m)) * inventory.unit_params(unit),
                           total=inventory.encoder_params)
    return Compression(removed=removed(unit, mask), total=inventory.encoder_params)


def sparsity_of(mask) -> float:
    m = np.asarray(mask, dtype=np.float64)
    m = m[~np.isnan(m)]  # NaN: a unit the model no longer has
    return float(1 - np.count_nonzero(m) / max(1, m.size))


# ---------------------------------------------------------------------------------------------
# physical pruning


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
    pruned.eval()
    for p in pruned.parameters():
        p.requires_grad_(False)
    return pruned


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
