"""Forms of the training steps: a new baseline (Model page), a distillation (Distill page), a
fine-tune and a transfer (Fine-tune page). Each returns a validated job config when started, else
None with the engine's reason shown."""
from __future__ import annotations

import math

import streamlit as st

from core.compress.distill.kd import DistillConfig
from core.measure.training import OPTIMIZERS, TrainConfig
from core.models import transfer
from core.models.registry import DEFAULT_STUDENT, default_student, list_models
from core.store.workspace import Variant
from core.tasks import TrainJobConfig
from core.tasks.distill import DistillJobConfig
from core.tasks.finetune import FinetuneJobConfig
from core.tasks.transfer import TransferJobConfig
from ui import resources
from ui.forms import validated
from ui.widgets import variant_label


def train_form(model: str, dataset: str, key: str = "train") -> TrainJobConfig | None:
    """Hyperparameters of a new baseline; returns a validated config when submitted, else None."""
    with st.form(key=f"{key}-form", border=True):
        c = st.columns(4)
        epochs = c[0].number_input("Epochs", min_value=1, max_value=200, value=3, step=1, key=f"{key}-epochs",
                               help="Passes over the training images; 3 is a quick first baseline.")
        subset = c[1].number_input("Training samples (0 = all)", min_value=0, max_value=1_000_000, value=0, step=500,
                                   key=f"{key}-subset",
                                   help="Train on a random subset for a quick run; validation and test stay whole.")
        batch = c[2].number_input("Batch size", min_value=1, max_value=4096, value=64, step=16, key=f"{key}-batch",
                                help="Images per optimizer step; 64 is a good default on a CPU.")
        seed = c[3].number_input("Seed", min_value=0, max_value=2**31 - 1, value=0, step=1, key=f"{key}-seed",
                               help="Fixes the initial weights and the batch order, so a run can be repeated.")
        c = st.columns(4)
        lr = c[0].number_input("Learning rate", min_value=1e-6, max_value=10.0, value=0.05, step=0.01, format="%.4f",
                               key=f"{key}-lr",
                               help="Step size of the optimizer; it decays along a cosine. 0.05 suits SGD, about "
                                    "0.001 suits Adam.")
        optimizer = c[1].selectbox("Optimizer", ["sgd", "adam", "adamw"], key=f"{key}-opt",
                                   help="SGD with Nesterov momentum 0.9, or Adam/AdamW; cosine learning-rate decay")
        name = c[2].text_input("Name (optional)", key=f"{key}-name", placeholder=f"{model} ({dataset})",
                                 help="The new variant's name; left empty, the model and dataset name it.")
        c[3].write("")
        submitted = st.form_submit_button("Start training", type="primary", icon=":material/play_arrow:",
                                          help="Queue a background job; it shows on the Jobs page.")
    if not submitted:
        return None
    try:
        return TrainJobConfig(model=model, dataset=dataset, subset=int(subset) or None, name=name.strip() or None,
                              train=TrainConfig(epochs=int(epochs), batch_size=int(batch), lr=float(lr),
                                                optimizer=optimizer, seed=int(seed)))
    except ValueError as e:
        st.error(f"Cannot start: {e}")
        return None


# ---------------------------------------------------------------- distillation

DISTILL_KEY = "distill-"    # every widget key of the Distill page starts with it
DK = DISTILL_KEY
DEFAULTS = DistillJobConfig(teacher="-", student=DEFAULT_STUDENT, subset=10_000,
                            distill=DistillConfig(temperature=4.0, alpha=0.9, epochs=2, lr=0.005, seed=0))
SOURCES = {"model": "A new model from the registry (untrained)", "variant": "An existing variant (pruned, shrunk, …)"}


def _keep_valid(key: str, options: list) -> None:
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


def quantized_message(v: Variant, role: str) -> str:
    """Why a quantized variant cannot be the teacher or the student, and which float one to use."""
    parent = resources.variant(v.parent_id) if v.parent_id else None
    what = "quantized (integer kernels)" if v.kind.get("quantized") else "simulated-quantized (weight-only codes)"
    instead = (f" Use its float parent **{parent.name}** instead" if parent is not None and parent.is_float
               else " Use a float variant instead")
    after = " and quantize the distilled student afterwards." if role == "student" else "."
    return (f"**{v.name}** is {what}: it cannot be the {role}. Distillation trains with float gradients and "
            f"reads float logits.{instead}{after}")


