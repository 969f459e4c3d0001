"""Evaluation results and their statistics: what a masked evaluation reports.

Owns :class:`Outputs` (per-example outputs in data-set order, with what the objective compares them
to), :class:`EvalResult` (accuracy, loss, margin and the task metric with standard errors),
:class:`Comparison` (pruned against unpruned, paired standard errors of the deltas), the task
metrics (:func:`task_metric`: accuracy, Matthews correlation, F1) and each example's stored
correctness (:func:`correctness`, :func:`correct_flags`). Pure numpy: the
:class:`~prunelens.analysis.evaluate.Evaluator` computes the outputs, this module scores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from prunelens.analysis.objectives import PairLayout, embedding_extras, example_vectors, metric_name

METRICS = ("accuracy", "loss", "margin")


@dataclass
class Outputs:
    """Per-example outputs in data-set order: a classifier's logits, or a headless encoder's
    sentence vectors; ``reference`` holds the unpruned outputs of the same examples (the
    agreement and embedding objectives measure against them)."""

    logits: np.ndarray  # (n, classes) or (n, hidden)
    labels: np.ndarray  # (n,)
    objective: str = "labels"
    reference: np.ndarray | None = None
    layout: PairLayout | None = None  # how the embedding objective's sentences pair up
    _vectors: dict | None = field(default=None, repr=False, compare=False)

    def vectors(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = example_vectors(self.objective, self.logits, self.reference, self.labels)
        return self._vectors

    @property
    def correct(self) -> np.ndarray:
        """Right class (labels), the unpruned class (agreement), an unchanged nearest neighbour
        (embedding), as 0/1 per example."""
        return self.vectors()["correct"]

    @property
    def loss(self) -> np.ndarray:
        return self.vectors()["loss"]

    @property
    def margin(self) -> np.ndarray:
        return self.vectors()["margin"]

    def vector(self, name: str) -> np.ndarray:
        return self.vectors()[name]

    def extras(self) -> dict[str, float]:
        """The embedding objective's set-level metrics (nothing for the others)."""
        if self.objective != "embedding":
            return {}
        return embedding_extras(self.logits, self.correct, self.layout)


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
    objective: str = "labels"
    extras: dict = field(default_factory=dict)  # the embedding objective's set-level metrics

    @classmethod
    def from_outputs(cls, out: Outputs, metric_name: str = "accuracy") -> EvalResult:
        """``metric_name`` is the task metric of the labels objective (accuracy, mcc, f1); the
        other objectives report their own score (agreement, cosine)."""
        stats = {}
        for name in METRICS:
            v = out.vector(name)
            stats[name] = float(v.mean())
            stats[f"{name}_se"] = _se(v)
        if out.objective != "labels":
            return cls(metric_name=metric_name_of(out.objective), metric=stats["accuracy"],
                       metric_se=stats["accuracy_se"], n=len(out.labels), objective=out.objective,
                       extras=out.extras(), **stats)
        predictions = out.logits.argmax(-1)
        if metric_name == "accuracy":
            metric, metric_se = stats["accuracy"], stats["accuracy_se"]
        else:
            metric = task_metric(metric_name, predictions, out.labels)
            metric_se = _bootstrap_se(metric_name, predictions, out.labels)
        return cls(metric_name=metric_name, metric=metric, metric_se=metric_se, n=len(out.labels),
                   **stats)

    def as_dict(self) -> dict:
        """Every field; ``objective`` and ``extras`` (flattened) only under another objective than
        labels, so a labels result has the shape it always had."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("objective", "extras")}
        if self.objective != "labels":
            out["objective"] = self.objective
            out.update(self.extras)
        return out


metric_name_of = metric_name  # the objective's score name (accuracy, agreement, cosine)


@dataclass
class Comparison:
    base: EvalResult
    pruned: EvalResult
    delta: dict[str, float]  # pruned - base for each metric, and "<metric>_se" (paired)
    correct: str = ""  # the pruned model's per-example correctness (:func:`correctness`)

    def as_dict(self) -> dict:
        return {"base": self.base.as_dict(), "pruned": self.pruned.as_dict(), "delta": self.delta}


def correctness(out: Outputs) -> str:
    """Each example's correctness as "0"/"1" in data order: what a training run stores per model so
    that runs and seeds can be compared pairwise on the same examples
    (:func:`prunelens.analysis.compare.paired_difference`)."""
    return "".join("1" if c else "0" for c in out.correct)


def correct_flags(correct: str) -> list[bool]:
    """The inverse of :func:`correctness`: a stored "0"/"1" string as one flag per example."""
    return [c == "1" for c in correct]


def paired_delta(base: Outputs, pruned: Outputs, metric_name: str = "accuracy") -> dict[str, float]:
    delta = {}
    for name in METRICS:
        diff = pruned.vector(name) - base.vector(name)
        delta[name] = float(diff.mean())
        delta[f"{name}_se"] = _se(diff)
    if pruned.objective != "labels":
        delta["metric"] = delta["accuracy"]
        base_extras = base.extras()
        for name, value in pruned.extras().items():
            delta[name] = value - base_extras.get(name, float("nan"))
        return delta
    base_pred, pruned_pred = base.logits.argmax(-1), pruned.logits.argmax(-1)
    delta["metric"] = task_metric(metric_name, pruned_pred, pruned.labels) - task_metric(
        metric_name, base_pred, base.labels)
    return delta
