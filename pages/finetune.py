"""Fine-tune: train the active variant further (masked zeros and shrunk shapes kept, the best epoch
restored) into a child variant, or transfer a variant or a torchvision model to another dataset,
a built-in one or an uploaded zip of class folders. Both run as background jobs."""
import streamlit as st

from core.data.datasets import get_info
from ui import finetune_view as view
from ui import nav, resources, state, widgets
from ui.jobs_view import show_jobs, start_job

nav.leave_legacy_mode()  # a direct link to this page right after a server start
view.follow_qat()        # "QAT on the Quantize page" was just clicked

K = view.K

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Fine-tune")
st.caption("Train a variant further on its own dataset (the result is a child variant with its recipe), or "
           "transfer it, or a torchvision model, to another dataset's classes. Both run as background jobs: "
           "watch validation accuracy per epoch below, from any browser session, and cancel at any time.")
view.explainer()
widgets.flash_box(ws, key=K + "flash")
mode = view.mode_select()

# ---------------------------------------------------------------- fine-tune the active variant

if mode == view.FINETUNE:
    if v is None:
        st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    elif view.is_quantized(v):
        view.refusal(ws, v)
    else:
        st.markdown(view.what_finetuning_keeps(v) + f" It trains on **{v.dataset}**, and the child is measured on "
                    "the full test split, next to its parent.")
        config = view.finetune_form(v)
        if config is not None:
            start_job(ws, "finetune", config)
    st.subheader("Fine-tune jobs")
    show_jobs(lambda w: view.related_jobs(view.FINETUNE, v.id if v else None), key=K + "jobs", curves=False,
              log=False, extra=view.job_chart,
              empty="No fine-tune job for this variant yet: the settings above start one.")

# ---------------------------------------------------------------- transfer to another dataset

else:
    st.markdown("Replace the last layer by a new one with one output per class of the chosen dataset, then train: "
                "only the new head (frozen backbone), or every layer. The result is a new root variant on that "
                "dataset.")
    source, pretrained, source_kind = view.source_controls(v)
    dataset = view.dataset_select(ws, default="digits")
    view.upload_section(ws, v)
    samples = view.sample_grid(dataset)
    blocked = None
    if samples is not None and samples["info"].name != dataset:     # a built-in one missing here: a fallback was read
        blocked = f"{get_info(dataset, ws.root).title} is not on this machine and could not be downloaded: choose " \
                  "another dataset, or upload it as a zip of class folders."
    elif source_kind == view.SOURCE_VARIANT and samples is not None:
        transfer, _ = view.transfer_api()
        blocked = transfer.transfer_refusal(v, get_info(dataset, ws.root),
                                           None if view.is_quantized(v) else resources.model(v))
    elif samples is None:
        blocked = "The dataset cannot be read: choose another one."
    head_note = None
    if source_kind == view.SOURCE_VARIANT and not blocked:
        model, info = resources.model(v), get_info(dataset, ws.root)
        head_note = lambda freeze: view.head_summary(model, v.name, info, freeze)  # noqa: E731
    st.subheader("Training")
    config = view.transfer_form(source, pretrained, dataset, blocked, head_note)
    if config is not None:
        start_job(ws, "transfer", config)
    st.subheader("Transfer jobs")
    show_jobs(lambda w: view.related_jobs(view.TRANSFER, v.id if v else None), key=K + "tr-jobs", curves=False,
              log=False, extra=view.job_chart, empty="No transfer job yet: the settings above start one.")
