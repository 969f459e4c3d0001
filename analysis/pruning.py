"""From scores to masks, compression accounting, and physical pruning.

- :func:`select` turns importance scores (higher = more important) into a 0/1 keep-mask: the
  lowest scores globally, the same count in every layer, or everything below a threshold;
  optionally keeping at least one unit per layer. Counts are exact: ``round(sparsity * units)``.
- :func:`compression` counts the encoder parameters a mask removes, exactly.
- :func:`physically_prune` (from :mod:`prunelens.analysis.slicing`) returns a *copy* of the model with heads sliced out of Q/K/V/O and
  neurons out of the FFN, which computes what the masked model computes (to float tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prunelens.analysis.errors import ParamError
from prunelens.analysis.models import Inventory
from prunelens.analysis.slicing import GatedLinear, parameter_count, physically_prune  # noqa: F401 (re-exported)

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
    removed (``global``), or ``round(sparsity * per_layer)`` in every layer (``layer``), but never
    every unit (one is kept, :func:`capped_note` says so); ties go to the earlier index. With ``threshold``, units scoring strictly below it are removed.
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


def emptied_layers(mask) -> list[int]:
    """Layers a (layers, units) keep-mask removes every unit of (such a model often falls to
    chance: nothing passes that layer's heads); [] for a per-layer (1-D) mask."""
    m = np.asarray(mask)
    if m.ndim != 2:
        return []
    return [int(layer) for layer in np.flatnonzero(m.sum(axis=1) == 0)]


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
