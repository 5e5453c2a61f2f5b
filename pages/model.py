"""Model: the active variant (metrics, layers, lineage); train a new baseline; upload a checkpoint."""
import hashlib
import json
import time

import streamlit as st

from core.store.checkpoints import MAX_CHECKPOINT_BYTES, SUFFIXES, import_checkpoint
from core.store.workspace import Workspace
from ui import datasets, forms, nav, recovery, resources, state, training_forms, widgets
from ui.job_cards import show_jobs, start_job

nav.leave_legacy_mode()  # a direct link to this page right after a server start

RECENT_S = 300  # finished training runs stay on this page for 5 minutes (then see the Jobs page)

ws = resources.workspace()
v = state.active_variant(ws)

st.title("Model")
st.caption("Look at the active variant (pick it in the sidebar), or make a new root variant: train a registry "
           "model as a background job, or upload a checkpoint you already have.")


def training_runs(w: Workspace):
    """Training jobs worth showing here: queued/running ones, this session's last one, recent ones."""
    mine, now = state.last_job(), time.time()
    shown = [j for j in w.jobs.list(limit=50) if j.kind == "train" and (
        not j.is_final or j.id == mine or (j.finished_at or 0) > now - RECENT_S)]
    return shown[:4]


widgets.flash_box(ws, key="model")

if training_runs(ws):
    st.subheader("Training runs")
    show_jobs(training_runs, key="model-jobs", log=False)
    st.page_link("pages/jobs.py", label="All jobs, with their logs", icon=":material/work_history:")

tab_variant, tab_train, tab_upload = st.tabs(["Active variant", "Train a new baseline", "Upload a checkpoint"])

# ---------------------------------------------------------------- the active variant
with tab_variant:
    if v is None:
        st.info("No variant yet: train a baseline or upload a checkpoint (the other two tabs).", icon=":material/info:")
    else:
        chain = ws.lineage(v.id)
        root = chain[0]
        st.subheader(v.name)
        with st.container(horizontal=True):
            st.badge(v.kind_label, color="gray")
            st.badge(v.arch["name"], color="blue")
            st.badge(v.dataset, color="violet")
            where = "root variant" if v.parent_id is None else f"{len(chain) - 1} step(s) from root {root.name}"
            st.caption(f"id `{v.id}` · {where} · created {widgets.fmt_when(v.created_at)}")
        parent = chain[-2] if len(chain) > 1 else None
        widgets.metric_row(v, root, parent=parent, key="model-metrics", ws=ws)
        if v.notes:
            st.caption(v.notes)
        st.markdown("**Lineage**: its ancestors from the root, and its children")
        widgets.lineage_view(ws, v, key="model-lineage")
        with st.expander("Recipe (the steps that made it from its root, replayable)"):
            st.code(json.dumps(v.recipe, indent=2), language="json")
        st.markdown("**Layers**")
        widgets.layer_dataframe(resources.layer_table(str(ws.root), v.id, v.created_at))
        recovery.manage_variant(ws, v, key="model-manage")

# ---------------------------------------------------------------- train a registry model
with tab_train:
    c1, c2 = st.columns(2)
    with c1:
        dataset = datasets.dataset_select("train-dataset")
    with c2:
        model_name = forms.model_select("train-model")
    summary = resources.registry_summary(model_name, dataset)
    cols = st.columns(4)
    cols[0].metric("Parameters", widgets.human_count(summary["params"]), help=f"{summary['params']:,}")
    cols[1].metric("MACs / image", widgets.human_count(summary["macs"]))
    cols[2].metric("Dense float32 file", widgets.human_bytes(summary["dense_size_bytes"]))
    cols[3].metric("Layers with weights", len(summary["layers"]))
    with st.expander(f"Layers of {model_name}"):
        widgets.layer_dataframe(summary["layers"])
    config = training_forms.train_form(model_name, dataset, key="train")
    if config is not None:
        start_job(ws, "train", config)  # the run shows at the top of the page, live

# ---------------------------------------------------------------- upload a checkpoint
with tab_upload:
    st.markdown("A **safetensors** file, or a PyTorch **.pt / .pth state_dict** (tensors only), for one of the "
                "registered architectures. Files are read as data: a checkpoint that would run code when unpickled "
                "is refused. The new variant is measured on the dataset's full test split.")
    up = st.file_uploader("Checkpoint", type=list(SUFFIXES), key="ckpt-file",
                          max_upload_size=MAX_CHECKPOINT_BYTES // 1_000_000)
    c1, c2, c3 = st.columns(3)
    with c1:
        up_model = forms.model_select("ckpt-model", label="Architecture")
    with c2:
        up_dataset = datasets.dataset_select("ckpt-dataset", label="Trained on")
    with c3:
        up_name = st.text_input("Name (optional)", key="ckpt-name",
                                placeholder=up.name if up is not None else "uploaded checkpoint")
    if st.button("Add to workspace", type="primary", key="ckpt-add", disabled=up is None,
                 icon=":material/upload:"):
        data = up.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        seen = state.imported_uploads().get(f"{digest}:{up_model}:{up_dataset}")
        if seen:
            st.info(f"This file was already imported as variant `{seen}`.")
        else:
            # a refused file (CheckpointError, a ValueError) or a workspace that cannot be written:
            # one error box either way, never a traceback
            with st.spinner(f"Checking {up.name} against {up_model} and measuring it on the test split…"):
                new = recovery.run_or_report(lambda: import_checkpoint(
                    ws, data, up.name, model_name=up_model, dataset=up_dataset, name=up_name.strip() or None),
                    f"{up.name} was not added")
            if new is not None:
                state.imported_uploads()[f"{digest}:{up_model}:{up_dataset}"] = new.id
                state.request_active_variant(new.id)
                state.set_flash(f"Added {new.name} (`{new.id}`): test accuracy {new.metrics['accuracy']:.2%}. "
                                "It is now the active variant.")
                st.rerun()
