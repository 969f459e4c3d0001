"""Dashboard state: what is loaded, cached resources, store reads, and shareable URLs.

- The sidebar's model/data choice is a :class:`Choice` kept in ``st.session_state`` and mirrored
  in ``st.query_params`` (``model``, ``data``, ``limit``), so a URL restores it.
- ``st.cache_resource`` holds loaded models, data sets and sessions (never mutated: gates are
  hooks removed after use); ``st.cache_data`` wraps result-store reads.
- :func:`bind` gives a widget key its value from the URL the first time it is seen, and
  :func:`share` writes current values back to the URL.
- :func:`guard` turns :class:`~analysis.errors.PrunelensError` into an ``st.error`` message.
"""

from __future__ import annotations

import math
import hashlib
import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from analysis.cache import ResultStore, default_user_dir
from analysis.data import TextData, from_bytes
from analysis.errors import DataError, PrunelensError
from analysis.models import LoadedModel, load_model
from analysis.operations import Session
from dashboard import data_roots, escape

CHOICE_KEY = "prunelens.choice"
UPLOAD_KEY = "prunelens.upload"  # (name, bytes) of an uploaded data file
SELECTED_HEAD = "prunelens.selected_head"  # (layer, head) clicked on a heatmap


@dataclass(frozen=True)
class Choice:
    """The model and data the user picked (``data='upload:<name>'`` for an uploaded file)."""

    model: str = "default"
    data: str = "default"
    limit: int | None = None
    upload_digest: str | None = None
    device: str = "cpu"  # "cuda" only where this server's torch sees a GPU

    def query(self) -> dict[str, str | None]:
        """URL parameters that restore this choice (an upload cannot be restored from a URL)."""
        return {"model": self.model, "data": self.data, "limit": str(self.limit) if self.limit else None,
                "device": None if self.device == "cpu" else self.device}


def choice_from_query() -> Choice:
    q = st.query_params
    limit = q.get("limit")
    try:
        limit_value = int(limit) if limit else None
    except ValueError:
        limit_value = None
    device = q.get("device") or "cpu"
    return Choice(model=q.get("model") or "default", data=q.get("data") or "default",
                  limit=limit_value if limit_value and limit_value > 0 else None,
                  device=device if device in available_devices() else "cpu")


def current_choice() -> Choice:
    choice = st.session_state.get(CHOICE_KEY)
    if choice is None:
        choice = choice_from_query()
        st.session_state[CHOICE_KEY] = choice
    return choice


def set_choice(choice: Choice) -> None:
    st.session_state[CHOICE_KEY] = choice
    share(**choice.query())


# ----------------------------------------------------------------------------------------------
# cached resources


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def cached_model(spec: str) -> LoadedModel:
    return load_model(data_roots.model_spec(spec))  # folders only inside the data roots


@st.cache_resource(show_spinner="Loading the data…", max_entries=8)
def cached_data(spec: str, limit: int | None, upload_digest: str | None, _upload: bytes | None) -> TextData:
    if spec.startswith("upload:"):
        if _upload is None:
            raise DataError("the uploaded file is gone (upload it again)")
        data = from_bytes(_upload, spec.split(":", 1)[1])
        return data.subset(limit)
    return data_roots.load_data(spec, limit)  # files only inside the data roots


@st.cache_resource(show_spinner=False, max_entries=4)  # the sidebar shows "Loading…"
def cached_session(model: str, data: str, limit: int | None, upload_digest: str | None,
                   store_dir: str, _upload: bytes | None, device: str = "cpu") -> Session:
    loaded = cached_model(model)
    text_data = loaded.fit_data(cached_data(data, limit, upload_digest, _upload))
    return Session(loaded, text_data, ResultStore(store_dir), device)


def available_devices() -> list[str]:
    """Where masked evaluation can run: the CPU, and CUDA where this server's torch sees a GPU."""
    from analysis.evaluate import available_devices as devices

    return devices()


def store_dir() -> str:
    return str(default_user_dir())


def upload_bytes(choice: Choice) -> bytes | None:
    held = st.session_state.get(UPLOAD_KEY)
    if held and choice.upload_digest == digest(held[1]):
        return held[1]
    return None


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


