"""The generic parts of the method views: the registry, the pages' entry points, and the
generic panels any method gets (its declared parameters; any trainer's run, read as one
:class:`~prunelens.analysis.run_result.RunResult`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st

from prunelens.analysis.layout import BLOCK_UNITS
from prunelens.analysis.methods import all_methods
from prunelens.analysis.methods.base import Method
from prunelens.analysis.session import Session
from prunelens.analysis.training import finished_runs
from prunelens.dashboard import controls, escape, figures, run_control


AboutFn = Callable[[Session, Method, str, dict, Any, str], None]
RunFn = Callable[[Session, dict, str], None]


@dataclass(frozen=True)
class MethodView:
    about: AboutFn | None = None
    run: RunFn | None = None
    headline: Callable[[dict], str] | None = None  # one line for run listings


VIEWS: dict[str, MethodView] = {}


def register(name: str, about: AboutFn | None = None, run: RunFn | None = None,
             headline: Callable[[dict], str] | None = None) -> MethodView:
    VIEWS[name] = MethodView(about, run, headline)
    return VIEWS[name]


def view_for(name: str) -> MethodView:
    return VIEWS.get(name, MethodView())


# ----------------------------------------------------------------------------------------------
# entry points used by the pages


def render_about(session: Session, method: Method, unit: str, params: dict, scores: Any = None,
                 key: str = "about") -> None:
    """Summary, paper, declared parameters, then the method's own panel."""
    st.markdown(f"**{method.title or method.name}** — {method.summary}")
    if method.paper:
        st.caption(f"Paper: {method.paper}")
    if method.deviations:
        st.markdown("##### What this method really computes here (differences from the paper and its code)")
        st.dataframe(pd.DataFrame([d.as_dict() for d in method.deviations]), hide_index=True)
    view = view_for(method.name)
    with run_control.guard(stop=False):
        (view.about or generic_about)(session, method, unit, params, scores, key)


def render_run(session: Session, run: dict, key: str = "run") -> None:
    """One finished training run: the method's structured view, then its JSON download."""
    name = str(run.get("method", ""))
    st.caption(escape.markdown(run_caption(run)))  # names data of whichever session ran it
    with run_control.guard(stop=False):
        (view_for(name).run or generic_run)(session, run, key)
    controls.download_json(run, f"run_{name}", f"{key}.json", label="Run (JSON)")


def run_time_estimate(session: Session, method_name: str, params: dict) -> dict | None:
    """``{"seconds", "train_examples", "eval_examples"}`` for a run with ``params``, or None
    (the trainer's own cost model, :meth:`prunelens.analysis.methods.base.Trainer.estimate`)."""
    from prunelens.analysis.training import get_trainer

    return get_trainer(method_name).estimate(session.loaded, params, len(session.data))


def headline(run: dict) -> str:
    """A one-line result of a finished run (its accuracy against its reference), or ''."""
    fn = view_for(str(run.get("method", ""))).headline or _generic_headline
    try:
        return fn(run)
    except (KeyError, TypeError, ValueError):
        return ""


def accuracy_text(d: dict | None) -> str:
    return f"{d['accuracy']:.3f}" if d and d.get("accuracy") is not None else "?"


def _generic_headline(run: dict) -> str:
    """Each variant's accuracy (the run read as one :class:`~prunelens.analysis.run_result.RunResult`,
    whatever shape stored it); a run of one variant: its accuracy."""
    from prunelens.analysis.run_result import normalise

    variants = normalise(run).variants
    if len(variants) == 1:
        return f"accuracy {accuracy_text(next(iter(variants.values())))}"
    return ", ".join(f"{name.replace('_', ' ')} {accuracy_text(m)}" for name, m in variants.items())


def runs_of(session: Session, method_name: str) -> list[dict]:
    """Finished runs of one method for the loaded model (newest first when dated)."""
    runs = [r for r in finished_runs(session.store, session.loaded.fingerprint)
            if r.get("method") == method_name]
    same_data = [r for r in runs if r.get("data", {}).get("fingerprint") == session.data.fingerprint]
    return same_data or runs


def run_caption(run: dict) -> str:
    params = ", ".join(f"{k}={v}" for k, v in (run.get("params") or {}).items())
    data = run.get("data", {})
    return (f"{run.get('method')} run · {run.get('seconds', '?')} s · evaluated on "
            f"{data.get('name', '?')} ({data.get('n', '?')} examples) · {params}")


def latest_runs(session: Session, method: Method, key: str) -> None:
    """The method's finished runs (pick one) drawn with its run view."""
    runs = runs_of(session, method.name)
    st.markdown("##### Finished training runs")
    if not runs:
        st.caption(f"No finished {method.name} training run for this model yet "
                   "(start one on the Training runs page).")
        return
    pick = 0
    if len(runs) > 1:
        pick = st.selectbox("Run", list(range(len(runs))), key=f"{key}.runpick",
                            format_func=lambda i: run_caption(runs[i]))
    render_run(session, runs[pick], key=f"{key}.run")


def metrics_of(d: dict, keys=("accuracy", "accuracy_se", "loss", "loss_se", "margin", "margin_se", "n")) -> dict:
    return {k: d.get(k) for k in keys if k in d}


# ----------------------------------------------------------------------------------------------
# generic views


def generic_about(session: Session, method: Method, unit: str, params: dict, scores: Any,
                  key: str) -> None:
    rows = [{"parameter": p.name, "value": params.get(p.name, p.default), "default": p.default,
             "help": p.help} for p in method.params]
    if rows:
        st.dataframe(pd.DataFrame(rows).astype({"value": str, "default": str}), hide_index=True)
    st.caption(f"Units: {', '.join(method.units)} · default scope {method.default_scope} · "
               f"default sparsity {method.default_sparsity:.0%}"
               + (" · expensive (cached)" if method.expensive else "")
               + (" · has a training mode" if method.trainer else ""))
    if method.trainer is not None:
        latest_runs(session, method, key)


def generic_run(session: Session, run: dict, key: str) -> None:
    """Any trainer's run, read as one :class:`~prunelens.analysis.run_result.RunResult` (every stored shape
    normalised): its variants as a table and bars, its histories, its unit scores, the rest."""
    from prunelens.analysis.run_result import normalise

    result = normalise(run)
    rows = result.variant_rows()
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        controls.show_figure(figures.evaluation_bars(rows, label_key="variant", title="Variants after the run"),
                             "variants", f"{key}.variants")
    if result.histories:
        fields = sorted({f for hist in result.histories.values() for h in hist for f in h
                         if f != "step" and isinstance(h[f], int | float)})
        controls.show_figure(figures.history_panels(result.histories, fields[:4]), "history", f"{key}.history")
    for unit, scores in result.scores.items():
        if unit == "head":
            fig = figures.head_heatmap(scores, f"Head scores of the run ({result.method})")
        elif unit in BLOCK_UNITS:
            fig = figures.block_bars(scores, unit, f"{unit} block scores of the run")
        elif unit == "neuron":
            fig = figures.neuron_distribution(scores, "Neuron scores of the run")
        else:
            continue
        controls.show_figure(fig, f"run_scores_{unit}", f"{key}.scores.{unit}")
    for note in result.notes:
        st.caption(escape.markdown(note))
    if result.extras:
        with st.expander("Everything else the run returned"):
            st.json(result.extras, expanded=False)


def registered() -> dict[str, MethodView]:
    """Every registered method with its view (the generic one where none is registered)."""
    return {name: view_for(name) for name in all_methods()}
