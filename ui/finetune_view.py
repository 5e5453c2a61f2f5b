"""How the Fine-tune page draws: the mode choice, the forms that return FinetuneJobConfig /
TransferJobConfig, the class-folder zip upload, the sample grid, the validation-accuracy chart
drawn inside a job card, and the finished child next to its parent. Figures come from
core/viz_finetune; the work from core (the finetune and transfer tasks, core.data.uploaded)."""
from __future__ import annotations

import json
import re

import streamlit as st

from core.base.units import human_bytes, human_count
from core.measure.training import OPTIMIZERS, TrainConfig
from core.store.jobstore import Job
from core.store.workspace import Variant, Workspace
from core.viz import finetune as viz_finetune
from ui import nav, resources, state
from ui.forms import explainer as _explainer
from ui.forms import validated
from ui.widgets import fmt_ms, fmt_pct, make_active_button, table

K = "ft-"                            # every widget key of this page starts with it
FINETUNE, TRANSFER = "finetune", "transfer"
MODE_LABELS = {FINETUNE: "Fine-tune the active variant", TRANSFER: "Transfer to another dataset"}
FINETUNE_SUBSET = 10_000             # training samples by default: a few minutes at most on a 2-core CPU
TRANSFER_SUBSET = 5_000
SOURCE_VARIANT, SOURCE_REGISTRY = "variant", "registry"
PENDING_DATASET = K + "pending-dataset"   # set after an import: selected before the dataset select is drawn
UPLOADER_RUN = K + "uploader-run"         # bumped after an import: a fresh, empty file uploader
JOBS_SHOWN = 3
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
LESSONS = ["recovery"]


def explainer() -> None:
    _explainer(EXPLAINER, LESSONS)


def is_quantized(v: Variant) -> bool:
    return bool(v.kind.get("quantized") or v.kind.get("simulated"))


def mode_select() -> str:
    """Fine-tune or transfer; one of them is always chosen."""
    mode = st.segmented_control("What to do", list(MODE_LABELS), format_func=MODE_LABELS.get, key=K + "mode",
                                default=FINETUNE, required=True,
                                help="Fine-tune: train the active variant further on its own dataset (a child "
                                     "variant). Transfer: give a variant or a torchvision model a new head for "
                                     "another dataset's classes and train it there (a new root variant).")
    return mode or FINETUNE


# ---------------------------------------------------------------- training settings (both modes)

def train_controls(prefix: str, defaults: TrainConfig, subset_default: int) -> tuple[dict, int | None, str | None]:
    """The training widgets shared by both forms: (TrainConfig fields, subset or None, name or None)."""
    k = K + prefix
    c = st.columns(4)
    epochs = c[0].number_input("Epochs", 1, 200, defaults.epochs, 1, key=k + "epochs",
                               help="Passes over the training samples; early stopping may end the run sooner.")
    lr = c[1].number_input("Learning rate", 1e-5, 1.0, float(defaults.lr), 0.005, format="%.4f", key=k + "lr",
                           help="Step size of the optimizer; it decays along a cosine to zero over the run.")
    subset = c[2].number_input("Training samples (0 = all)", 0, 1_000_000, subset_default, 1000, key=k + "subset",
                               help="Train on this many randomly chosen training images for a quick run; "
                                    "validation and the final test measurement always use the whole splits.")
    patience = c[3].number_input("Early stop after (epochs, 0 = never)", 0, 50, defaults.early_stop or 0, 1,
                                 key=k + "patience",
                                 help="End the run when validation accuracy has not improved for this many epochs "
                                      "in a row.")
    c = st.columns(4, vertical_alignment="bottom")
    restore = c[0].checkbox("Keep the best epoch", defaults.restore_best, key=k + "restore",
                            help="End with the weights of the epoch with the best validation accuracy (the "
                                 "starting weights count as epoch 0), not those of the last epoch.")
    optimizer = c[1].selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(defaults.optimizer),
                               key=k + "optimizer",
                               help="SGD with Nesterov momentum 0.9, or Adam/AdamW, with weight decay 5e-4.")
    batch = c[2].number_input("Batch size", 1, 4096, defaults.batch_size, 16, key=k + "batch",
                              help="Images per optimizer step.")
    name = c[3].text_input("Name of the result (optional)", key=k + "name", max_chars=120,
                           help="The new variant's name; left empty, one is made from the source and the step.")
    fields = {**defaults.to_dict(), "epochs": int(epochs), "lr": float(lr), "early_stop": int(patience) or None,
              "restore_best": bool(restore), "optimizer": optimizer, "batch_size": int(batch)}
    st.caption(f"Trains on {f'{int(subset):,} of the' if subset else 'all the'} training images for "
               f"{'up to ' if patience else ''}{int(epochs)} epoch{'s' if epochs != 1 else ''}, measuring validation "
               f"accuracy {'before the first and ' if patience or restore else ''}after each"
               + (f"; stops after {int(patience)} epoch{'s' if patience != 1 else ''} without improvement"
                  if patience else "")
               + ("; keeps the best epoch" if restore else "; keeps the last epoch")
               + ". The result is then measured on the full test split (accuracy, size, latency).")
    return fields, int(subset) or None, name.strip() or None


