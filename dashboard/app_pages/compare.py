"""Compare page: several methods side by side — ranks, rank correlations, overlap, curves."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from prunelens.analysis.compare import emptied_by, jaccard_matrix, normalized_ranks, rank_correlations
from prunelens.analysis.layout import UNITS
from prunelens.analysis.operations import curve
from prunelens.dashboard import controls, figures, loading, results, run_control, url_state

st.title("Compare")
controls.explain(
    "Do the methods agree on which units matter? The grid shows each method's <b>ranks</b> on one "
    "colour scale (1 = most important), the matrices measure agreement (Spearman and Kendall rank "
    "correlation: 1 = same order, 0 = unrelated) and the overlap of the sets each keeps at a "
    "sparsity (Jaccard: 1 = identical). The curves show what each method's pruning costs as more "
    "units go; a method is only useful if it stays above <b>random</b>.")

session = loading.current_session()
controls.explain_objective(session)
units = list(UNITS)
unit = url_state.bound(st.selectbox, "Unit", "cmp.unit", "head", "unit", options=units)
available = controls.methods_for(unit)
# expensive here = the work of its default setting on this model and data (controls.needs_click)
expensive = {n for n, m in available.items() if controls.needs_click(session, m, unit, m.validate(None))}
cheap = [n for n in available if n not in expensive]
# preselected: every criterion whose default scores the store holds (on the default, all the
# shipped methods), else the first cheap ones; diagnostics (not importance criteria) never
criteria = [n for n in available if not available[n].diagnostic]
in_store = [n for n in criteria if results.stored(session, "scores", n, unit, available[n].validate(None)) is not None]
url_state.bind("cmp.methods", in_store if len(in_store) >= 2 else [n for n in criteria if n in cheap][:3],
               query="methods",
               cast=lambda raw: [n for n in raw.split(",") if n in available])
if any(n not in available for n in st.session_state["cmp.methods"]):
    st.session_state["cmp.methods"] = [n for n in st.session_state["cmp.methods"] if n in available]
chosen = st.multiselect("Methods (default parameters)", list(available), key="cmp.methods",
                        format_func=controls.method_label)
url_state.share(methods=",".join(chosen) or None)
with st.expander("What the chosen methods do", icon=":material/info:"):
    for chosen_name in chosen:
        controls.method_caption(available[chosen_name])
if not chosen:
    st.info("Choose at least one method.")
    st.stop()

scores: dict[str, list] = {}
missing = []
bar, progress = controls.progress_sink("Scoring…")
for i, name in enumerate(chosen):
    method = available[name]
    params = method.validate(None)
    progress(i / len(chosen), f"scoring {name}")
    if name in expensive:
        hit = results.stored(session, "scores", name, unit, params)
        if hit is None:
            missing.append(name)
        else:
            scores[name] = hit["scores"]
    else:
        with run_control.guard():
            scores[name] = results.cheap_scores(session, name, unit, params)
bar.empty()
if missing:
    st.warning(f"Not in the store yet (expensive; compute them on the Importance page): {', '.join(missing)}")
if not scores:
    st.stop()
names = list(scores)

st.subheader("Ranks")
ranks = {n: normalized_ranks(s) for n, s in scores.items()}
grid = {n: (r.tolist() if r.ndim == 2 else [r.tolist()]) for n, r in ranks.items()}
controls.show_figure(figures.heatmap_grid(grid, title="Rank of each unit (1 = most important, 0 = least)"),
                     f"ranks_{unit}", "cmp.grid")

st.subheader("Rank correlation")
corr = rank_correlations(scores)
c1, c2 = st.columns(2)
with c1:
    controls.show_figure(figures.matrix_heatmap(corr.spearman.tolist(), names, "Spearman ρ"), "spearman", "cmp.rho")
with c2:
    controls.show_figure(figures.matrix_heatmap(corr.kendall.tolist(), names, "Kendall τ"), "kendall", "cmp.tau")
pairs = [{"method a": a, "method b": b, "spearman": corr.as_dict()["spearman"][i][j],
          "kendall": corr.as_dict()["kendall"][i][j]}
         for i, a in enumerate(names) for j, b in enumerate(names) if i < j]
st.dataframe(pairs, hide_index=True)
controls.download_table(pairs, f"rank_correlations_{unit}", "cmp.corr")


def emptied_layer_hint(emptied: dict[str, dict[float, list[int]]], scope: str) -> None:
    """Say where a mask removes every unit of a layer (the model then often falls to chance)."""
    if not emptied or unit != "head":
        return
    said = "; ".join(f"{name} at {', '.join(f'{s:.0%}' for s in at)} "
                     f"(layer {', '.join(str(x) for x in sorted({x for ls in at.values() for x in ls}))})"
                     for name, at in emptied.items())
    st.info(f"A whole layer loses all its heads: {said}. Nothing then passes that layer's attention, "
            "and the model often falls to chance. Turn on **Keep one head per layer** above to keep "
            "each layer's best head" + (" (a global scope picks the lowest scores anywhere)."
                                        if scope == "global" else "."), icon=":material/info:")


keep_one = url_state.bound(st.toggle, "Keep one head per layer", "cmp.keep_one", False, "keep_one",
                           omit=False, disabled=unit != "head",
                           help="never remove the last head of a layer (in the overlap and the curves)")
keep_one = keep_one and unit == "head"


@st.fragment
def overlap() -> None:
    st.subheader("Overlap of kept units")
    sparsity = url_state.bound(st.slider, "Sparsity", "cmp.sparsity", 0.5, "sparsity",
                               cast=lambda raw: round(float(raw), 2), bounds=(0.0, 0.95),
                               min_value=0.0, max_value=0.95, step=0.05)
    scope = url_state.bound(st.radio, "Scope", "cmp.scope", "global", "scope", options=["global", "layer"],
                            horizontal=True)
    with run_control.guard():
        jac = jaccard_matrix(scores, sparsity, scope, keep_one)
        emptied_layer_hint(emptied_by(scores, [sparsity], scope, keep_one), scope)
    controls.show_figure(figures.matrix_heatmap(jac.tolist(), names, f"Jaccard of kept sets at {sparsity:.0%}",
                                                zmin=0, zmax=1, colorscale="Blues"), "jaccard", "cmp.jaccard")
    table = [{"method a": a, "method b": b, "jaccard": float(jac[i][j])}
             for i, a in enumerate(names) for j, b in enumerate(names) if i < j]
    st.dataframe(table, hide_index=True)
    controls.download_table(table, f"jaccard_{unit}_{sparsity:.2f}", "cmp.jac")


overlap()

st.subheader(f"{controls.names(session)['accuracy'].capitalize()} and loss versus sparsity")
k1, k2, k3 = st.columns(3)
step = url_state.bound(k1.selectbox, "Step", "cmp.step", 0.1, "step", options=[0.05, 0.1, 0.2], cast=float,
                       format_func=lambda s: f"{s:.0%}")
curve_scope = url_state.bound(k2.radio, "Curve scope", "cmp.curve_scope", "global", "curve_scope",
                              options=["global", "layer"], horizontal=True)
NAMES = controls.names(session)  # what the objective calls accuracy, loss and margin
metric = url_state.bound(k3.radio, "Metric", "cmp.metric", "accuracy", "metric",
                         options=["accuracy", "loss", "margin"], horizontal=True, format_func=NAMES.get)
count = round(0.9 / step)
sparsities = [round(i * step, 2) for i in range(count + 1)]
curve_methods = names + (["random"] if "random" not in names and "random" in available else [])
key = ("cmp.curves", results.session_id(session), unit, curve_scope, tuple(curve_methods), tuple(sparsities),
       keep_one)
ready = st.session_state.get("cmp.curves.key") == key or results.curve_cached(session, curve_methods, sparsities,
                                                                             unit, curve_scope, keep_one)
if not ready and not st.button("Draw curves", type="primary", key="cmp.draw",
                               help=f"{len(curve_methods) * len(sparsities)} evaluations; cached afterwards"):
    st.caption("Curves need one evaluation per method and sparsity; press the button to draw them.")
    st.stop()
bar, progress = controls.progress_sink("Evaluating curves…")
with run_control.guard():
    rows = curve(session, curve_methods, sparsities, unit, curve_scope, progress=progress,
                 keep_one_per_layer=keep_one)
bar.empty()
emptied_layer_hint(emptied_by({n: s for n, s in scores.items() if n in curve_methods}, sparsities,
                              curve_scope, keep_one), curve_scope)
st.session_state["cmp.curves.key"] = key
base = results.base_eval(session)
controls.show_figure(figures.curves(rows, metric, base=base[metric], names=NAMES), f"curve_{metric}_{unit}",
                     "cmp.curve")
controls.download_table(pd.DataFrame(rows), f"curves_{unit}_{curve_scope}", "cmp.curves")
controls.share_link_note()
