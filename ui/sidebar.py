"""The sidebar every page shares: the active-variant picker and the device."""
from __future__ import annotations

import streamlit as st

from core import jobs
from core.workspace import Workspace
from ui import resources, state
from ui.widgets import human_bytes, variant_label


def render(ws: Workspace) -> None:
    # the index is read once per change of the database and shared by every session (resources)
    variants = resources.variants()
    by_id = {v.id: v for v in variants}
    default = state.default_variant_id(ws)
    # the default first, then the rest oldest first, each parent before its children
    ids = ([default] if default else []) + [v.id for v in variants if v.id != default]
    active = state.sync_active_variant(ids, default)
    with st.sidebar:
        if ids:
            st.selectbox("Active variant", ids, key=state.VARIANT_KEY, format_func=lambda i: variant_label(by_id[i]),
                         help="The model every page works on. It is kept in the URL (?variant=…), so a reload "
                              "or a shared link keeps it.")
            v = by_id[active]
            st.caption(f"`{v.id}` · {v.arch.get('name', '?')} on {v.dataset} · {v.kind_label} · "
                       f"{human_bytes(v.metrics.get('size_bytes'))} {v.format} file")
        else:
            st.info("No variants yet. Train a baseline or upload a checkpoint on the Model page.")
        running = resources.job_list(states=("running",))
        queued = resources.job_list(states=("queued",))
        if running or queued:
            st.page_link("pages/jobs.py", label=f"Jobs: {len(running)} running, {len(queued)} queued",
                         icon=":material/autorenew:")
        st.caption(f"Device: **{device_label(resources.device())}** · at most {jobs.max_jobs()} job(s) at once")
    state.mirror_to_url(active)


def device_label(name: str) -> str:
    if name.startswith("cuda: "):
        return f"GPU, {name[len('cuda: '):]}"
    return "CPU" + (f" ({name[len('cpu: '):]})" if name.startswith("cpu: ") else "")
