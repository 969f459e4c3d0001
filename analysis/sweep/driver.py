"""The sweep driver: plan a spec into store entries, run the missing ones, write what comes back.

1. **Plan**: open every model × data target once (fingerprints are part of every key), expand the
   spec into tasks (:mod:`prunelens.analysis.sweep.tasks`) and drop those already stored. Scores that are
   stored already unlock their mask evaluations at once; the others unlock them when they land.
2. **Run**: keep the executor's slots busy, training runs first (the longest tasks), then scores,
   then mask evaluations as they unlock. Each finished task's entries are written by the driver,
   atomically (:meth:`prunelens.analysis.cache.ResultStore.put`), the moment it lands: an interrupted sweep
   keeps everything finished and nothing half-written, and the same command continues it.
3. **Report**: a tqdm bar on stderr (done / running / failed, ETA), one line per failure, and a
   summary table. A failed task is retried once; a second failure is reported, never dropped.
"""

from __future__ import annotations

import importlib.util
import re
import sys
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass, field

import numpy as np

from prunelens.analysis.cache import ResultStore
from prunelens.analysis.checkpoints import Cancelled
from prunelens.analysis.errors import ParamError, PartialFailure, PrunelensError, terminal
from prunelens.analysis.operations import open_session, stored_scores
from prunelens.analysis.session import Session
from prunelens.analysis.sweep.spec import SweepSpec, Target
from prunelens.analysis.sweep.tasks import KINDS, Followers, Task, expand, is_stored, mask_tasks

ATTEMPTS = 2  # a failed task is tried once more, then reported
EXECUTORS = ("local", "ray")


class SweepFailed(PartialFailure):
    """Some tasks failed twice; everything else was stored."""


@dataclass
class Record:
    task: Task
    status: str = "todo"  # stored (before this run) | todo | running | done | failed
    seconds: float = 0.0
    attempts: int = 0
    error: str = ""
    worker: str = ""
    opened: bool = False  # the worker loaded the model and data for this task

    def row(self) -> dict:
        t = self.task
        return {"kind": t.kind, "method": t.method, "unit": t.unit, "label": t.label,
                "target": t.target.label(), "digest": t.digest, "status": self.status,
                "seconds": round(self.seconds, 3), "attempts": self.attempts, "error": self.error,
                "worker": self.worker, "opened_model": self.opened}


@dataclass
class Plan:
    sessions: dict[Target, Session]
    records: dict[str, Record]  # by task digest, in planning order
    followers: dict[str, Followers]  # what each not-yet-stored scores task unlocks

    @property
    def todo(self) -> list[Task]:
        return [r.task for r in self.records.values() if r.status == "todo"]

    @property
    def waiting(self) -> int:
        """Mask evaluations still to be expanded (at most; duplicates fold when they are)."""
        return sum(self.followers[r.task.digest].count for r in self.records.values()
                   if r.status == "todo" and r.task.digest in self.followers)


@dataclass
class SweepReport:
    spec: str
    executor: str
    records: list[Record]
    blocked: int = 0  # mask evaluations never planned because their scores failed
    interrupted: bool = False
    wall_seconds: float = 0.0
    workers: int = 1
    notes: list[str] = field(default_factory=list)
    dry_run: bool = False

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.records)

    def table(self):
        """One row per kind × method × unit: tasks, already stored, done now, failed, seconds."""
        import pandas as pd

        rows = pd.DataFrame([r.row() for r in self.records])
        if rows.empty:
            return rows
        rows = rows.sort_values("kind", key=lambda k: k.map(KINDS.index), kind="stable")
        for status in ("stored", "done", "failed"):
            rows[status] = rows["status"] == status
        table = rows.groupby(["kind", "method", "unit"], sort=False).agg(
            tasks=("digest", "size"), stored=("stored", "sum"), done=("done", "sum"),
            failed=("failed", "sum"), seconds=("seconds", "sum")).reset_index()
        table["seconds"] = table["seconds"].round(1)
        return table

    def as_json(self) -> dict:
        return {"spec": self.spec, "executor": self.executor, "workers": self.workers,
                "wall_seconds": round(self.wall_seconds, 2), "interrupted": self.interrupted,
                "counts": {s: self.count(s) for s in ("stored", "done", "failed")} | {"blocked": self.blocked},
                "notes": self.notes, "tasks": [r.row() for r in self.records]}


