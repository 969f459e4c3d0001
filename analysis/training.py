"""Training runs (``prunelens train --method admm|pins|snip``): dispatch, parameters, store.

A method module with a training mode sets ``trainer=Trainer(...)`` on its Method. A trainer
declares its own parameters (same :class:`~analysis.methods.base.Param` contract) and a ``run``
function ``(session, params, progress) -> dict`` returning a JSON-able result, e.g.
``{"scores": ..., "history": [{"step", "loss", ...}], "evaluation": {...}}``.

Runs are keyed in the store by model + data fingerprints, the method and *all* its training
parameters (defaults filled in). The result is written once, atomically, when the run ends, so
an interrupted (or cancelled) run never leaves a half-written result.

Bounded work: a trainer declares what a setting costs (``cost`` -> :class:`Work`); ``validate``
refuses a run over :data:`~analysis.methods.base.MAX_TRAIN_WORK` forward-pass equivalents or a
gradient batch over :data:`~analysis.methods.base.MAX_BATCH_TOKENS` tokens before anything runs.
Training batches are :class:`StreamedBatches`: tokenized one batch at a time as the loop reaches
them (never the whole run up front), each batch a cooperative-cancel point
(:func:`analysis.checkpoints.checkpoint`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from analysis.checkpoints import checkpoint
from analysis.data import MAX_LENGTH, Batch, TextData, load_data, pad_batch
from analysis.errors import ParamError
from analysis.methods import all_methods, get_method
from analysis.methods.base import MAX_TRAIN_WORK, Param, Progress, Work, check_work, no_progress


@dataclass(frozen=True)
class Trainer:
    params: tuple[Param, ...]
    run: Callable[..., dict]
    summary: str = ""
    cost: Callable[[dict], Work] | None = None  # what a run with these parameters costs

    def validate(self, raw: dict[str, Any] | None) -> dict[str, Any]:
        raw = dict(raw or {})
        names = {p.name for p in self.params}
        for name in raw:
            if name not in names:
                raise ParamError(f"training has no parameter '{name}' (it has: {', '.join(sorted(names)) or 'none'})")
        values = {p.name: p.parse(raw[p.name]) if p.name in raw else p.default for p in self.params}
        if self.cost is not None:
            check_work(self.cost(values), MAX_TRAIN_WORK, "training run")
        return values

    def work(self, params: dict[str, Any] | None) -> float:
        """Forward-pass equivalents of the training steps of a run (evaluations not counted)."""
        values = self.validate(params)
        return self.cost(values).fixed if self.cost is not None else float("inf")

    def describe(self) -> dict:
        return {"summary": self.summary, "params": [p.describe() for p in self.params]}


def training_work(steps: int, batch_size: int, max_length: int, passes: float = 3.0,
                  what: str = "steps x batch_size") -> Work:
    """The work of ``steps`` gradient steps of ``batch_size`` examples (``passes`` forward-pass
    equivalents each: forward + backward = 3)."""
    examples = int(steps) * int(batch_size)
    return Work(fixed=passes * examples, batch_tokens=int(batch_size) * int(max_length),
                what=f"{what} = {examples:,} examples x {passes:g} passes")


class StreamedBatches:
    """Training batches tokenized when the loop reaches them, not up front.

    ``order``: the example indices of ``data`` in the order they are drawn, ``batch_size`` per
    batch. Iterating tokenizes one batch at a time (at most ``batch_size`` texts per tokenizer
    call) and passes a cooperative-cancel point (:func:`analysis.checkpoints.checkpoint`) at
    every batch; each pass yields the same batches. ``bucket`` > 1 (with ``rng``): every
    ``bucket`` consecutive batches' worth of examples are sorted by length into batches whose
    order is then shuffled by ``rng`` (batches stay random but carry little padding) — the same
    batches as tokenizing the bucket in one call and sorting it. Batches are padded to their own
    longest row, like :func:`analysis.data.tokenize_batches`."""

    def __init__(self, tokenizer, data: TextData, order, batch_size: int,
                 max_length: int = MAX_LENGTH, bucket: int = 1, rng: np.random.Generator | None = None):
        if bucket > 1 and rng is None:
            raise ValueError("bucketed batches need an rng for their order")
        self.tokenizer, self.data = tokenizer, data
        self.order = np.asarray(order, dtype=np.int64)
        self.batch_size, self.bucket = int(batch_size), int(bucket)
        model_max = getattr(tokenizer, "model_max_length", None)
        self.max_length = model_max if isinstance(model_max, int) and 0 < model_max < max_length else max_length
        self._rng_state = None if rng is None else rng.bit_generator.state

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __getitem__(self, index):
        if self.bucket != 1:
            raise TypeError("bucketed batches can only be iterated")
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("only contiguous slices of batches")
            rows = self.order[start * self.batch_size:stop * self.batch_size]
            return StreamedBatches(self.tokenizer, self.data, rows, self.batch_size, self.max_length)
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self._collate(self._encode(index * self.batch_size, self.batch_size),
                             np.arange(self.batch_size)[:len(self.order) - index * self.batch_size])

    def __iter__(self):
        rng = None
        if self._rng_state is not None:
            rng = np.random.default_rng()
            rng.bit_generator.state = self._rng_state  # every pass draws the same batch order
        span = self.batch_size * self.bucket
        for start in range(0, len(self.order), span):
            encoded = self._encode(start, span)
            positions = np.arange(len(encoded["length"]))
            if self.bucket > 1:
                positions = np.argsort(np.asarray(encoded["length"]), kind="stable")
            groups = [positions[i:i + self.batch_size] for i in range(0, len(positions), self.batch_size)]
            if rng is not None:
                groups = [groups[i] for i in rng.permutation(len(groups))]
            for rows in groups:
                checkpoint()  # a cancelled run stops here, before its next step
                yield self._collate(encoded, rows)

    def _encode(self, start: int, count: int) -> dict:
        """Token ids of ``order[start:start + count]``, tokenized ``batch_size`` texts at a time;
        ``start`` (the offset of these rows in ``order``) is kept for the batches' index."""
        rows = self.order[start:start + count]
        texts, pairs = self.data.texts, self.data.text_pairs
        out: dict = {"input_ids": [], "token_type_ids": [], "length": [], "start": start,
                     "labels": np.asarray(self.data.labels)[rows]}
        for i in range(0, len(rows), self.batch_size):
            part = rows[i:i + self.batch_size]
            enc = self.tokenizer([texts[j] for j in part],
                                 None if pairs is None else [pairs[j] for j in part],
                                 truncation=True, max_length=self.max_length,
                                 return_overflowing_tokens=False, return_length=True)
            out["input_ids"].extend(enc["input_ids"])
            out["length"].extend(enc["length"])
            if "token_type_ids" in enc:
                out["token_type_ids"].extend(enc["token_type_ids"])
            else:
                out["token_type_ids"] = None
        return out

    def _collate(self, encoded: dict, rows) -> Batch:
        rows = np.asarray(rows)
        return pad_batch(self.tokenizer, encoded["input_ids"], encoded["token_type_ids"], encoded["length"],
                         rows, encoded["labels"][rows], rows + encoded["start"])


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
