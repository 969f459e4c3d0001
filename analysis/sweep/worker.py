"""The worker side of a sweep: compute one task and hand its store entries back.

:func:`run_task` runs in whatever process the executor chose (the driver itself, a pool process
or a Ray worker). It keeps the last few opened sessions (model + data + evaluator) in this process,
so a worker loads each model once and reuses it for every later task on it, and it computes with
a :class:`~prunelens.analysis.cache.RecordingStore`: nothing is written here, the entries travel back to the
driver, which writes them (see :mod:`prunelens.analysis.sweep.driver`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from prunelens.analysis.sweep.spec import Target

SESSIONS_KEPT = 2  # opened model/data pairs one worker keeps (a BERT-base costs ~0.5 GB each)

_sessions: OrderedDict[tuple, Any] = OrderedDict()
_sessions_lock = threading.Lock()


@dataclass
class Outcome:
    writes: list  # [(Key, result)] for the driver to write
    seconds: float
    worker: str  # host:pid, for the summary
    opened: bool = False  # whether this task had to open (load) its model and data here


PARENT_WATCH_S = 0.5  # how often a pool worker checks that its driver is still there


def die_with(driver: int, interval: float = PARENT_WATCH_S) -> threading.Thread:
    """Exit this process as soon as ``driver`` (its parent) is gone: a daemon thread polls the
    parent pid, which changes when the parent dies and the worker is re-parented. A driver
    killed with SIGKILL runs no clean-up, so without this its workers would wait on their task
    queue for good, holding their models' memory."""
    def watch() -> None:
        while True:
            if os.getppid() != driver:
                os._exit(1)
            time.sleep(interval)

    thread = threading.Thread(target=watch, name="prunelens-driver-watch", daemon=True)
    thread.start()
    return thread


def prepare(threads: int, env: dict[str, str]) -> None:
    """Process initializer: thread count and environment before torch is first used."""
    os.environ.update(env)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def adopt(target: Target, device: str, session) -> None:
    """Let this process reuse a session the driver already opened (the in-process executor)."""
    _keep((target, device), session)


def run_task(task, device: str = "cpu", store_dirs: tuple = (None, None), threads: int | None = None
             ) -> Outcome:
    """Compute one task; its store entries are returned, not written."""
    from prunelens.analysis.cache import RecordingStore
    from prunelens.analysis.operations import compute_scores, evaluate_mask
    from prunelens.analysis.training import train_command

    if threads is not None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    session, opened = _session(task.target, device)
    store = RecordingStore(*store_dirs)
    work = replace(session, store=store)  # shares the loaded model and the evaluator
    start = time.perf_counter()
    if task.kind == "scores":
        compute_scores(work, task.method, task.unit, task.param_dict())
    elif task.kind == "mask-eval":
        evaluate_mask(work, task.unit, task.mask_array())
    elif task.kind == "train-run":
        train_command(work, task.method, task.param_dict())
    elif task.kind == "view":
        from prunelens.analysis import spectral_store

        params = task.param_dict()
        spectral_store.compute(work, params.pop("part"), params)
    else:
        raise ValueError(f"unknown task kind {task.kind!r}")
    return Outcome(store.writes, time.perf_counter() - start, f"{socket.gethostname()}:{os.getpid()}",
                   opened)


def _session(target: Target, device: str) -> tuple[Any, bool]:
    """This process's session for ``target`` and whether it was opened just now."""
    from prunelens.analysis.operations import open_session

    key = (target, device)
    with _sessions_lock:
        if key in _sessions:
            _sessions.move_to_end(key)
            return _sessions[key], False
    session = open_session(target.model, target.data, target.limit, device=device,
                           objective=target.objective)
    session.evaluator  # noqa: B018 (built once here, shared by every task's view of the session)
    _keep(key, session)
    return session, True


def _keep(key: tuple, session) -> None:
    """Remember ``session``; the least recently used beyond :data:`SESSIONS_KEPT` is dropped."""
    with _sessions_lock:
        _sessions[key] = session
        _sessions.move_to_end(key)
        while len(_sessions) > SESSIONS_KEPT:
            _sessions.popitem(last=False)
