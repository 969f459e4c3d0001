"""SNIP's panels: absolute vs relative function norms, pruning as a norm threshold, and a
run's SN + identity-prior training against its untrained model and its λ = 0 control (a run read
through :func:`~prunelens.analysis.run_result.normalise`: stored runs of every shape)."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from prunelens.analysis.layout import BLOCK_UNITS
from prunelens.analysis.methods.base import Method
from prunelens.analysis.session import Session
from prunelens.analysis.pruning import select, sparsity_of
from prunelens.analysis.run_result import normalise
from prunelens.dashboard import controls, escape, figures, results, url_state
from prunelens.dashboard.method_views.common import accuracy_text, latest_runs, metrics_of, register


def _unit_maps(unit: str, left, right, titles: tuple[str, str], title: str, **kwargs):
    """Heads: two heatmaps side by side; blocks: grouped bars per layer."""
    if unit not in BLOCK_UNITS:
        return figures.paired_heatmaps(left, right, titles, title, x_title=unit, **kwargs)
    return figures.grouped_bars({titles[0]: left, titles[1]: right}, list(range(len(left))), title,
                                y_title="norm", x_title="layer")


def _flat(scores) -> list[float]:
    return [float(v) for row in scores for v in (row if isinstance(row, list) else [row])]


def snip_about(session: Session, method: Method, unit: str, params: dict, scores: Any, key: str) -> None:
    st.markdown("##### Absolute vs relative function norms")
    st.caption("Absolute: mean ||F(x)|| over tokens. Relative: divided by ||x|| of the residual "
               "stream the module adds to, so modules in layers with large activations are not "
               "favoured. The other parameters are the ones chosen above.")
    absolute = results.cheap_scores(session, "snip", unit, {**params, "relative": False})
    relative = results.cheap_scores(session, "snip", unit, {**params, "relative": True})
    controls.show_figure(_unit_maps(unit, absolute, relative, ("absolute ||F(x)||", "relative ||F(x)||/||x||"),
                                    f"snip {unit} norms"), f"snip_{unit}_abs_rel", f"{key}.snip.absrel")

    st.markdown("##### Pruning is a threshold on the norm")
    current = relative if params.get("relative") else absolute
    values = _flat(current)
    low, high = min(values), max(values)
    if high <= low:
        high = low + 1e-6
    slider = f"{key}.snip.threshold"
    url_state.bind(slider, (low + high) / 2)
    st.session_state[slider] = min(max(float(st.session_state[slider]), low), high)
    threshold = st.slider(f"Threshold ({'relative' if params.get('relative') else 'absolute'} norm units)",
                          float(low), float(high), step=(high - low) / 200, format="%.4g", key=slider)
    mask = select(current, threshold=threshold)
    removed = sparsity_of(mask)
    controls.show_figure(figures.histograms({f"{unit} norms": values}, f"distribution of snip {unit} norms", "norm",
                                            bins=30, vline=threshold),
                         f"snip_{unit}_hist", f"{key}.snip.hist")
    st.caption(f"{removed:.0%} of the {len(values)} {unit} units lie below {threshold:.4g} and would be "
               "pruned (the Prune page's threshold mode evaluates it).")
    latest_runs(session, method, key)


def snip_run(session: Session, run: dict, key: str) -> None:
    result = normalise(run)
    variants, extras = result.variants, result.extras
    before, after = extras.get("scores_without_training") or {}, result.scores
    kind = "relative" if (extras.get("scores") or {}).get("relative") else "absolute"  # the norms' own flag
    ev, ev0 = variants.get("trained") or {}, variants.get("untrained") or {}
    table = [{"model": "without SN training (as loaded)", **metrics_of(ev0)},
             {"model": "after SN + identity-prior training", **metrics_of(ev)}]
    if "control" in variants:
        table.append({"model": "λ = 0 control (same steps and SN, no identity prior)",
                      **metrics_of(variants["control"])})
    st.dataframe(pd.DataFrame(table), hide_index=True)
    pruned = extras.get("pruned") or []
    if pruned:  # the paper's claim: SN + identity prior make the trained model prune better
        st.markdown("**Pruned by its own function norms** (lowest first, global): accuracy of each "
                    "model at the same sparsity, on the same sentences")
        names = [n for n in ("trained", "untrained", "control") if n in pruned[0]]
        label = {"trained": "SN + identity prior", "untrained": "untrained (as loaded)",
                 "control": "λ = 0 control"}
        st.dataframe(pd.DataFrame([{"unit": r["unit"], "sparsity": f"{r['sparsity']:.0%}",
                                    **{label[n]: round(r[n]["accuracy"], 4) for n in names}}
                                   for r in pruned]), hide_index=True)
        st.caption("One seed: differences of a point or two are within noise "
                   "(docs/FIDELITY.md gives the multi-seed comparison where it has one).")
    controls.show_figure(figures.evaluation_bars(table, ("accuracy", "loss", "margin"), "model",
                                                 "Evaluation without vs with SN training"),
                         "snip_eval", f"{key}.snip.eval")
    st.markdown(f"**Scores with SN training vs without** ({kind} function norms)")
    if "head" in after and "head" in before:
        controls.show_figure(figures.paired_heatmaps(
            before["head"], after["head"], ("without training", "with SN training"),
            "Head function norms", shared_scale=True), "snip_heads_train", f"{key}.snip.heads")
    for unit in BLOCK_UNITS:
        if unit in after and unit in before:
            controls.show_figure(figures.grouped_bars(
                {"without training": before[unit], "with SN training": after[unit]},
                list(range(len(after[unit]))), f"{unit} block function norms", "norm", "layer"),
                f"snip_{unit}_train", f"{key}.snip.{unit}")
    history = result.histories.get("trained") or []
    if history:
        controls.show_figure(figures.history_panels({"training": history}, ("loss", "task_loss", "penalty")),
                             "snip_history", f"{key}.snip.history")
    sigma = extras.get("sigma") or {}
    if sigma.get("before") and sigma.get("after"):
        labels = [f"L{r['layer']} {r['matrix']}" for r in sigma["before"]]
        controls.show_figure(figures.grouped_bars(
            {"before": [r["sigma"] for r in sigma["before"]],
             "after": [r["sigma"] for r in sigma["after"]]}, labels,
            "σ_max per matrix before / after training", "σ_max"), "snip_sigma", f"{key}.snip.sigma")
    note = (extras.get("train_data") or {}).get("note")
    if note:
        st.caption(escape.markdown(f"Trained on: {note}."))


def snip_headline(run: dict) -> str:
    result = normalise(run)
    text = (f"accuracy {accuracy_text(result.variants.get('trained'))} after SN training "
            f"(without: {accuracy_text(result.variants.get('untrained'))})")
    at_half = [r for r in result.extras.get("pruned") or [] if r.get("unit") == "head" and r.get("sparsity") == 0.5]
    if at_half and "control" in at_half[0]:
        r = at_half[0]
        text += (f"; 50% heads pruned: {accuracy_text(r['trained'])} vs λ=0 {accuracy_text(r['control'])}, "
                 f"untrained {accuracy_text(r['untrained'])}")
    return text


register("snip", about=snip_about, run=snip_run, headline=snip_headline)
