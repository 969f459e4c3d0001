"""``prunelens analyze``: everything the dashboard shows for a new model/data pair, as one job.

The job is a sweep (:mod:`prunelens.analysis.sweep`) whose spec is built here rather than read from TOML:
every method's scores of every unit it declares (default parameters), head curves at the Prune
slider's grid (:data:`CURVE_SPARSITIES`, global and per-layer scope), attention/FFN blocks at
:data:`BLOCK_SPARSITIES`, the Spectral page's own answers at its default positions
(:data:`prunelens.analysis.spectral_store.ANALYZED`; not when ``methods`` picks a subset), and, with
``training=True``, one training run per training mode (plus :data:`EXTRA_TRAINING` with
``extra_training=True``, as precompute asks). ``prunelens precompute`` is this job with training, into a shippable
folder: the default's shipped store is what it produces for the default.

What the job adds to a sweep:

- **An estimate before it starts** (:func:`estimate`): one forward pass of a fixed sample and
  one empty model call are timed on this machine (:func:`measured_costs`), and every task's
  declared work (:class:`~prunelens.analysis.methods.base.Work`, forward-pass equivalents,
  :meth:`~prunelens.analysis.methods.base.Work.expected`: passes that run on the fast path count
  their measured share) is turned into seconds with the first, its model calls (batches, steps,
  and one per task) with the second (:func:`work_seconds`), plus what a method measures beside
  the encoder (smp-pruner's CNN, :func:`side_measurement`); a mask evaluation counts
  :data:`MASK_EVAL_PASSES` of a pass over the data (the fast path's measured share). On BERT-base
  the examples are the time; on a 2-layer toy model the calls and the CNN are.
- **Cheap first**: score tasks run in order of estimated cost, each followed by its curve points,
  so the pages fill from the cheapest method up; training runs last.
- **Progress in time**: the bar counts estimated seconds, so its ETA is the estimate corrected by
  the speed actually seen.
- **Survives restarts**: each entry is written atomically when it lands; the same command skips
  what is stored and continues (a killed job loses at most the task in flight).
- **One job per model/data** across processes and dashboard sessions: an ``flock`` on
  ``<store>/.jobs/<pair>.lock``; its status (progress, ETA, pid) is ``<pair>.status`` beside it,
  which the Model & data page reads. A second start is refused with what the first is doing.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from prunelens.analysis import spectral_store
from prunelens.analysis.cache import ResultStore, canonical
from prunelens.analysis.checkpoints import Cancelled
from prunelens.analysis.errors import PrunelensError
from prunelens.analysis.layout import BLOCK_UNITS
from prunelens.analysis.evaluate import FAST_BATCH_ROWS
from prunelens.analysis.methods import all_methods, get_method
from prunelens.analysis.methods.base import Work
from prunelens.analysis.session import Session
from prunelens.analysis.sweep.driver import Plan, Schedule, SweepReport, plan_sweep, run_sweep
from prunelens.analysis.sweep.spec import MethodGrid, SweepSpec, Target, TrainGrid
from prunelens.analysis.sweep.tasks import Task

# the Prune slider's grid (0 to 0.95 in steps of 0.05): on the default every slider position is stored
CURVE_SPARSITIES = tuple(round(0.05 * i, 2) for i in range(20))
BLOCK_SPARSITIES = (0.0, 0.5)  # what docs/FIDELITY.md reads for attention and FFN blocks
HEAD_SCOPES = ("global", "layer")
# training runs beyond each method's defaults, for the shipped store only (``prunelens precompute``;
# ``extra_training=True``): docs/FIDELITY.md's multi-seed comparisons read them (PINS vs PLATON vs
# gradual magnitude at 80% and 90%, self-regularization on/off, three seeds; ADMM vs one-shot + the
# same SR-STE steps, five seeds, and SR-STE's λ_W = 0 under Adam and the official SGD recipe, three;
# SNIP's four arms — SN + prior and SN only (a run and its λ = 0 control), prior only and neither
# (the same with sn=off) — five seeds, and exact SN once; the SMP pruner vs random and magnitude
# halves, three seeds). ``prunelens analyze --training`` runs each mode's defaults only.
_LEAN = {"finetune_baseline": False}  # ADMM's own arm only (the λ_W comparisons need no baseline)
EXTRA_TRAINING = {
    "pins": [*({"seed": seed} for seed in (1, 2, 3, 4)),
             *({"target_sparsity": 0.9, "seed": seed} for seed in (0, 1, 2, 3, 4)),
             {"signed": True, "baseline": "none", "compare_self_reg": False}],
    "platon": [*({"target_sparsity": 0.8, "baseline": "none", "seed": seed} for seed in (1, 2, 3, 4)),
               *({"target_sparsity": 0.9, "baseline": "none", "seed": seed} for seed in (0, 1, 2, 3, 4))],
    "admm": [*({"seed": seed} for seed in (1, 2, 3, 4)),
             *({**_LEAN, "decay": 0.0, "seed": seed} for seed in (0, 1, 2)),
             *({**_LEAN, "srste_optimizer": "sgd", **decay, "seed": seed}
               for seed in (0, 1, 2) for decay in ({}, {"decay": 0.0}))],
    "snip": [*({"seed": seed} for seed in (1, 2, 3, 4)),
             *({"sn": "off", "seed": seed} for seed in (0, 1, 2, 3, 4)),
             {"sn": "exact", "control": False}],
    "smp-pruner": [{"seed": 1}, {"seed": 2}],
}
# one full-data mask evaluation, in passes over the data (fast path: sliced weights, [CLS]-only
# last layer, layer-prefix cache; measured on the default and a BERT-base-shaped model,
# docs/PERFORMANCE.md): checked bf16 where the CPU has it, exact fp32 elsewhere
MASK_EVAL_PASSES = {"bf16": 0.25, "fp32": 0.6}
# one forward-pass equivalent of a training run, in timed fast-path forward passes: training
# batches are padded to their longest row, run the reference forward in train mode with autograd,
# and step the optimizer (measured on the default: 80 SNIP steps of 16 sentences in ~90 s, ~7x)
TRAINING_PASS_COST = 7.0
CALIBRATION_SIZE = 64  # examples in the timed sample
STATUS_EVERY_S = 1.0  # how often the status file is rewritten while a job runs
TIMING_MAX_AGE_S = 24 * 3600  # a kept forward-pass measurement is trusted this long
# the dashboard computes a setting that is not in the store without a click when it is expected
# to take at most this long here (:func:`score_seconds`: the analysis estimate's own rule)
COMPUTE_WITHOUT_CLICK_S = 60.0
# every task is one more call's worth of fixed cost (store write, the sweep's bookkeeping)
TASK_CALLS = 1.0


class AnalysisBusy(PrunelensError):
    """Another analyze job holds this model/data pair."""


def analysis_spec(target: Target, methods: list[str] | None = None, training: bool = False,
                  views: bool | None = None, extra_training: bool = False,
                  objective: str = "labels", head_scopes: tuple[str, ...] | None = None,
                  curve_sparsities: tuple[float, ...] | None = None) -> SweepSpec:
    """The sweep of one analysis: see the module docstring. ``methods``: a subset (checked);
    ``views``: whether the pages' own answers are included (default: when ``methods`` is None);
    training modes that need gold labels are left out under another ``objective``;
    ``head_scopes``, ``curve_sparsities``: the head curves' scopes and points (default
    :data:`HEAD_SCOPES`, :data:`CURVE_SPARSITIES`)."""
    registry = all_methods()
    names = list(registry) if not methods else [get_method(m).name for m in methods]
    grids = []
    for name in names:
        method = registry[name]
        defaults = method.validate({})
        for unit in method.units:
            if unit == "head":
                scopes = HEAD_SCOPES if head_scopes is None else tuple(head_scopes)
                sparsities = CURVE_SPARSITIES if curve_sparsities is None else tuple(curve_sparsities)
            elif unit in BLOCK_UNITS:
                scopes, sparsities = ("global",), BLOCK_SPARSITIES
            else:  # neurons: scores only (the Prune page evaluates a neuron mask when asked)
                scopes, sparsities = ("global",), ()
            grids.append(MethodGrid(name, (defaults,), (unit,), scopes, sparsities))
    trains = []
    if training:
        from prunelens.analysis.training import get_trainer, trainable_methods

        for name in trainable_methods():
            if name in names and get_trainer(name).is_compatible(objective) is None:
                trainer = get_trainer(name)
                trains.append(TrainGrid(name, tuple(trainer.validate(p) for p in
                                                    [{}, *(EXTRA_TRAINING.get(name, []) if extra_training else [])])))
    pages = ("spectral",) if (not methods if views is None else views) else ()
    return SweepSpec(f"analyze {target.label()}", (target,), tuple(grids), tuple(trains), views=pages)


@dataclass
class Estimate:
    """Seconds each task is expected to take on this machine, from one timed forward pass."""

    example_seconds: float  # one example through the forward pass (measured)
    examples: int
    mask_eval_seconds: float
    call_seconds: float = 0.0  # the fixed cost of one model call (measured)
    seconds: dict[str, float] = field(default_factory=dict)  # by task digest
    waiting: int = 0  # mask evaluations not expanded yet (their scores are not computed)

    def of(self, task: Task) -> float:
        return self.seconds.get(task.digest, self.mask_eval_seconds)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values()) + self.waiting * self.mask_eval_seconds

    def describe(self) -> dict:
        return {"total_seconds": round(self.total_seconds, 1),
                "example_forward_seconds": self.example_seconds, "examples": self.examples,
                "call_seconds": self.call_seconds,
                "mask_eval_seconds": round(self.mask_eval_seconds, 3), "tasks": len(self.seconds),
                "mask_evals_to_expand": self.waiting}


@dataclass(frozen=True)
class MachineCosts:
    """What the estimate's rule multiplies (measured here, :func:`measured_costs`)."""

    example_seconds: float  # one example through the forward pass, in batches
    call_seconds: float  # the fixed cost of one model call beyond its examples (Python, hooks)
    side: dict[str, float] = field(default_factory=dict)  # methods' own (:func:`side_measurement`)
    measured: float = field(default_factory=time.time)  # when (epoch seconds)


