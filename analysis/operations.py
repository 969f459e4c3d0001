"""The operations the CLI, the dashboard and the scripts share: score, prune, curve.

A :class:`Session` binds one loaded model to one data split, an evaluator and the result store.
Every expensive answer goes through the store (content-addressed by model and data fingerprints,
method, unit and parameters), so the dashboard and ``prunelens precompute`` fill the same cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from analysis.cache import Key, ResultStore
from analysis.data import TextData, load_data
from analysis.errors import ParamError
from analysis.evaluate import Evaluator
from analysis.gates import Masks
from analysis.methods import get_method
from analysis.methods.base import Context, Progress, no_progress
from analysis.models import LoadedModel, load_model
from analysis.pruning import check_sparsity, compression, physically_prune, select, sparsity_of


@dataclass
class Session:
    loaded: LoadedModel
    data: TextData
    store: ResultStore = field(default_factory=ResultStore)
    device: str = "cpu"
    _evaluator: Evaluator | None = field(default=None, repr=False)

    @property
    def evaluator(self) -> Evaluator:
        if self._evaluator is None:
            self._evaluator = Evaluator(self.loaded, self.data, device=self.device)
        return self._evaluator

    def context(self, progress: Progress = no_progress) -> Context:
        return Context(self.loaded, self.data, self.evaluator, progress, self.device)

    def key(self, kind: str, method: str = "", unit: str = "", params: dict | None = None) -> Key:
        return Key.make(self.loaded.fingerprint, self.data.fingerprint, kind, method, unit, params)

    def describe(self) -> dict:
        return {"model": self.loaded.describe(), "data": self.data.describe()}


def open_session(model: str = "default", data: str = "default", limit: int | None = None,
                 split: str = "dev", store: ResultStore | None = None, loaded: LoadedModel | None = None,
                 device: str = "cpu") -> Session:
    loaded = loaded or load_model(model)
    text_data = load_data(data, split=split, limit=limit)
    loaded.check_data(text_data)
    return Session(loaded, text_data, store or ResultStore(), device)


def default_unit(method_name: str, unit: str | None = None) -> str:
    method = get_method(method_name)
    if unit is None:
        return "head" if "head" in method.units else method.units[0]
    return method.check_unit(unit)


@dataclass
class ScoreResult:
    method: str
    unit: str
    params: dict
    scores: np.ndarray
    seconds: float
    cached: bool

    def as_json(self, session: Session) -> dict:
        return {
            "method": self.method,
            "unit": self.unit,
            "params": self.params,
            "model": session.loaded.describe(),
            "data": session.data.describe(),
            "scores": self.scores.tolist(),
            "seconds": round(self.seconds, 4),
            "cached": self.cached,
        }


def compute_scores(session: Session, method_name: str, unit: str | None = None,
                   params: dict | None = None, progress: Progress = no_progress,
                   use_store: bool = True) -> ScoreResult:
    """Importance scores of ``unit`` under a method, from the store when present."""
    method = get_method(method_name)
    unit = default_unit(method_name, unit)
    params = method.validate(params)
    key = session.key("scores", method.name, unit, params)
    start = time.perf_counter()
    if use_store:
        hit = session.store.get(key)
        if hit is not None:
            return ScoreResult(method.name, unit, params, np.asarray(hit["scores"], dtype=np.float64),
                               time.perf_counter() - start, True)
    scores = method.score(session.context(progress), unit, params)
    seconds = time.perf_counter() - start
    if use_store:
        session.store.put(key, {"scores": scores.tolist(), "seconds": seconds})
    return ScoreResult(method.name, unit, params, scores, seconds, False)


def mask_for(scores: np.ndarray, sparsity: float | None, scope: str = "global",
             threshold: float | None = None, keep_one_per_layer: bool = False) -> np.ndarray:
    return select(scores, sparsity=sparsity, scope=scope, threshold=threshold,
                  keep_one_per_layer=keep_one_per_layer)


def prune(session: Session, method_name: str, sparsity: float | None = None, unit: str | None = None,
          scope: str | None = None, params: dict | None = None, physical: bool = False,
          threshold: float | None = None, keep_one_per_layer: bool = False,
          progress: Progress = no_progress) -> dict:
    """Prune by a method's scores and evaluate against the unpruned model (DESIGN's JSON)."""
    if sparsity is None and threshold is None:
        raise ParamError("give --sparsity or --threshold")
    if sparsity is not None:
        check_sparsity(sparsity)
    method = get_method(method_name)
    start = time.perf_counter()
    result = compute_scores(session, method_name, unit, params, progress)
    scope = scope or method.default_scope
    mask = mask_for(result.scores, sparsity, scope, threshold, keep_one_per_layer)
    masks = Masks.for_unit(result.unit, mask)
    _ = session.evaluator.base_outputs  # computed once, outside the timed part
    t0 = time.perf_counter()
    comparison = session.evaluator.compare(masks)
    masked_seconds = time.perf_counter() - t0
    out = {
        "method": method.name,
        "unit": result.unit,
        "scope": scope,
        "params": result.params,
        "model": session.loaded.describe(),
        "data": session.data.describe(),
        **{k: _metrics(v) for k, v in comparison.as_dict().items()},
        "mask": mask.tolist(),
        "sparsity": sparsity_of(mask),
        "requested_sparsity": sparsity,
        "threshold": threshold,
        "compression": compression(session.loaded.inventory, result.unit, mask).as_dict(),
        "evaluated": "masked",
        "masked_seconds": round(masked_seconds, 4),
    }
    if physical:
        small = physically_prune(session.loaded.model, masks)
        t0 = time.perf_counter()
        phys = session.evaluator.outputs(model=small)
        out["physical"] = {
            "seconds": round(time.perf_counter() - t0, 4),
            "max_abs_logit_difference": float(np.abs(
                phys.logits - session.evaluator.outputs(masks).logits).max()),
            **_metrics(_result_of(phys, session)),
        }
    out["seconds"] = round(time.perf_counter() - start, 4)
    return out


def _result_of(outputs, session: Session) -> dict:
    from analysis.evaluate import EvalResult

    return EvalResult.from_outputs(outputs, session.data.metric).as_dict()


def _metrics(d: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


def curve(session: Session, methods: list[str], sparsities: list[float], unit: str = "head",
          scope: str = "global", params: dict[str, dict] | None = None,
          progress: Progress = no_progress, use_store: bool = True) -> list[dict]:
    """Accuracy/loss/margin at each sparsity for each method (points cached one by one)."""
    sparsities = [check_sparsity(s) for s in sparsities]
    params = params or {}
    rows = []
    total = len(methods) * len(sparsities)
    for m_idx, name in enumerate(methods):
        method = get_method(name)
        method.check_unit(unit)
        scored = compute_scores(session, name, unit, params.get(name), use_store=use_store,
                                progress=lambda f, msg, m_idx=m_idx: progress(m_idx / len(methods) + f / len(methods) * 0.5, msg))
        for s_idx, sparsity in enumerate(sparsities):
            point_params = {"method_params": scored.params, "sparsity": sparsity, "scope": scope}
            key = session.key("curve-point", name, unit, point_params)
            point = session.store.get(key) if use_store else None
            if point is None:
                mask = mask_for(scored.scores, sparsity, scope)
                res = session.evaluator.evaluate(Masks.for_unit(unit, mask)) if sparsity > 0 else session.evaluator.base
                point = {"accuracy": res.accuracy, "loss": res.loss, "margin": res.margin,
                         "accuracy_se": res.accuracy_se, "loss_se": res.loss_se,
                         "margin_se": res.margin_se, "metric": res.metric,
                         "compression": compression(session.loaded.inventory, unit, mask).fraction}
                if use_store:
                    session.store.put(key, point)
            rows.append({"method": name, "sparsity": sparsity, **point})
            progress((m_idx * len(sparsities) + s_idx + 1) / total, f"{name} at {sparsity:.0%}")
    return rows
