"""What the dashboard has loaded: the sidebar's model/data :class:`Choice` and its cached session.

- The choice lives in ``st.session_state`` and is mirrored in ``st.query_params`` (``model``,
  ``data``, ``limit``, ``device``, ``objective``), so a URL restores it. The objective is the
  model's and data's default unless the user picks one (:mod:`prunelens.analysis.objectives`).
- ``st.cache_resource`` holds loaded models, data sets and sessions (never mutated: gates are
  hooks removed after use); a load that failed a moment ago fails again at once instead of
  loading twice (the sidebar and the page ask within one run).
- :func:`current_session` is what a page calls first: the session, or an error and a stopped page.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass

import streamlit as st

from prunelens.analysis import objectives
from prunelens.analysis.cache import ResultStore, default_user_dir
from prunelens.analysis.data import TextData, from_bytes
from prunelens.analysis.errors import DataError, PrunelensError
from prunelens.analysis.models import LoadedModel, load_model
from prunelens.analysis.session import Session
from prunelens.dashboard import data_roots, escape
from prunelens.dashboard.url_state import share

CHOICE_KEY = "prunelens.choice"
UPLOAD_KEY = "prunelens.upload"  # (name, bytes) of an uploaded data file


@dataclass(frozen=True)
class Choice:
    """The model and data the user picked (``data='upload:<name>'`` for an uploaded file)."""

    model: str = "default"
    data: str = "default"
    limit: int | None = None
    upload_digest: str | None = None
    device: str = "cpu"  # "cuda" only where this server's torch sees a GPU
    objective: str | None = None  # None: the model's and data's default

    def query(self) -> dict[str, str | None]:
        """URL parameters that restore this choice (an upload cannot be restored from a URL)."""
        return {"model": self.model, "data": self.data, "limit": str(self.limit) if self.limit else None,
                "device": None if self.device == "cpu" else self.device, "objective": self.objective}


def choice_from_query() -> Choice:
    q = st.query_params
    limit = q.get("limit")
    try:
        limit_value = int(limit) if limit else None
    except ValueError:
        limit_value = None
    device = q.get("device") or "cpu"
    objective = q.get("objective")
    return Choice(model=q.get("model") or "default", data=q.get("data") or "default",
                  limit=limit_value if limit_value and limit_value > 0 else None,
                  device=device if device in available_devices() else "cpu",
                  objective=objective if objective in objectives.OBJECTIVES else None)


def current_choice() -> Choice:
    choice = st.session_state.get(CHOICE_KEY)
    if choice is None:
        choice = choice_from_query()
        st.session_state[CHOICE_KEY] = choice
    return choice


def set_choice(choice: Choice) -> None:
    st.session_state[CHOICE_KEY] = choice
    share(**choice.query())


@st.cache_resource(show_spinner="Loading the model…", max_entries=4)
def cached_model(spec: str) -> LoadedModel:
    return load_model(data_roots.model_spec(spec))  # folders only inside the data roots


@st.cache_resource(show_spinner="Loading the data…", max_entries=8)
def cached_data(spec: str, limit: int | None, upload_digest: str | None, _upload: bytes | None) -> TextData:
    if spec.startswith("upload:"):
        if _upload is None:
            raise DataError("the uploaded file is gone (upload it again)")
        return from_bytes(_upload, spec.split(":", 1)[1], limit)  # size checked before parsing
    return data_roots.load_data(spec, limit)  # files only inside the data roots


@st.cache_resource(show_spinner=False, max_entries=4)  # the sidebar shows "Loading…"
def cached_session(model: str, data: str, limit: int | None, upload_digest: str | None,
                   store_dir: str, _upload: bytes | None, device: str = "cpu",
                   objective: str | None = None) -> Session:
    raw = cached_data(data, limit, upload_digest, _upload)
    objectives.check_data_objective(objective, raw.labelled, f"data '{raw.name}'")  # before the model
    loaded = cached_model(model)
    chosen = objectives.resolve(objective, loaded.headless, raw.labelled, loaded.name, f"data '{raw.name}'")
    note = objectives.default_note(chosen, loaded.headless, raw.labelled) if objective is None else None
    return Session(loaded, loaded.fit_data(raw), ResultStore(store_dir), device, objective=chosen,
                   objective_note=note)


def available_devices() -> list[str]:
    """Where masked evaluation can run: the CPU, and CUDA where this server's torch sees a GPU."""
    from prunelens.analysis.evaluate import available_devices as devices

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
                              store_dir(), upload_bytes(choice), choice.device, choice.objective)
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


def environment_note() -> str:
    return f"store: {store_dir()}" + (" (PRUNELENS_CACHE)" if os.environ.get("PRUNELENS_CACHE") else "")