# ---------------------------------------------------------------- fine-tune

def what_finetuning_keeps(v: Variant) -> str:
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


def refusal(ws: Workspace, v: Variant) -> None:
    """A quantized (or simulated) active variant cannot be fine-tuned: say why and offer both ways
    out: fine-tune its float parent, or quantization-aware training on the Quantize page."""
    parent = resources.variant(v.parent_id) if v.parent_id else None
    float_parent = parent if parent is not None and not is_quantized(parent) else None
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


GO_QAT = K + "go-qat"


def _prepare_qat(parent_id: str | None) -> None:
    """Widget callback: the float parent active and the Quantize page's mode set to QAT; the page
    switches over at the start of the run that follows (`follow_qat`)."""
    from ui.forms import QUANT_KEY

    if parent_id:
        state.set_active_variant(parent_id)
    st.session_state[QUANT_KEY + "mode"] = "qat"
    st.session_state[GO_QAT] = True


def follow_qat() -> None:
    """Go to the Quantize page when the QAT way out was just chosen."""
    if st.session_state.pop(GO_QAT, False) and nav.page_file("quantize"):
        st.switch_page(nav.page_file("quantize"))


def finetune_form(v: Variant):
    """The fine-tune settings and Start; a validated FinetuneJobConfig when started, else None."""
    from core.tasks.finetune import FinetuneJobConfig

    defaults = FinetuneJobConfig(variant=v.id).train
    fields, subset, name = train_controls("ft-", defaults, FINETUNE_SUBSET)
    if not st.button(f"Start fine-tuning {v.name}", type="primary", key=K + "start", icon=":material/play_arrow:",
                     help="Queue a background job; it shows below and on the Jobs page, in every browser session."):
        return None
    return validated(lambda: FinetuneJobConfig(variant=v.id, train=TrainConfig.from_dict(fields), subset=subset,
                                                name=name))


# ---------------------------------------------------------------- transfer: source

def transfer_api():
    """core.models.transfer and the transfer task's config (the transfer engine)."""
    from core.models import transfer
    from core.tasks.transfer import TransferJobConfig

    return transfer, TransferJobConfig


