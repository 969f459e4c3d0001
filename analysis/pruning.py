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
from prunelens.analysis.layout import NoHeads, encoder_layers, keep_owned
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
           threshold: float | None = None, keep_one_per_layer: bool = False) -> np.ndarray:
    """Keep-mask (1 keep, 0 prune) of the same shape as ``scores``.

    ``scores`` is (layers, units) or (layers,). Exactly ``round(sparsity * total)`` units are
    removed (``global``), or ``round(sparsity * per_layer)`` in every layer (``layer``), but never
    every unit (one is kept, :func:`capped_note` says so); ties go to the earlier index. With ``threshold``, units scoring strictly below it are removed.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim not in (1, 2) or s.size == 0:
        raise ParamError(f"scores must be a (layers,) or (layers, units) array, got shape {s.shape}")
    if np.isnan(s).any():
        raise ParamError("scores contain NaN (recompute them)")
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
            remove = min(remove, s.shape[1] - 1)  # never every unit: see capped_note
            for layer in range(s.shape[0]):
                mask[layer, np.argsort(s[layer], kind="stable")[:remove]] = 0
            return mask
        flat = s.reshape(-1)
        remove = int(round(sparsity * flat.size))
        remove = min(remove, flat.size - 1)  # never every unit: see capped_note
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


def capped_note(sparsity: float | None, shape: tuple[int, ...], scope: str = "global") -> str | None:
    """What :func:`select` says when ``sparsity`` rounds to every unit (globally, or in every layer
    with ``layer`` scope): it removes one fewer, since a model without any unit of the kind
    leaves nothing to evaluate. None when it was not capped."""
    if sparsity is None or not shape:
        return None
    units = shape[1] if scope == "layer" and len(shape) == 2 else int(np.prod(shape))
    if units < 1 or int(round(float(sparsity) * units)) < units:
        return None
    where = " in every layer" if scope == "layer" and len(shape) == 2 else ""
    return (f"sparsity {sparsity:g} would remove all {units} units{where}: capped to {units - 1}, keeping "
            f"one (at most {int((units - 1) / units * 10**4) / 10**4:.4f} removes fewer)")


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
    m = np.asarray(mask)
    pruned_units = int(m.size - np.count_nonzero(m))
    return Compression(removed=pruned_units * inventory.unit_params(unit), total=inventory.encoder_params)


def sparsity_of(mask) -> float:
    m = np.asarray(mask)
    return float(1 - np.count_nonzero(m) / m.size)


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


def physically_prune(model: nn.Module, masks: Masks) -> nn.Module:
    """A smaller copy of ``model`` without the masked heads and neurons (0/1 masks only).

    Whole attention/FFN blocks masked to 0 are pruned by removing all their heads/neurons *and*
    the output bias, so the block adds exactly nothing, as the gate does.
    """
    pruned = private_copy(model)
    layers = encoder_layers(pruned)
    head = None if masks.head is None else np.asarray(masks.head, dtype=np.float32)
    neuron = None if masks.neuron is None else np.asarray(masks.neuron, dtype=np.float32)
    attention = None if masks.attention is None else np.asarray(masks.attention, dtype=np.float32)
    ffn = None if masks.ffn is None else np.asarray(masks.ffn, dtype=np.float32)
    for arr in (head, neuron, attention, ffn):
        if arr is not None and not np.isin(arr, (0.0, 1.0)).all():
            raise ParamError("physical pruning needs 0/1 masks")
    for i, layer in enumerate(layers):
        attn = layer.attention.self
        size = attn.query.out_features // max(1, attn.num_attention_heads)
        keep_heads = np.arange(attn.num_attention_heads)
        if head is not None:
            keep_heads = np.flatnonzero(head[i])
        block_off = attention is not None and attention[i] == 0
        if block_off:
            keep_heads = np.array([], dtype=int)
        if len(keep_heads) < attn.num_attention_heads:
            rows = torch.as_tensor(
                np.concatenate([np.arange(h * size, (h + 1) * size) for h in keep_heads])
                if len(keep_heads) else np.zeros(0, int), dtype=torch.long)
            keep_owned(layer, "head", rows, _keep_rows, _keep_cols)  # Q/K/V rows, O columns
            if len(keep_heads) == 0:
                layer.attention.self = NoHeads()
            else:
                attn.num_attention_heads = len(keep_heads)
                attn.all_head_size = len(rows)
        if block_off:
            layer.attention.output.dense.bias.data.zero_()
        ffn_off = ffn is not None and ffn[i] == 0
        keep_neurons = None
        if neuron is not None:
            keep_neurons = np.flatnonzero(neuron[i])
        if ffn_off:
            keep_neurons = np.array([], dtype=int)
        if keep_neurons is not None and len(keep_neurons) < layer.intermediate.dense.out_features:
            idx = torch.as_tensor(keep_neurons, dtype=torch.long)
            keep_owned(layer, "neuron", idx, _keep_rows, _keep_cols)  # intermediate rows, output columns
        if ffn_off:
            layer.output.dense.bias.data.zero_()
    pruned.eval()
    for p in pruned.parameters():
        p.requires_grad_(False)
    return pruned


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for layer in encoder_layers(model) for p in layer.parameters())
