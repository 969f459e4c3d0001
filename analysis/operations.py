"""The operations the CLI, the dashboard and the scripts share: score, prune, curve.

Each takes a :class:`~prunelens.analysis.session.Session` (one loaded model on one data split,
its objective (:mod:`prunelens.analysis.objectives`), its evaluator and the result store;
:func:`open_session` opens one). Every expensive answer goes through the session's store lookups
(:meth:`~prunelens.analysis.session.Session.lookup` / ``read_through``: content-addressed by model
and data fingerprints, method, unit and parameters), so the dashboard and ``prunelens precompute``
fill the same cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from prunelens.analysis import objectives
from prunelens.analysis.cache import Key, ResultStore, mask_params
from prunelens.analysis.data import load_data
from prunelens.analysis.gates import Masks
from prunelens.analysis.methods import get_method
from prunelens.analysis.models import LoadedModel, load_model
from prunelens.analysis.pruning import (
    capped_note,
    check_selection,
    check_sparsity,
    compression,
    grid_json,
    physically_prune,
    select,
    sparsity_of,
)
from prunelens.analysis.session import Progress, Session, no_progress


def open_session(model: str = "default", data: str = "default", limit: int | None = None,
                 split: str = "dev", store: ResultStore | None = None, loaded: LoadedModel | None = None,
                 device: str = "cpu", objective: str | None = None, announce=None) -> Session:
    """The data is read first: ``--objective labels`` on data without labels is refused before
    the model loads (``announce()`` is called just before it does). ``objective`` None: the
    default for the model and data (:func:`prunelens.analysis.objectives.default_objective`)."""
    raw = load_data(data, split=split, limit=limit)
    if objective is not None:
        objectives.check_name(objective)
        objectives.check_data_objective(objective, raw.labelled, f"data '{raw.name}'")
    if announce is not None:
        announce()
    loaded = loaded or load_model(model)
    chosen = objectives.resolve(objective, loaded.headless, raw.labelled, loaded.name, f"data '{raw.name}'")
    text_data = loaded.fit_data(raw)
    note = objectives.default_note(chosen, loaded.headless, raw.labelled) if objective is None else None
    return Session(loaded, text_data, store or ResultStore(), device, objective=chosen, objective_note=note)


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
            "objective": session.objective,
            "scores": grid_json(session.loaded.inventory.absent_as_nan(self.unit, self.scores)),
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
    start = time.perf_counter()
    if use_store:
        hit = session.lookup("scores", method.name, unit, params)
        if hit is not None:
            return ScoreResult(method.name, unit, params, np.asarray(hit["scores"], dtype=np.float64),
                               time.perf_counter() - start, True)
    # a method whose one computation gives several units (joint) stores them all: nothing is
    # recomputed when the next unit is asked for, and no method keeps a memo of its own
    units = [u for u in method.joint_units(params, unit) if u == unit or (
        use_store and session.lookup("scores", method.name, u, params) is None)]
    scored = method.score_units(session.with_progress(progress), units, params)
    seconds = time.perf_counter() - start
    if use_store:
        precision = session.evaluator.masked_precision if method.evaluates_masks else "fp32"
        for u, scores in scored.items():
            session.save("scores", method.name, u, params,
                         {"scores": scores.tolist(), "seconds": seconds, "precision": precision})
    return ScoreResult(method.name, unit, params, scored[unit], seconds, False)


def stored_scores(session: Session, method_name: str, unit: str, params: dict | None = None
                  ) -> np.ndarray | None:
    """A method's scores if the store has them (exact first, then checked bf16), else None."""
    method = get_method(method_name)
    hit = session.lookup("scores", method.name, unit, method.validate(params))
    return None if hit is None else np.asarray(hit["scores"], dtype=np.float64)


def score_keys(session: Session, method, unit: str, params: dict) -> dict[str, Key]:
    """The store keys a method's scores may live under (validated ``params``), by precision."""
    return session.keys("scores", method.name, unit, params)


def mask_for(scores: np.ndarray, sparsity: float | None, scope: str = "global",
             threshold: float | None = None, keep_one_per_layer: bool = False,
             present: np.ndarray | None = None) -> np.ndarray:
    return select(scores, sparsity=sparsity, scope=scope, threshold=threshold,
                  keep_one_per_layer=keep_one_per_layer, present=present)


def present_units(session: Session, unit: str) -> np.ndarray | None:
    """The units the session's model has (heads an already-pruned checkpoint lost: False)."""
    inv = session.loaded.inventory
    has_absent = inv.present is not None or inv.gated_off
    return inv.head_grid_mask() != 0 if unit == "head" and has_absent else None


