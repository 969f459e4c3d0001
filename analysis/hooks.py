"""Everything that touches a shared model: its lock, the one hook scope, private copies.

A loaded model is cached and shared by every dashboard session and job, and PyTorch hooks live on
the model itself: a thread that attaches hooks changes what every other thread's forward pass
computes. So:

- :func:`model_lock` is the one re-entrant lock per model object;
- :func:`hooked` is the one way to put hooks on it — forward pre-hooks and forward hooks for the
  duration of a ``with`` block, taken under the lock and removed in ``finally`` (also on errors),
  used by the gates (:func:`prunelens.analysis.gates.gated`), spectral capture
  (:func:`prunelens.analysis.spectral.captured`) and attention maps (:mod:`prunelens.analysis.attention`);
- :func:`private_copy` is the one way to take a copy to change (training, normalization,
  physical pruning): a deep copy taken under the lock, so no other thread's hooks come along.
"""

from __future__ import annotations

import copy
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

Hook = tuple[nn.Module, Callable]  # (module, hook function)

_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock :func:`hooked` holds on ``model``: two threads (dashboard sessions) hooking the
    shared model at once would each see the other's hooks. Hold it too around anything else that
    must not see foreign hooks (copying the model, tracing it for ONNX)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextmanager
def hooked(model: nn.Module, pre: Iterable[Hook] = (), post: Iterable[Hook] = ()) -> Iterator[nn.Module]:
    """``model`` with forward pre-hooks ``pre`` and forward hooks ``post`` attached (modules of
    ``model``), under :func:`model_lock`; every hook is removed, and the lock released, on exit."""
    lock = model_lock(model)
    handles = []
    with lock:
        try:
            for module, hook in pre:
                handles.append(module.register_forward_pre_hook(hook))
            for module, hook in post:
                handles.append(module.register_forward_hook(hook))
            yield model
        finally:
            for handle in reversed(handles):
                handle.remove()


def private_copy(model: nn.Module, device: str | torch.device | None = None) -> nn.Module:
    """A deep copy of ``model`` for this caller alone (on ``device`` when given), taken under
    the model's lock so that no other thread's hooks are copied with it."""
    with model_lock(model):
        copied = copy.deepcopy(model)
    return copied if device is None else copied.to(device)
