"""The sidebar every page shares: the active-variant picker, the glossary and the device (the
device line is left out in presenter mode)."""
from __future__ import annotations

import streamlit as st

from core.lessons.glossary import GLOSSARY_FILE, load_glossary, search
from core.run import jobs
from core.store.workspace import Workspace
from ui import presenter, resources, state
from ui.widgets import human_bytes, variant_label

GLOSSARY_KEY = "glossary-search"


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
        glossary()
        if not presenter.is_presenter():     # an advanced detail a projected lesson does not need
            st.caption(f"Device: **{device_label(resources.device())}** · at most {jobs.max_jobs()} job(s) at once")
    state.mirror_to_url(active)


@st.cache_data(show_spinner=False, max_entries=4)
def _glossary(mtime_ns: int) -> dict[str, str]:
    return load_glossary()     # keyed by the file's mtime: an edited glossary shows at the next rerun


@st.fragment     # typing a search reruns only the glossary, not the page under it
def glossary() -> None:
    """The glossary's terms in a popover, with a search box, reachable from every page."""
    with st.popover("Glossary", icon=":material/menu_book:", width="stretch",
                    help="Sparsity, masked, shrunk, MACs, calibration, SQNR, temperature, Pareto front and the other "
                         "words the pages use, in plain language"):
        try:
            entries = _glossary(GLOSSARY_FILE.stat().st_mtime_ns)
        except (OSError, ValueError) as e:
            st.error(f"The glossary cannot be read: {e}", icon=":material/error:")
            return
        query = st.text_input("Search the glossary", key=GLOSSARY_KEY, placeholder="e.g. sparsity, int8",
                              help="Shows the terms whose name or explanation contains every word typed; empty "
                                   "shows them all.")
        hits = search(entries, query)
        if not hits:
            st.caption(f"No term matches {query.strip()!r}.")
        with st.container(height=420 if len(hits) > 4 else "content", border=False):
            for term, text in hits.items():
                st.markdown(f"**{term}**: {text}")


def device_label(name: str) -> str:
    if name.startswith("cuda: "):
        return f"GPU, {name[len('cuda: '):]}"
    return "CPU" + (f" ({name[len('cpu: '):]})" if name.startswith("cpu: ") else "")