def source_controls(v: Variant | None) -> tuple[str, bool, str]:
    """Where transfer starts: (source: a variant id or a registry model name, pretrained, kind)."""
    transfer, _ = transfer_api()
    kinds = ([SOURCE_VARIANT] if v is not None else []) + [SOURCE_REGISTRY]
    labels = {SOURCE_VARIANT: f"The active variant ({v.name})" if v is not None else "",
              SOURCE_REGISTRY: "A torchvision model (ImageNet weights)"}
    kind = st.radio("Start from", kinds, format_func=labels.get, key=K + "source-kind", horizontal=True,
                    help="A variant keeps everything it learned on its own dataset except its last layer; a "
                         "torchvision model starts from its ImageNet weights when this machine has them.")
    if kind == SOURCE_VARIANT:
        return v.id, True, kind
    models = list(transfer.TRANSFER_MODELS)
    status = {m: transfer.imagenet_weights_status(m) for m in models}
    model = st.selectbox("Model", models, key=K + "registry-model",
                         format_func=lambda m: f"{m}: " + ("ImageNet weights cached" if status[m] is None
                                                           else "no ImageNet weights here (untrained)"),
                         help="Models with ImageNet weights in the registry; the weights are used when they are in "
                              "the torch cache (nothing is downloaded while you wait).")
    have = status[model] is None
    if have:
        st.caption(f":material/check_circle: The ImageNet weights of {model} are in the torch cache.")
    else:
        st.warning(status[model] + " By default it is offered untrained (random weights); tick the box below to "
                   "try the download.", icon=":material/cloud_off:")
    if st.session_state.get(K + "pretrained-for") != (model, have):   # follow the model's weights status
        st.session_state[K + "pretrained"] = have
        st.session_state[K + "pretrained-for"] = (model, have)
    pretrained = st.checkbox("Start from the ImageNet weights" + ("" if have else " (try to download them)"),
                             key=K + "pretrained",
                             help="Unticked, the model starts from random weights: slower to learn, and there are "
                                  "no learned features to freeze.")
    return model, bool(pretrained), kind


# ---------------------------------------------------------------- transfer: dataset

def dataset_select(ws: Workspace, default: str | None = None) -> str:
    """Built-in and uploaded datasets (uploaded ones by name), one of them chosen."""
    from core.data.datasets import list_datasets

    infos = list_datasets(ws.root)
    names = [d.name for d in infos]
    by = {d.name: d for d in infos}
    key = K + "dataset"
    pending = st.session_state.pop(PENDING_DATASET, None)
    if pending in names:
        st.session_state[key] = pending
    if st.session_state.get(key) not in names:
        st.session_state.pop(key, None)
        uploaded = [d.name for d in infos if d.uploaded]
        st.session_state[key] = uploaded[-1] if uploaded else (default if default in names else names[0])
    return st.selectbox("Dataset", names, key=key,
                        format_func=lambda n: f"{by[n].title} ({'uploaded, ' if by[n].uploaded else ''}"
                                              f"{by[n].num_classes} classes, {by[n].in_channels}x{by[n].image_size}"
                                              f"x{by[n].image_size})",
                        help="The dataset to train on: a built-in one, or a zip of class folders uploaded below "
                             "(it then appears in every page's dataset list).")


def sample_grid(name: str) -> dict | None:
    """The stored images the model will see, a row per class, with the counts."""
    try:
        with st.spinner("Reading sample images…"):
            s = resources.dataset_samples(name)
    except Exception as e:  # noqa: BLE001  (an unreadable dataset is one box, not a traceback)
        st.error(f"Cannot read the dataset {name!r}: {e}", icon=":material/error:")
        return None
    info = s["info"]
    if s["notice"]:
        st.info(s["notice"], icon=":material/info:")
    sizes = s["sizes"]
    fig = resources.figure(("ft-grid", name, s["stamp"], info.name),
                           lambda: viz_finetune.sample_grid_figure(
                               s["grid"], counts=s["counts"],
                               title=f"{info.name}: sample images per class"))
    st.plotly_chart(fig, key=K + "grid-chart", width="content", config={"displayModeBar": False})
    st.caption(f"{info.title}: {info.num_classes} classes (images per class in brackets), "
               f"{info.in_channels}x{info.image_size}x{info.image_size} "
               f"({'greyscale' if info.in_channels == 1 else 'colour'}); {sizes['train']:,} training, "
               f"{sizes['val']:,} validation and {sizes['test']:,} test images. These are the stored images, as the "
               "model sees them (resized; a greyscale photo with a light background is inverted).")
    return s


