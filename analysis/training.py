"""Training runs (``prunelens train --method admm|pins|snip``): dispatch, parameters, store.

A method module with a training mode sets ``trainer=Trainer(...)`` on its Method
(:class:`prunelens.analysis.methods.base.Trainer`, beside ``Method``; the batches it trains on come from
:mod:`prunelens.analysis.batches`, so no method imports this module). A trainer
declares its own parameters (same :class:`~prunelens.analysis.methods.base.Param` contract) and a ``run``
function ``(session, params, progress) -> dict`` returning a JSON-able result in the one
:class:`~prunelens.analysis.run_result.RunResult` shape, ``{"variants": {name: {"accuracy", "loss", ...}},
"labels": {name: text}, "histories": {name: [{"step", "loss", ...}]}, "scores": {unit: [...]},
"extras": {...}, "notes": [...]}`` (:data:`~prunelens.analysis.run_result.SHAPE_KEYS`; every trainer returns
it, and the dashboard's generic run view shows it); :func:`train_command` adds ``method``,
``params`` and the bookkeeping. Runs stored by the earlier trainers (0.1's own shapes) are read through
:func:`prunelens.analysis.run_result.normalise`, which every view uses.

Runs are keyed in the store by model + data fingerprints, the method and *all* its training
parameters (defaults filled in). The result is written once, atomically, when the run ends, so
an interrupted (or cancelled) run never leaves a half-written result.

Bounded work: a trainer declares what a setting costs (``cost`` -> :class:`Work`); ``validate``
refuses a run over :data:`~prunelens.analysis.methods.base.MAX_TRAIN_WORK` forward-pass equivalents or a
gradient batch over :data:`~prunelens.analysis.methods.base.MAX_BATCH_TOKENS` tokens before anything runs.
Training batches are :class:`~prunelens.analysis.batches.StreamedBatches`: tokenized one batch at a time as the loop reaches
them (never the whole run up front), each batch a cooperative-cancel point
(:func:`prunelens.analysis.checkpoints.checkpoint`).
"""

from __future__ import annotations

import time

from prunelens.analysis.errors import ParamError
from prunelens.analysis.methods import all_methods, get_method
from prunelens.analysis.methods.base import Progress, Trainer, no_progress
from prunelens.analysis.session import Session


def trainable_methods() -> dict[str, Trainer]:
    return {name: m.trainer for name, m in all_methods().items() if getattr(m, "trainer", None)}


def get_trainer(method_name: str) -> Trainer:
    method = get_method(method_name)
    trainer = getattr(method, "trainer", None)
    if trainer is None:
        raise ParamError(f"method '{method_name}' has no training mode (trainable: "
                         f"{', '.join(trainable_methods()) or 'none'})")
    return trainer


def run_key(session: Session, method_name: str, params: dict):
    """The store key of one training run (``params`` validated, defaults filled in)."""
    return session.key("train-run", method_name, "", params)


def train_command(session: Session, method_name: str, params: dict | None = None,
                  progress: Progress = no_progress, use_store: bool = True) -> dict:
    """Run (or fetch from the store) one training run; returns its result with metadata."""
    trainer = get_trainer(method_name)
    params = trainer.validate(params)
    reason = trainer.is_compatible(session.objective)
    if reason:
        raise ParamError(f"training mode '{method_name}' cannot run here: {reason}")

    def run() -> dict:
        start = time.perf_counter()
        result = trainer.run(session, params, progress)
        return {"method": method_name, "params": params, **session.describe(), **result,
                "seconds": round(time.perf_counter() - start, 2), "device": session.device}

    result, cached = session.read_through("train-run", method_name, "", params, run, use_store)
    return {**result, "cached": cached}


def changed_params(method_name: str, params: dict | None) -> dict:
    """The parameters of a run that differ from its trainer's defaults (what tells runs of one
    method apart in a listing); {} for an unknown method or a run at the defaults."""
    try:
        defaults = get_trainer(method_name).validate({})
    except ParamError:
        return {}
    return {k: v for k, v in (params or {}).items() if defaults.get(k, v) != v or k not in defaults}


RUN_ID_LENGTH = 12  # hex digits of a run's store key that name it in links (``run=<id>``)


def finished_runs(store, model_fingerprint: str | None = None) -> list[dict]:
    """Training runs in the store (user and shipped), optionally for one model. Each carries
    ``run_id``: the start of its store key, which (unlike its position in this list) does not
    change when other runs finish."""
    runs = []
    for entry in store.entries("train-run"):
        key = entry.get("key", {})
        if model_fingerprint is None or key.get("model") == model_fingerprint:
            runs.append({**entry["result"], "run_id": entry["digest"][:RUN_ID_LENGTH]})
    return runs