def prune(session: Session, method_name: str, sparsity: float | None = None, unit: str | None = None,
          scope: str | None = None, params: dict | None = None, physical: bool = False,
          threshold: float | None = None, keep_one_per_layer: bool = False,
          progress: Progress = no_progress, flips: bool = True) -> dict:
    """Prune by a method's scores and evaluate against the unpruned model (DESIGN's JSON).

    ``flipped`` lists the examples whose prediction changes (:mod:`prunelens.analysis.flips`, the first
    ``FLIPPED_CAP``), ``flipped_count`` counts all of them."""
    check_selection(sparsity, threshold)
    method = get_method(method_name)
    start = time.perf_counter()
    result = compute_scores(session, method_name, unit, params, progress)
    scope = scope or method.default_scope
    present = present_units(session, result.unit)
    mask = mask_for(result.scores, sparsity, scope, threshold, keep_one_per_layer, present)
    masks = Masks.for_unit(result.unit, mask)
    t0 = time.perf_counter()
    comparison, cached = evaluate_mask(session, result.unit, mask)
    masked_seconds = time.perf_counter() - t0
    out = {
        "method": method.name,
        "unit": result.unit,
        "scope": scope,
        "params": result.params,
        "model": session.loaded.describe(),
        "data": session.data.describe(),
        "objective": session.objective,
        **comparison,
        "mask": grid_json(mask, present),
        "sparsity": sparsity_of(mask if present is None else np.where(present, mask, np.nan)),
        "requested_sparsity": sparsity,
        "threshold": threshold,
        "compression": compression(session.loaded.inventory, result.unit, mask).as_dict(),
        "evaluated": "masked",
        "from_store": cached,
        "masked_seconds": round(masked_seconds, 4),
    }
    cap = capped_note(sparsity, np.shape(result.scores), scope or "global")
    if cap:
        out["notes"] = [cap]
    if flips and session.objective != "embedding":  # a sentence vector has no prediction to flip
        from prunelens.analysis.flips import flipped

        flip = flipped(session, result.unit, mask)
        out["flipped"], out["flipped_count"] = flip["rows"], flip["count"]
    if physical:
        out["physical"] = physical_timing(session, masks, progress)
    out["seconds"] = round(time.perf_counter() - start, 4)
    return out


TIMING_SIZE = 128  # examples the masked-vs-physical timing repeats run on (a fixed subset)


def physical_timing(session: Session, masks: Masks, progress: Progress = no_progress) -> dict:
    """The physically pruned copy against the masked model: its metrics and the largest logit
    difference on the loaded data, then both timed now on the same forward (transformers' own,
    batch by batch) by the one timing protocol (:mod:`prunelens.analysis.timing`: warm-up,
    interleaved repeats, median, the spread) on a fixed subset of :data:`TIMING_SIZE` examples,
    so the two times compare like for like: only cutting the weights out saves time; gates on
    the full model do not. (The masked metrics of :func:`prune` may come from the store or the
    fast path; these times never do.) ``progress(fraction, message)`` as it goes."""
    from prunelens.analysis import timing

    progress(0.0, "cutting the weights out")
    small = physically_prune(session.loaded.model, masks)
    progress(0.1, "evaluating the masked model")
    masked = session.evaluator.reference_outputs(masks)
    progress(0.3, "evaluating the physically pruned copy")
    phys = session.evaluator.reference_outputs(model=small)
    sample = session.evaluator.subset(min(TIMING_SIZE, session.evaluator.n), seed=1)
    t = timing.compare(lambda: sample.reference_outputs(masks), lambda: sample.reference_outputs(model=small),
                       progress=lambda f, m: progress(0.5 + 0.5 * f, f"timing masked vs physical: {m}"))
    low, high = t.spread
    return {"seconds": round(t.b_seconds, 4), "masked_seconds": round(t.a_seconds, 4),
            "speedup": round(t.ratio, 3), "speedup_range": [round(low, 3), round(high, 3)],
            "runs": {"masked": [round(x, 6) for x in t.a_runs], "physical": [round(x, 6) for x in t.b_runs]},
            "timed": f"both computed now, same forward (transformers, batch by batch); {sample.n} "
                     f"examples, median of {len(t.a_runs)} interleaved runs after {t.warmup} warm-up",
            # logits, or a headless encoder's sentence vectors (the embedding objective)
            "max_abs_difference": float(np.abs(phys.logits - masked.logits).max()),
            "max_abs_logit_difference": float(np.abs(phys.logits - masked.logits).max()),
            **_metrics(_result_of(phys, session))}


def _result_of(outputs, session: Session) -> dict:
    from prunelens.analysis.eval_results import EvalResult

    return EvalResult.from_outputs(outputs, session.data.metric).as_dict()


def _metrics(d: dict) -> dict:
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in d.items()}


CURVE_FIELDS = ("accuracy", "loss", "margin", "accuracy_se", "loss_se", "margin_se", "metric")


