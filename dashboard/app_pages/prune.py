"""Prune page: remove the lowest-scoring units and see what it costs, live."""

from __future__ import annotations

import streamlit as st

from prunelens.analysis.compare import score_summary
from prunelens.analysis.operations import prune_estimate
from prunelens.dashboard import controls, export_view, figures, loading, results, run_control, url_state

st.title("Prune")
controls.explain(
    "Pruning removes the units a method scores lowest. Move the slider: the model is re-evaluated "
    "on the same sentences with those units switched off, and the bars show how accuracy, loss and "
    "margin move against the full model (the whiskers are ± one standard error: a change inside "
    "them could be noise). The <b>margin</b> is how far the correct answer's score is ahead of "
    "the best wrong one, averaged over the sentences: it falls before accuracy does, so it warns "
    "early that the model is getting unsure. <b>Masked</b> numbers switch units off with gates, which simulates "
    "pruning but saves no time; <b>physically pruned</b> numbers come from a smaller copy with the "
    "weights really cut out.")

session = loading.current_session()
inv = session.loaded.inventory
controls.explain_objective(session)
NAMES = controls.names(session)  # what the objective calls accuracy, loss and margin

method = controls.pick_method("prune.method")  # its own row: the name is never cut at 1024 px
c2, c3 = st.columns(2)
unit = controls.pick_unit(f"prune.unit.{method.name}", method.units,
                          container=c2)
controls.method_caption(method)
scope = url_state.bound(c3.radio, "Scope", "prune.scope", method.default_scope, "scope",
                        options=["global", "layer"], horizontal=True,
                        help="global: lowest scores anywhere; layer: the same number in every layer")
if method.params:
    with st.expander("Method parameters"):
        params = controls.param_controls(method, "prune")
else:
    params = {}

o1, o2, o3 = st.columns(3)
mode = url_state.bound(o1.radio, "Select by", "prune.mode", "sparsity", "mode",
                       options=["sparsity", "threshold"], horizontal=True,
                       help="a fraction of units to remove, or every unit scoring below a threshold")
keep_one = url_state.bound(o2.checkbox, "Keep one per layer", "prune.keep_one", False, "keep_one",
                           help="never remove every unit of a layer")
physical = url_state.bound(o3.checkbox, "Prune physically", "prune.physical", False, "physical",
                           help="also build a smaller copy with the weights really cut out, and time "
                                "both")

scores = controls.obtain_scores(session, method, unit, params, key=f"prune.{method.name}.{unit}")
if scores is None:
    st.stop()
summary = score_summary(scores)


LAST_RESULT = "prune.last_result"  # (session id, result) of the last setting shown in full
STALE = "prune-stale"  # the container of the previous numbers, greyed by the style below
st.html(f"<style>.st-key-{STALE} {{ opacity: 0.45; filter: grayscale(1); }}</style>")


def _precision_note(result: dict) -> str:
    if result.get("precision") != "bf16":
        return ""
    return (" Pruned numbers: bf16 matrix products, with every close call recomputed in fp32, so "
            "each prediction is exactly fp32's; losses and margins may differ in the 4th decimal "
            "(start with PRUNELENS_PRECISION=fp32 for exact fp32).")


def _numbers(result: dict, label: str, caption: str) -> None:
    """Accuracy/loss/margin (with their deltas), units and parameters removed. Labels stay short
    (they share a row at 1024 px); ``label`` (masked / estimate) goes into the help, and an
    estimate's labels start with ≈."""
    pruned, delta, comp = result["pruned"], result["delta"], result["compression"]
    mark = "≈ " if label == "estimate" else ""
    what = f"pruned model, {label}"
    m = st.columns(5)
    for column, slot in zip(m, ("accuracy", "loss", "margin")):
        column.metric(f"{mark}{NAMES[slot]}", f"{pruned[slot]:.3f}", f"{delta[slot]:+.3f}",
                      delta_color="inverse" if slot == "loss" else "normal",
                      help=f"{what}: {controls.slot_help(session, slot)}. Change ± "
                           f"{delta.get(slot + '_se', float('nan')):.3f} (paired standard error)")
    m[3].metric("units cut", f"{result['sparsity']:.1%}", help="sparsity: fraction of units removed")
    m[4].metric("params cut", f"{comp['fraction']:.1%}",
                help=f"parameters removed: {comp['removed']:,} of {comp['total']:,} encoder "
                     "parameters (compression)")
    st.caption(caption)


