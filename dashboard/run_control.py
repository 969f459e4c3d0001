"""How a page run ends: stale runs hand over to newer moves, user errors become messages,
background jobs learn that their browser session is gone."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import streamlit as st

from prunelens.analysis.errors import PrunelensError
from prunelens.dashboard import escape

_YIELD_KEY = "prunelens.choice"  # any session-state read is one of Streamlit's yield points


@contextmanager
def cancellable():
    """Stop the evaluations inside as soon as a newer move of a widget asks for a rerun, at the
    next evaluation batch (:mod:`prunelens.analysis.checkpoints`), instead of finishing first."""
    from prunelens.analysis.checkpoints import checkpoints

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

    st.session_state.get(_YIELD_KEY)
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
