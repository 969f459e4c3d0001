"""The "Analyse this model" panel of the Model & data page: one background job that fills the
store for the loaded model/data pair (:mod:`prunelens.analysis.analyze`), so every page then answers at once.

The panel shows, in order of what is true: a job of this pair running in this server (progress,
time left, Cancel), one running in another process or server (its status file's progress), or
the plan (how many entries are stored, how many to compute, the time estimate) with a Start
button. The job runs on the server's :data:`prunelens.dashboard.jobs.BOARD` (the per-server cap applies) and
keeps running when its browser tab closes or reloads: it is bounded by the one-job-per-pair lock,
and what it computes is written to the store as each entry lands.
"""

from __future__ import annotations

import streamlit as st

from prunelens.analysis.analyze import estimate, format_seconds, pair_id, plan_analysis, read_status, run_analysis
from prunelens.analysis.session import Session
from prunelens.analysis.sweep.spec import Target
from prunelens.dashboard import escape, jobs, loading, run_control

PLAN_KEY = "analyze.planned"  # (pair id, summary) of the last estimate shown
JOB_METHOD = "analyze"
WATCHED_KEY = "analyze.watched"  # the running job this session's panel refreshes for


def _job_of(session: Session) -> jobs.Job | None:
    pid = pair_id(session)
    for job in jobs.BOARD.jobs():
        if job.method == JOB_METHOD and job.params.get("pair") == pid:
            return job
    return None


def _summary(session: Session) -> dict:
    """Plan and time the analysis (a forward pass of a sample; the unpruned pass if not yet done)."""
    choice = loading.current_choice()
    _, plan = plan_analysis(session, Target(choice.model, choice.data, choice.limit))
    est = estimate(plan, session)
    return {"stored": len(plan.records) - len(plan.todo), "todo": len(plan.todo),
            "waiting": plan.waiting, "seconds": est.total_seconds}


def _run(session: Session, method: str, params: dict, progress) -> dict:
    done = run_analysis(session, Target(params["model"], params["data"], params["limit"]),
                        progress=False, on_progress=progress)
    return {"computed": done.report.count("done"), "failed": done.report.count("failed"),
            "estimated_seconds": done.estimated_seconds, "seconds": done.report.wall_seconds}


def panel(session: Session) -> None:
    st.subheader("Analyse this model")
    st.caption("Computes every method's scores, the Prune slider's curve points and the block "
               "evaluations for this model and data in the background, cheapest method first, so "
               "every page then answers from the result store at once. Results appear on the pages "
               "as they land; a job that is stopped keeps what it finished and continues from there.")
    job = _job_of(session)
    running = (job is not None and job.status == jobs.RUNNING) or _other(session, job) is not None
    st.fragment(_live, run_every=1.0 if running else None)(session)  # refresh only while one runs


def _other(session: Session, job: jobs.Job | None) -> dict | None:
    """The status of a job of this pair running elsewhere (another process or server), if any."""
    if job is not None and job.status == jobs.RUNNING:
        return None
    status = read_status(session.store, session)
    return status if status and status.get("running") else None


def _live(session: Session) -> None:
    job = _job_of(session)
    watching = st.session_state.get(WATCHED_KEY)
    if job is not None and job.status != jobs.RUNNING and watching == job.id:
        st.session_state.pop(WATCHED_KEY)
        st.rerun(scope="app")  # the job just ended: show its result, stop refreshing
    if job is not None and job.status == jobs.RUNNING:
        st.session_state[WATCHED_KEY] = job.id
        bar, stop = st.columns([5, 1], vertical_alignment="bottom")
        bar.progress(job.fraction, text=escape.markdown(f"Analysing: {job.message}"))
        if stop.button("Cancel", key="analyze.cancel", icon=":material/cancel:",
                       disabled=job.cancel_requested,
                       help="stop after the current entry; everything finished stays stored"):
            jobs.BOARD.cancel(job.id)
            st.rerun()
        return
    other = _other(session, job)
    if other is not None:
        st.progress(float(other.get("fraction") or 0.0),
                    text=escape.markdown(f"Another analysis of this model and data is running "
                                         f"(pid {other.get('pid')}): "
                                         f"about {format_seconds(other.get('eta_seconds') or 0)} left"))
        return
    if job is not None and job.status == jobs.DONE:
        result = job.result or {}
        st.success(f"Analysis finished: {result.get('computed', 0)} entries computed in "
                   f"{format_seconds(result.get('seconds', 0))} (estimated "
                   f"{format_seconds(result.get('estimated_seconds', 0))}).")
    elif job is not None and job.status in (jobs.FAILED, jobs.CANCELLED):
        st.warning(escape.markdown(f"Analysis {job.status}: {job.error or job.message}. What it "
                                   "finished is stored; start it again to continue."))
    pid = pair_id(session)
    planned = st.session_state.get(PLAN_KEY)
    if planned is None or planned[0] != pid:
        if st.button("Estimate the analysis", key="analyze.plan", icon=":material/schedule:",
                     help="count what is stored and time one forward pass here (a few seconds)"):
            with st.spinner("timing a forward pass…"), run_control.guard(stop=False):
                st.session_state[PLAN_KEY] = (pid, _summary(session))
            st.rerun()
        return
    summary = planned[1]
    if not summary["todo"]:
        st.info(f"Everything is in the store already ({summary['stored']} entries): every page "
                "answers at once.", icon=":material/check_circle:")
        return
    st.info(f"{summary['stored']} entries stored, **{summary['todo']} to compute** and up to "
            f"{summary['waiting']} curve points after them: **about "
            f"{format_seconds(summary['seconds'])}** on this machine (a busy machine takes longer).",
            icon=":material/schedule:")
    if st.button("Analyse this model", type="primary", key="analyze.start",
                 icon=":material/play_arrow:"):
        choice = loading.current_choice()
        with run_control.guard(stop=False):  # over the per-server cap: a message, the page goes on
            jobs.BOARD.start(session, JOB_METHOD, {"pair": pid, "model": choice.model,
                                                   "data": choice.data, "limit": choice.limit},
                             run=_run)
            st.session_state.pop(PLAN_KEY, None)
        st.rerun()
