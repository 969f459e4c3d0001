"""What a stored result of each kind must look like before it is used.

The result store serves entries by key; this module says whether an entry's ``result`` is
well-formed for its kind (types, rectangular arrays, finite numbers), so that a damaged or
planted entry with the right digest is recomputed instead of crashing a page or being shown as
fact. Callers that know more (the expected score shape of a model) check that on top
(:func:`array_problem`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

METRICS = ("accuracy", "loss", "margin")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def array_problem(value: Any, shape: tuple[int, ...] | None = None) -> str | None:
    """Why ``value`` is not a rectangular nested list of finite numbers (of ``shape``), or None."""
    dims: list[int] = []
    probe = value
    while isinstance(probe, list):
        dims.append(len(probe))
        probe = probe[0] if probe else None
    if not dims:
        return "not an array"
    if shape is not None and tuple(dims) != tuple(shape):
        return f"shape {tuple(dims)}, expected {tuple(shape)}"

    def check(node: Any, depth: int) -> str | None:
        if depth == len(dims):
            return None if _number(node) else f"a value {str(node)[:20]!r} is not a finite number"
        if not isinstance(node, list) or len(node) != dims[depth]:
            return "ragged array"
        for item in node:
            problem = check(item, depth + 1)
            if problem:
                return problem
        return None

    return check(value, 0)


def _metrics_problem(block: Any, name: str) -> str | None:
    if not isinstance(block, dict):
        return f"'{name}' is not an object"
    for metric in METRICS:
        if not _number(block.get(metric)):
            return f"'{name}.{metric}' is not a finite number"
    return None


def _scores(result: dict) -> str | None:
    return array_problem(result.get("scores"))


def _mask_eval(result: dict) -> str | None:
    for name in ("base", "pruned", "delta"):
        problem = _metrics_problem(result.get(name), name)
        if problem:
            return problem
    return None


def _predictions(result: dict) -> str | None:
    pred = result.get("predictions")
    if not isinstance(pred, list) or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0
                                             for p in pred):
        return "'predictions' is not a list of class ids"
    return None


def _rows(result: dict) -> str | None:
    rows = result.get("rows")
    if not isinstance(rows, list) or not rows:
        return "'rows' is not a non-empty list"
    for i, row in enumerate(rows):
        problem = _metrics_problem(row, f"rows[{i}]")
        if problem:
            return problem
    return None


def _train_run(result: dict) -> str | None:
    if not isinstance(result.get("method"), str):
        return "'method' is not a string"
    for name in ("params", "model", "data"):
        if not isinstance(result.get(name), dict):
            return f"'{name}' is not an object"
    return None


def _sigma_rows(result: dict) -> str | None:
    rows = result.get("rows")
    if not isinstance(rows, list) or not rows:
        return "'rows' is not a non-empty list"
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("matrix"), str) or not _number(row.get("sigma")):
            return f"'rows[{i}]' is not a matrix with a finite sigma"
    return None


ACTIVATION_QUANTITIES = ("gelu", "attention_norm", "ffn_norm")


def _histogram_problem(h: Any, where: str) -> str | None:
    if not isinstance(h, dict):
        return f"'{where}' is not an object"
    counts, edges = h.get("counts"), h.get("edges")
    problem = array_problem(counts) or array_problem(edges)
    if problem:
        return f"'{where}': {problem}"
    if len(edges) != len(counts) + 1:
        return f"'{where}': {len(edges)} edges for {len(counts)} counts"
    for name in ("n", "mean", "std", "min", "max"):
        if not _number(h.get(name)):
            return f"'{where}.{name}' is not a finite number"
    return None


def _activations(result: dict) -> str | None:
    for side in ("plain", "normalized"):
        layers = result.get(side)
        if not isinstance(layers, list) or not layers:
            return f"'{side}' is not a non-empty list"
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict) or not isinstance(layer.get("layer"), int):
                return f"'{side}[{i}]' is not a layer"
            for q in ACTIVATION_QUANTITIES:
                problem = _histogram_problem(layer.get(q), f"{side}[{i}].{q}")
                if problem:
                    return problem
    if len(result["plain"]) != len(result["normalized"]):
        return "'plain' and 'normalized' differ in layers"
    return None


SCHEMAS: dict[str, Callable[[dict], str | None]] = {
    "scores": _scores,
    "mask-eval": _mask_eval,
    "mask-predictions": _predictions,
    "pattern-accuracy": _rows,
    "train-run": _train_run,
    "spectral-sigmas": _sigma_rows,
    "activations": _activations,
    "normalized-eval": _mask_eval,
}


def result_problem(kind: str, result: Any) -> str | None:
    """Why ``result`` is not a well-formed result of ``kind``, or None (unknown kinds: any object)."""
    if not isinstance(result, dict):
        return "the result is not an object"
    check = SCHEMAS.get(kind)
    return check(result) if check else None
