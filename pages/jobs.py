"""Jobs: every background run with its state, progress, curves, log, duration, device and result."""
import streamlit as st

from core.store.jobstore import JOB_STATES
from core.store.workspace import Workspace
from ui import nav, resources, sweep
from ui.job_cards import show_jobs
from ui.widgets import fmt_duration, fmt_when

nav.leave_legacy_mode()  # a direct link to this page right after a server start

SHOW = 30

ws = resources.workspace()
st.title("Jobs")
st.caption("Training and other long runs execute in background worker processes: they keep going when you "
           "reload or close the page, every session sees the same list, and at most a fixed number run at once "
           "(the rest wait in the queue). A worker that dies is marked failed or interrupted with the reason.")

all_jobs = resources.job_list(limit=500)   # shared: read once per change of the database
counts = {s: sum(j.state == s for j in all_jobs) for s in JOB_STATES}
with st.container(horizontal=True, vertical_alignment="center"):
    states = st.pills("Show", list(JOB_STATES), selection_mode="multi", default=list(JOB_STATES), key="jobs-states",
                      format_func=lambda s: f"{s} ({counts[s]})")
    st.button("Refresh", icon=":material/refresh:", key="jobs-refresh")

if all_jobs:
    with st.expander(f"Table of all {len(all_jobs)} jobs"):
        st.dataframe([{"job": j.id, "title": j.title, "state": j.state, "progress": j.progress,
                       "duration": fmt_duration(j.duration_s), "runner": j.runner or "", "node": j.node or "",
                       "device": j.device or "", "variant": j.variant_id or "",
                       "created": fmt_when(j.created_at)} for j in all_jobs],
                     hide_index=True, width="stretch",
                     column_config={"progress": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                                                max_value=1)})


def selected(w: Workspace):
    chosen = set(states or ())
    return [j for j in resources.job_list(limit=200) if j.state in chosen][:SHOW]


show_jobs(selected, key="jobs-page", extra=sweep.job_trials,
          empty="No jobs yet. Start one from the Model page (Train a new baseline)." if not all_jobs
          else "No jobs in the chosen states.")
if len([j for j in all_jobs if j.state in (states or ())]) > SHOW:
    st.caption(f"Showing the latest {SHOW}; the table above lists all of them.")
