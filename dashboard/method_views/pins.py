"""PINS's and PLATON's panels: what the live scores smooth, and a run's trained models
(with and without self-regularization) against magnitude pruning at the same budget (a run read
through :func:`~prunelens.analysis.run_result.normalise`: stored runs of every shape)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from prunelens.analysis.methods.base import Method
from prunelens.analysis.session import Session
from prunelens.analysis.run_result import RunResult, normalise
from prunelens.dashboard import controls, figures
from prunelens.dashboard.method_views.common import accuracy_text, latest_runs, metrics_of, register


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
    result = normalise(run)
    variants, extras = result.variants, result.extras
    summaries = extras.get("runs") or {}  # each trained run's summary (sparsity, schedule...)
    rows = []
    if "dense" in variants:
        rows.append({"model": "unpruned", **metrics_of(variants["dense"]), "weight sparsity": 0.0})
    parts = _pins_parts(result)
    for name in parts:
        rows.append({"model": PINS_RUNS.get(name, name), **metrics_of(variants.get(name) or {}),
                     "weight sparsity": (summaries.get(name) or {}).get("weight_sparsity")})
    baseline = extras.get("baseline") or {}
    if "baseline" in variants:
        oneshot = str(baseline.get("training", "")).startswith("none")
        rows.append({"model": "magnitude, one-shot (no training)" if oneshot
                     else "magnitude, gradual (same schedule and budget)",
                     **metrics_of(variants["baseline"]),
                     "weight sparsity": baseline.get("weight_sparsity")})
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    controls.show_figure(figures.evaluation_bars(rows, ("accuracy", "loss"), "model",
                                                 "With vs without self-regularization vs magnitude"),
                         "pins_eval", f"{key}.pins.eval")
    gain = extras.get("self_reg_gain")
    if gain:
        st.caption("Gain of self-regularization: " + ", ".join(f"Δ {k} {v:+.4f}" for k, v in gain.items()))
    histories = {PINS_RUNS.get(n, n): result.histories[n] for n in parts if n in result.histories}
    if "baseline" in result.histories:
        histories["magnitude (gradual)"] = result.histories["baseline"]
    if histories:
        controls.show_figure(figures.history_panels(histories, ("loss", "task_loss", "self_reg_loss",
                                                                "sparsity")),
                             "pins_history", f"{key}.pins.history")
    own = next(iter(parts), "")  # the method's own run: PINS + self-reg, or PLATON
    main = summaries.get(own) or {}
    if main.get("layer_sparsity"):
        st.caption(f"Realized weight sparsity {main.get('weight_sparsity', 0):.1%} "
                   f"({main.get('pruned_weights', 0):,} of {main.get('total_weights', 0):,} weights), "
                   f"exact zeros {main.get('zero_fraction', 0):.1%}.")
        controls.show_figure(figures.sparsity_heatmap(main["layer_sparsity"],
                                                      main.get("layer_sparsity_columns") or [],
                                                      "Realized sparsity per layer and matrix "
                                                      f"({'PLATON' if own == 'platon' else 'PINS + self-reg'})"),
                             "pins_sparsity", f"{key}.pins.sparsity")
    for note in result.notes:
        st.caption(note)


def _pins_parts(result: RunResult) -> list[str]:
    """The run's trained models (every variant but the unpruned one and the magnitude
    baseline), self-regularized first (the store sorts keys)."""
    trained = [k for k in result.variants if k not in ("dense", "baseline")]
    return [k for k in PINS_RUNS if k in trained] + [k for k in trained if k not in PINS_RUNS]


def pins_headline(run: dict) -> str:
    variants = normalise(run).variants
    if "platon" in variants:
        text = f"PLATON {accuracy_text(variants['platon'])}"
    else:
        text = f"PINS+SR {accuracy_text(variants.get('pins_self_reg'))}"
    if "pins_no_self_reg" in variants:
        text += f", no SR {accuracy_text(variants['pins_no_self_reg'])}"
    if "baseline" in variants:
        text += f", magnitude {accuracy_text(variants['baseline'])}"
    return text + f", unpruned {accuracy_text(variants.get('dense'))}"


register("pins", about=pins_about, run=pins_run, headline=pins_headline)
register("platon", about=pins_about, run=pins_run, headline=pins_headline)