# ---------------------------------------------------------------- transfer: upload

def slug(filename: str) -> str:
    """A dataset name from a file name: 'My Cats & Dogs.zip' -> 'my-cats-dogs'."""
    stem = re.sub(r"\.zip$", "", filename or "", flags=re.I).lower()
    s = re.sub(r"[^a-z0-9_-]+", "-", stem).strip("-_")[:40].strip("-_")
    return s or "my-dataset"


def upload_section(ws: Workspace, v: Variant | None) -> str | None:
    """The 'Upload a class-folder zip' expander: checks the zip, stores it under its name and
    returns that name (the caller selects it), or None. A refusal is one error box; the file and
    the settings stay as they were."""
    from core.base import limits
    from core.data.uploaded import CHANNEL_CHOICES, MIN_IMAGE_SIZE, DatasetUploadError, import_image_zip

    run = st.session_state.get(UPLOADER_RUN, 0)
    shape = _info(ws, v.dataset) if v is not None else None
    with st.expander("Upload a class-folder zip", icon=":material/upload_file:",
                     expanded=bool(st.session_state.get(f"{K}zip-{run}"))):
        st.markdown("One folder per class with its images inside (the ImageFolder layout), zipped: "
                    "`cat/001.jpg`, `cat/002.png`, …, `dog/001.jpg`, … (optionally all inside one top-level folder). "
                    f"At least {limits.MIN_IMAGES_PER_CLASS} images per class; each class is split 70/15/15 into "
                    "training, validation and test images.")
        up = st.file_uploader("Class-folder zip", type=["zip"], key=f"{K}zip-{run}",
                              max_upload_size=limits.MAX_ZIP_BYTES // 1_000_000,
                              help=f"A .zip of class folders, up to {limits.MAX_ZIP_BYTES // 1_000_000} MB. The whole "
                                   "archive is checked before anything is stored.")
        c = st.columns(4)
        name = c[0].text_input("Dataset name", key=K + "zip-name", max_chars=40,
                               placeholder=slug(up.name) if up is not None else "e.g. cats-vs-dogs",
                               help="Lowercase letters, digits, '-' and '_' (up to 40); left empty, it is made from "
                                    "the file name. The dataset is stored in the workspace under this name.")
        channels = c[1].radio("Images", CHANNEL_CHOICES, key=K + "zip-channels", horizontal=True,
                              index=CHANNEL_CHOICES.index(shape.in_channels) if shape else 0,
                              format_func={1: "Greyscale", 3: "Colour"}.get,
                              help="Greyscale (1 channel) fits the Fashion-MNIST models; colour (3 channels) the "
                                   "CIFAR-10 ones. Transferring a variant needs its number of channels.")
        size = c[2].number_input("Image size (px)", MIN_IMAGE_SIZE, limits.MAX_DATASET_IMAGE_SIZE,
                                 shape.image_size if shape else 28, 1, key=K + "zip-size",
                                 help="Every image is resized to a square of this side: 28 for the Fashion-MNIST "
                                      "models, 32 for the CIFAR-10 ones.")
        invert = c[3].selectbox("Invert greyscale", ["auto", "always", "never"], key=K + "zip-invert",
                                disabled=channels != 1,
                                help="The Fashion-MNIST models expect a light object on a dark background: auto "
                                     "inverts an image whose border is light.")
        if shape is not None:
            st.caption(f"Defaults follow the active variant's input ({shape.in_channels}x{shape.image_size}x"
                       f"{shape.image_size}), so it can be transferred to the new dataset.")
        go = st.button("Check and store the dataset", key=K + "zip-import", icon=":material/upload:",
                       disabled=up is None, type="primary",
                       help="Validates the whole zip first; nothing is written unless every image is usable.")
        if not go or up is None:
            _uploaded_list(ws)
            return None
        data = up.getvalue()
        ds_name = (name or "").strip() or slug(up.name)
        bar = st.progress(0.0, text="Checking the zip…")

        def progress(done: int, total: int) -> None:
            if total and (done == total or done % 25 == 0):
                bar.progress(done / total, text=f"Decoding images: {done:,} of {total:,}")

        try:
            info = import_image_zip(ws.root, data, ds_name, in_channels=int(channels), image_size=int(size),
                                    invert={"auto": None, "always": True, "never": False}[invert],
                                    filename=up.name, progress=progress)
        except DatasetUploadError as e:
            bar.empty()
            st.error(f"Not stored: {e}", icon=":material/error:")
            _uploaded_list(ws)
            return None
        bar.empty()
        st.session_state[UPLOADER_RUN] = run + 1     # an empty uploader next time
        st.session_state.pop(K + "zip-name", None)
        state.set_flash(f"Stored the dataset **{info.name}**: {info.description}. It is selected below and listed "
                        "on every page that offers datasets.")
        st.session_state[PENDING_DATASET] = info.name
        st.rerun()
    return None


