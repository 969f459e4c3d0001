"""Results a page shows, memoized per session: store reads and the cached computations.

Every function takes the :class:`~prunelens.analysis.session.Session` itself; Streamlit hashes it by
:func:`session_id` (``hash_funcs``: the model's and the data's fingerprints, the store, the
objective and the precision the store keys depend on), so two sessions on the same model, data
and store share their entries. Store reads are a memo over
:meth:`~prunelens.analysis.session.Session.lookup`, which knows every key a result may live under:
the pages see exactly what the CLI sees. All numerics happen in
``analysis/``; this module only decides what is remembered and for how long.

- ``st.cache_data`` for JSON-like results (copied on every read), ``st.cache_resource`` for the
  activation arrays (large, never mutated).
- A store miss is not remembered (:class:`_Miss`), so an entry that lands later is read.
"""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from prunelens.analysis.cache import canonical
from prunelens.analysis.session import Session


def session_id(session: Session) -> str:
    """A short string identifying model + data contents, the store, the objective and the
    precision (what a session's store keys depend on: the cache key of a session)."""
    return (f"{session.loaded.fingerprint}-{session.data.fingerprint}-{session.store.user_dir}-"
            f"{session.objective}-{session.precision}")


BY_SESSION = {Session: session_id}


def canonical_params(params: dict | None) -> str:
    return canonical(params or {})


# ----------------------------------------------------------------------------------------------
# store reads


class _Miss(Exception):
    """Raised by cached reads on a miss, so st.cache_data does not remember the miss."""


@st.cache_data(show_spinner=False, max_entries=512, hash_funcs=BY_SESSION)
def _stored(session: Session, kind: str, method: str, unit: str, params_json: str) -> Any:
    hit = session.lookup(kind, method, unit, json.loads(params_json))
    if hit is None:
        raise _Miss
    return hit


def stored(session: Session, kind: str, method: str = "", unit: str = "", params: dict | None = None) -> Any:
    """:meth:`Session.lookup` (user store, then shipped; every key the result may live under) or
    None; hits are cached by st.cache_data."""
    try:
        return _stored(session, kind, method, unit, canonical_params(params))
    except _Miss:
        return None


# ----------------------------------------------------------------------------------------------
# cached computations


@st.cache_data(show_spinner="Evaluating the unpruned model…", max_entries=16, hash_funcs=BY_SESSION)
def base_eval(session: Session) -> dict:
    """Accuracy, loss, margin (and standard errors) of the unpruned model on the loaded data
    (from the store when it holds them)."""
    from prunelens.analysis.operations import base_result

    return base_result(session)


@st.cache_data(show_spinner="Scoring…", max_entries=256, hash_funcs=BY_SESSION)
def _cheap_scores(session: Session, method: str, unit: str, params_json: str) -> list:
    from prunelens.analysis.operations import compute_scores

    return compute_scores(session, method, unit, json.loads(params_json)).scores.tolist()


def cheap_scores(session: Session, method: str, unit: str, params: dict) -> list:
    """Scores of a cheap method (computed once, then from the store / memory)."""
    return _cheap_scores(session, method, unit, canonical_params(params))


@st.cache_data(show_spinner="Pruning and evaluating…", max_entries=256, hash_funcs=BY_SESSION)
def _prune(session: Session, method: str, unit: str, params_json: str, sparsity: float | None,
           threshold: float | None, scope: str, keep_one: bool, physical: bool, _progress=None) -> dict:
    from prunelens.analysis.operations import prune
    from prunelens.analysis.session import no_progress

    return prune(session, method, sparsity=sparsity, unit=unit, scope=scope, params=json.loads(params_json),
                 physical=physical, threshold=threshold, keep_one_per_layer=keep_one,
                 progress=_progress or no_progress,
                 flips=False)  # the page lists flips itself (dashboard/export_view.py), on demand


def _prune_key(session: Session, method: str, unit: str, params: dict, sparsity: float | None,
               threshold: float | None, scope: str, keep_one: bool, physical: bool) -> tuple:
    """What :func:`_prune` is memoized by (the session by its identity)."""
    return (session_id(session), method, unit, canonical_params(params), sparsity, threshold, scope,
            keep_one, physical)


@st.cache_resource(show_spinner=False)
def _memoized_prunes() -> set:
    """The :func:`_prune_key` of every setting :func:`prune_result` has answered."""
    return set()


def prune_result(session: Session, method: str, unit: str, params: dict, sparsity: float | None,
                 threshold: float | None, scope: str, keep_one: bool, physical: bool,
                 progress=None) -> dict:
    """``prunelens.analysis.operations.prune``'s JSON for these settings (memoized);
    ``progress(fraction, message)`` while it computes (not part of the memo's key)."""
    key = _prune_key(session, method, unit, params, sparsity, threshold, scope, keep_one, physical)
    result = _prune(session, *key[1:], _progress=progress)
    _memoized_prunes().add(key)
    return result


def prune_memoized(session: Session, method: str, unit: str, params: dict, sparsity: float | None,
                   threshold: float | None, scope: str, keep_one: bool, physical: bool) -> bool:
    """Whether :func:`prune_result` answered these settings already (its answer is memoized, so
    the page skips the quick estimate)."""
    return _prune_key(session, method, unit, params, sparsity, threshold, scope, keep_one,
                      physical) in _memoized_prunes()


def curve_cached(session: Session, methods: list[str], sparsities: list[float], unit: str, scope: str,
                 keep_one: bool = False) -> bool:
    """Whether every point of these curves (default parameters) is already in the store."""
    from prunelens.analysis.operations import curve_is_stored

    return curve_is_stored(session, methods, [float(s) for s in sparsities], unit, scope,
                           keep_one_per_layer=keep_one)


@st.cache_data(show_spinner="Comparing…", max_entries=64, hash_funcs=BY_SESSION)
def _unit_scores(session: Session, unit: str, index: tuple) -> list[dict]:
    from prunelens.analysis.compare import unit_scores as scores_of_unit

    return scores_of_unit(session, unit, index)


def unit_scores(session: Session, unit: str, index: tuple) -> list[dict]:
    """One unit under every method (cheap ones computed, expensive ones from the store)."""
    return _unit_scores(session, unit, tuple(int(i) for i in index))


@st.cache_data(show_spinner="σ_max of every matrix (from the store, else power iteration)…", max_entries=16,
               hash_funcs=BY_SESSION)
def sigmas(session: Session) -> list[dict]:
    """σ_max of every dense matrix (``prunelens.analysis.spectral_store.sigmas``) as records."""
    from prunelens.analysis import spectral_store

    return spectral_store.sigmas(session)


@st.cache_resource(show_spinner="Activations with and without normalization (from the store, else computed)…",
                   max_entries=8, hash_funcs=BY_SESSION)
def activations(session: Session, cap: float | None, limit: int):
    """``prunelens.analysis.spectral_store.activations`` for this cap (memoized, never mutated)."""
    from prunelens.analysis import spectral_store

    return spectral_store.activations(session, cap, limit)


@st.cache_data(show_spinner="Evaluating the normalized model (from the store, else computed)…", max_entries=16,
               hash_funcs=BY_SESSION)
def normalized_eval(session: Session, cap: float | None) -> dict:
    """The spectrally normalized copy against the model as loaded (same examples)."""
    from prunelens.analysis import spectral_store

    return spectral_store.normalized_eval(session, cap)
