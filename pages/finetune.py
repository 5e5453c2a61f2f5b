"""Fine-tune: train the active variant further (masked zeros and shrunk shapes kept, the best epoch
restored) into a child variant, or transfer a variant or a torchvision model to another dataset,
a built-in one or an uploaded zip of class folders. Both run as background jobs; their cards draw
validation accuracy per epoch and, when done, the new variant next to where it came from. The
forms are ui/training_forms.py's, the dataset widgets ui/datasets.py's, the figures core.viz.finetune's."""
import json

import streamlit as st

from core.base.units import human_bytes, human_count
from core.data.datasets import get_info
from core.models.transfer import head_summary, transfer_refusal
from core.viz.finetune import val_accuracy_chart, val_points
from ui import datasets, forms, nav, resources, state, widgets
from ui import training_forms as tf
from ui.job_cards import show_jobs, start_job
from ui.widgets import fmt_ms, fmt_pct, make_active_button, table

K = tf.FINETUNE_KEY
FINETUNE, TRANSFER = "finetune", "transfer"
MODE_LABELS = {FINETUNE: "Fine-tune the active variant", TRANSFER: "Transfer to another dataset"}
JOBS_SHOWN = 3
GO_QAT = K + "go-qat"      # set by the QAT way out: the next run opens the Quantize page
EXPLAINER = [
    "**Fine-tune** trains the active variant further on its own dataset. A pruned (masked) variant keeps its zeros "
    "and a shrunk one its shapes, so the child is exactly as sparse as its parent.",
    "Each job's card draws **validation accuracy per epoch**: epoch 0 is the starting weights, the lines are the "
    "parent's and the dense root's accuracy, and the star marks the best epoch, whose weights the child keeps.",
    "**Transfer** gives a variant or a torchvision model a new last layer for another dataset's classes (a built-in "
    "one, or a zip of class folders you upload) and trains it; the dashed line is then chance.",
    "When a job is done, the new variant is measured on the full test split and shown next to where it came from: "
    "accuracy, non-zero parameters, size and latency.",
]


def mode_select() -> str:
    """Fine-tune or transfer; one of them is always chosen."""
    mode = st.segmented_control("What to do", list(MODE_LABELS), format_func=MODE_LABELS.get, key=K + "mode",
                                default=FINETUNE, required=True,
                                help="Fine-tune: train the active variant further on its own dataset (a child "
                                     "variant). Transfer: give a variant or a torchvision model a new head for "
                                     "another dataset's classes and train it there (a new root variant).")
    return mode or FINETUNE


def what_finetuning_keeps(v) -> str:
    """One sentence on what fine-tuning does with this kind of variant."""
    m = v.metrics
    if v.kind.get("masked"):
        params, nonzero = m.get("params"), m.get("nonzero_params")
        zeros = f" ({human_count(params - nonzero)} of {human_count(params)} parameters)" if params and nonzero else ""
        text = (f"**{v.name}** is masked: its pruned zeros{zeros} stay zero. Masks are attached from them, so "
                "every optimizer step leaves them at zero and the child has the same sparsity.")
        if v.kind.get("shrunk"):
            text += " Its physically smaller layers keep their shapes."
        return text
    if v.kind.get("shrunk"):
        return (f"**{v.name}** is shrunk: its layers keep their smaller shapes (nothing grows back); every "
                "remaining weight trains.")
    return f"**{v.name}** is dense: every weight trains."


def refusal(v) -> None:
    """A quantized (or simulated) active variant cannot be fine-tuned: say why and offer both ways
    out: fine-tune its float parent, or quantization-aware training on the Quantize page."""
    parent = resources.variant(v.parent_id) if v.parent_id else None
    float_parent = parent if parent is not None and parent.is_float else None
    what = "quantized" if v.kind.get("quantized") else "simulated-quantized (low-bit codes)"
    st.warning(f"**{v.name}** is {what}: its weights are not float numbers that a gradient step can move, so it "
               "cannot be fine-tuned. Two ways out:", icon=":material/block:")
    with st.container(border=True, key=K + "ways-out"):
        c1, c2 = st.columns(2)
        with c1:
            st.markdown("**1. Fine-tune the float parent**, then quantize the result again.")
            if float_parent is not None:
                make_active_button(float_parent, key=K + "use-parent",
                                   label=f"Make the float parent {float_parent.name} active")
            else:
                st.caption("Its float parent is not in the workspace any more: pick a float variant in the sidebar.")
        with c2:
            st.markdown("**2. Quantization-aware training** (QAT) on the Quantize page: fine-tunes the float model "
                        "with simulated int8, then converts it.")
            st.button("QAT on the Quantize page", key=K + "to-qat", icon=":material/compress:",
                      on_click=_prepare_qat, args=(float_parent.id if float_parent else None,),
                      disabled=nav.page_file("quantize") is None,
                      help="Opens the Quantize page in QAT mode"
                           + (f", with {float_parent.name} active" if float_parent else ""))