FAILED_LOAD = "prunelens.failed_load"  # (choice, store, error, when) of the last failed load
FAILED_LOAD_REMEMBERED_S = 10.0  # the sidebar and the page ask within one run: load once


def open_session(choice: Choice) -> Session:
    """The (cached) session for a choice; raises PrunelensError on a bad model or data. A
    choice that failed moments ago fails again at once instead of being loaded a second time
    (errors are not cached by ``st.cache_resource``; an unreachable hub id costs seconds)."""
    failed = st.session_state.get(FAILED_LOAD)
    if (failed and failed[:2] == (choice, store_dir())
            and time.monotonic() - failed[3] < FAILED_LOAD_REMEMBERED_S):
        raise failed[2]
    try:
        return cached_session(choice.model, choice.data, choice.limit, choice.upload_digest,
                              store_dir(), upload_bytes(choice), choice.device)
    except PrunelensError as exc:
        st.session_state[FAILED_LOAD] = (choice, store_dir(), exc, time.monotonic())
        raise


def current_session() -> Session:
    """The session of the current choice, or an error message and a stopped page."""
    choice = current_choice()
    try:
        return open_session(choice)
    except PrunelensError as exc:
        st.error(f"Nothing loaded: {escape.markdown(exc)}")
        st.info("Pick another model or data set in the sidebar.")
        st.stop()
    raise AssertionError("unreachable")


def session_id(session: Session) -> str:
    """A short string identifying model + data contents (cache keys for st.cache_data)."""
    return f"{session.loaded.fingerprint}-{session.data.fingerprint}-{session.store.user_dir}"


# ----------------------------------------------------------------------------------------------
# store reads


class _Miss(Exception):
    """Raised by cached reads on a miss, so st.cache_data does not remember the miss."""


@st.cache_data(show_spinner=False, max_entries=512)
def _stored(store_path: str, model_fp: str, data_fp: str, kind: str, method: str, unit: str,
            params_json: str) -> Any:
    from analysis.cache import Key

    store = ResultStore(store_path)
    hit = store.get(Key(model_fp, data_fp, kind, method, unit, params_json))
    if hit is None:
        raise _Miss
    return hit


def stored(session: Session, kind: str, method: str = "", unit: str = "", params: dict | None = None) -> Any:
    """A result from the store (user, then shipped) or None; hits are cached by st.cache_data."""
    key = session.key(kind, method, unit, params)
    try:
        return _stored(str(session.store.user_dir), key.model, key.data, key.kind, key.method, key.unit,
                       key.params)
    except _Miss:
        return None


# ----------------------------------------------------------------------------------------------
# URL <-> widgets


def _parse_bool(raw: str) -> bool:
    return str(raw).strip().lower() in ("1", "true", "yes", "on")


KEPT_KEY = "prunelens.kept"  # the last value of every bound widget key, outliving its widget


def bind(key: str, default: Any, query: str | None = None, cast: Callable[[str], Any] | None = None,
         options: list | tuple | None = None, bounds: tuple[float, float] | None = None) -> Any:
    """Give ``st.session_state[key]`` its value for this run, before its widget is drawn: the
    current value; else the value it had when its widget was last drawn (Streamlit drops the
    state of a widget that one run did not draw, e.g. another method's parameters); else the URL
    parameter ``query`` when it parses (and is one of ``options`` if given); else ``default``.
    With ``bounds`` (the widget's own min and max) a number is clamped into them and a NaN or
    infinity becomes ``default``: a link cannot hand a slider a value it refuses with a traceback.
    The value is written back every run, so a redrawn widget shows it instead of its minimum."""
    kept = st.session_state.setdefault(KEPT_KEY, {})
    if key in st.session_state:
        value = st.session_state[key]
    elif key in kept:
        value = kept[key]
    else:
        value = _from_query(query, default, cast, options)
    if options is not None and value not in options:
        value = default if default in options or not options else options[0]
    if bounds is not None:
        value = _clamped(value, default, bounds)
    st.session_state[key] = value
    kept[key] = value
    return value


