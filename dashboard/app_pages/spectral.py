"""Spectral page: σ_max of every matrix and what spectral normalization does to activations."""

from __future__ import annotations

import streamlit as st

from prunelens.dashboard import controls, figures, loading, results, run_control, url_state

st.title("Spectral")
controls.explain(
    "Every weight matrix stretches some input direction the most; that stretch is its largest "
    "singular value σ_max. <b>Spectral normalization</b> divides a matrix by max(1, σ_max / c), so no "
    "matrix stretches by more than the cap c (exactly W/σ_max without a cap). The SNIP method "
    "(spectral-normalized identity prior) uses it to make module output sizes comparable across "
    "layers. Below: σ_max per matrix, and per layer the distribution of post-GELU activations and of "
    "module output norms, with and without normalization — the paper's “stabilized distribution”. "
    "At the bottom you can evaluate a normalized copy: with exact normalization it falls to chance "
    "accuracy, which is the expected lesson (the model was not trained that way), not a bug.")

try:
    from prunelens.analysis import spectral  # noqa: F401
    from prunelens.analysis.spectral import activation_statistics, spectral_norms, spectrally_normalized  # noqa: F401
except ImportError as exc:
    st.warning(f"The spectral analysis is not available yet ({exc}).")
    st.stop()

NORMALIZED_LESSON = (
    "**Chance accuracy here is the expected result, not a bug.** Dividing every matrix by its "
    "σ_max (or capping it at a small c such as 1) shrinks each layer's output by a different factor, so the fine-tuned model no longer "
    "sees the activations it was trained on and its answers become guesses. That is why SNIP "
    "trains with the normalization in place (and why a cap c only touches the matrices that "
    "stretch more than c): the normalization makes module sizes comparable, but a model has to "
    "learn with it.")

session = loading.current_session()

st.subheader("Largest singular value per matrix")
c1, c2 = st.columns(2)
exact = url_state.bound(c1.checkbox, "Exact (W / σ_max)", "spec.exact", False, "exact",
                        help="exact normalization: divide every matrix by its σ_max (no cap, c = None)")
cap_value = url_state.bound(c2.number_input, "Cap c", "spec.cap", 1.0, "cap", cast=float, bounds=(0.01, 1000.0),
                            min_value=0.01, max_value=1000.0, step=0.5, format="%g", disabled=exact,
                            help="matrices with σ_max above c are scaled down to σ_max = c")
cap = None if exact else float(cap_value)

with run_control.guard():
    sigma_rows = results.sigmas(session)
controls.show_figure(figures.sigma_chart(sigma_rows, cap=cap), "sigma_max", "spec.sigma")
controls.download_table(sigma_rows, "sigma_max", "spec.sigma_table")

st.subheader("Activations with and without normalization")
limit = url_state.bound(st.select_slider, "Examples", "spec.limit", 64, "examples", options=[16, 32, 64, 128, 256])
with run_control.guard():
    stats = results.activations(session, cap, limit)
st.caption(f"{stats.examples} examples, {stats.tokens} tokens (padding excluded).")
inv = session.loaded.inventory
layer = url_state.bound(st.select_slider, "Layer", "spec.layer", 0, "layer", options=list(range(inv.layers)))
titles = {"gelu": ("Post-GELU activations", "activation"),
          "attention_norm": ("Attention output norm", "‖F(x)‖ per token"),
          "ffn_norm": ("FFN output norm", "‖F(x)‖ per token")}
# one histogram per row: three side by side were unreadably narrow at 1024 px
for quantity in stats.QUANTITIES:
    plain = getattr(stats.plain[layer], quantity)
    normed = getattr(stats.normalized[layer], quantity)
    label = "normalized" if cap is None else f"normalized (c = {cap:g})"
    title, x_title = titles[quantity]
    fig = figures.binned_histograms({"as loaded": (plain.counts, plain.edges), label: (normed.counts, normed.edges)},
                                    f"{title}, layer {layer}", x_title, log_y=quantity == "gelu")
    controls.show_figure(fig, f"{quantity}_layer{layer}", f"spec.hist.{quantity}")
table = stats.table()
st.dataframe(table, hide_index=True)
controls.download_table(table, "activation_statistics", "spec.stats")

st.subheader("What normalization does to the predictions")
if st.toggle("Evaluate the normalized model", key="spec.evaluate",
             help="one evaluation of a normalized copy on the loaded examples"):
    with run_control.guard():
        cmp = results.normalized_eval(session, cap)
    d = cmp["delta"]
    m = st.columns(3)
    names = controls.names(session)
    for column, slot in zip(m, ("accuracy", "loss", "margin")):
        column.metric(names[slot], f"{cmp['pruned'][slot]:.3f}", f"{d[slot]:+.3f}",
                      delta_color="inverse" if slot == "loss" else "normal",
                      help=f"the normalized copy's {names[slot]}: {controls.slot_help(session, slot)}; "
                           "the change is against the model as loaded")
    st.caption("Numbers of the normalized copy; the changes are against the model as loaded.")
    # the lesson wherever the copy falls to chance: exact normalization, and small caps too (c = 1)
    chance = 1.0 / max(2, int(getattr(session.loaded.model.config, "num_labels", 2) or 2))
    near_chance = cmp["pruned"]["accuracy"] - chance <= 2 * cmp["pruned"].get("accuracy_se", 0.0) + 0.02
    if cap is None or near_chance:
        st.info(NORMALIZED_LESSON, icon=":material/school:")
    controls.show_figure(figures.delta_bars(d, label="normalized", title="Change vs the model as loaded",
                                            names=controls.names(session)),
                         "normalization_deltas", "spec.deltas")
controls.share_link_note()