def evaluate_mask(session: Session, unit: str, mask: np.ndarray, use_store: bool = True) -> tuple[dict, bool]:
    """Base, pruned and paired-delta metrics of one keep-mask, and whether they came from the store.

    Keyed by the mask itself (not by the method or selection that produced it), so the Prune
    slider, curves and every method that lands on the same mask share one stored answer.
    """
    mask = np.asarray(mask)

    def compare() -> dict:
        masks = Masks.for_unit(unit, mask) if not np.all(mask) else None
        precision = session.evaluator.precision_for(masks)
        result = {k: _metrics(v) for k, v in session.evaluator.compare(masks).as_dict().items()}
        return {**result, "precision": precision}

    return session.read_through("mask-eval", "", unit, mask_params(mask), compare, use_store)


def base_result(session: Session) -> dict:
    """The unpruned model's metrics: from the store when a curve's 0% point put them there (the
    all-ones head mask), else evaluated now."""
    ones = np.ones(session.loaded.inventory.unit_shape("head"))
    hit = session.lookup("mask-eval", "", "head", mask_params(ones))
    if hit is not None and isinstance(hit.get("base"), dict):
        return hit["base"]
    return session.evaluator.base.as_dict()


def mask_keys(session: Session, unit: str, mask: np.ndarray) -> dict[str, Key]:
    """The store keys of one keep-mask's evaluation (the mask itself, not its method), by precision."""
    return session.keys("mask-eval", "", unit, mask_params(mask))


def curve_is_stored(session: Session, methods: list[str], sparsities: list[float], unit: str = "head",
                    scope: str = "global", params: dict[str, dict] | None = None,
                    keep_one_per_layer: bool = False) -> bool:
    """Whether :func:`curve` would answer every point from the store (no computation)."""
    for name in methods:
        scores = stored_scores(session, name, unit, (params or {}).get(name))
        if scores is None:
            return False
        for sparsity in sparsities:
            mask = mask_for(scores, sparsity, scope, present=present_units(session, unit),
                            keep_one_per_layer=keep_one_per_layer)
            if not session.is_stored("mask-eval", "", unit, mask_params(mask)):
                return False
    return True


def curve(session: Session, methods: list[str], sparsities: list[float], unit: str = "head",
          scope: str = "global", params: dict[str, dict] | None = None,
          progress: Progress = no_progress, use_store: bool = True,
          keep_one_per_layer: bool = False) -> list[dict]:
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
            mask = mask_for(scored.scores, sparsity, scope, present=present_units(session, unit),
                            keep_one_per_layer=keep_one_per_layer)
            comparison, _ = evaluate_mask(session, unit, mask, use_store)
            pruned = comparison["pruned"]
            rows.append({"method": name, "sparsity": sparsity,
                         **{k: pruned[k] for k in CURVE_FIELDS},
                         "compression": compression(session.loaded.inventory, unit, mask).fraction})
            progress((m_idx * len(sparsities) + s_idx + 1) / total, f"{name} at {sparsity:.0%}")
    return rows


def prune_estimate(session: Session, method_name: str, sparsity: float | None = None,
                   unit: str | None = None, scope: str | None = None, params: dict | None = None,
                   threshold: float | None = None, keep_one_per_layer: bool = False,
                   size: int | None = None) -> dict | None:
    """A quick answer of :func:`prune`: the same mask on a fixed random subset of ``size``
    examples (default: the first estimate's; the anytime stages are
    :attr:`~prunelens.analysis.evaluate.Evaluator.estimate_sizes`), with paired standard errors. None when
    the data has no more examples than that subset (the full answer is then the quick one) or
    when the full answer for this mask is already in the store."""
    size = session.evaluator.estimate_size if size is None else int(size)
    if session.evaluator.n <= size:
        return None
    check_selection(sparsity, threshold)
    method = get_method(method_name)
    result = compute_scores(session, method_name, unit, params)
    mask = mask_for(result.scores, sparsity, scope or method.default_scope, threshold,
                    keep_one_per_layer, present_units(session, result.unit))
    if session.is_stored("mask-eval", "", result.unit, mask_params(mask)):
        return None
    comparison = session.evaluator.estimate(Masks.for_unit(result.unit, mask), size)
    return {"method": method.name, "unit": result.unit,
            **{k: _metrics(v) for k, v in comparison.as_dict().items()},
            "sparsity": sparsity_of(mask),
            "compression": compression(session.loaded.inventory, result.unit, mask).as_dict(),
            "estimate": {"n": comparison.pruned.n, "of": session.evaluator.n}}


def accuracy_by_pattern(session: Session, patterns=None, progress: Progress = no_progress,
                        use_store: bool = True) -> list[dict]:
    """:func:`prunelens.analysis.methods.admm.pattern_rows` (default: its ``DEFAULT_PATTERNS``)
    through the store."""
    from prunelens.analysis.methods import admm

    patterns = [(int(n), int(m)) for n, m in (admm.DEFAULT_PATTERNS if patterns is None else patterns)]
    result, _ = session.read_through("pattern-accuracy", "admm", "", {"patterns": patterns},
                                     lambda: {"rows": admm.pattern_rows(session, patterns, progress)}, use_store)
    return result["rows"]