def _clamped(value: Any, default: Any, bounds: tuple[float, float]) -> Any:
    lo, hi = bounds
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        value = default
    return type(default)(min(max(value, lo), hi))


def _from_query(query: str | None, default: Any, cast: Callable[[str], Any] | None,
                options: list | tuple | None) -> Any:
    raw = st.query_params.get(query) if query else None
    if raw is None:
        return default
    try:
        if cast is not None:
            parsed = cast(raw)
        elif isinstance(default, bool):
            parsed = _parse_bool(raw)
        elif isinstance(default, int):
            parsed = int(raw)
        elif isinstance(default, float):
            parsed = float(raw)
        else:
            parsed = raw
    except (ValueError, TypeError, PrunelensError):
        return default
    return parsed if options is None or parsed in options else default


def share(**values: Any) -> None:
    """Write values into the URL (``None`` removes a parameter) so the link restores them."""
    for name, value in values.items():
        if value is None:
            if name in st.query_params:
                del st.query_params[name]
            continue
        text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
        if st.query_params.get(name) != text:
            st.query_params[name] = text


def clear_shared(prefix: str, keep: str | None = None) -> None:
    """Remove the URL parameters starting with ``prefix`` (except those starting with ``keep``)."""
    for name in list(st.query_params):
        if name.startswith(prefix) and not (keep and name.startswith(keep)):
            del st.query_params[name]


@contextmanager
def cancellable():
    """Stop the evaluations inside as soon as a newer move of a widget asks for a rerun, at the
    next evaluation batch (:mod:`analysis.checkpoints`), instead of finishing first."""
    from analysis.checkpoints import checkpoints

    with checkpoints(_stop_if_outdated):
        yield


def _stop_if_outdated() -> None:
    """Reading the session state is one of Streamlit's yield points: a pending full rerun or a
    stop ends this run right here. A widget move inside a fragment (the Prune slider) is
    different: Streamlit queues it behind the running fragment and never preempts it, so the
    stale evaluation would run to the end and the newest move wait. When such a rerun is
    pending, this run hands over to it (a rerun of this fragment, or of the app when the
    fragment runs as part of a full run), which takes the newest widget values. Whether a rerun
    is pending is read from Streamlit's script requests (an internal attribute; without it, only
    the yield point remains)."""
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx
    from streamlit.runtime.scriptrunner_utils.script_requests import ScriptRequestType

    st.session_state.get(CHOICE_KEY)
    ctx = get_script_run_ctx(suppress_warning=True)
    requests = getattr(ctx, "script_requests", None) if ctx is not None else None
    if requests is not None and getattr(requests, "_state", None) == ScriptRequestType.RERUN:
        st.rerun(scope="fragment" if ctx.fragment_ids_this_run else "app")


def session_liveness() -> Callable[[], bool] | None:
    """A check that this browser session still exists on the server (connected, or disconnected
    for less than Streamlit's reconnect window, 2 minutes), for background jobs to stop when it
    is gone; None outside a running server (AppTest, scripts). Reads Streamlit's session manager
    (an internal attribute; without it, jobs are never stopped this way)."""
    from streamlit.runtime import Runtime
    from streamlit.runtime.scriptrunner_utils.script_run_context import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    if ctx is None or not Runtime.exists():
        return None
    runtime, session = Runtime.instance(), ctx.session_id

    def alive() -> bool:
        manager = getattr(runtime, "_session_mgr", None)
        return manager is None or manager.get_session_info(session) is not None

    return alive


@contextmanager
def guard(stop: bool = True):
    """Show a user error as a message (and stop this run or fragment) instead of a traceback."""
    try:
        yield
    except PrunelensError as exc:
        st.error(escape.markdown(exc))
        if stop:
            st.stop()


def environment_note() -> str:
    return f"store: {store_dir()}" + (" (PRUNELENS_CACHE)" if os.environ.get("PRUNELENS_CACHE") else "")


def page_path(name: str) -> Path:
    return Path(__file__).parent / "pages" / name


# ----------------------------------------------------------------------------------------------
# cached computations (all numerics happen in analysis/)


