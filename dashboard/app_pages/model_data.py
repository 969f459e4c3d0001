"""Model & data page: what is loaded, its unpruned accuracy/loss/margin, and its prunable units."""

from __future__ import annotations

import streamlit as st

from prunelens.analysis.layout import UNITS
from prunelens.dashboard import analysis_view, controls, escape, loading, results, run_control

st.title("Model & data")
controls.explain(
    "This is the model being examined and the sentences it is evaluated on. A BERT-style encoder is a "
    "stack of layers; each layer has several attention <b>heads</b> (which words look at which) and a "
    "feed-forward block made of <b>neurons</b>. Pruning removes some of these units. The table below "
    "counts them and the parameters each one owns; the numbers at the top are how well the full, "
    "unpruned model does, the reference every pruned model is compared with. <b>Accuracy</b> is "
    "the share of sentences it gets right; <b>loss</b> (cross-entropy) is lower when it puts more "
    "probability on the right answer; the <b>margin</b> is how far the right answer's score is "
    "ahead of the best wrong one, averaged over the sentences (above 0 = right, larger = surer).")

session = loading.current_session()
loaded, data = session.loaded, session.data
inv = loaded.inventory
controls.explain_objective(session)
NAMES = controls.names(session)

c1, c2 = st.columns(2)
with c1:
    st.subheader("Model")
    st.markdown(f"**{escape.markdown(loaded.name)}** ({escape.markdown(loaded.source)})"
                + (f" · fingerprint `{loaded.fingerprint}`" if controls.developer() else ""))
    st.markdown(f"{inv.layers} layers × {inv.heads} heads (head size {inv.head_size}), hidden {inv.hidden}, "
                f"FFN {inv.ffn} · " + (f"sentence encoder: {loaded.pooling.mode} pooling"
                                      f"{', normalized' if loaded.pooling.normalize else ''}" if loaded.headless
                                      else f"{loaded.num_labels} labels"))
    for note in loaded.notes:
        st.caption(escape.markdown(note))
with c2:
    st.subheader("Data")
    st.markdown(f"**{escape.markdown(data.name)}** · split {escape.markdown(data.split)} · {len(data)} examples"
                + (f" · task metric {escape.markdown(data.metric)}" if session.objective == "labels"
                   else f" · objective {session.objective}")
                + (f" · fingerprint `{data.fingerprint}`" if controls.developer() else ""))
    for note in session.evaluator.notes:  # may quote the data's label names
        st.caption(escape.markdown(note))

st.subheader("Unpruned model")
with run_control.guard():
    base = results.base_eval(session)
m1, m2, m3, m4 = st.columns(4)
for column, slot in zip((m1, m2, m3), ("accuracy", "loss", "margin")):
    column.metric(NAMES[slot], f"{base[slot]:.3f}",
                  help=f"{controls.slot_help(session, slot)}. ± {base[slot + '_se']:.3f} (standard error)")
if data.metric == "accuracy" or session.objective != "labels":
    m4.metric("examples", f"{base['n']}", help="evaluation examples (the dev split unless limited)")
else:  # the task's own metric (MCC for CoLA, F1 for MRPC/QQP)
    m4.metric(data.metric, f"{base['metric']:.3f}", help=f"± {base['metric_se']:.3f} (bootstrap)")
controls.download_json({"base": base, **session.describe()}, "base_evaluation", "md.base")

analysis_view.panel(session)

st.subheader("Prunable units")
rows = []
for unit in UNITS:
    shape = inv.unit_shape(unit)
    count = shape[0] * (shape[1] if len(shape) > 1 else 1)
    per = inv.unit_params(unit)
    rows.append({"unit": unit, "count": count, "params each": per, "params all": per * count,
                 "share of encoder": f"{per * count / inv.encoder_params:.1%}"})
st.dataframe(rows, hide_index=True)
st.caption(f"Encoder parameters: {inv.encoder_params:,} (embeddings and classifier are not pruned). "
           "The shares overlap: the heads are the attention blocks cut finer, and the neurons the "
           "feed-forward blocks, so the column adds up to about 200 % (each parameter counted twice).")
controls.download_table(rows, "units", "md.units")

with st.expander("Examples"):
    sample = [{"text": t, **({"label": int(y)} if data.labelled else {})}
              for t, y in zip(data.texts[:20], data.labels[:20])]
    st.dataframe(sample, hide_index=True)
controls.share_link_note()