def time_forward(session: Session) -> MachineCosts:
    """One example's forward pass here: a fixed sample of :data:`CALIBRATION_SIZE` examples
    through the (checked) fast path, or the reference path where that is off; and the fixed cost
    of one call (:func:`empty_call`). The
    encoder check and bf16 calibration run first, untimed, as every task needs them. On a tiny
    model the calls are the time (issue 30: 1 s estimated, 21 s taken), on BERT-base the examples."""
    ev = session.evaluator
    ev.low_encoder()  # fast-path check + bf16 calibration (computes the unpruned outputs)
    sample = ev.subset(min(CALIBRATION_SIZE, ev.n), seed=1)
    encoder = ev.fast_encoder()

    def best_of(runs: int, run) -> float:  # the first run also builds batches and plans
        best = math.inf
        for _ in range(runs):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        return best

    if encoder is None:
        sample_seconds = best_of(2, sample.reference_outputs)
    else:
        sample_seconds = best_of(2, lambda: encoder.logits(sample.fast_batches, None, use_cache=False))
    per = sample_seconds / max(1, len(sample.data))
    return MachineCosts(per, best_of(3, empty_call(session)))


def empty_call(session: Session):
    """A model call with (almost) no example's work: one empty text ([CLS] [SEP]) through the
    reference forward; its time is the fixed cost of every call."""
    import torch

    from prunelens.analysis.data import tokenize_batches
    from prunelens.analysis.objectives import model_output

    if not len(session.data):
        return lambda: None
    first = session.data.rows([0])
    empty = replace(first, texts=[""], text_pairs=None if first.text_pairs is None else [""])
    [batch], _ = tokenize_batches(session.loaded.tokenizer, empty, 1)
    model = session.loaded.model
    inputs = batch.to(next(model.parameters()).device).model_inputs()

    def run():
        with torch.inference_mode():
            model_output(model, inputs, session.loaded.pooling)

    return run