def distill_form(variants: tuple[Variant, ...], active: Variant | None) -> DistillJobConfig | None:
    """The teacher, the student and the settings; returns a validated DistillJobConfig, or None
    (with the reason shown) when it cannot start: a quantized teacher or student, two datasets,
    a setting the engine refuses."""
    by_id = {v.id: v for v in variants}
    ids = list(by_id)
    floats = [v.id for v in variants if v.is_float]
    if active is not None and active.id in floats:
        teacher_default = active.id
    else:
        teacher_default = "base-lenet5" if "base-lenet5" in floats else (floats[0] if floats else ids[0])
    _keep_valid(DK + "teacher", ids)
    _keep_valid(DK + "student-variant", ids)

    c_teacher, c_source, c_student = st.columns([3, 2, 3])
    teacher_id = c_teacher.selectbox(
        "Teacher", ids, index=ids.index(teacher_default), key=DK + "teacher",
        format_func=lambda i: variant_label(by_id[i]),
        help="A trained float variant whose softened class scores the student learns to imitate (default: the "
             "active variant).")
    teacher = by_id[teacher_id]
    source = c_source.radio("Student", list(SOURCES), format_func=SOURCES.get, key=DK + "student-source",
                            help="Train a fresh small model from the registry, or train an existing variant "
                                 "further against the teacher (a pruned one keeps its zeros, a shrunk one its shapes).")
    if source == "model":
        names = [s.name for s in list_models()]
        desc = {s.name: s.description for s in list_models()}
        _keep_valid(DK + "student-model", names)
        default = default_student((teacher.arch or {}).get("name"))
        student = c_student.selectbox(
            "Student model", names, index=names.index(default), key=DK + "student-model",
            format_func=lambda n: f"{n}: {desc[n]}",
            help="Built untrained for the teacher's dataset; the result is a new root variant whose recipe names "
                 "the teacher. The torchvision models take minutes per epoch on a CPU.")
        student_v = None
    else:
        others = [i for i in floats if i != teacher_id] or ids
        smallest = min(others, key=lambda i: by_id[i].metrics.get("params") or math.inf)
        student = c_student.selectbox(
            "Student variant", ids, index=ids.index(smallest), key=DK + "student-variant",
            format_func=lambda i: variant_label(by_id[i]),
            help="Trained further against the teacher; the result is its child. Default: the smallest float "
                 "variant other than the teacher.")
        student_v = by_id[student]

    st.markdown("**Loss and budget**")
    c = st.columns([2, 2, 1, 1.1, 1, 1.4])
    d = DEFAULTS.distill
    temperature = c[0].slider(
        "Temperature T", 1.0, 20.0, d.temperature, 0.5, key=DK + "temperature", format="%.1f",
        help="Softens both models' class scores before they are compared: a higher T shows the student more of "
             "the teacher's ranking of the wrong classes (the soft loss is scaled by T²).")
    alpha = c[1].slider(
        "Soft-loss weight alpha", 0.0, 1.0, d.alpha, 0.05, key=DK + "alpha", format="%.2f",
        help="Total loss = alpha × soft loss (match the teacher) + (1 − alpha) × hard loss (cross-entropy with "
             "the true labels). 0 ignores the teacher.")
    epochs = c[2].number_input("Epochs", 1, 50, d.epochs, key=DK + "epochs",
                               help="Passes over the training images; 2 epochs of 10,000 images take about a "
                                    "minute on this CPU, measuring included.")
    lr = c[3].number_input("Learning rate", 1e-5, 1.0, d.lr, 0.001, format="%.4f", key=DK + "lr",
                           help="SGD with momentum and cosine decay; above 0.01 the T²-scaled soft loss can "
                                "diverge.")
    seed = c[4].number_input("Seed", 0, 2**31 - 1, d.seed, key=DK + "seed",
                             help="Fixes the student's initial weights and the batch order; the ablation reuses it.")
    subset = c[5].number_input("Training images", 0, 1_000_000, DEFAULTS.subset, 1000, key=DK + "subset",
                               help="Train on this many training images (0 = the whole training split); "
                                    "validation and test stay whole.")
    with st.expander("More settings"):
        c = st.columns(3)
        batch = c[0].number_input("Batch size", 1, 4096, d.batch_size, 16, key=DK + "batch",
                                  help="Images per optimizer step")
        optimizer = c[1].selectbox("Optimizer", ["sgd", "adam", "adamw"], key=DK + "optimizer",
                                   help="SGD with Nesterov momentum 0.9, or Adam/AdamW; cosine learning-rate decay")
        name = c[2].text_input("Name of the result (optional)", key=DK + "name",
                               help="Default: the student's name, the teacher's and the settings",
                               placeholder=f"{student if student_v is None else student_v.name} | distilled")

    problems = []
    if not teacher.is_float:
        problems.append(quantized_message(teacher, "teacher"))
    if student_v is not None and not student_v.is_float:
        problems.append(quantized_message(student_v, "student"))
    if student_v is not None and student_v.dataset != teacher.dataset:
        problems.append(f"The student **{student_v.name}** was trained on {student_v.dataset} and the teacher "
                        f"**{teacher.name}** on {teacher.dataset}: distillation needs one dataset.")
    for p in problems:
        st.error(p, icon=":material/block:")
    if problems:
        return None
    try:
        return DistillJobConfig(teacher=teacher_id, student=student, subset=int(subset) or None,
                                name=name.strip() or None,
                                distill=DistillConfig(temperature=float(temperature), alpha=float(alpha),
                                                      epochs=int(epochs), lr=float(lr), seed=int(seed),
                                                      batch_size=int(batch), optimizer=optimizer))
    except ValueError as e:
        st.error(f"Invalid settings: {e}", icon=":material/error:")
        return None


