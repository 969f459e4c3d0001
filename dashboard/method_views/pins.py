"""PINS's and PLATON's panels: what the live scores smooth, and a run's trained models
(with and without self-regularization) against magnitude pruning at the same budget."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from analysis.methods.base import Method
from analysis.operations import Session
from dashboard import controls, figures
from dashboard.method_views.common import accuracy_text, latest_runs, metrics_of, register


PINS_RUNS = {"pins_self_reg": "PINS with self-regularization",
             "pins_no_self_reg": "PINS without self-regularization",
             "platon": "PLATON (no self-regularization)"}


def pins_about(session: Session, method: Method, unit: str, params: dict, scores: Any, key: str) -> None:
    if method.name == "platon":
        st.caption("Live scores smooth |θ·g| over a few batches of the training split without any "
                   "update (Ī·U ≥ 0, summed to units): PINS without its η·g² term. The training mode "
                   "prunes weights iteratively against gradual magnitude pruning.")
    else:
        st.caption("Live scores smooth |S| = |−θ·g + η·g²| over a few batches of the training split "
                   "without any update (Ī·U ≥ 0, summed to units; PLATON is the same with η = 0). The "
                   "training mode prunes weights iteratively; its runs compare PINS with and without "
                   "self-regularization against magnitude pruning.")
    latest_runs(session, method, key)


def pins_run(session: Session, run: dict, key: str) -> None:
    rows = []
    if run.get("base"):
        rows.append({"model": "unpruned", **metrics_of(run["base"]), "weight sparsity": 0.0})
    parts = _pins_parts(run)
    for name, part in parts.items():
        rows.append({"model": PINS_RUNS.get(name, name), **metrics_of(part.get("evaluation") or {}),
                     "weight sparsity": part.get("weight_sparsity")})
    baseline = run.get("baseline")
    if baseline:
        oneshot = str(baseline.get("training", "")).startswith("none")
        rows.append({"model": "magnitude, one-shot (no training)" if oneshot
                     else "magnitude, gradual (same schedule and budget)",
                     **metrics_of(baseline.get("evaluation") or {}),
                     "weight sparsity": baseline.get("weight_sparsity")})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    controls.show_figure(figures.evaluation_bars(rows, ("accuracy", "loss"), "model",
                                                 "With vs without self-regularization vs magnitude"),
                         "pins_eval", f"{key}.pins.eval")
    gain = run.get("self_reg_gain")
    if gain:
        st.caption("Gain of self-regularization: " + ", ".join(f"Δ {k} {v:+.4f}" for k, v in gain.items()))
    histories = {PINS_RUNS.get(n, n): p["history"] for n, p in parts.items() if p.get("history")}
    if baseline and baseline.get("history"):
        histories["magnitude (gradual)"] = baseline["history"]
    if histories:
        controls.show_figure(figures.history_panels(histories, ("loss", "task_loss", "self_reg_loss",
                                                                "sparsity")),
                             "pins_history", f"{key}.pins.history")
    own = next(iter(parts), "")  # the method's own run: PINS + self-reg, or PLATON
    main = parts.get(own) or {}
    if main.get("layer_sparsity"):
        st.caption(f"Realized weight sparsity {main.get('weight_sparsity', 0):.1%} "
                   f"({main.get('pruned_weights', 0):,} of {main.get('total_weights', 0):,} weights), "
                   f"exact zeros {main.get('zero_fraction', 0):.1%}.")
        controls.show_figure(figures.sparsity_heatmap(main["layer_sparsity"],
                                                      main.get("layer_sparsity_columns") or [],
                                                      "Realized sparsity per layer and matrix "
                                                      f"({'PLATON' if own == 'platon' else 'PINS + self-reg'})"),
                             "pins_sparsity", f"{key}.pins.sparsity")
    for note in run.get("notes") or []:
        st.caption(note)


def _pins_parts(run: dict) -> dict:
    """The run's trained models, self-regularized first (the store sorts keys)."""
    runs = run.get("runs") or {}
    return {**{k: runs[k] for k in PINS_RUNS if k in runs}, **{k: v for k, v in runs.items() if k not in PINS_RUNS}}


def pins_headline(run: dict) -> str:
    runs = run.get("runs") or {}
    if "platon" in runs:
        text = f"PLATON {accuracy_text(runs['platon'].get('evaluation'))}"
    else:
        text = f"PINS+SR {accuracy_text((runs.get('pins_self_reg') or {}).get('evaluation'))}"
    if "pins_no_self_reg" in runs:
        text += f", no SR {accuracy_text(runs['pins_no_self_reg'].get('evaluation'))}"
    if run.get("baseline"):
        text += f", magnitude {accuracy_text(run['baseline'].get('evaluation'))}"
    return text + f", unpruned {accuracy_text(run.get('base'))}"


register("pins", about=pins_about, run=pins_run, headline=pins_headline)
register("platon", about=pins_about, run=pins_run, headline=pins_headline)