def _prepare_qat(parent_id: str | None) -> None:
    """Widget callback: the float parent active and the Quantize page's mode set to QAT; the page
    switches over at the start of the run that follows (`follow_qat`)."""
    if parent_id:
        state.set_active_variant(parent_id)
    st.session_state[forms.QUANT_KEY + "mode"] = "qat"
    st.session_state[GO_QAT] = True


def follow_qat() -> None:
    """Go to the Quantize page when the QAT way out was just chosen."""
    if st.session_state.pop(GO_QAT, False) and nav.page_file("quantize"):
        st.switch_page(nav.page_file("quantize"))


def related_jobs(kind: str, variant_id: str | None) -> list:
    """Jobs of `kind` to show: every queued or running one (any session's), then the latest
    finished one of the active variant (or the one this session started)."""
    live = [j for j in resources.job_list(states=("queued", "running")) if j.kind == kind]
    ours = list(resources.jobs_for(kind, variant_id, key="variant" if kind == FINETUNE else "source", made=True)
                if variant_id else ())
    ours += [j for j in resources.job_list(limit=200) if j.id == state.last_job() and j.kind == kind]
    done = sorted({j.id: j for j in ours if j.is_final}.values(), key=lambda j: -j.created_at)
    return (live + done[:1])[:JOBS_SHOWN]


# ---------------------------------------------------------------- inside a job card

def job_chart(ws, job) -> None:
    """Inside a job card: validation accuracy per epoch with the reference lines, and for a
    finished job the new variant next to where it came from."""
    events = resources.job_events(job.id)
    v = val_points(events, job.kind)
    if not v["points"]:
        if not job.is_final:
            st.caption("The validation-accuracy chart starts when the job has measured the starting weights.")
        return
    refs, note = references(job, v)
    result = job.result or {}
    best = result.get("best_epoch", v["best_epoch"])
    # the best epoch's weights were put back only when a later epoch ran after it
    restored = bool(result.get("restored", best is not None and best != result.get("epochs_run", best)))
    seq = events[-1]["seq"] if events else 0
    fig = resources.figure(
        ("ft-val", job.id, seq, job.state, [list(r) for r in refs], best),
        lambda: val_accuracy_chart(
            v["points"], references=refs, best_epoch=best, epochs=v["epochs"], restored=restored,
            stopped_early=bool(result.get("stopped_early", v["stopped_early"])),
            title=f"{'Fine-tune' if job.kind == FINETUNE else 'Transfer'}: validation accuracy per epoch"))
    st.plotly_chart(fig, key=f"{K}val-{job.id}", width="stretch")
    st.caption(note)
    if job.state == "done":
        result_view(job)


def references(job, v: dict) -> tuple[list[tuple[str, float]], str]:
    """The reference lines of a job's chart, and a caption saying what they are."""
    if job.kind == FINETUNE:
        parent = resources.variant(job.config.get("variant", ""))
        refs: list[tuple[str, float]] = []
        root = resources.lineage(parent.id)[0] if parent is not None else None
        same = root is not None and root.id == parent.id
        if v["start"] is not None:
            refs.append(("parent" + (" (the dense root)" if same else ""), v["start"]))
        if root is not None and not same:
            try:
                refs.append((f"dense root {root.name}", resources.val_accuracy(root)))
            except Exception:  # noqa: BLE001  (a root that cannot be loaded here: no line, said below)
                pass
        note = ("Epoch 0 is the parent before training. The lines are the parent's and the dense root's accuracy "
                "on the same validation images; the star marks the best epoch, whose weights the child keeps.")
        return refs, note
    info = None
    try:
        info = get_info(job.config.get("dataset", ""), resources.workspace().root)
    except (ValueError, OSError):
        pass
    refs = [("chance", 1 / info.num_classes)] if info is not None else []
    note = ("Epoch 0 is the source with its new, untrained head. The dashed line is chance (one class in "
            f"{info.num_classes if info else '?'}); the star marks the best epoch, whose weights are kept.")
    return refs, note