def timing_path(store: ResultStore, session: Session) -> Path:
    """Where this pair's measured forward pass is kept (beside its job lock and status)."""
    return jobs_dir(store) / f"{pair_id(session)}.timing"


_MEASURED: dict[tuple[str, str], MachineCosts] = {}  # (store folder, pair id) -> what was measured


def _finite(x, low: float) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) and x >= low


def measured_costs(session: Session) -> MachineCosts:
    """This machine's costs for the pair (:func:`time_forward`), measured once per model/data
    pair and machine and kept in the store's job folder: the Model & data page, the pages'
    compute limit and ``prunelens analyze --dry-run`` all read the same measurement, so their
    estimates agree and do not jump between measurements as work is done. Measured again after
    :data:`TIMING_MAX_AGE_S`, on another host, or when the kept file lacks a cost."""
    path = timing_path(session.store, session)
    memo = (str(session.store.user_dir), pair_id(session))
    if memo in _MEASURED:
        return _MEASURED[memo]
    kept = read_status_path(path)
    side = kept.get("side") if isinstance(kept.get("side"), dict) else {}
    if (_finite(kept.get("example_seconds"), 1e-12) and _finite(kept.get("call_seconds"), 0.0)
            and kept.get("host") == socket.gethostname()
            and _finite(kept.get("measured"), 0.0) and time.time() - kept["measured"] < TIMING_MAX_AGE_S):
        _MEASURED[memo] = MachineCosts(float(kept["example_seconds"]), float(kept["call_seconds"]),
                                       {k: float(v) for k, v in side.items() if _finite(v, 0.0)},
                                       float(kept["measured"]))
        return _MEASURED[memo]
    return _keep(session, time_forward(session))