def check_executor_options(executor: str, workers: int | None, threads: int | None,
                           address: str | None, gpus_per_task: float, device: str = "cpu") -> None:
    """Refuse bad executor settings before anything loads."""
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", device or ""):
        raise ParamError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if executor == "local" and device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ParamError(f"--device {device}: this machine's torch sees no CUDA GPU "
                             "(use --device cpu, or auto)")
    if executor not in EXECUTORS:
        raise ParamError(f"unknown executor '{executor}' (choose local or ray)")
    if workers is not None and workers < 1:
        raise ParamError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise ParamError(f"--threads must be at least 1, got {threads}")
    if address and executor != "ray":
        raise ParamError("--address names a Ray cluster (use it with --executor ray)")
    if not gpus_per_task > 0:
        raise ParamError(f"--gpus-per-task must be positive, got {gpus_per_task}")
    if executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ParamError("the ray executor needs Ray (pip install -e '.[ray]')")


def plan_sweep(spec: SweepSpec, store: ResultStore, device: str = "cpu", say=None,
               opened: dict[Target, Session] | None = None) -> Plan:
    """Open every target, expand the spec into tasks and mark those already in ``store``.
    ``opened``: sessions already open for some targets (the dashboard's), used as they are."""
    say = say or (lambda message: None)
    sessions: dict[Target, Session] = dict(opened or {})
    for i, target in enumerate(spec.targets, 1):
        if target in sessions:
            continue
        say(f"planning: opening model '{target.model}' on data '{target.data}' ({i}/{len(spec.targets)})")
        sessions[target] = open_session(target.model, target.data, target.limit, store=store,
                                        device=device, objective=target.objective)
    tasks, followers = expand(spec, sessions)
    plan = Plan(sessions, {}, {})
    for task in tasks:
        session = sessions[task.target]
        stored = is_stored(session, task)
        plan.records[task.digest] = Record(task, "stored" if stored else "todo")
        after = followers.get(task.digest)
        if after is None or not after.count:
            continue
        if stored:
            _add_masks(plan, session, task, _task_scores(session, task), after)
        else:
            plan.followers[task.digest] = after
    return plan


def _add_masks(plan: Plan, session: Session, source: Task, scores: np.ndarray,
               after: Followers) -> list[Task]:
    """Add the mask evaluations ``scores`` unlock; returns the new ones still to compute."""
    new = []
    for task in mask_tasks(session, source, scores, after):
        if task.digest in plan.records:
            continue  # another method landed on the same mask: one entry, one task
        stored = is_stored(session, task)
        plan.records[task.digest] = Record(task, "stored" if stored else "todo")
        if not stored:
            new.append(task)
    return new


@dataclass
class Schedule:
    """How a run orders and counts its tasks (the sweep's own defaults; ``analyze`` sets all three).

    ``order``: the sort key of ready tasks (default: training runs, then scores, then mask
    evaluations); ``weight``: a task's share of the progress bar (default 1: tasks are counted;
    ``analyze`` gives each its estimated seconds, so the bar's ETA is in time); ``report``: called
    after every finished task with (finished weight, total weight, the task) (``analyze`` keeps its
    cross-session status file with it). A :class:`~prunelens.analysis.checkpoints.Cancelled` raised by it
    stops the run: what finished is stored, nothing half-written."""

    order: Callable[[Task], tuple] | None = None
    weight: Callable[[Task], float] = lambda task: 1.0
    report: Callable[[float, float, Task | None], None] | None = None
    waiting_weight: float = 1.0  # the weight of one mask evaluation not expanded yet
    unit: str = "task"


