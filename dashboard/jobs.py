"""Background training runs: a thread per run, so a run continues when the user changes page.

:data:`BOARD` lives for the whole server process; any page reads a job's progress from it.
Threads call only ``analysis.training.train_command`` (never Streamlit); the result goes to the
store as usual, so finished runs also appear through ``finished_runs``.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from analysis.errors import PrunelensError

RUNNING, DONE, FAILED = "running", "done", "failed"


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

    def progress(self, fraction: float, message: str = "") -> None:
        self.fraction = max(0.0, min(1.0, float(fraction)))
        if message:
            self.message = message

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
              run: Callable[..., dict] | None = None) -> Job:
        """Start ``train_command(session, method, params)`` in a daemon thread."""
        if run is None:
            from analysis.training import train_command as run
        with self._lock:
            job = Job(next(self._ids), method, dict(params), session.loaded.name, session.data.name)
            self._jobs[job.id] = job

        def work() -> None:
            try:
                job.result = run(session, method, params, progress=job.progress)
                job.fraction, job.status, job.message = 1.0, DONE, "finished"
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
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: -j.id)

    def running(self) -> list[Job]:
        return [j for j in self.jobs() if j.status == RUNNING]

    def get(self, job_id: int) -> Job | None:
        return self._jobs.get(job_id)

    def wait(self, job_id: int, timeout: float | None = None) -> Job | None:
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)
        return self.get(job_id)


BOARD = JobBoard()