def _keep(session: Session, costs: MachineCosts) -> MachineCosts:
    """Remember ``costs`` for this pair (in the process and in its job folder's timing file)."""
    path = timing_path(session.store, session)
    _MEASURED[(str(session.store.user_dir), pair_id(session))] = costs
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"example_seconds": costs.example_seconds, "call_seconds": costs.call_seconds,
                                   "side": costs.side, "host": socket.gethostname(),
                                   "measured": costs.measured}))
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only store: measured again by the next process
    return costs


def side_measurement(session: Session, name: str, timer: Callable[[], float]) -> float:
    """A method's own measurement ``name`` (seconds, e.g. smp-pruner's CNN on one map), kept
    with the pair's forward pass so every estimate reads the same number: ``timer()`` runs only
    when it is not kept yet."""
    costs = measured_costs(session)
    if name not in costs.side:
        costs = _keep(session, replace(costs, side={**costs.side, name: float(timer())}))
    return costs.side[name]


def measured_example_seconds(session: Session) -> float:
    """Seconds of one example's forward pass here (:func:`measured_costs`)."""
    return measured_costs(session).example_seconds


def measured_call_seconds(session: Session) -> float:
    """The fixed seconds of one model call here (:func:`measured_costs`)."""
    return measured_costs(session).call_seconds


def work_seconds(work: Work, n: int, per: float, call: float) -> float:
    """The estimate's rule for one task: its expected forward-pass equivalents on ``n``
    examples times ``per``, plus its model calls (and one for the task itself) times ``call``."""
    examples = work.expected(n)
    return ((examples if math.isfinite(examples) else n) * per
            + (work.expected_calls(n) + TASK_CALLS) * call)


def score_seconds(session: Session, method_name: str, unit: str, params: dict | None,
                  per: float | None = None, call: float | None = None) -> float:
    """Expected seconds of one score computation here (the analysis estimate's own rule)."""
    method = get_method(method_name)
    n = session.evaluator.n
    work = Work(passes=1.0) if method.cost is None else method.cost(method.validate(params),
                                                                     session.loaded.inventory, unit)
    per = measured_example_seconds(session) if per is None else per
    call = measured_call_seconds(session) if call is None else call
    side = 0.0
    if method.side_seconds is not None:
        side = method.side_seconds(method.validate(params), session.loaded.inventory,
                                   lambda name, timer: side_measurement(session, name, timer))
    return work_seconds(work, n, per, call) + side


def estimate(plan: Plan, session: Session, example_seconds: float | None = None,
             call_seconds: float | None = None) -> Estimate:
    """Seconds per task still to do (see the module docstring). Every caller (the page, the
    CLI, the job's progress) uses this one rule (:func:`work_seconds`) and the one measurement
    of :func:`measured_costs`: doing work only removes tasks, so the estimate never grows while
    the analysis runs. ``example_seconds`` pins the per-example cost (``call_seconds``, the
    per-call one, is then 0 unless given too)."""
    from prunelens.analysis.training import get_trainer

    per = measured_example_seconds(session) if example_seconds is None else example_seconds
    if call_seconds is not None:
        call = call_seconds
    else:
        call = measured_call_seconds(session) if example_seconds is None else 0.0
    n = session.evaluator.n
    passes = MASK_EVAL_PASSES["bf16" if session.evaluator.masked_precision == "bf16" else "fp32"]
    mask_eval = Work(passes=1.0, pass_share=passes, pass_rows=FAST_BATCH_ROWS)  # one call per batch
    est = Estimate(per, n, work_seconds(mask_eval, n, per, call), call_seconds=call, waiting=plan.waiting)
    for task in plan.todo:
        if task.kind == "scores":
            est.seconds[task.digest] = score_seconds(session, task.method, task.unit, task.param_dict(),
                                                     per, call)
            continue
        if task.kind == "train-run":
            trainer = get_trainer(task.method)
            declared = trainer.cost(trainer.validate(task.param_dict())) if trainer.cost else Work(fixed=math.inf)
            work = Work(fixed=declared.fixed * TRAINING_PASS_COST, calls=declared.calls)
        elif task.kind == "view":
            params = task.param_dict()
            work = Work(fixed=spectral_store.work(params.pop("part"), params, n))
        else:
            work = mask_eval
        est.seconds[task.digest] = work_seconds(work, n, per, call)
    return est