def _info(ws: Workspace, name: str):
    from core.data.datasets import get_info

    try:
        return get_info(name, ws.root)
    except ValueError:
        return None


def _uploaded_list(ws: Workspace) -> None:
    from core.data.uploaded import list_uploaded

    ups = list_uploaded(ws.root)
    if not ups:
        st.caption("No uploaded datasets yet.")
        return
    st.markdown("**Uploaded datasets**")
    for d in ups:
        with st.container(horizontal=True, vertical_alignment="center", key=f"{K}up-{d.name}"):
            st.markdown(f"`{d.name}`: {d.description}")
            with st.popover("Delete", icon=":material/delete:", help=f"Remove the dataset {d.name} from the "
                                                                      "workspace"):
                st.markdown(f"Delete **{d.name}**? Variants trained on it keep their weights and metrics; measuring "
                            "them again needs the dataset back.")
                st.button(f"Delete {d.name}", key=f"{K}del-{d.name}", type="primary", on_click=_delete_dataset,
                          args=(str(ws.root), d.name), icon=":material/delete:",
                          help="Removes the stored images of this dataset; there is no undo.")


def _delete_dataset(root: str, name: str) -> None:
    from core.data.uploaded import DatasetUploadError, delete_uploaded

    try:
        delete_uploaded(name, root)
    except (DatasetUploadError, OSError) as e:
        state.set_flash(f"Could not delete {name}: {e}")
        return
    if st.session_state.get(K + "dataset") == name:
        st.session_state.pop(K + "dataset", None)
    state.set_flash(f"Deleted the dataset {name}.")


# ---------------------------------------------------------------- transfer: form

def transfer_form(source: str, pretrained: bool, dataset: str, blocked: str | None, head_note=None):
    """Freeze, training settings and Start; a validated TransferJobConfig when started, else None.
    `head_note(freeze)` says what replacing the head does (None: nothing to say)."""
    _, TransferJobConfig = transfer_api()
    defaults = TransferJobConfig(source=source, dataset=dataset).train
    untrained = not pretrained and not _is_variant(source)
    freeze_help = ("Keep every layer but the new last one fixed: fast, and keeps the features learned before. "
                   "Untick to train every layer (better when the new images look different).")
    if untrained:   # nothing learned to keep: shown unticked and fixed (its own key keeps the user's choice)
        freeze = st.checkbox("Freeze the backbone (train only the new head)", False, key=K + "freeze-untrained",
                             disabled=True, help=freeze_help)
        st.caption("An untrained model has no features to keep: every layer trains.")
    else:
        freeze = st.checkbox("Freeze the backbone (train only the new head)", True, key=K + "freeze",
                             help=freeze_help)
    if head_note:
        st.caption(head_note(bool(freeze)))
    fields, subset, name = train_controls("tr-", defaults, TRANSFER_SUBSET)
    if blocked:
        st.warning(blocked, icon=":material/block:")
    if not st.button("Start transfer learning", type="primary", key=K + "tr-start", icon=":material/play_arrow:",
                     disabled=bool(blocked),
                     help="Queue a background job; it shows below and on the Jobs page, in every browser session."):
        return None
    return validated(lambda: TransferJobConfig(source=source, dataset=dataset, freeze_backbone=bool(freeze),
                                                pretrained=bool(pretrained), train=TrainConfig.from_dict(fields),
                                                subset=subset, name=name))


