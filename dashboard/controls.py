"""Widgets: controls generated from a method's declared parameters, method pickers, downloads.

:func:`widget_spec` maps a :class:`~prunelens.analysis.methods.base.Param` to a Streamlit widget and its
arguments (pure, testable); :func:`param_controls` draws them, restores them from the URL and
returns values checked by ``Param.parse``. Page code never names a method: pickers list
:func:`prunelens.analysis.methods.all_methods`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from prunelens.analysis.analyze import COMPUTE_WITHOUT_CLICK_S, format_seconds
from prunelens.analysis.errors import ParamError
from prunelens.analysis.layout import UNITS
from prunelens.analysis.methods import all_methods
from prunelens.analysis.methods.base import EXPENSIVE_WORK, Method, Param
from prunelens.dashboard import demo, escape, figures, results, run_control, url_state

SLIDER_MAX_STEPS = 1000


@dataclass
class WidgetSpec:
    """Which widget shows a parameter, and its keyword arguments (besides key and label)."""

    kind: str  # slider | number_input | checkbox | selectbox
    kwargs: dict[str, Any] = field(default_factory=dict)


def widget_spec(param: Param) -> WidgetSpec:
    """int/float with a small bounded range -> slider; unbounded, huge or log -> number input;
    bool -> checkbox; choice -> selectbox. A float slider is used only when its default lies on
    the slider's grid and its format shows the default; otherwise (and for ``log`` parameters)
    a number input whose step is about a tenth of the default, so the default is what is shown
    and one click changes it by a little."""
    helptext = param.help
    if param.kind == "bool":
        return WidgetSpec("checkbox", {"help": helptext})
    if param.kind == "choice":
        return WidgetSpec("selectbox", {"options": list(param.choices), "help": helptext,
                                        "format_func": lambda c: "none" if c is None else str(c)})
    bounded = param.low is not None and param.high is not None
    if param.kind == "int":
        kwargs: dict[str, Any] = {"step": 1, "help": helptext}
        if param.low is not None:
            kwargs["min_value"] = int(param.low)
        if param.high is not None:
            kwargs["max_value"] = int(param.high)
        if bounded and not param.log and param.high - param.low <= SLIDER_MAX_STEPS:
            return WidgetSpec("slider", kwargs)
        return WidgetSpec("number_input", kwargs)
    kwargs = {"help": helptext}
    if param.low is not None:
        kwargs["min_value"] = float(param.low)
    if param.high is not None:
        kwargs["max_value"] = float(param.high)
    if bounded and not param.log:
        step = float(param.step or _nice_step((param.high - param.low) / 100))
        fmt = f"%.{_decimals(step)}f"
        grid = (float(param.default) - param.low) / step
        if (abs(grid - round(grid)) < 1e-6 and (param.high - param.low) / step <= SLIDER_MAX_STEPS
                and float(fmt % param.default) == float(param.default)):
            return WidgetSpec("slider", {**kwargs, "step": step, "format": fmt})
    kwargs["format"] = "%g"
    kwargs["step"] = float(param.step or _nice_step_below(abs(float(param.default)) / 10 or 0.01))
    return WidgetSpec("number_input", kwargs)


def _decimals(step: float) -> int:
    """Decimals that show every multiple of ``step`` (0.05 -> 2, 0.1 -> 1, 10 -> 0)."""
    from math import floor, log10

    for decimals in range(0, 10):
        if abs(round(step, decimals) - step) < step * 1e-9:
            return decimals
    return max(0, -floor(log10(step)) + 1)


def _nice_step_below(raw: float) -> float:
    """The largest of 1, 2, 5 x 10^k at most ``raw`` (a number input's step: at most 10%)."""
    from math import floor, log10

    exp = floor(log10(raw))
    for mult in (5, 2, 1):
        if mult * 10**exp <= raw * (1 + 1e-12):
            return float(f"{mult}e{exp}")
    return float(f"5e{exp - 1}")


def _nice_step(raw: float) -> float:
    """The smallest of 1, 2, 5 x 10^k at least ``raw``."""
    if raw <= 0:
        return 0.01
    from math import floor, log10

    exp = floor(log10(raw))
    for mult in (1, 2, 5, 10):
        if mult * 10**exp >= raw * (1 - 1e-12):
            return float(f"{mult}e{exp}")
    return float(f"1e{exp + 1}")


def _coerce(param: Param, value: Any) -> Any:
    if param.kind == "float" and value is not None and not isinstance(value, bool):
        return float(value)
    return value


def _shown(raw: Any) -> str:
    """A URL value for a message: at most 40 characters, rendered as exactly its text."""
    text = str(raw)
    return escape.markdown(text[:40] + "…" if len(text) > 40 else text)


def param_controls(method: Method, key_prefix: str, params: tuple[Param, ...] | None = None,
                   container=None, query_prefix: str = "p.") -> dict[str, Any]:
    """Draw one widget per declared parameter; return the values (validated by ``Param.parse``;
    the method's own parameters also by ``Method.validate``, which refuses a setting over the
    work budgets with a message and stops the page). A URL value outside a parameter's range is
    moved to the nearest end of it, an invalid one replaced by the default, each with a warning."""
    container = container or st
    values: dict[str, Any] = {}
    declared = method.params if params is None else params
    own = f"{query_prefix}{method.name}."  # URL keys are per method: p.<method>.<param>
    notes: list[str] = []
    for param in declared:
        key = f"{key_prefix}.{method.name}.{param.name}"
        spec = widget_spec(param)

        def cast(raw: str, p: Param = param) -> Any:
            where = f"{own}{p.name}={_shown(raw)}"
            try:
                value, moved = p.parse_clamped(raw)
            except ParamError:
                notes.append(f"The link's {where} is not valid: using the default, {p.default}.")
                raise
            if moved:
                notes.append(f"The link's {where} is outside [{p.low:g}, {p.high:g}]: using {value}.")
            return _coerce(p, value)

        url_state.bind(key, _coerce(param, param.default), query=f"{own}{param.name}", cast=cast,
                       options=list(param.choices) if param.kind == "choice" else None)
        widget = getattr(container, spec.kind)
        widget(param.name.replace("_", " "), key=key, **spec.kwargs)
        with run_control.guard():
            values[param.name] = param.parse(st.session_state[key])
    for note in notes:
        container.warning(note, icon=":material/warning:")
    url_state.clear_shared(query_prefix, keep=own)  # another method's settings never reach this one
    url_state.share(**{f"{own}{name}": value for name, value in values.items()})
    if params is None:
        with run_control.guard():  # over a work budget: refused here, before anything is computed
            method.validate(values)
    return values


def methods_for(unit: str | None = None) -> dict[str, Method]:
    return {n: m for n, m in all_methods().items()
            if (unit is None and set(m.units) & set(UNITS)) or unit in m.units}


def method_label(name: str) -> str:
    method = all_methods().get(name)
    if method is None:
        return name
    mark = (" (diagnostic, not a criterion)" if method.diagnostic else "") + (" (expensive)" if method.expensive else "")
    # the name first: where a long title meets a narrow box (1024 px), the end is cut, not the name
    return f"[{name}] {method.title or name}{mark}" if method.title and method.title != name else f"[{name}]{mark}"


def pick_method(key: str, unit: str | None = None, container=None, default: str | None = None,
                label: str = "Method") -> Method:
    container = container or st
    options = list(methods_for(unit))
    if not options:
        st.error("No method is registered for this unit.")
        st.stop()
    first = default if default in options else options[0]
    name = url_state.bound(container.selectbox, label, key, first, "method", options=options,
                           format_func=method_label)
    return all_methods()[name]


def pick_unit(key: str, units: tuple[str, ...] | list[str], container=None) -> str:
    container = container or st
    units = [u for u in units if u in UNITS]
    if not units:
        st.error("This method scores no structured unit (head, attention, ffn, neuron).")
        st.stop()
    return url_state.bound(container.selectbox, "Unit", key, "head" if "head" in units else units[0], "unit",
                           options=units, help="head = one attention head; attention/ffn = a whole block; "
                                               "neuron = one FFN intermediate unit")


def explain(text: str) -> None:
    """The one-paragraph plain explanation at the top of a page."""
    st.markdown(f"<div style='opacity:0.85'>{text}</div>", unsafe_allow_html=True)


MARGIN_HELP = ("margin = the score of the correct answer minus the best wrong one, averaged over "
               "the sentences: above 0 the model is right, and the larger it is, the surer it is")
# what each reported slot means under each objective (the metric cards' help)
SLOT_HELP = {
    "labels": {"accuracy": "share of sentences classified correctly",
               "loss": "cross-entropy loss, lower is better", "margin": MARGIN_HELP},
    "agreement": {"accuracy": "share of sentences where the pruned model picks the unpruned model's class",
                  "loss": "KL(unpruned ‖ pruned) of the class probabilities, lower is better",
                  "margin": "the unpruned model's class's score minus the best other, averaged: above 0 "
                            "the pruned model still agrees"},
    "embedding": {"accuracy": "mean cosine between each sentence's pruned and unpruned vector",
                  "loss": "1 − cosine, lower is better",
                  "margin": "cosine to its own unpruned vector minus the closest other sentence's, "
                            "averaged: above 0 each sentence is still found by its own vector"},
}


def names(session) -> dict[str, str]:
    """What the session's objective calls the three reported slots (accuracy, loss, margin)."""
    from prunelens.analysis.objectives import SLOT_LABELS

    return SLOT_LABELS[session.objective]


def slot_help(session, slot: str) -> str:
    return SLOT_HELP[session.objective][slot]


def explain_objective(session) -> None:
    """One sentence on what the objective's score means and when it is a good proxy, and why
    this objective was chosen (when the user did not pick it)."""
    from prunelens.analysis.objectives import EXPLAINED

    if session.objective == "labels":
        return
    st.info(f"**Objective: {session.objective}.** {EXPLAINED[session.objective]}"
            + (f" ({session.objective_note})" if session.objective_note else ""), icon=":material/target:")


def method_caption(method: Method, container=None) -> None:
    """The method's one plain-language sentence under its picker."""
    if method.plain:
        (container or st).caption(f"**{method.title or method.name}:** {method.plain}")


def developer() -> bool:
    """Whether developer details (fingerprints, JSON, store notes) are shown: not in demo mode."""
    return not demo.active()


def download_table(frame: pd.DataFrame | list[dict], name: str, key: str, row=None) -> None:
    """CSV and JSON download buttons for a table, side by side in ``row`` (default: a new
    horizontal row)."""
    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    row = row if row is not None else st.container(horizontal=True, gap="small")
    row.download_button("CSV", df.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
                        key=f"{key}.csv", on_click="ignore", icon=":material/download:")
    if developer():  # demo mode: the CSV only
        row.download_button("JSON", df.to_json(orient="records", indent=1), file_name=f"{name}.json",
                            mime="application/json", key=f"{key}.json", on_click="ignore",
                            icon=":material/download:")


def download_json(payload: Any, name: str, key: str, label: str = "JSON", row=None) -> None:
    """A JSON download button (in ``row`` when given); none in demo mode."""
    if not developer():  # demo mode hides raw JSON
        return
    (row if row is not None else st).download_button(
        label, json.dumps(payload, indent=1, default=str), file_name=f"{name}.json",
        mime="application/json", key=key, on_click="ignore", icon=":material/download:")


def show_figure(fig: go.Figure, name: str, key: str, **chart_kwargs: Any):
    """Draw a figure with HTML (plotly.js inlined, so it opens offline), PNG and SVG downloads.

    Every file is made only when its button is pressed (the data is a callable), so a page run
    renders no image it does not need; PNG/SVG need kaleido and Chromium, else a caption says so.
    """
    chart_kwargs.setdefault("config", figures.CHART_CONFIG)
    event = st.plotly_chart(fig, key=key, **chart_kwargs)
    row = st.container(horizontal=True, gap="small")
    row.download_button("HTML", lambda: fig.to_html(include_plotlyjs=True, full_html=True),
                        file_name=f"{name}.html", mime="text/html", key=f"{key}.html",
                        on_click="ignore", icon=":material/download:",
                        help="the interactive figure as one HTML file (opens offline)")
    missing = figures.export_missing()
    if missing:
        st.caption(f"PNG/SVG downloads are off: {missing}.")
        return event
    row.download_button("PNG", lambda: figures.figure_image(fig, "png"), file_name=f"{name}.png",
                        mime="image/png", key=f"{key}.png", on_click="ignore",
                        icon=":material/download:", help="the figure as a PNG image (2x)")
    row.download_button("SVG", lambda: figures.figure_image(fig, "svg"), file_name=f"{name}.svg",
                        mime="image/svg+xml", key=f"{key}.svg", on_click="ignore",
                        icon=":material/download:", help="the figure as an SVG vector image")
    return event


def share_link_note() -> None:
    st.caption("The address bar holds this view (model, data, method, parameters, sliders): "
               "copy it to share or bookmark.")


def progress_sink(text: str = "Working…"):
    """An ``st.progress`` bar and a ``(fraction, message)`` callback that moves it."""
    bar = st.progress(0.0, text=text)

    def progress(fraction: float, message: str = "") -> None:
        bar.progress(max(0.0, min(1.0, float(fraction))), text=message or text)

    return bar, progress


def score_work(session, method: Method, unit: str, params: dict) -> float:
    """Forward-pass equivalents of scoring ``unit`` with ``params`` on the loaded model and data."""
    return method.work(params, session.loaded.inventory, len(session.data), unit)


def needs_click(session, method: Method, unit: str, params: dict) -> bool:
    """Whether this setting is expensive here: more work than ``EXPENSIVE_WORK`` and expected to
    take longer than ``COMPUTE_WITHOUT_CLICK_S`` on this machine (the analysis estimate's rule,
    from the measured forward pass). Such a setting is read from the store or computed on an
    explicit click, never from a link alone."""
    if not method.is_expensive(params, session.loaded.inventory, len(session.data), unit):
        return False
    return expected_seconds(session, method, unit, params) > COMPUTE_WITHOUT_CLICK_S


def expected_seconds(session, method: Method, unit: str, params: dict) -> float:
    """Seconds this setting is expected to take here (``prunelens analyze``'s estimate)."""
    from prunelens.analysis.analyze import score_seconds

    with st.spinner("timing a forward pass on this machine…"), run_control.guard():
        return score_seconds(session, method.name, unit, params)


def obtain_scores(session, method: Method, unit: str, params: dict, key: str) -> list | None:
    """Scores of ``method``: cheap settings computed at once; expensive ones (derived from the
    work they imply, :func:`needs_click`) read from the store, else computed on a button press
    with a progress bar. None while nothing is available."""
    from prunelens.analysis.operations import compute_scores

    reason = method.is_compatible(session.loaded, session.data, session.objective)
    if reason:  # say why, instead of computing something meaningless or failing mid-way
        st.warning(f"**{method.title}** is not available for this model and data: {reason}.")
        return None
    with run_control.guard():
        work = score_work(session, method, unit, params)
    if work <= EXPENSIVE_WORK:
        with run_control.guard():
            return results.cheap_scores(session, method.name, unit, params)
    hit = results.stored(session, "scores", method.name, unit, params)
    if hit is not None:
        if developer():
            st.caption(f"{method.title}: read from the result store.")
        return hit["scores"]
    seconds = expected_seconds(session, method, unit, params) if work != float("inf") else float("inf")
    clicked = False
    if seconds > COMPUTE_WITHOUT_CLICK_S:
        cost = ("an unknown amount of work" if seconds == float("inf") else
                f"about {format_seconds(seconds)} on this machine ({work:,.0f} forward passes of one example)")
        st.info(f"**{method.title}** with these settings is not in the store yet. Computing it takes "
                f"{cost} on the loaded {len(session.data):,} examples (more than the "
                f"{format_seconds(COMPUTE_WITHOUT_CLICK_S)} a page computes without asking), so it "
                "starts only when you click.")
        clicked = st.button(f"Compute {method.name} scores for {unit}s", key=f"{key}.compute", type="primary")
    if seconds <= COMPUTE_WITHOUT_CLICK_S or clicked:
        bar, progress = progress_sink(f"Computing {method.name}…")
        with run_control.guard():
            result = compute_scores(session, method.name, unit, params, progress=progress)
        bar.empty()
        st.session_state[f"{key}.fresh"] = True
        return result.scores.tolist()
    return None