@st.cache_data(show_spinner="Evaluating the unpruned model…", max_entries=16)
def _base_eval(_session: Session, sid: str) -> dict:
    return _session.evaluator.base.as_dict()


def base_eval(session: Session) -> dict:
    """Accuracy, loss, margin (and standard errors) of the unpruned model on the loaded data."""
    return _base_eval(session, session_id(session))


@st.cache_data(show_spinner="Scoring…", max_entries=256)
def _cheap_scores(_session: Session, sid: str, method: str, unit: str, params_json: str) -> list:
    from analysis.operations import compute_scores

    return compute_scores(_session, method, unit, json.loads(params_json)).scores.tolist()


def cheap_scores(session: Session, method: str, unit: str, params: dict) -> list:
    """Scores of a cheap method (computed once, then from the store / memory)."""
    return _cheap_scores(session, session_id(session), method, unit, canonical_params(params))


def canonical_params(params: dict | None) -> str:
    from analysis.cache import canonical

    return canonical(params or {})


@st.cache_data(show_spinner="Pruning and evaluating…", max_entries=256)
def _prune(_session: Session, sid: str, method: str, unit: str, params_json: str, sparsity: float | None,
           threshold: float | None, scope: str, keep_one: bool, physical: bool) -> dict:
    from analysis.operations import prune

    return prune(_session, method, sparsity=sparsity, unit=unit, scope=scope, params=json.loads(params_json),
                 physical=physical, threshold=threshold, keep_one_per_layer=keep_one,
                 flips=False)  # the page lists flips itself (dashboard/export_view.py), on demand


def prune_result(session: Session, method: str, unit: str, params: dict, sparsity: float | None,
                 threshold: float | None, scope: str, keep_one: bool, physical: bool) -> dict:
    """``analysis.operations.prune``'s JSON for these settings (memoized)."""
    return _prune(session, session_id(session), method, unit, canonical_params(params), sparsity, threshold,
                  scope, keep_one, physical)


def curve_cached(session: Session, methods: list[str], sparsities: list[float], unit: str, scope: str) -> bool:
    """Whether every point of these curves (default parameters) is already in the store."""
    from analysis.operations import curve_is_stored

    return curve_is_stored(session, methods, [float(s) for s in sparsities], unit, scope)


@st.cache_data(show_spinner="Comparing…", max_entries=64)
def _unit_scores(_session: Session, sid: str, unit: str, index: tuple) -> list[dict]:
    from analysis.compare import unit_scores

    return unit_scores(_session, unit, index)


def unit_scores(session: Session, unit: str, index: tuple) -> list[dict]:
    """One unit under every method (cheap ones computed, expensive ones from the store)."""
    return _unit_scores(session, session_id(session), unit, tuple(int(i) for i in index))


@st.cache_data(show_spinner="σ_max of every matrix (from the store, else power iteration)…", max_entries=16)
def _sigmas(_session: Session, sid: str) -> list[dict]:
    from analysis import spectral_store

    return spectral_store.sigmas(_session)


def sigmas(session: Session) -> list[dict]:
    """σ_max of every dense matrix (``analysis.spectral_store.sigmas``) as records."""
    return _sigmas(session, session_id(session))


@st.cache_resource(show_spinner="Activations with and without normalization (from the store, else computed)…",
                   max_entries=8)
def _activations(_session: Session, sid: str, cap: float | None, limit: int):
    from analysis import spectral_store

    return spectral_store.activations(_session, cap, limit)


def activations(session: Session, cap: float | None, limit: int):
    """``analysis.spectral_store.activations`` for this cap (memoized, never mutated)."""
    return _activations(session, session_id(session), cap, limit)


@st.cache_data(show_spinner="Evaluating the normalized model (from the store, else computed)…", max_entries=16)
def _normalized_eval(_session: Session, sid: str, cap: float | None) -> dict:
    from analysis import spectral_store

    return spectral_store.normalized_eval(_session, cap)


def normalized_eval(session: Session, cap: float | None) -> dict:
    """The spectrally normalized copy against the model as loaded (same examples)."""
    return _normalized_eval(session, session_id(session), cap)
