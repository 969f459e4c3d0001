"""Cooperative cancellation: long evaluation loops call :func:`checkpoint` once per batch.

Without a callback installed a checkpoint costs a thread-local lookup and does nothing. A caller
that may want to abandon the work installs one with :func:`checkpoints`; it runs at every
checkpoint of that thread and stops the work by raising. The dashboard installs a callback
that reads Streamlit's session state, which is one of Streamlit's yield points: when a newer
slider move has asked for a rerun, Streamlit raises its rerun exception right there, so a stale
evaluation stops at its next batch instead of running to the end while the newer one waits.
Evaluation code keeps its caches consistent under such an exception: it fills them only after a
whole pass has finished.

Training runs pass a checkpoint at every step (each training batch is one, see
:class:`prunelens.analysis.batches.StreamedBatches`); a background job (``dashboard/jobs.py``) installs a
callback that raises :class:`Cancelled` once the run is cancelled or its session has ended, so
the run stops before its next step and, since results are stored only when a run ends, leaves
nothing in the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_local = threading.local()


class Cancelled(Exception):
    """Raised at a checkpoint of work that was cancelled (by the user, or because its session
    ended)."""


def checkpoint() -> None:
    """A point where the current thread's work may be stopped (see the module docstring)."""
    callback = getattr(_local, "callback", None)
    if callback is not None:
        callback()


@contextmanager
def checkpoints(callback: Callable[[], None]) -> Iterator[None]:
    """Run ``callback`` at every :func:`checkpoint` of this thread inside the block."""
    previous = getattr(_local, "callback", None)
    _local.callback = callback
    try:
        yield
    finally:
        _local.callback = previous