def result_view(job) -> None:
    """The finished job's variant next to where it came from, with its recipe step."""
    child = resources.variant(job.variant_id) if job.variant_id else None
    if child is None:
        return
    result = job.result or {}
    src_id = job.config.get("variant") if job.kind == FINETUNE else result.get("source_id")
    parent = resources.variant(src_id) if src_id else None
    rows = [r for r in (parent, child) if r is not None]

    def row(x) -> dict:
        m = x.metrics
        val = m.get("val_accuracy")
        if x is parent and job.kind == FINETUNE:
            val = result.get("parent_val_accuracy", m.get("val_accuracy"))
        return {"": ("new child" if job.kind == FINETUNE else "new variant") if x is child
                else ("parent" if job.kind == FINETUNE else "source"),
                "variant": x.name, "kind": x.kind_label, "dataset": x.dataset,
                "test accuracy": m.get("accuracy"), "val. accuracy": val,
                "non-zero params": m.get("nonzero_params"), "size": human_bytes(m.get("size_bytes")),
                "latency b64": fmt_ms(m.get("latency_ms_b64"))}

    st.dataframe(table([row(x) for x in rows]), hide_index=True, width="stretch", key=f"{K}cmp-{job.id}",
                 column_config={"test accuracy": st.column_config.NumberColumn(format="percent",
                                                                               help="On the full test split"),
                                "val. accuracy": st.column_config.NumberColumn(format="percent"),
                                "non-zero params": st.column_config.NumberColumn(format="localized")})
    bits = []
    if job.kind == FINETUNE:
        bits.append(f"{result.get('epochs_run', '?')} epoch(s) run")
        if result.get("stopped_early"):
            bits.append("stopped early")
        be = result.get("best_epoch")
        bits.append("no epoch beat the parent: the child keeps its weights" if be == 0
                    else f"best epoch {be} kept")
        if parent is not None and child.metrics.get("accuracy") is not None and parent.metrics.get("accuracy"):
            d = (child.metrics["accuracy"] - parent.metrics["accuracy"]) * 100
            bits.append(f"test accuracy {d:+.2f} pp against the parent")
    else:
        if result.get("trainable_params") is not None:
            bits.append(f"{human_count(result['trainable_params'])} trained, "
                        f"{human_count(result.get('frozen_params') or 0)} frozen parameters")
        bits.append(f"test accuracy {fmt_pct(child.metrics.get('accuracy'))} on {child.dataset}")
    st.caption("; ".join(bits) + ".")
    for n in result.get("notices") or []:
        st.info(n, icon=":material/info:")
    with st.expander("Recipe of the new variant"):
        st.code(json.dumps(child.recipe, indent=1), language="json")


# ---------------------------------------------------------------- the page

nav.leave_legacy_mode()  # a direct link to this page right after a server start
follow_qat()             # "QAT on the Quantize page" was just clicked

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Fine-tune")
st.caption("Train a variant further on its own dataset (the result is a child variant with its recipe), or "
           "transfer it, or a torchvision model, to another dataset's classes. Both run as background jobs: "
           "watch validation accuracy per epoch below, from any browser session, and cancel at any time.")
forms.explainer(EXPLAINER, ["recovery"])
widgets.flash_box(ws, key=K + "flash")
mode = mode_select()

# ---------------------------------------------------------------- fine-tune the active variant

if mode == FINETUNE:
    if v is None:
        st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    elif not v.is_float:
        refusal(v)
    else:
        st.markdown(what_finetuning_keeps(v) + f" It trains on **{v.dataset}**, and the child is measured on "
                    "the full test split, next to its parent.")
        config = tf.finetune_form(v)
        if config is not None:
            start_job(ws, "finetune", config)
    st.subheader("Fine-tune jobs")
    show_jobs(lambda w: related_jobs(FINETUNE, v.id if v else None), key=K + "jobs", curves=False,
              log=False, extra=job_chart, empty="No fine-tune job for this variant yet: the settings above start one.")

# ---------------------------------------------------------------- transfer to another dataset

else:
    st.markdown("Replace the last layer by a new one with one output per class of the chosen dataset, then train: "
                "only the new head (frozen backbone), or every layer. The result is a new root variant on that "
                "dataset.")
    source, pretrained, source_kind = tf.source_controls(v)
    dataset = datasets.workspace_dataset_select(ws, K, default="digits")
    datasets.upload_section(ws, v, K)
    samples = datasets.sample_grid(dataset, K)
    blocked = None
    if samples is not None and samples["info"].name != dataset:     # a built-in one missing here: a fallback was read
        blocked = f"{get_info(dataset, ws.root).title} is not on this machine and could not be downloaded: choose " \
                  "another dataset, or upload it as a zip of class folders."
    elif source_kind == tf.SOURCE_VARIANT and samples is not None:
        blocked = transfer_refusal(v, get_info(dataset, ws.root), resources.model(v) if v.is_float else None)
    elif samples is None:
        blocked = "The dataset cannot be read: choose another one."
    head_note = None
    if source_kind == tf.SOURCE_VARIANT and not blocked:
        model, info = resources.model(v), get_info(dataset, ws.root)
        head_note = lambda freeze: head_summary(model, v.name, info, freeze)  # noqa: E731
    st.subheader("Training")
    config = tf.transfer_form(source, pretrained, dataset, blocked, head_note)
    if config is not None:
        start_job(ws, "transfer", config)
    st.subheader("Transfer jobs")
    show_jobs(lambda w: related_jobs(TRANSFER, v.id if v else None), key=K + "tr-jobs", curves=False,
              log=False, extra=job_chart, empty="No transfer job yet: the settings above start one.")
