"""Background training runs: a thread per run, so a run continues when the user changes page.

:data:`BOARD` lives for the whole server process; any page reads a job's progress from it.
Threads call only ``prunelens.analysis.training.train_command`` (never Streamlit); the result goes to the
store as usual, so finished runs also appear through ``finished_runs``.

Bounded work: at most :func:`max_jobs` runs at a time per server (``PRUNELENS_MAX_JOBS``,
default 2); one more is refused with :class:`JobLimitError`. A run is cancelled cooperatively:
:meth:`Job.cancel` (the page's Cancel button), or its session ending (``alive`` returns False),
stops it at its next step (:mod:`prunelens.analysis.checkpoints`), and nothing is stored.

Privacy: a job belongs to the browser session that started it (:func:`session_owner`), and
inside a script run :meth:`JobBoard.jobs` lists only that session's jobs (and those started
outside any session), so no session sees another's model paths or data names.
"""

from __future__ import annotations

import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prunelens.analysis.checkpoints import Cancelled, checkpoints
from prunelens.analysis.errors import PrunelensError

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"
MAX_JOBS_ENV = "PRUNELENS_MAX_JOBS"
DEFAULT_MAX_JOBS = 2  # two BERT-base runs fit a 2-core, 24 GB machine; a third would thrash it
ALIVE_CHECK_S = 1.0  # how often a running job asks whether its session still exists


def max_jobs() -> int:
    """Runs allowed at once on this server: ``PRUNELENS_MAX_JOBS`` (at least 1), default 2."""
    raw = os.environ.get(MAX_JOBS_ENV, "")
    try:
        return max(1, int(raw)) if raw.strip() else DEFAULT_MAX_JOBS
    except ValueError:
        return DEFAULT_MAX_JOBS


class JobLimitError(PrunelensError):
    """Starting one more run would exceed the per-server cap."""


@dataclass
class Job:
    id: int
    method: str
    params: dict
    model: str
    data: str
    status: str = RUNNING
    fraction: float = 0.0
    message: str = "starting"
    result: dict | None = None
    error: str | None = None
    started: float = field(default_factory=time.time)
    finished: float | None = None
    owner: str = ""  # the session that started it (session_owner); "": none
    alive: Callable[[], bool] | None = field(default=None, repr=False)  # False once its session ended
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _alive_checked: float = field(default=0.0, repr=False)

    def progress(self, fraction: float, message: str = "") -> None:
        self.checkpoint()
        self.fraction = max(0.0, min(1.0, float(fraction)))
        if message:
            self.message = message

    def cancel(self, why: str = "cancelled") -> None:
        """Ask the run to stop at its next step (it then ends as ``cancelled``)."""
        if self.status == RUNNING:
            self.message = f"{why}; stopping at the next step"
        self._cancel.set()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    def checkpoint(self) -> None:
        """Raise :class:`Cancelled` once the run was cancelled or its session is gone."""
        if not self._cancel.is_set() and self.alive is not None:
            now = time.monotonic()
            if now - self._alive_checked >= ALIVE_CHECK_S:
                self._alive_checked = now
                if not self.alive():
                    self.cancel("cancelled: its session ended")
        if self._cancel.is_set():
            raise Cancelled(self.message)

    @property
    def elapsed(self) -> float:
        return (self.finished or time.time()) - self.started

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "method": self.method, "status": self.status, "progress": round(self.fraction, 3),
                "message": self.message, "model": self.model, "data": self.data,
                "seconds": round(self.elapsed, 1), "error": self.error}


class JobBoard:
    """All training jobs of this server process."""

    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._threads: dict[int, threading.Thread] = {}

    def start(self, session, method: str, params: dict,
              run: Callable[..., dict] | None = None, alive: Callable[[], bool] | None = None) -> Job:
        """Start ``train_command(session, method, params)`` in a daemon thread; refused with
        :class:`JobLimitError` when :func:`max_jobs` runs are already running. ``alive``: called
        about once a second while the run works; False (its session ended) cancels the run."""
        if run is None:
            from prunelens.analysis.training import train_command as run
        owner = session_owner()
        with self._lock:
            running = sum(j.status == RUNNING for j in self._jobs.values())
            limit = max_jobs()
            if running >= limit:
                raise JobLimitError(
                    f"{running} training run{'s are' if running > 1 else ' is'} already running on this "
                    f"server, the most allowed at once ({MAX_JOBS_ENV}={limit}) (wait for one to "
                    "finish, or cancel one)")
            job = Job(next(self._ids), method, dict(params), session.loaded.name, session.data.name,
                      alive=alive, owner=owner)
            job._alive_checked = time.monotonic()  # its session has just asked for it
            self._jobs[job.id] = job

        def work() -> None:
            try:
                with checkpoints(job.checkpoint):  # every step of the run is a checkpoint
                    job.result = run(session, method, params, progress=job.progress)
                job.fraction, job.status, job.message = 1.0, DONE, "finished"
            except Cancelled:
                job.status = CANCELLED
                job.message = job.message.split(";")[0] + " (nothing stored)"
            except PrunelensError as exc:
                job.status, job.error = FAILED, str(exc)
            except Exception as exc:  # noqa: BLE001 - a bug: keep the server alive, report it on the page
                job.status, job.error = FAILED, f"internal error: {type(exc).__name__}: {exc}"
            finally:
                job.finished = time.time()

        thread = threading.Thread(target=work, name=f"prunelens-train-{job.id}", daemon=True)
        self._threads[job.id] = thread
        thread.start()
        return job

    def jobs(self) -> list[Job]:
        """Newest first; inside a script run, only the asking session's (and ownerless) jobs."""
        viewer = session_owner()
        with self._lock:
            return sorted((j for j in self._jobs.values() if not viewer or j.owner in ("", viewer)),
                          key=lambda j: -j.id)

    def running(self) -> list[Job]:
        return [j for j in self.jobs() if j.status == RUNNING]

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def cancel(self, job_id: int) -> Job | None:
        """Ask a running job to stop at its next step."""
        job = self.get(job_id)
        if job is not None:
            job.cancel()
        return job

    def wait(self, job_id: int, timeout: float | None = None) -> Job | None:
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)


BOARD = JobBoard()


OWNER_KEY = "prunelens.job_owner"


def session_owner() -> str:
    """A random token kept in the asking browser session's state; "" outside a script run."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    if get_script_run_ctx(suppress_warning=True) is None:
        return ""
    import streamlit as st

    return st.session_state.setdefault(OWNER_KEY, secrets.token_hex(8))