def cost_order(plan: Plan, est: Estimate):
    """Sort key of ready tasks: by the estimated cost of the method whose scores they are or
    follow (scores before their curve points), training runs last."""
    method_cost: dict[str, float] = {}
    for record in plan.records.values():
        t = record.task
        if t.kind == "scores":
            method_cost[t.method] = method_cost.get(t.method, 0.0) + est.seconds.get(t.digest, 0.0)

    def key(task: Task) -> tuple:
        if task.kind == "train-run":
            return (2, est.of(task), task.label)
        if task.kind == "view":  # a page's own answers, by their own cost among the methods'
            return (1, est.of(task), task.method, False, task.label)
        return (1, method_cost.get(task.method, 0.0), task.method, task.kind != "scores", task.label)

    return key


# -- one job per model/data pair ----------------------------------------------------------------

def pair_id(session: Session) -> str:
    import hashlib

    text = canonical({"model": session.loaded.fingerprint, "data": session.data.fingerprint})
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def jobs_dir(store: ResultStore) -> Path:
    return Path(store.user_dir) / ".jobs"


def job_paths(store: ResultStore, session: Session) -> tuple[Path, Path]:
    """(lock file, status file) of this model/data pair's analyze job."""
    base = jobs_dir(store) / pair_id(session)
    return base.with_suffix(".lock"), base.with_suffix(".status")


def read_status(store: ResultStore, session: Session) -> dict | None:
    """The status an analyze job of this pair last wrote (None: never run), with ``running``:
    whether its process still holds the lock."""
    lock, path = job_paths(store, session)
    status = read_status_path(path)
    if not status:
        return None
    status["running"] = status.get("state") == "running" and _held(lock)
    return status


def _held(lock_path: Path) -> bool:
    import fcntl

    try:
        fd = os.open(lock_path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken just now
    return False


class PairLock:
    """The pair's flock, held while the job runs; its status file written atomically."""

    def __init__(self, store: ResultStore, session: Session):
        self.dir = jobs_dir(store)
        self.lock_path, self.status_path = job_paths(store, session)
        self.fd: int | None = None
        self.status: dict = {}
        self._written = 0.0

    def __enter__(self) -> PairLock:
        import fcntl

        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise PrunelensError(f"cannot create the job lock in {self.dir}: "
                                 f"{exc.strerror or exc} (is the store writable?)") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self.fd)
            self.fd = None
            raise AnalysisBusy(busy_message(read_status_path(self.status_path))) from None
        return self

    def write(self, **fields) -> None:
        now = time.time()
        self.status.update(fields, updated=now)
        if fields.get("state") == "running" and now - self._written < STATUS_EVERY_S:
            return
        self._written = now
        path = self.status_path
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.status))
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a status is a courtesy: never fail the job over it

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def read_status_path(path: Path) -> dict:
    try:
        status = json.loads(path.read_text())
        return status if isinstance(status, dict) else {}
    except (OSError, ValueError):
        return {}


def busy_message(status: dict) -> str:
    who = f"pid {status.get('pid', '?')} on {status.get('host', '?')}"
    done = status.get("fraction")
    progress = f", {done:.0%} done" if isinstance(done, int | float) else ""
    eta = status.get("eta_seconds")
    left = f", about {format_seconds(eta)} left" if isinstance(eta, int | float) else ""
    return (f"another analyze job of this model and data is running ({who}{progress}{left}); "
            "wait for it to finish (its results appear on the pages as they land), or stop it first")


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- the job --------------------------------------------------------------------------------------

@dataclass
class Analysis:
    """What :func:`run_analysis` did: the sweep's report, the estimate made before it started."""

    report: SweepReport
    estimate: Estimate
    lock_status: dict

    @property
    def estimated_seconds(self) -> float:
        return self.estimate.total_seconds

    def as_json(self) -> dict:
        r = self.report
        return {"estimate": self.estimate.describe(), "wall_seconds": round(r.wall_seconds, 2),
                "counts": {s: r.count(s) for s in ("stored", "done", "failed")},
                "notes": r.notes, "tasks": [rec.row() for rec in r.records]}


