"""Training runs (``prunelens train --method admm|pins|snip``): dispatch, parameters, store.

A method module with a training mode sets ``trainer=Trainer(...)`` on its Method. A trainer
declares its own parameters (same :class:`~analysis.methods.base.Param` contract) and a ``run``
function ``(session, params, progress) -> dict`` returning a JSON-able result, e.g.
``{"scores": ..., "history": [{"step", "loss", ...}], "evaluation": {...}}``.

Runs are keyed in the store by model + data fingerprints, the method and *all* its training
parameters (defaults filled in). The result is written once, atomically, when the run ends, so
an interrupted run never leaves a half-written result.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from analysis.data import TextData, load_data
from analysis.errors import ParamError
from analysis.methods import all_methods, get_method
from analysis.methods.base import Param, Progress, no_progress


@dataclass(frozen=True)
class Trainer:
    params: tuple[Param, ...]
    run: Callable[..., dict]
    summary: str = ""

    def validate(self, raw: dict[str, Any] | None) -> dict[str, Any]:
        raw = dict(raw or {})
        names = {p.name for p in self.params}
        for name in raw:
            if name not in names:
                raise ParamError(f"training has no parameter '{name}' (it has: {', '.join(sorted(names)) or 'none'})")
        return {p.name: p.parse(raw[p.name]) if p.name in raw else p.default for p in self.params}

    def describe(self) -> dict:
        return {"summary": self.summary, "params": [p.describe() for p in self.params]}


def training_data(session) -> tuple[TextData, str]:
    """What training runs train on: the default data's train split when the session evaluates on
    the default (Rotten Tomatoes) dev split, which training never sees; otherwise the session's own
    data, with a note that the evaluation is then optimistic."""
    if session.data.name == "rotten_tomatoes":
        data = session.loaded.fit_data(load_data("default", split="train"))
        return data, "train split of the default data"
    return session.data, ("no separate train split is known for this data: trained on the "
                          "evaluation data itself, so the evaluation is optimistic")


def trainable_methods() -> dict[str, Trainer]:
    return {name: m.trainer for name, m in all_methods().items() if getattr(m, "trainer", None)}


def get_trainer(method_name: str) -> Trainer:
    method = get_method(method_name)
    trainer = getattr(method, "trainer", None)
    if trainer is None:
        raise ParamError(f"method '{method_name}' has no training mode (trainable: "
                         f"{', '.join(trainable_methods()) or 'none'})")
    return trainer


def run_key(session, method_name: str, params: dict):
    """The store key of one training run (``params`` validated, defaults filled in)."""
    return session.key("train-run", method_name, "", params)


def train_command(session, method_name: str, params: dict | None = None,
                  progress: Progress = no_progress, use_store: bool = True) -> dict:
    """Run (or fetch from the store) one training run; returns its result with metadata."""
    trainer = get_trainer(method_name)
    params = trainer.validate(params)
    key = run_key(session, method_name, params)
    if use_store:
        hit = session.store.get(key)
        if hit is not None:
            return {**hit, "cached": True}
    start = time.perf_counter()
    result = trainer.run(session, params, progress)
    result = {"method": method_name, "params": params, **session.describe(), **result,
              "seconds": round(time.perf_counter() - start, 2)}
    if use_store:
        session.store.put(key, result)
    return {**result, "cached": False}


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