def run_sweep(spec: SweepSpec, store: ResultStore | None = None, executor: str = "local",
              workers: int | None = None, threads: int | None = None, address: str | None = None,
              device: str = "cpu", gpus_per_task: float = 1.0, progress: bool = True,
              dry_run: bool = False, out=None, plan: Plan | None = None,
              schedule: Schedule | None = None) -> SweepReport:
    """Plan ``spec`` and compute every entry that is not stored yet (see the module docstring).
    Progress and notes go to ``out`` (default: stderr). ``plan``: one made already by
    :func:`plan_sweep` for ``spec`` and ``store``; ``schedule``: see :class:`Schedule`."""
    from prunelens.analysis.sweep import executors

    out = out or sys.stderr
    check_executor_options(executor, workers, threads, address, gpus_per_task, device)
    store = store or ResultStore()
    say = (lambda message: print(message, file=out)) if progress else (lambda message: None)
    start = time.perf_counter()
    threads = threads or 1  # the same bits under every executor (see docs/SCALING.md)
    local_device = executors.local_device(device) if executor == "local" else "cpu"
    plan = plan or plan_sweep(spec, store, local_device, say)
    todo = plan.todo
    report = SweepReport(spec.path, executor, list(plan.records.values()), workers=workers or 1,
                         dry_run=dry_run)
    if dry_run or not todo:
        report.wall_seconds = time.perf_counter() - start
        if not todo:
            report.notes.append(f"nothing to do: all {len(plan.records)} entries of the sweep are "
                                "already in the store")
        else:
            report.notes.append(f"dry run: {len(todo)} of {len(plan.records)} entries to compute, "
                                f"and up to {plan.waiting} mask evaluations once their scores land")
        return report

    store_dirs = (str(store.user_dir), str(store.shipped_dir) if store.shipped_dir else None)
    if executor == "ray":
        pool = executors.RayExecutor(threads, device, store_dirs, address, workers, gpus_per_task)
    elif (workers or 1) > 1:
        pool = executors.PoolExecutor(workers, threads, device, store_dirs)
    else:
        pool = executors.InlineExecutor(local_device, store_dirs, threads)
        for target, session in plan.sessions.items():
            executors.worker.adopt(target, local_device, session)
    report.workers = pool.workers
    try:
        _run(plan, pool, report, progress, out, schedule or Schedule())
    finally:
        pool.close()
        report.records = list(plan.records.values())
        report.wall_seconds = time.perf_counter() - start
    return report