def plan_analysis(session: Session, target: Target, methods: list[str] | None = None,
                  training: bool = False, views: bool | None = None,
                  extra_training: bool = False, head_scopes: tuple[str, ...] | None = None,
                  curve_sparsities: tuple[float, ...] | None = None) -> tuple[SweepSpec, Plan]:
    spec = analysis_spec(target, methods, training, views, extra_training, session.objective, head_scopes,
                         curve_sparsities)
    return spec, plan_sweep(spec, session.store, session.device, opened={target: session})


def run_analysis(session: Session, target: Target, methods: list[str] | None = None,
                 training: bool = False, progress: bool = True, dry_run: bool = False, out=None,
                 on_progress=None, views: bool | None = None, extra_training: bool = False,
                 head_scopes: tuple[str, ...] | None = None,
                 curve_sparsities: tuple[float, ...] | None = None) -> Analysis:
    """Plan, estimate and run the analysis of ``session`` (opened for ``target``).

    ``on_progress(fraction, message)``: called as tasks land (the dashboard's job board passes
    its own, whose :class:`~prunelens.analysis.checkpoints.Cancelled` stops the job between tasks)."""
    import torch

    from prunelens.analysis.sweep import worker

    out = out or sys.stderr
    say = (lambda m: print(m, file=out)) if progress else (lambda m: None)
    spec, plan = plan_analysis(session, target, methods, training, views, extra_training, head_scopes,
                               curve_sparsities)
    est = estimate(plan, session)
    todo = len(plan.todo)
    say(f"analyze: {len(plan.records) - todo} entries already stored, {todo} to compute"
        + (f" and up to {plan.waiting} curve points once their scores land" if plan.waiting else "")
        + f"; estimated {format_seconds(est.total_seconds)} on this machine "
          f"(one forward pass over the {est.examples} examples: {format_seconds(est.example_seconds * est.examples)})")
    if dry_run or not todo:
        report = SweepReport(spec.path, "local", list(plan.records.values()), dry_run=dry_run)
        if not todo:
            report.notes.append(f"nothing to do: all {len(plan.records)} entries are already in the store")
        return Analysis(report, est, {})
    with PairLock(session.store, session) as lock:
        started = time.time()
        lock.write(state="running", pid=os.getpid(), host=socket.gethostname(), started=started,
                   fraction=0.0, estimated_seconds=est.total_seconds, model=session.loaded.name,
                   data=session.data.name, current="starting")

        def report(done: float, total: float, task: Task | None) -> None:
            fraction = done / total if total else 1.0
            elapsed = time.time() - started
            eta = elapsed / done * (total - done) if done > 0 else est.total_seconds
            lock.write(state="running", fraction=fraction, eta_seconds=eta,
                       current=task.label if task else "")
            if on_progress is not None:
                on_progress(fraction, f"{task.label if task else ''} · about {format_seconds(eta)} left")

        schedule = Schedule(order=cost_order(plan, est), weight=est.of, report=report,
                            waiting_weight=est.mask_eval_seconds, unit="s")
        worker.adopt(target, session.device, session)
        state = "failed"
        try:
            sweep = run_sweep(spec, session.store, threads=torch.get_num_threads(), progress=progress,
                              out=out, plan=plan, schedule=schedule, device=session.device)
            state = "done" if not sweep.count("failed") else "failed"
        except BaseException as exc:
            state = "cancelled" if isinstance(exc, Cancelled | KeyboardInterrupt) else "failed"
            raise
        finally:
            lock.write(state=state, finished=time.time(), fraction=1.0 if state == "done" else
                       lock.status.get("fraction", 0.0), eta_seconds=0.0)
    sweep.notes.append(f"estimated {format_seconds(est.total_seconds)}, took "
                       f"{format_seconds(sweep.wall_seconds)} "
                       f"(real / estimate = {sweep.wall_seconds / max(est.total_seconds, 1e-9):.2f})")
    return Analysis(sweep, est, dict(lock.status))


def check_methods(names: list[str] | None) -> list[str] | None:
    """``--methods a,b``: each a known method (checked before anything loads)."""
    return [get_method(name).name for name in names] if names else None