def head_summary(model, source_name: str, info, freeze: bool) -> str:
    """What replacing the classifier of `model` for `info`'s classes does, in numbers."""
    from core.models.registry import classifier_name

    head = classifier_name(model)
    if not head:
        return ""
    old = model.get_submodule(head)
    new_params = old.in_features * info.num_classes + (info.num_classes if old.bias is not None else 0)
    total = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in old.parameters()) + new_params
    trains = f"only its {new_params:,} parameters train" if freeze else f"all {total:,} parameters train"
    return (f"The head `{head}` of {source_name} ({old.out_features} outputs) becomes a new, untrained `{head}` with "
            f"{info.num_classes} outputs, one per class of {info.title}: {trains}.")


def _is_variant(source: str) -> bool:
    return resources.variant(source) is not None


# ---------------------------------------------------------------- jobs of this page

def related_jobs(kind: str, variant_id: str | None) -> list[Job]:
    """Jobs of `kind` to show: every queued or running one (any session's), then the latest
    finished one of the active variant (or the one this session started)."""
    key = "variant" if kind == FINETUNE else "source"
    js = [j for j in resources.job_list(limit=200) if j.kind == kind]
    live = [j for j in js if not j.is_final]
    mine = state.last_job()
    done = [j for j in js if j.is_final and (j.id == mine or (variant_id is not None and (
        j.config.get(key) == variant_id or j.variant_id == variant_id)))]
    return (live + done[:1])[:JOBS_SHOWN]


def job_chart(ws: Workspace, job: Job) -> None:
    """Inside a job card: validation accuracy per epoch with the reference lines, and for a
    finished job the new variant next to where it came from."""
    events = resources.job_events(job.id)
    v = viz_finetune.val_points(events, job.kind)
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
        lambda: viz_finetune.val_accuracy_chart(
            v["points"], references=refs, best_epoch=best, epochs=v["epochs"], restored=restored,
            stopped_early=bool(result.get("stopped_early", v["stopped_early"])),
            title=f"{'Fine-tune' if job.kind == FINETUNE else 'Transfer'}: validation accuracy per epoch"))
    st.plotly_chart(fig, key=f"{K}val-{job.id}", width="stretch")
    st.caption(note)
    if job.state == "done":
        result_view(job)


def references(job: Job, v: dict) -> tuple[list[tuple[str, float]], str]:
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
        from core.data.datasets import get_info

        info = get_info(job.config.get("dataset", ""), resources.workspace().root)
    except (ValueError, OSError):
        pass
    refs = [("chance", 1 / info.num_classes)] if info is not None else []
    note = ("Epoch 0 is the source with its new, untrained head. The dashed line is chance (one class in "
            f"{info.num_classes if info else '?'}); the star marks the best epoch, whose weights are kept.")
    return refs, note


def result_view(job: Job) -> None:
    """The finished job's variant next to where it came from, with its recipe step."""
    child = resources.variant(job.variant_id) if job.variant_id else None
    if child is None:
        return
    result = job.result or {}
    src_id = job.config.get("variant") if job.kind == FINETUNE else result.get("source_id")
    parent = resources.variant(src_id) if src_id else None
    rows = [r for r in (parent, child) if r is not None]

    def row(x: Variant) -> dict:
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
