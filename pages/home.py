"""Home: what the workbench does, the active variant's key numbers, and where to start."""
import streamlit as st

from ui import nav, resources, state, widgets

nav.leave_legacy_mode()  # a direct link to this page right after a server start

ws = resources.workspace()
v = state.active_variant(ws)

st.title("Compression Workbench")
st.markdown(
    "Make neural networks **smaller and faster** and see exactly what it costs in accuracy. "
    f"Start from a trained model, {nav.step_verbs()} it, and every result becomes a new "
    "**variant** in a family tree, measured for real: accuracy on the full test split, the bytes of "
    "the file you would download, and latency on this machine. Long runs (training, fine-tuning) "
    "happen in background jobs that keep going when you close the tab."
)

if v is None:
    st.info("The workspace has no variants yet. Train a first baseline (about a minute on a CPU) or upload "
            "a checkpoint on the **Model** page.", icon=":material/info:")
    st.page_link("pages/model.py", label="Go to the Model page", icon=":material/arrow_forward:")
else:
    root = resources.lineage(v.id)[0]
    with st.container(border=True):
        st.subheader(f"Active variant: {v.name}")
        st.caption(f"`{v.id}` · {v.arch['name']} on {v.dataset} · {v.kind_label} · "
                   f"{'root' if v.parent_id is None else f'child of {v.parent_id}'} · change it in the sidebar")
        widgets.metric_row(v, root, compact=True)

st.subheader("Where to start")
for p in nav.available_pages()[1:]:
    st.page_link(p.file, label=f"**{p.title}**: {p.blurb}", icon=p.icon)
st.caption(f"Workspace: `{ws.root}` · {len(resources.variants())} variant(s) · "
           f"device: {resources.device()}")
