"""Masked evaluation: accuracy, loss, margin and the task metric, with standard errors.

Owns the :class:`Evaluator`: it tokenizes a data set once into length-sorted batches, runs the
model under ``torch.inference_mode`` with gate masks applied, and compares a pruned model with the
unpruned one *on the same examples* (paired standard errors of the deltas). The unpruned outputs
are computed once per model + data and reused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from analysis.data import TextData, tokenize_batches
from analysis.gates import Masks, gated
from analysis.models import LoadedModel

METRICS = ("accuracy", "loss", "margin")


@dataclass
class Outputs:
    """Per-example outputs in data-set order."""

    logits: np.ndarray  # (n, classes)
    labels: np.ndarray  # (n,)

    @property
    def correct(self) -> np.ndarray:
        return (self.logits.argmax(-1) == self.labels).astype(np.float64)

    @property
    def loss(self) -> np.ndarray:
        t = torch.as_tensor(self.logits, dtype=torch.float64)
        return F.cross_entropy(t, torch.as_tensor(self.labels), reduction="none").numpy()

    @property
    def margin(self) -> np.ndarray:
        logits = self.logits.astype(np.float64)
        rows = np.arange(len(self.labels))
        true = logits[rows, self.labels]
        other = logits.copy()
        other[rows, self.labels] = -np.inf
        return true - other.max(-1)

    def vector(self, name: str) -> np.ndarray:
        return {"accuracy": self.correct, "loss": self.loss, "margin": self.margin}[name]


def _se(values: np.ndarray) -> float:
    n = len(values)
    return float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")


def task_metric(name: str, predictions: np.ndarray, labels: np.ndarray) -> float:
    """accuracy, Matthews correlation (CoLA) or F1 of the positive class (MRPC, QQP)."""
    if name == "accuracy":
        return float(np.mean(predictions == labels))
    tp = float(np.sum((predictions == 1) & (labels == 1)))
    fp = float(np.sum((predictions == 1) & (labels == 0)))
    fn = float(np.sum((predictions == 0) & (labels == 1)))
    tn = float(np.sum((predictions == 0) & (labels == 0)))
    if name == "f1":
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
    if name == "mcc":
        denom = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return (tp * tn - fp * fn) / denom if denom else 0.0
    raise ValueError(f"unknown task metric {name}")


def _bootstrap_se(name: str, predictions: np.ndarray, labels: np.ndarray, draws: int = 200) -> float:
    rng = np.random.default_rng(0)
    n = len(labels)
    if n < 2:
        return float("nan")
    values = [task_metric(name, predictions[idx], labels[idx])
              for idx in (rng.integers(0, n, n) for _ in range(draws))]
    return float(np.std(values, ddof=1))


@dataclass
class EvalResult:
    accuracy: float
    loss: float
    margin: float
    accuracy_se: float
    loss_se: float
    margin_se: float
    metric_name: str
    metric: float
    metric_se: float
    n: int

    @classmethod
    def from_outputs(cls, out: Outputs, metric_name: str = "accuracy") -> EvalResult:
        stats = {}
        for name in METRICS:
            v = out.vector(name)
            stats[name] = float(v.mean())
            stats[f"{name}_se"] = _se(v)
        predictions = out.logits.argmax(-1)
        if metric_name == "accuracy":
            metric, metric_se = stats["accuracy"], stats["accuracy_se"]
        else:
            metric = task_metric(metric_name, predictions, out.labels)
            metric_se = _bootstrap_se(metric_name, predictions, out.labels)
        return cls(metric_name=metric_name, metric=metric, metric_se=metric_se, n=len(out.labels),
                   **stats)

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class Comparison:
    base: EvalResult
    pruned: EvalResult
    delta: dict[str, float]  # pruned - base for each metric, and "<metric>_se" (paired)

    def as_dict(self) -> dict:
        return {"base": self.base.as_dict(), "pruned": self.pruned.as_dict(), "delta": self.delta}


def paired_delta(base: Outputs, pruned: Outputs, metric_name: str = "accuracy") -> dict[str, float]:
    delta = {}
    for name in METRICS:
        diff = pruned.vector(name) - base.vector(name)
        delta[name] = float(diff.mean())
        delta[f"{name}_se"] = _se(diff)
    base_pred, pruned_pred = base.logits.argmax(-1), pruned.logits.argmax(-1)
    delta["metric"] = task_metric(metric_name, pruned_pred, pruned.labels) - task_metric(
        metric_name, base_pred, base.labels)
    return delta


class Evaluator:
    """Evaluates one model on one data set under any gate masks.

    ``max_length`` truncates long inputs (the count is in ``truncated``); batches are sorted by
    length so padding is minimal. The model is only read, never changed.
    """

    def __init__(self, loaded: LoadedModel, data: TextData, batch_size: int = 64,
                 max_length: int = 128, device: str = "cpu"):
        loaded.check_data(data)
        self.loaded = loaded
        self.data = data
        self.device = device
        self.batches, self.truncated = tokenize_batches(loaded.tokenizer, data, batch_size, max_length)
        self._base: Outputs | None = None

    @property
    def n(self) -> int:
        return len(self.data)

    @property
    def notes(self) -> list[str]:
        notes = list(self.data.notes)
        if self.truncated:
            notes.append(f"{self.truncated} example(s) longer than the limit were truncated")
        return notes

    def outputs(self, masks: Masks | None = None, model=None, limit_batches: int | None = None) -> Outputs:
        """Logits of every example (data-set order) with ``masks`` applied to ``model``."""
        model = model if model is not None else self.loaded.model
        batches = self.batches if limit_batches is None else self.batches[:limit_batches]
        n = sum(len(b.index) for b in batches)
        logits = np.zeros((len(self.data), model.config.num_labels), dtype=np.float32)
        with torch.inference_mode(), gated(model, masks or Masks()):
            for batch in batches:
                out = model(**batch.to(self.device).model_inputs()).logits
                logits[batch.index.numpy()] = out.float().cpu().numpy()
        if limit_batches is not None:
            rows = np.concatenate([b.index.numpy() for b in batches]) if n else np.zeros(0, int)
            return Outputs(logits[rows], self.data.labels[rows])
        return Outputs(logits, self.data.labels)

    @property
    def base_outputs(self) -> Outputs:
        if self._base is None:
            self._base = self.outputs(None)
        return self._base

    @property
    def base(self) -> EvalResult:
        return EvalResult.from_outputs(self.base_outputs, self.data.metric)

    def evaluate(self, masks: Masks | None = None, model=None) -> EvalResult:
        if (masks is None or masks.is_empty()) and model is None:
            return self.base
        return EvalResult.from_outputs(self.outputs(masks, model), self.data.metric)

    def compare(self, masks: Masks | None = None, model=None) -> Comparison:
        """Pruned against unpruned on the same examples, with paired standard errors."""
        pruned = self.outputs(masks, model) if (masks is not None and not masks.is_empty()) or model is not None else self.base_outputs
        return Comparison(
            base=self.base,
            pruned=EvalResult.from_outputs(pruned, self.data.metric),
            delta=paired_delta(self.base_outputs, pruned, self.data.metric),
        )