# ---------------------------------------------------------------- fine-tune and transfer

FINETUNE_KEY = "ft-"                 # every widget key of the Fine-tune page starts with it
FK = FINETUNE_KEY
FINETUNE_SUBSET = 10_000             # training samples by default: a few minutes at most on a 2-core CPU
TRANSFER_SUBSET = 5_000
SOURCE_VARIANT, SOURCE_REGISTRY = "variant", "registry"


def train_controls(prefix: str, defaults: TrainConfig, subset_default: int) -> tuple[dict, int | None, str | None]:
    """The training widgets shared by both forms: (TrainConfig fields, subset or None, name or None)."""
    k = FK + prefix
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


def finetune_form(v: Variant):
    """The fine-tune settings and Start; a validated FinetuneJobConfig when started, else None."""
    defaults = FinetuneJobConfig(variant=v.id).train
    fields, subset, name = train_controls("ft-", defaults, FINETUNE_SUBSET)
    if not st.button(f"Start fine-tuning {v.name}", type="primary", key=FK + "start", icon=":material/play_arrow:",
                     help="Queue a background job; it shows below and on the Jobs page, in every browser session."):
        return None
    return validated(lambda: FinetuneJobConfig(variant=v.id, train=TrainConfig.from_dict(fields), subset=subset,
                                                name=name))


def source_controls(v: Variant | None) -> tuple[str, bool, str]:
    """Where transfer starts: (source: a variant id or a registry model name, pretrained, kind)."""
    kinds = ([SOURCE_VARIANT] if v is not None else []) + [SOURCE_REGISTRY]
    labels = {SOURCE_VARIANT: f"The active variant ({v.name})" if v is not None else "",
              SOURCE_REGISTRY: "A torchvision model (ImageNet weights)"}
    kind = st.radio("Start from", kinds, format_func=labels.get, key=FK + "source-kind", horizontal=True,
                    help="A variant keeps everything it learned on its own dataset except its last layer; a "
                         "torchvision model starts from its ImageNet weights when this machine has them.")
    if kind == SOURCE_VARIANT:
        return v.id, True, kind
    models = list(transfer.TRANSFER_MODELS)
    status = {m: transfer.imagenet_weights_status(m) for m in models}
    model = st.selectbox("Model", models, key=FK + "registry-model",
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
    if st.session_state.get(FK + "pretrained-for") != (model, have):   # follow the model's weights status
        st.session_state[FK + "pretrained"] = have
        st.session_state[FK + "pretrained-for"] = (model, have)
    pretrained = st.checkbox("Start from the ImageNet weights" + ("" if have else " (try to download them)"),
                             key=FK + "pretrained",
                             help="Unticked, the model starts from random weights: slower to learn, and there are "
                                  "no learned features to freeze.")
    return model, bool(pretrained), kind


def transfer_form(source: str, pretrained: bool, dataset: str, blocked: str | None, head_note=None):
    """Freeze, training settings and Start; a validated TransferJobConfig when started, else None.
    `head_note(freeze)` says what replacing the head does (None: nothing to say)."""
    defaults = TransferJobConfig(source=source, dataset=dataset).train
    untrained = not pretrained and not _is_variant(source)
    freeze_help = ("Keep every layer but the new last one fixed: fast, and keeps the features learned before. "
                   "Untick to train every layer (better when the new images look different).")
    if untrained:   # nothing learned to keep: shown unticked and fixed (its own key keeps the user's choice)
        freeze = st.checkbox("Freeze the backbone (train only the new head)", False, key=FK + "freeze-untrained",
                             disabled=True, help=freeze_help)
        st.caption("An untrained model has no features to keep: every layer trains.")
    else:
        freeze = st.checkbox("Freeze the backbone (train only the new head)", True, key=FK + "freeze",
                             help=freeze_help)
    if head_note:
        st.caption(head_note(bool(freeze)))
    fields, subset, name = train_controls("tr-", defaults, TRANSFER_SUBSET)
    if blocked:
        st.warning(blocked, icon=":material/block:")
    if not st.button("Start transfer learning", type="primary", key=FK + "tr-start", icon=":material/play_arrow:",
                     disabled=bool(blocked),
                     help="Queue a background job; it shows below and on the Jobs page, in every browser session."):
        return None
    return validated(lambda: TransferJobConfig(source=source, dataset=dataset, freeze_backbone=bool(freeze),
                                                pretrained=bool(pretrained), train=TrainConfig.from_dict(fields),
                                                subset=subset, name=name))


def _is_variant(source: str) -> bool:
    return resources.variant(source) is not None
