"""The layer-prefix cache of the reference path, for every encoder family.

The fast kernel (:mod:`prunelens.analysis.fastpath`) keeps its own prefix cache; a family it does
not compute (or an already-pruned checkpoint) runs transformers' forward under the gates. That
forward is layer after layer whatever the family's math, so one cache serves all: the output of
layer ``L - 1`` depends only on the mask rows of layers ``< L`` (the key
:func:`~prunelens.analysis.fastpath.prefix_keys` gives), so a mask that agrees with an earlier one
on those rows starts at layer ``L``: the layers before it return their cached output (for the
duration of one forward, under the model's lock, like the gates; nothing of the model changes
afterwards), the layers from ``L`` on run and their outputs are kept. Budgeted in bytes, least
recently used first out. A cancel point per batch, as on every path.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from torch import nn

from prunelens.analysis.checkpoints import checkpoint
from prunelens.analysis.fastpath import DEFAULT_CACHE_MB, mask_rows, prefix_keys
from prunelens.analysis.gates import Masks, gated
from prunelens.analysis.hooks import hooked, model_lock
from prunelens.analysis.layout import encoder_layers


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


def _kept(value):
    """A copy of a layer's output that later forwards cannot change."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple):
        return tuple(_kept(v) for v in value)
    return value


class ReferencePrefixCache:
    """Outputs of the layers of one batch list under the masks seen, by (batch, prefix key)."""

    def __init__(self, budget_bytes: int = DEFAULT_CACHE_MB << 20):
        self.budget = budget_bytes
        self.entries: OrderedDict[tuple[int, bytes], tuple[object, int]] = OrderedDict()
        self.bytes = 0
        self.skipped_layers = 0  # layers not run thanks to the cache (for tests and bench)
        self._lock = threading.Lock()

    def _put(self, key, value) -> None:
        size = sum(t.numel() * t.element_size() for t in _tensors(value))
        if size > self.budget:
            return
        with self._lock:
            if key in self.entries:
                return
            self.entries[key] = (value, size)
            self.bytes += size
            while self.bytes > self.budget:
                _, (_, dropped) = self.entries.popitem(last=False)
                self.bytes -= dropped

    def _deepest(self, b: int, keys: list[bytes]) -> tuple[int, object]:
        with self._lock:
            for start in range(len(keys) - 1, 0, -1):
                hit = self.entries.get((b, keys[start]))
                if hit is not None:
                    self.entries.move_to_end((b, keys[start]))
                    return start, hit[0]
        return 0, None

    def logits(self, model: nn.Module, batches, masks: Masks | None, device) -> list[torch.Tensor]:
        """Per batch, the logits of ``model`` under ``masks`` (the reference forward's, exactly)."""
        layers = encoder_layers(model)
        keys = prefix_keys(mask_rows(masks, len(layers)))
        out = []
        with torch.inference_mode(), model_lock(model), gated(model, masks or Masks()):
            for b, batch in enumerate(batches):
                checkpoint()
                start, cached = self._deepest(b, keys)

                def keep(depth: int, b=b):
                    def hook(module, args, output):
                        self._put((b, keys[depth + 1]), _kept(output))
                    return hook

                recorders = [(layer, keep(i)) for i, layer in enumerate(layers) if i >= start]
                for layer in layers[:start]:  # these rows are the cached output's: not run again
                    layer.forward = lambda *args, _cached=cached, **kwargs: _kept(_cached)
                try:
                    with hooked(model, post=recorders):
                        out.append(model(**batch.to(device).model_inputs()).logits)
                finally:
                    for layer in layers[:start]:
                        layer.__dict__.pop("forward", None)
                self.skipped_layers += start
        return out