@st.fragment
def live() -> None:
    """Only this part reruns when the slider moves."""
    threshold = sparsity = None
    if mode == "sparsity":
        sparsity = url_state.bound(st.slider, "Sparsity (fraction of units removed)", "prune.sparsity",
                                   float(method.default_sparsity), "sparsity",
                                   cast=lambda raw: round(float(raw), 2), bounds=(0.0, 0.95),
                                   min_value=0.0, max_value=0.95, step=0.05)
        url_state.share(threshold=None)
    else:
        low, high = max(0.0, summary["min"]), max(summary["max"], 1e-12)
        threshold = url_state.bound(st.slider, "Threshold (score units): remove units scoring below it",
                                    "prune.threshold", summary["median"] if summary["median"] >= 0 else low,
                                    "threshold", cast=float, bounds=(low, high), min_value=low,
                                    max_value=high, step=(high - low) / 200 or 1e-6, format="%.4g")
        url_state.share(sparsity=None)
        fig = figures.histograms({method.name: [v for row in scores for v in (row if isinstance(row, list) else [row])]},
                                 f"{method.name} scores", "score", vline=threshold)
        st.plotly_chart(fig, key="prune.hist")
    args = (method.name, unit, params, sparsity, threshold, scope, keep_one, physical)
    # first the estimate on the fixed subset, then the full-data numbers: two slots, so emptying
    # the estimate's removes its elements at once (a reused container keeps stale children)
    slot, full_slot = st.empty(), st.empty()
    with run_control.cancellable():  # a newer slider move stops this evaluation at its next batch
        if not results.prune_memoized(session, *args):
            previous = st.session_state.get(LAST_RESULT)
            if previous is not None and previous[0] == results.session_id(session):
                with slot.container(key=STALE):  # greyed until the new numbers come
                    _numbers(previous[1], "previous", "Previous setting, shown until this one's "
                             "numbers arrive…")
            # anytime: the first estimate, then larger subsets (on a large model), then the full data
            for stage, size in enumerate(session.evaluator.estimate_sizes):
                with run_control.guard():
                    first = prune_estimate(session, method.name, sparsity, unit, scope, params, threshold,
                                           keep_one, size=size)
                if first is None:
                    break
                d, n = first["delta"], first["estimate"]["n"]
                with slot.container():
                    st.markdown(f":material/hourglass_top: **Estimate on {n} sentences** — "
                                + ("the full data is being evaluated…" if stage == len(session.evaluator.estimate_sizes) - 1
                                   else "a larger sample is being evaluated…"))
                    _numbers(first, "estimate",
                             f"{'First estimate' if stage == 0 else 'Estimate'} on {n} sentences "
                             f"(a fixed random subset of {first['estimate']['of']}): Δ {NAMES['accuracy']} "
                             f"{d['accuracy']:+.3f} ± {d['accuracy_se']:.3f}, Δ loss {d['loss']:+.3f} ± "
                             f"{d['loss_se']:.3f} (± one paired standard error: it shrinks as the "
                             "sample grows). The full-data numbers replace it when ready…")
        bar = progress = None
        if physical and not results.prune_memoized(session, *args):  # slicing and timing: a bar
            bar, progress = controls.progress_sink("Pruning physically and timing…")
        with run_control.guard():
            result = results.prune_result(session, *args, progress=progress)
        if bar is not None:
            bar.empty()
    st.session_state[LAST_RESULT] = (results.session_id(session), result)
    base = result["base"]
    slot.empty()
    with full_slot.container():
        extras = "".join(f" {name.replace('_', ' ')} {result['pruned'][name]:.3f}."
                         for name in ("neighbour_agreement", "sts_spearman", "recall_at_1", "recall_at_10")
                         if name in result["pruned"])
        _numbers(result, "masked", f"Full data: {base['n']} examples. Unpruned: {NAMES['accuracy']} "
                                   f"{base['accuracy']:.3f}, {NAMES['loss']} {base['loss']:.3f}, {NAMES['margin']} "
                                   f"{base['margin']:.3f}." + (f" Pruned:{extras}" if extras else "")
                                   + _precision_note(result))
    pruned, delta = result["pruned"], result["delta"]
    bars, heatmap = figures.delta_bars(delta, label="masked", names=NAMES), figures.mask_heatmap(result["mask"], unit)
    figures.same_height(bars, heatmap)  # their download rows line up
    left, right = st.columns(2)
    with left:
        controls.show_figure(bars, "prune_deltas", "prune.deltas")
    with right:
        controls.show_figure(heatmap, "prune_mask", "prune.mask")
    source = "read from the result store" if result.get("from_store") else "computed now"
    if "physical" in result:
        phys = result["physical"]
        timing = [{"model": "masked (gates on the full model)", "seconds": phys["masked_seconds"],
                   NAMES["accuracy"]: pruned["accuracy"], "loss": pruned["loss"]},
                  {"model": "physically pruned (smaller copy)", "seconds": phys["seconds"],
                   NAMES["accuracy"]: phys["accuracy"], "loss": phys["loss"]}]
        st.dataframe(timing, hide_index=True)
        low, high = phys.get("speedup_range") or (phys["speedup"], phys["speedup"])
        st.caption(f"Both timed now on the same forward pass (transformers', batch by batch), "
                   f"{phys['timed'].split('; ', 1)[-1]}: cutting the weights out is "
                   f"**{phys['speedup']}x** as fast as switching the units off with gates (single "
                   f"runs ranged {low}x–{high}x). Largest "
                   f"{'sentence-vector' if session.objective == 'embedding' else 'logit'} difference between "
                   f"the two: {phys.get('max_abs_difference', phys['max_abs_logit_difference']):.2e}. "
                   f"The numbers above were {source} "
                   f"({result['masked_seconds']:.4f} s).")
    else:
        timing = [{"model": f"masked ({source})", "seconds": result["masked_seconds"],
                   NAMES["accuracy"]: pruned["accuracy"], "loss": pruned["loss"]}]
        st.dataframe(timing, hide_index=True)
    downloads = st.container(horizontal=True, gap="small")  # one row: the result, then the table
    controls.download_json(result, f"prune_{method.name}_{unit}", "prune.json", label="Result (JSON)", row=downloads)
    controls.download_table(timing, "prune_timing", "prune.timing", row=downloads)
    export_view.flipped_table(session, result)  # issue 18: what the pruned model gets wrong, and export
    export_view.export_button(session, method.name, unit, params, sparsity, threshold, scope, keep_one)


live()
controls.share_link_note()