def _run(plan: Plan, pool, report: SweepReport, progress: bool, out, schedule: Schedule) -> None:
    from tqdm import tqdm

    kinds = {kind: i for i, kind in enumerate(KINDS)}
    order = schedule.order or (lambda t: (kinds[t.kind],))
    weight = schedule.weight
    ready = deque(sorted(plan.todo, key=order))
    in_flight: dict = {}
    total = sum(weight(t) for t in ready) + plan.waiting * schedule.waiting_weight
    # a bar in estimated seconds shows whole seconds (its counts are float sums of estimates)
    seconds = "{l_bar}{bar}| {n:.0f}/{total:.0f} s of estimated work [{elapsed}<{remaining}{postfix}]"
    bar = tqdm(total=total, file=out, disable=not progress, unit=schedule.unit,
               desc="sweep" if schedule.order is None else "analyze", dynamic_ncols=True,
               bar_format=seconds if schedule.unit == "s" else None)

    failed = completed = 0

    def show() -> None:
        bar.set_postfix_str(f"done {completed} · running {len(in_flight)} · failed {failed}",
                            refresh=True)

    def advance(task: Task) -> None:
        bar.update(weight(task))
        bar.total = max(bar.total, bar.n)  # (float sums of estimated seconds)
        if schedule.report is not None:
            schedule.report(bar.n, bar.total, task)

    try:
        while ready or in_flight:
            while ready and len(in_flight) < pool.slots:
                task = ready.popleft()
                record = plan.records[task.digest]
                record.attempts += 1
                record.status = "running"
                in_flight[pool.submit(task)] = task
                show()
            finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
            for future in finished:
                task = in_flight.pop(future)
                record = plan.records[task.digest]
                try:
                    outcome = future.result()
                except Cancelled:
                    raise
                except Exception as exc:  # noqa: BLE001 (a worker's failure, reported below)
                    message = _message(exc)
                    if record.attempts < ATTEMPTS:
                        bar.write(f"retrying {task.label}: {message}", file=out)
                        record.status = "todo"
                        ready.appendleft(task)
                    else:
                        record.status, record.error = "failed", message
                        failed += 1
                        bar.write(f"failed: {task.label} ({task.target.label()}): {message}", file=out)
                        after = plan.followers.pop(task.digest, None)
                        if after is not None:
                            report.blocked += after.count
                            bar.total -= after.count * schedule.waiting_weight
                        advance(task)
                    show()
                    continue
                for key, result in outcome.writes:
                    plan.sessions[task.target].store.put(key, result)
                record.status, record.seconds = "done", outcome.seconds
                record.worker, record.opened = outcome.worker, outcome.opened
                after = plan.followers.pop(task.digest, None)
                if after is not None:
                    session = plan.sessions[task.target]
                    new = _add_masks(plan, session, task, _stored_or_returned(session, task, outcome),
                                     after)
                    ready.extend(new)
                    ready = deque(sorted(ready, key=order))
                    bar.total += sum(weight(t) for t in new) - after.count * schedule.waiting_weight
                completed += 1
                advance(task)
                show()
    except KeyboardInterrupt:
        pool.cancel()
        report.interrupted = True
        bar.close()
        done = sum(r.status == "done" for r in plan.records.values())
        print(f"interrupted: {done} finished entries are in the store; "
              "run the same command again to continue", file=out)
        raise
    finally:
        bar.close()


def _stored_or_returned(session: Session, task: Task, outcome) -> np.ndarray:
    """The scores a finished task produced (from its returned entries; the store may be read-only)."""
    digests = {key.digest for key in task.keys}
    for key, result in outcome.writes:
        if key.digest in digests:
            return np.asarray(result["scores"], dtype=np.float64)
    return _task_scores(session, task)  # answered from the worker's view of the store


def _task_scores(session: Session, task: Task) -> np.ndarray:
    """A stored scores task's scores, read as every other command reads them."""
    return stored_scores(session, task.method, task.unit, task.param_dict())


def _message(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc  # Ray wraps the worker's exception
    text = str(cause).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(cause, PrunelensError):
        return first[:300]
    return f"{type(cause).__name__}: {first[:300]}"


def print_report(report: SweepReport, out=None) -> None:
    """The notes on stderr; the summary table and the totals on ``out`` (default: stdout)."""
    out = out or sys.stdout
    for note in report.notes:
        print(terminal(note), file=sys.stderr)
    if report.dry_run:
        for record in report.records:
            row = record.row()
            print(terminal(f"{row['status']:<6} {row['digest'][:16]}  {row['kind']:<9} {row['label']}  "
                           f"[{row['target']}]"), file=out)
        return
    table = report.table()
    if not table.empty:  # file names in the labels: control characters escaped, line by line
        print("\n".join(terminal(line) for line in table.to_string(index=False).splitlines()), file=out)
    print(f"{report.count('done')} computed, {report.count('stored')} already stored, "
          f"{report.count('failed')} failed"
          + (f", {report.blocked} mask evaluations not planned (their scores failed)" if report.blocked else "")
          + f" in {report.wall_seconds:.1f} s ({report.executor}, {report.workers} worker(s))", file=out)

