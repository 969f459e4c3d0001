"""Training runs page: start ADMM / PINS / SNIP training runs in the background, see finished ones."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from prunelens.analysis.methods import all_methods
from prunelens.analysis.training import changed_params, finished_runs, trainable_methods
from prunelens.dashboard import controls, escape, jobs, loading, method_views, results, run_control, url_state

st.title("Training runs")
controls.explain(
    "Some methods do more than score a trained model: they <b>train while pruning</b> (ADMM pattern "
    "pruning, PINS iterative pruning with self-regularization, SNIP with spectral-norm training). "
    "Runs take minutes, so they run in the background: start one, keep using the other pages, and "
    "come back. Finished runs are kept in the result store and listed below with their curves.")

session = loading.current_session()
trainable = trainable_methods()
if not trainable:
    st.info("No registered method has a training mode yet.")
    st.stop()

st.subheader("Start a run")
names = list(trainable)
name = url_state.bound(st.selectbox, "Method", "train.method", names[0], "method", options=names,
                       format_func=controls.method_label)
method = all_methods()[name]
trainer = trainable[name]
st.caption(trainer.summary or method.summary)
with st.expander("Training parameters", expanded=False):
    params = controls.param_controls(method, "train", params=trainer.params, query_prefix="t.")
with run_control.guard():
    params = trainer.validate(params)
done = results.stored(session, "train-run", name, "", params)
if done is not None:
    st.success("A run with exactly these parameters is in the store; starting returns it at once.")
else:
    cost = method_views.run_time_estimate(session, name, params)
    if cost is not None:
        minutes = round(cost["seconds"] / 60)
        when = "under a minute" if minutes < 1 else f"about {minutes} minute{'s' if minutes > 1 else ''}"
        st.info(f"Estimated run time: **{when} on 2 CPU cores** ({cost['train_examples']:,} training passes over examples, "
                f"{cost['eval_examples']:,} evaluated examples). A rough figure: a busy machine can "
                "take twice as long. The run continues in the background while you use other pages.",
                icon=":material/schedule:")
incompatible = trainer.is_compatible(session.objective)
if incompatible:  # e.g. no gold labels: say why instead of offering a run that cannot mean anything
    st.warning(f"**{method.title or name}** training is not available here: {incompatible}.")
elif st.button(f"Start {name} training", type="primary", key="train.start"):
    with run_control.guard(stop=False):  # over the per-server cap: a message, the page goes on
        job = jobs.BOARD.start(session, name, params, alive=run_control.session_liveness())
        st.toast(f"Started {name} run #{job.id}")
st.caption(f"At most {jobs.max_jobs()} runs at once on this server ({jobs.MAX_JOBS_ENV}); a run "
           "stops at its next step when cancelled or when its browser session ends.")


def _running_jobs() -> None:
    board = jobs.BOARD.jobs()
    if not board:
        st.caption("No run started in this server session.")
        return
    watched = st.session_state.setdefault("train.watched", set())
    finished_now = False
    for job in board:
        label = escape.markdown(f"#{job.id} {job.method} on {job.model} / {job.data}: {job.message} "
                                f"({job.elapsed:.0f} s)")
        if job.status == jobs.RUNNING:
            watched.add(job.id)
            bar, stop = st.columns([5, 1], vertical_alignment="bottom")
            bar.progress(job.fraction, text=label)
            if stop.button("Cancel", key=f"train.cancel.{job.id}", icon=":material/cancel:",
                           disabled=job.cancel_requested,
                           help="stop this run at its next step; nothing is stored"):
                jobs.BOARD.cancel(job.id)
                st.rerun(scope="fragment")
            continue
        finished_now |= job.id in watched
        watched.discard(job.id)
        if job.status == jobs.DONE:
            st.success(f"#{job.id} {job.method} finished in {job.elapsed:.0f} s"
                       + (" (from the store)" if (job.result or {}).get("cached") else ""))
        elif job.status == jobs.CANCELLED:
            st.warning(escape.markdown(f"#{job.id} {job.method} {job.message} after {job.elapsed:.0f} s"))
        else:
            st.error(escape.markdown(f"#{job.id} {job.method} failed: {job.error}"))
    if finished_now:  # show the new run in the list below
        st.rerun(scope="app")


st.subheader("This session's runs")
refresh = 1.0 if jobs.BOARD.running() else None
st.fragment(_running_jobs, run_every=refresh)()

st.subheader("Finished runs (result store)")
runs = finished_runs(session.store, session.loaded.fingerprint)
runs = [r for r in runs if r.get("data", {}).get("fingerprint") in (None, session.data.fingerprint)] or runs
if not runs:
    st.info("No finished run for this model yet.")
    controls.share_link_note()
    st.stop()

def setting(run: dict) -> str:
    """What sets a run apart from its method's defaults ("defaults" when nothing does)."""
    changed = changed_params(str(run.get("method")), run.get("params"))
    return ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"


listing = [{"run": r["run_id"], "method": r.get("method"), "setting": setting(r), "result": method_views.headline(r),
            "seconds": r.get("seconds"), "data": f"{r.get('data', {}).get('name')} ({r.get('data', {}).get('n')})",
            "params": ", ".join(f"{k}={v}" for k, v in (r.get("params") or {}).items())}
           for r in runs]
st.dataframe(pd.DataFrame(listing), hide_index=True)
controls.download_table(listing, "training_runs", "train.list")
by_id = {r["run_id"]: r for r in runs}  # links name a run by its store key, not its position
pick = url_state.bound(st.selectbox, "Show run", "train.run", runs[0]["run_id"], "run", options=list(by_id),
                       format_func=lambda i: f"{i}: {by_id[i].get('method')} · {setting(by_id[i])} "
                                             f"({by_id[i].get('seconds', '?')} s)")
run = by_id[pick]
st.subheader(f"Run {pick}: {all_methods()[run['method']].title if run.get('method') in all_methods() else run.get('method')}")
method_views.render_run(session, run, key="train.run")
controls.share_link_note()
