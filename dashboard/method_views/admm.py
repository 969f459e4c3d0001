"""ADMM's panels (``admm`` and ``admm-quant``): patterns and their accuracy, and a run's
ADMM model against one-shot projection with and without the same SR-STE steps (a run read
through :func:`~prunelens.analysis.run_result.normalise`: stored runs of every shape)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from prunelens.analysis.layout import BLOCK_UNITS
from prunelens.analysis.methods.admm import VARIANT_ORDER
from prunelens.analysis.methods.base import Method
from prunelens.analysis.session import Session
from prunelens.analysis.run_result import normalise
from prunelens.dashboard import controls, figures, results, run_control
from prunelens.dashboard.method_views.common import accuracy_text, latest_runs, metrics_of, register


def admm_about(session: Session, method: Method, unit: str, params: dict, scores: Any, key: str) -> None:
    from prunelens.analysis.methods.admm import DEFAULT_PATTERNS, pattern_of
    from prunelens.analysis.operations import accuracy_by_pattern

    inv = session.loaded.inventory
    if "n" in params and "m" in params:
        n, m = params["n"], params["m"]
        st.markdown(f"##### The {n}:{m} pattern of one matrix")
        c1, c2 = st.columns(2)
        layer = c1.selectbox("Layer", list(range(inv.layers)), key=f"{key}.admm.layer")
        matrix = c2.selectbox("Matrix", list(inv.roles or ()), key=f"{key}.admm.matrix")
        with run_control.guard(stop=False):
            window = pattern_of(session.loaded, layer, matrix, n, m, rows=16, cols=32)
            controls.show_figure(figures.pattern_heatmap(
                window.mask, window.weights, n, m, window.row_start, window.col_start,
                f"layer {layer} {matrix}: {n}:{m} one-shot magnitude pattern (top-left 16 × 32)"),
                f"admm_pattern_L{layer}_{matrix}", f"{key}.admm.pattern")
    else:
        st.caption("k-bit quantization keeps every weight; it rounds each to a per-channel grid.")

    st.markdown("##### Per-head share of surviving weight norm")
    shares = results.cheap_scores(session, method.name, "head", params)
    controls.show_figure(figures.head_heatmap(shares, "share of each head's squared weight norm that "
                                              "survives the one-shot projection", "share"),
                         f"{method.name}_shares",
                         f"{key}.admm.shares")

    st.markdown("##### Accuracy for several N:M choices")
    st.caption("Every constrained matrix of a copy of the model projected to each N:M (one-shot "
               "magnitude, no ADMM), evaluated on the loaded data.")
    patterns = [list(p) for p in DEFAULT_PATTERNS]
    rows = results.stored(session, "pattern-accuracy", "admm", "", {"patterns": patterns})
    rows = rows["rows"] if rows else None  # the store keeps them once computed
    if rows is None and st.button("Evaluate " + ", ".join(f"{n}:{m}" for n, m in DEFAULT_PATTERNS),
                                   key=f"{key}.admm.acc"):
        bar, progress = controls.progress_sink("Projecting and evaluating…")
        rows = accuracy_by_pattern(session, DEFAULT_PATTERNS, progress=progress)
        bar.empty()
    if rows:
        table = [{"pattern": r["pattern"], "sparsity": r["sparsity"], **metrics_of(r)} for r in rows]
        st.dataframe(pd.DataFrame(table), hide_index=True)
        controls.show_figure(figures.evaluation_bars(table, ("accuracy", "loss"), "pattern",
                                                     "Accuracy and loss by N:M pattern"),
                             "admm_patterns", f"{key}.admm.accfig")
    latest_runs(session, method, key)


def admm_run(session: Session, run: dict, key: str) -> None:
    result = normalise(run)
    variants, extras = result.variants, result.extras
    order = [k for k in VARIANT_ORDER if k in variants] + [k for k in variants if k not in VARIANT_ORDER]
    table = [{"model": result.labels.get(name, name), **metrics_of(variants[name]),
              **{f"Δ {k}": v for k, v in (variants[name].get("delta") or {}).items()}}
             for name in order]
    st.dataframe(pd.DataFrame(table), hide_index=True)
    controls.show_figure(figures.evaluation_bars(table, ("accuracy", "loss", "margin"), "model",
                                                 f"Dense vs one-shot vs ADMM ({extras.get('projection', '')})"),
                         "admm_eval", f"{key}.admm.eval")
    history = result.histories.get("ADMM") or []
    if history:
        st.caption(f"||W − Z|| at the start: {extras.get('initial_residual', float('nan')):.4g}")
        controls.show_figure(figures.history_panels({"ADMM": history}, ("residual", "loss", "rho"),
                                                    xkey="iteration", title="ADMM iterations"),
                             "admm_history", f"{key}.admm.history")
    if result.histories.get("fine-tune"):
        controls.show_figure(figures.history_chart(result.histories["fine-tune"], "SR-STE fine-tune loss"),
                             "admm_finetune", f"{key}.admm.finetune")
    shares, oneshot = extras.get("shares") or {}, extras.get("shares_oneshot") or {}
    if "head" in shares and "head" in oneshot:
        controls.show_figure(figures.paired_heatmaps(
            oneshot["head"], shares["head"], ("one-shot projection", "after ADMM"),
            "Per-head share of surviving weight norm (one colour scale)", shared_scale=True),
            "admm_shares", f"{key}.admm.shares")
    for unit in BLOCK_UNITS:
        if unit in shares and unit in oneshot:
            controls.show_figure(figures.grouped_bars(
                {"one-shot projection": oneshot[unit], "after ADMM": shares[unit]},
                list(range(len(shares[unit]))), f"{unit} block: share of surviving weight norm",
                "share", "layer"), f"admm_{unit}_shares", f"{key}.admm.{unit}")
    if extras.get("constraint"):
        st.caption("Constraint check on the final weights: "
                   + ", ".join(f"{k} = {v}" for k, v in extras["constraint"].items()))


def admm_headline(run: dict) -> str:
    result = normalise(run)
    ev = result.variants
    return (f"{result.extras.get('projection', '')}: ADMM {accuracy_text(ev.get('admm'))}, one-shot {accuracy_text(ev.get('oneshot'))}, "
            f"dense {accuracy_text(ev.get('dense'))}")


register("admm", about=admm_about, run=admm_run, headline=admm_headline)
register("admm-quant", about=admm_about, run=admm_run, headline=admm_headline)
