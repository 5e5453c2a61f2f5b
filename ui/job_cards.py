"""Job cards: a card per job, and the one polling fragment that refreshes them while they run.

Polling happens only while at least one shown job is queued or running: `show_jobs` then renders
the cards inside an `st.fragment(run_every=1.0)`. When the last of them finishes, the fragment
asks for one full rerun (so the sidebar and the page see a new variant) and the cards are then
drawn statically, which stops the timer.
"""
from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from core.run import jobs
from core.store.jobstore import Job
from core.store.workspace import Workspace
from core.viz.charts import has_curves, training_curves
from ui import resources, state
from ui.widgets import fmt_duration, fmt_when

POLL_S = 1.0
LOG_LINES = 40
STATE_BADGE = {"queued": ("gray", ":material/schedule:"), "running": ("blue", ":material/autorenew:"),
               "done": ("green", ":material/check:"), "failed": ("red", ":material/error:"),
               "cancelled": ("orange", ":material/block:"), "interrupted": ("violet", ":material/power_off:")}


def start_job(ws: Workspace, kind: str, config) -> str | None:
    """Queue a job from a page with its typed config. A config the engine refuses is shown as an
    error (nothing queued); otherwise the page reruns so the new job's card appears and polls."""
    from ui.recovery import run_or_report

    job_id = run_or_report(lambda: jobs.submit(ws, kind, config), "Cannot start")   # titled by the task's config
    if job_id is None:
        return None
    state.set_last_job(job_id)
    st.rerun()
    return job_id  # not reached: st.rerun() ends this run


def kind_title(kind: str) -> str:
    """'prune_recover' -> 'Prune and recover' (the registered task's title)."""
    from core.tasks import get_task

    try:
        return get_task(kind).title
    except ValueError:
        return kind


def short_device(name: str | None) -> str:
    """'cuda: NVIDIA H100 80GB HBM3' -> 'NVIDIA H100 80GB HBM3'; 'cpu: x86_64, 2 threads' -> 'CPU'."""
    if not name:
        return "–"
    if name.startswith("cuda: "):
        return name[len("cuda: "):]
    return "CPU" if name.startswith("cpu") else name


def _open_variant(variant_id: str) -> None:
    state.set_active_variant(variant_id)


Extra = Callable[[Workspace, Job], None]   # draws a job's own result (a chart) inside its card


def job_card(job: Job, *, key: str, curves: bool = True, log: bool = True, extra: Extra | None = None) -> None:
    """Everything about one job: state, progress, numbers, curves, `extra` (a task's own chart),
    log tail, Cancel, its variant."""
    ws = resources.workspace()
    color, icon = STATE_BADGE.get(job.state, ("gray", None))
    with st.container(border=True, key=f"{key}-card-{job.id}"):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.badge(job.state, icon=icon, color=color)
            st.markdown(f"**{job.title or job.kind}**")
            where = f" · {job.runner} runner on {job.node}" if job.runner and job.node else ""
            st.caption(f"job `{job.id}` · {kind_title(job.kind)}{where}")
        if job.state == "running":
            st.progress(min(max(job.progress, 0.0), 1.0), text=f"{job.progress:.0%} · {job.message or 'running'}")
        elif job.state == "queued":
            ahead = [j for j in resources.job_list(states=("queued", "running")) if j.created_at < job.created_at]
            st.progress(0.0, text=f"queued: waiting for {len(ahead)} job(s) ahead of it "
                                  f"(at most {jobs.max_jobs()} run at once)")
        elif job.state == "failed":
            st.error(f"Failed: {job.error or job.message}", icon=":material/error:")
        elif job.state == "interrupted":
            st.warning(f"Interrupted: {job.error or job.message}", icon=":material/power_off:")
        elif job.state == "cancelled":
            st.warning(job.message or "Cancelled", icon=":material/block:")
        else:
            st.progress(1.0, text=job.message or "done")

        cols = st.columns(4)
        cols[0].metric("Duration", fmt_duration(job.duration_s))
        cols[1].metric("Device", short_device(job.device), help=job.device)
        cols[2].metric("Started", fmt_when(job.started_at).split(" ")[-1] if job.started_at else "–",
                       help=f"queued {fmt_when(job.created_at)}, started {fmt_when(job.started_at)}, "
                            f"finished {fmt_when(job.finished_at)}")
        produced = resources.variant(job.variant_id) if job.variant_id else None
        if produced is not None:
            acc = produced.metrics.get("accuracy")
            cols[3].metric("Test accuracy", f"{acc:.2%}" if acc is not None else "–")
        elif job.variant_id:
            cols[3].metric("Variant", "deleted")

        if curves:
            events = resources.job_events(job.id)
            if has_curves(events):
                # built once per new batch of events, for every session that shows this job
                fig = resources.figure(("curves", job.id, events[-1]["seq"], job.is_final),
                                       lambda: training_curves(list(events), full_range=not job.is_final))
                st.plotly_chart(fig, key=f"{key}-curves-{job.id}", width="stretch")
            elif job.state == "running":
                st.caption("Curves appear after the first logged steps.")
        if extra is not None:
            extra(ws, job)

        with st.container(horizontal=True):
            if not job.is_final:
                if st.button("Cancel", key=f"{key}-cancel-{job.id}", icon=":material/stop_circle:",
                             help="Stop this job; a running worker stops within a second or two"):
                    with st.spinner("Cancelling…"):
                        jobs.cancel(ws, job.id)
                    st.rerun(scope="app")
            if produced is not None:
                is_active = state.active_variant_id() == produced.id
                if st.button(f"Open variant {produced.name}" if not is_active else f"{produced.name} is active",
                             key=f"{key}-open-{job.id}", on_click=_open_variant, args=(produced.id,),
                             icon=":material/arrow_forward:", type="primary" if not is_active else "secondary",
                             help="Make the variant this job made the active one and open it on the Model page"):
                    st.switch_page("pages/model.py")
        if log and job.log:
            with st.expander("Log (last lines)"):
                st.code("\n".join(job.log.splitlines()[-LOG_LINES:]), language=None)


@st.fragment(run_every=POLL_S)
def _live(select: Callable[[Workspace], list[Job]], key: str, curves: bool, log: bool, empty: str,
          extra: Extra | None) -> None:
    resources.reap_jobs()
    current = select(resources.workspace())
    _cards(current, key, curves, log, empty, extra)
    if all(j.is_final for j in current):
        st.rerun(scope="app")  # once: the page then draws the finished jobs statically


def _cards(current: list[Job], key: str, curves: bool, log: bool, empty: str, extra: Extra | None) -> None:
    if not current and empty:
        st.info(empty)
    for job in current:
        job_card(job, key=key, curves=curves, log=log, extra=extra)


def show_jobs(select: Callable[[Workspace], list[Job]], *, key: str, curves: bool = True, log: bool = True,
              empty: str = "", extra: Extra | None = None) -> None:
    """Cards for the jobs `select(workspace)` returns, read again every second while any of them
    is queued or running (so progress moves, new jobs appear and `extra` charts grow), drawn once
    otherwise. The one polling fragment of the app: pages never poll on their own."""
    resources.reap_jobs()
    current = select(resources.workspace())
    if any(not j.is_final for j in current):
        _live(select, key, curves, log, empty, extra)
    else:
        _cards(current, key, curves, log, empty, extra)
