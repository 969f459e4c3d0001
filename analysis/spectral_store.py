"""The Spectral page's answers through the result store: σ_max table, activations, normalized eval.

The page shows three things that each cost forward passes or a power iteration on a new model —
the σ_max of every matrix, activation histograms with and without spectral normalization, and
one evaluation of a normalized copy. Here each is keyed by the model and data fingerprints like
every other stored result (kinds ``spectral-sigmas``, ``activations``, ``normalized-eval``), so
``prunelens analyze`` can fill them (:data:`ANALYZED`: the page's default positions) and the page
answers from the store; any other position is computed and stored on first use.

A *part* is one of :data:`PARTS` with its parameters (``cap``: None = exact normalization;
``limit``: examples for the histograms); :func:`compute` computes one, :func:`work` says what it
costs in forward-pass equivalents (for the analyze estimate).
"""

from __future__ import annotations

import numpy as np

from prunelens.analysis.cache import Key
from prunelens.analysis.session import Session
from prunelens.analysis.spectral import (
    ActivationStatistics,
    Histogram,
    LayerActivations,
    activation_statistics,
    check_cap,
    spectral_norms,
    spectrally_normalized,
)

PARTS = ("sigmas", "activations", "normalized-eval")
KINDS = {"sigmas": "spectral-sigmas", "activations": "activations", "normalized-eval": "normalized-eval"}
DEFAULT_CAP = 1.0  # the page's cap c when it opens
DEFAULT_LIMIT = 64  # the page's example count when it opens
LIMITS = (16, 32, 64, 128, 256)  # the page's example choices
# what ``prunelens analyze`` stores: the page at its defaults, every example count at the default
# cap, the exact normalization at the default count, and the normalized model evaluated both ways
ANALYZED = (("sigmas", {}),
            *(("activations", {"cap": DEFAULT_CAP, "limit": n}) for n in LIMITS),
            ("activations", {"cap": None, "limit": DEFAULT_LIMIT}),
            ("normalized-eval", {"cap": DEFAULT_CAP}),
            ("normalized-eval", {"cap": None}))
SIGMA_PASSES = 0.05  # the power iteration on every matrix, in forward passes over the data (measured)


def part_params(part: str, cap: float | None = None, limit: int | None = None) -> dict:
    """The key parameters of one part (checked): what makes two answers the same."""
    if part == "sigmas":
        return {}
    cap = check_cap(cap)
    if part == "activations":
        return {"cap": cap, "limit": int(limit if limit is not None else DEFAULT_LIMIT)}
    if part == "normalized-eval":
        return {"cap": cap}
    raise ValueError(f"unknown spectral part {part!r}: one of {', '.join(PARTS)}")


def key(session: Session, part: str, params: dict) -> Key:
    """The store key of one part (what a sweep task lists)."""
    return session.key(KINDS[part], "spectral", "", part_params(part, **params))


def compute(session: Session, part: str, params: dict, use_store: bool = True):
    """One part's stored form, from the store when it is there (else computed and stored)."""
    params = part_params(part, **params)

    def answer():
        if part == "sigmas":
            return {"rows": spectral_norms(session.loaded).to_dict("records")}
        if part == "activations":
            stats = activation_statistics(session.loaded, session.data, c=params["cap"], limit=params["limit"])
            return activations_as_dict(stats)
        normed = spectrally_normalized(session.loaded.model, params["cap"])
        return session.evaluator.compare(model=normed).as_dict()

    return session.read_through(KINDS[part], "spectral", "", params, answer, use_store)[0]


def sigmas(session: Session) -> list[dict]:
    """σ_max of every dense matrix (:func:`prunelens.analysis.spectral.spectral_norms`) as records."""
    return compute(session, "sigmas", {})["rows"]


def activations(session: Session, cap: float | None, limit: int) -> ActivationStatistics:
    """:func:`prunelens.analysis.spectral.activation_statistics` of the first ``limit`` examples."""
    return activations_from_dict(compute(session, "activations", {"cap": cap, "limit": limit}))


def normalized_eval(session: Session, cap: float | None) -> dict:
    """The spectrally normalized copy against the model as loaded (base / pruned / delta)."""
    return compute(session, "normalized-eval", {"cap": cap})


def is_stored(session: Session, part: str, params: dict) -> bool:
    return session.is_stored(KINDS[part], "spectral", "", part_params(part, **params))


def work(part: str, params: dict, examples: int) -> float:
    """Forward-pass equivalents (one example each) of computing a part."""
    if part == "sigmas":
        return SIGMA_PASSES * examples
    if part == "activations":
        return 2.0 * min(examples, part_params(part, **params)["limit"])  # as loaded + normalized
    return 2.0 * examples  # the normalized copy on the reference path (+ its deep copy)


def label(part: str, params: dict) -> str:
    params = part_params(part, **params)
    if part == "sigmas":
        return "spectral sigma_max"
    cap = "exact" if params["cap"] is None else f"c={params['cap']:g}"
    if part == "activations":
        return f"spectral activations ({cap}, {params['limit']} examples)"
    return f"spectral normalized eval ({cap})"


# -- stored form of ActivationStatistics (counts, edges and summaries; not the samples) -------------

def activations_as_dict(stats: ActivationStatistics) -> dict:
    def side(layers: list[LayerActivations]) -> list[dict]:
        return [{"layer": la.layer, **{q: getattr(la, q).as_dict() for q in stats.QUANTITIES}}
                for la in layers]

    return {"c": stats.c, "tokens": stats.tokens, "examples": stats.examples,
            "plain": side(stats.plain), "normalized": side(stats.normalized)}


def _histogram(d: dict) -> Histogram:
    return Histogram(counts=np.asarray(d["counts"], dtype=np.int64), edges=np.asarray(d["edges"], dtype=float),
                     n=int(d["n"]), mean=float(d["mean"]), std=float(d["std"]), min=float(d["min"]),
                     max=float(d["max"]), samples=np.zeros(0, dtype=np.float32))


def activations_from_dict(d: dict) -> ActivationStatistics:
    def side(rows: list[dict]) -> list[LayerActivations]:
        return [LayerActivations(int(r["layer"]), *(_histogram(r[q]) for q in ActivationStatistics.QUANTITIES))
                for r in rows]

    return ActivationStatistics(c=d["c"], tokens=int(d["tokens"]), examples=int(d["examples"]),
                                plain=side(d["plain"]), normalized=side(d["normalized"]))
