"""Widget values that a URL restores: bind a widget key, draw it, share its value.

- :func:`bound` is the one call a page makes for a shareable widget: :func:`bind` (the value from
  the session, the widget's last value, the URL, else the default), the widget itself, and
  :func:`share` (the value back into ``st.query_params``).
- :func:`bind` alone is for widgets whose value is shared under a computed name or not at all.
- ``SELECTED_HEAD`` is the (layer, head) last clicked on a heatmap, shared between pages.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import streamlit as st

from prunelens.analysis.errors import PrunelensError

SELECTED_HEAD = "prunelens.selected_head"  # (layer, head) clicked on a heatmap


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


def dropped_query() -> str | None:
    """Why Streamlit ignored this page's whole query string (over its limit on parameters or
    characters, so a link's ``model=`` and ``data=`` were dropped too), or None when it did not."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx
    from streamlit.runtime.state import query_params

    ctx = get_script_run_ctx()
    raw = getattr(ctx, "query_string", "") or ""
    if not raw or query_params.sanitize_query_string(raw):
        return None
    fields = raw.count("&") + 1
    limit_fields = getattr(query_params, "CLIENT_STATE_QUERY_STRING_MAX_FIELDS", 1000)
    if fields > limit_fields:
        return f"it has {fields:,} parameters, over the {limit_fields:,} a link may have"
    return f"it is {len(raw):,} characters long, over the limit a link may have"


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


_ALWAYS = object()


def bound(widget: Callable[..., Any], label: str, key: str, default: Any, query: str | None = None, *,
          options: list | tuple | None = None, cast: Callable[[str], Any] | None = None,
          bounds: tuple[float, float] | None = None, omit: Any = _ALWAYS, **widget_kwargs: Any) -> Any:
    """Draw ``widget`` (``st.slider``, ``column.radio``, ...) under ``key`` with its value bound
    (:func:`bind`) and shared in the URL as ``query``; return the value.

    ``options`` are the widget's choices and, for a single-choice widget, the only values a link
    may set (a list ``default`` means a multi-choice widget, whose URL value ``cast`` checks).
    ``omit``: a value left out of the URL (the parameter is removed), e.g. an empty text.
    ``bounds`` clamp a link's number into the widget's range (see :func:`bind`)."""
    multi = isinstance(default, list)
    bind(key, default, query=query, cast=cast, options=None if multi else options, bounds=bounds)
    if options is not None:
        widget_kwargs["options"] = options
    value = widget(label, key=key, **widget_kwargs)
    if query:
        share(**{query: None if omit is not _ALWAYS and value == omit else value})
    return value
