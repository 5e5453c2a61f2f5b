"""Widget groups that return engine configs (the page then hands them to core): the model
picker, the compression steps' controls (prune, sensitivity, recover, quantize, share)
and the pages' "What am I looking at?" box. The training steps' forms are in
ui/training_forms.py, the dataset pickers and uploads in ui/datasets.py."""
from __future__ import annotations

import streamlit as st

from core.measure.training import TrainConfig
from core.models.registry import list_models
from ui import nav


def model_select(key: str, label: str = "Model", default: str = "lenet5") -> str:
    specs = list_models()
    names = [s.name for s in specs]
    desc = {s.name: s.description for s in specs}
    return st.selectbox(label, names, index=names.index(default) if default in names else 0, key=key,
                        format_func=lambda n: f"{n}: {desc[n]}",
                        help="The network architecture (for an upload: the one the checkpoint was saved from); each "
                             "line says what it is.")


# ---------------------------------------------------------------- pruning

PRUNE_KEY = "prune-"     # every widget key of the pruning controls starts with it
METHOD_LABELS = {"l1": "L1 magnitude", "random": "Random", "channel": "Channels (structured)"}
SCOPE_LABELS = {"global": "Global (one ranking for all layers)", "layer": "Per layer (same amount each)"}
ALLOCATION_NOTE = PRUNE_KEY + "allocation-note"   # set by use_allocation, shown once above the sliders


def _sanitize_prune_state(layers: list[str], classifier: str) -> None:
    """Keep widget state valid for this variant's layers (another variant may have other names)."""
    ss, k = st.session_state, PRUNE_KEY
    if k + "exclude" not in ss:
        ss[k + "exclude"] = [classifier] if classifier else []
    for key in (k + "exclude", k + "overrides"):
        if key in ss and any(n not in layers for n in ss[key]):
            ss[key] = [n for n in ss[key] if n in layers]
    if k + "inspect" in ss and ss[k + "inspect"] not in layers:
        del ss[k + "inspect"]


def use_allocation(alloc: dict[str, float], overall: float) -> None:
    """Widget callback: put a suggested per-layer allocation into the pruning controls (before they
    are drawn), open the per-layer section and say so above the sliders."""
    ss, k = st.session_state, PRUNE_KEY
    ss[k + "method"] = "l1"
    ss[k + "overrides"] = list(alloc)
    for name, a in alloc.items():
        ss[f"{k}layer-{name}"] = min(0.99, round(float(a), 2))
    ss[ALLOCATION_NOTE] = (f"Per-layer amounts set from the sensitivity scan's allocation for {overall:.0%} overall: "
                           + ", ".join(f"{n} {a:.0%}" for n, a in alloc.items())
                           + ". They replace the Amount slider for those layers (see Per-layer amounts below).")
    st.toast(f"Per-layer amounts set for {overall:.0%} overall: the preview at the top follows.", icon=":material/tune:")


def prune_form(layers: list[str], classifier: str):
    """The pruning controls; returns a validated PruneConfig, or None (the error is shown)."""
    from core.compress.pruning.preview import amount_meaning
    from core.compress.pruning.prune import METHODS, SCOPES, PruneConfig

    k = PRUNE_KEY
    _sanitize_prune_state(layers, classifier)
    note = st.session_state.pop(ALLOCATION_NOTE, None)
    if note:
        st.success(note, icon=":material/tune:")
    overrides_now = st.session_state.get(k + "overrides", [])
    excluded_now = st.session_state.get(k + "exclude", [])
    all_overridden = bool(overrides_now) and set(layers) - set(excluded_now) <= set(overrides_now)
    c_method, c_scope, c_amount = st.columns([2, 2, 3])
    method = c_method.radio("Method", METHODS, format_func=METHOD_LABELS.get, key=k + "method", horizontal=True,
                            help="L1: remove the smallest-magnitude weights. Random: a baseline to compare against. "
                                 "Channels: remove whole output channels (and everything wired to them) with "
                                 "Torch-Pruning, so layers get physically smaller.")
    scope = c_scope.radio("Scope", SCOPES[::-1], format_func=SCOPE_LABELS.get, key=k + "scope", horizontal=True,
                          help="Global ranks all layers' weights (or channels) together; per layer prunes each layer "
                               "by the same amount.", disabled=all_overridden)
    amount = c_amount.slider("Amount", 0.0, 0.95, 0.5, 0.05, key=k + "amount", format="%.2f",
                             disabled=all_overridden,
                             help="What it means depends on the method and scope: see the line under the controls.")
    c_norm, c_seed, c_excl = st.columns([1, 1, 3])
    norm = c_norm.radio("Channel norm", [1, 2], format_func=lambda n: f"L{n}", key=k + "norm", horizontal=True,
                        disabled=method != "channel", help="How a channel's importance is measured")
    seed = int(c_seed.number_input("Seed", 0, 2**31 - 1, 0, key=k + "seed", disabled=method != "random",
                                   help="Random pruning is repeatable for a given seed"))
    exclude = c_excl.multiselect("Leave alone (excluded layers)", layers, key=k + "exclude",
                                 help="The last classifier is excluded by default: its outputs are the class scores.")
    with st.expander("Per-layer amounts (override the amount for chosen layers)"
                     + (f": {len(overrides_now)} set" if overrides_now else ""), expanded=bool(overrides_now)):
        overrides = st.multiselect("Layers with their own amount", [n for n in layers if n not in exclude],
                                   key=k + "overrides",
                                   help="Each chosen layer gets its own slider below; sensitive layers (see the "
                                        "sensitivity analysis) should keep more weights.")
        layer_amounts = {}
        cols = st.columns(3)
        for i, name in enumerate(overrides):
            st.session_state.setdefault(f"{k}layer-{name}", float(amount))
            layer_amounts[name] = cols[i % 3].slider(name, 0.0, 0.99, step=0.01, key=f"{k}layer-{name}", format="%.2f",
                                                     help=f"Fraction of {name}'s weights removed (its smallest by "
                                                          "magnitude), whatever the Amount slider says.")
    try:
        config = PruneConfig(method=method, amount=float(amount), scope=scope, norm=int(norm), seed=seed,
                             layer_amounts=layer_amounts,
                             exclude=None if exclude == ([classifier] if classifier else []) else tuple(exclude))
    except ValueError as e:
        st.error(f"Invalid settings: {e}", icon=":material/error:")
        return None
    if all_overridden:
        st.caption("**Amount**: every pruned layer has its own amount (see the per-layer section); the Amount "
                   "slider and the scope do not apply.")
    else:
        st.caption(f"**Amount {config.amount:.0%}**, {METHOD_LABELS[method]}, {scope}: {amount_meaning(config)}")
    return config


def sensitivity_form(variant_id: str, exclude: tuple[str, ...] | None):
    """Amounts of a sensitivity scan; returns a SensitivityJobConfig when started, else None."""
    from core.compress.pruning.schedule import DEFAULT_SENSITIVITY_AMOUNTS
    from core.tasks import SensitivityJobConfig

    k = PRUNE_KEY
    c1, c2 = st.columns([3, 1])
    amounts = c1.multiselect("Amounts", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98],
                             default=list(DEFAULT_SENSITIVITY_AMOUNTS), key=k + "sens-amounts",
                             format_func=lambda a: f"{a:.0%}",
                             help="Each layer is pruned alone to each of these amounts and measured; more amounts "
                                  "give a finer curve and a longer scan.")
    c2.write("")
    if not c2.button("Start sensitivity scan", key=k + "sens-start", icon=":material/play_arrow:", disabled=not amounts,
                     help="A background job: prunes one layer at a time (L1) and measures the validation subset; "
                          "the chart grows while it runs."):
        return None
    return validated(lambda: SensitivityJobConfig(variant=variant_id, amounts=tuple(sorted(amounts)), exclude=exclude))


def recover_form(variant_id: str, prune_config):
    """Steps and fine-tuning of a prune-and-recover run; a PruneRecoverJobConfig when started."""
    from core.tasks import PruneRecoverJobConfig

    k = PRUNE_KEY
    c = st.columns(4)
    steps = c[0].number_input("Steps", 1, 50, 5, key=k + "rec-steps",
                              help="How many pruning steps lead to the target; 5 is plenty, more are gentler and "
                                   "slower.")
    epochs = c[1].number_input("Fine-tune epochs per step", 1, 50, 1, key=k + "rec-epochs",
                               help="Training after each step, with the pruned weights held at zero; 1 usually "
                                    "recovers most of the loss.")
    lr = c[2].number_input("Learning rate", 1e-5, 1.0, 0.01, 0.005, format="%.4f", key=k + "rec-lr",
                           help="Fine-tuning step size; smaller than for training from scratch (0.01 for SGD).")
    subset = c[3].number_input("Training samples (0 = all)", 0, 1_000_000, 0, 1000, key=k + "rec-subset",
                               help="Fine-tune on a random subset for a quicker run; validation and test stay whole.")
    if not st.button("Start prune-and-recover", key=k + "rec-start", icon=":material/play_arrow:", type="primary",
                     help="A background job: prunes step by step to the settings above, fine-tunes after each "
                          "step, and saves the result as a child variant."):
        return None
    return validated(lambda: PruneRecoverJobConfig(
        variant=variant_id, prune=prune_config, steps=int(steps), subset=int(subset) or None,
        finetune=TrainConfig(epochs=int(epochs), lr=float(lr))))


def validated(build):
    """`build()` (a config), or None with the engine's reason shown as an error box."""
    try:
        return build()
    except ValueError as e:
        st.error(f"Cannot start: {e}", icon=":material/error:")
        return None


# ---------------------------------------------------------------- quantization

QUANT_KEY = "quant-"     # every widget key of the quantization controls starts with it
GRID_LABELS = {True: "Symmetric (0 exact)", False: "Affine (zero point)"}
MODE_HELP = ("Static int8: int8 weights and activations (calibrated on training images), real x86 int8 kernels. "
             "Dynamic int8: int8 weights of Linear/LSTM/GRU layers only, activations quantized on the fly; "
             "convolutions stay float. fp16/bf16: the whole model in half precision (real speed on a GPU only). "
             "Weight-only: 2-8 bit weights stored packed, computed in float (a smaller file, not a faster model). "
             "QAT: fine-tune with simulated int8 first (a background job), then static int8.")


def _sanitize_quant_state(layers: list[str]) -> None:
    """Keep the keep-float selection valid for this variant's layers (another variant may differ)."""
    ss, key = st.session_state, QUANT_KEY + "keep"
    if key in ss and any(n not in layers for n in ss[key]):
        ss[key] = [n for n in ss[key] if n in layers]


def keep_worst(names: list[str]) -> None:
    """Widget callback: put these layers into the keep-float selection (before it is drawn)."""
    st.session_state[QUANT_KEY + "keep"] = list(names)
    st.toast(f"Kept in float: {', '.join(names) or 'nothing'}", icon=":material/tune:")


def quant_form(variant_id: str, layers: list[str]):
    """The quantization controls; returns a validated QuantizeJobConfig, or None (the error is shown).
    Settings a mode does not use keep their defaults, so the same choice always gives the same
    config (and the page can find a child already made with it)."""
    from core.compress.quant.preview import WHOLE_MODEL_MODES
    from core.compress.quant.quantize import MAX_CALIB_BATCHES, MODE_TITLES, MODES, QuantConfig
    from core.tasks import QuantizeJobConfig

    k = QUANT_KEY
    _sanitize_quant_state(layers)
    defaults = QuantConfig()
    train = QuantizeJobConfig(variant=variant_id).train
    bits, symmetric, calib = defaults.bits, defaults.symmetric, defaults.calib_batches
    c_mode, c_opts = st.columns([2, 3])
    mode = c_mode.radio("Mode", MODES, format_func=MODE_TITLES.get, key=k + "mode", help=MODE_HELP)
    with c_opts:
        if mode == "weight-only":
            bits = int(st.slider("Bits per weight", 2, 8, 4, 1, key=k + "bits",
                                 help="Each weight becomes one of 2^bits values of its output channel's grid. "
                                      "The preview follows the slider."))
            symmetric = st.radio("Grid", [True, False], format_func=GRID_LABELS.get, key=k + "symmetric",
                                 horizontal=True,
                                 help="Symmetric: a grid centred on 0 (0 is exactly representable). Affine: a "
                                      "grid from the channel's min to its max with a zero point, using every level.")
        if mode in ("static-int8", "qat"):
            calib = int(st.number_input("Calibration batches (64 training images each)", 1, MAX_CALIB_BATCHES,
                                        defaults.calib_batches, key=k + "calib",
                                        help="Images run through the model to choose each activation's int8 range"))
        if mode == "qat":
            c1, c2 = st.columns(2)
            epochs = int(c1.number_input("QAT epochs", 1, 50, train.epochs, key=k + "qat-epochs",
                                         help="Fine-tuning passes with simulated int8 rounding in the model; "
                                              "1 is the default and often enough."))
            lr = float(c2.number_input("QAT learning rate", 1e-6, 1.0, train.lr, format="%.5f", key=k + "qat-lr",
                                       help="Keep it small (0.001 by default): the trained model only adapts to "
                                            "the int8 rounding."))
            train = TrainConfig.coerce({**train.to_dict(), "epochs": epochs, "lr": lr})
            st.caption("Quantization-aware training fine-tunes with simulated int8 (a background job), then "
                       "converts to static int8. Its numbers appear when the job has saved the variant.")
        if mode == "dynamic-int8":
            st.caption("Nothing to calibrate: activations are quantized per batch while the model runs. Only "
                       "Linear/LSTM/GRU layers have dynamic int8 kernels; see the coverage below.")
        if mode in WHOLE_MODEL_MODES:
            st.caption(f"The whole model is converted to {mode}; there is nothing to set. On a CPU half precision "
                       "is usually slower than float32; the timing says how much.")
    keep = st.multiselect("Keep in float (leave these layers unquantized)", layers, key=k + "keep",
                          disabled=mode in WHOLE_MODEL_MODES,
                          help="Layers whose quantization error costs too much accuracy can stay float: the file "
                               "keeps their float32 weights. fp16/bf16 convert the whole model.")
    try:
        return QuantizeJobConfig(variant=variant_id, train=train, quant=QuantConfig(
            mode=mode, bits=bits, symmetric=bool(symmetric), calib_batches=calib,
            keep_float=() if mode in WHOLE_MODEL_MODES else tuple(keep)))
    except ValueError as e:
        st.error(f"Invalid settings: {e}", icon=":material/error:")
        return None


# ---------------------------------------------------------------- weight sharing

SHARE_KEY = "share-"     # every widget key of the weight-sharing section starts with it
SHARE_SUBSET = 10_000    # centroid fine-tuning on 10,000 images: about a minute on 2 CPU cores


def share_form(v):
    """The weight-sharing settings; a validated ShareWeightsJobConfig when submitted, else None."""
    from core.tasks.share_weights import ShareWeightsJobConfig

    k = SHARE_KEY
    with st.form(k + "form", border=True):
        c = st.columns(4)
        bits_conv = c[0].slider("Conv codebook bits", 1, 8, 8, key=k + "bits-conv",
                                help="Each conv layer keeps 2^bits shared values (code 0 is the zero); every "
                                     "non-zero weight is stored as a code of this many bits. Han et al.: 8")
        bits_fc = c[1].slider("Fully connected codebook bits", 1, 8, 5, key=k + "bits-fc",
                              help="The same for linear layers, which tolerate fewer values. Han et al.: 5")
        epochs = c[2].number_input("Centroid fine-tuning epochs", min_value=0, max_value=20, value=1, step=1,
                                   key=k + "epochs", help="Gradients of the weights sharing a code are summed to "
                                   "train that code's value; 0 keeps the k-means centroids. The best epoch on the "
                                   "validation split is kept")
        subset = c[3].number_input("Training samples (0 = all)", min_value=0, max_value=1_000_000,
                                   value=SHARE_SUBSET, step=1000, key=k + "subset",
                                   help="Images used to fine-tune the centroids; validation and test stay whole")
        submitted = st.form_submit_button("Share weights (background job)", type="primary", icon=":material/hub:",
                                          help="Starts a job: k-means per layer, then centroid fine-tuning; the "
                                               "weight-shared child is measured on the full test split")
    if not submitted:
        return None
    return validated(lambda: ShareWeightsJobConfig(variant=v.id, bits_conv=int(bits_conv), bits_fc=int(bits_fc),
                                                   epochs=int(epochs), subset=int(subset) or None))


# ---------------------------------------------------------------- explanations

EXPLAINER_LABEL = "What am I looking at?"
# titles used when the lesson files cannot be read (the ids are fixed; the files may rename them)
LESSON_TITLES = {"which-weights-go": "Which weights go", "sparse-is-not-faster": "Why 90% sparse is not faster",
                 "not-all-layers-equal": "Not all layers are equal", "float-to-int8": "From float to int8",
                 "dark-knowledge": "Dark knowledge", "recovery": "Recovery", "full-pipeline": "The full pipeline"}


def _lesson_titles() -> dict[str, str]:
    try:
        from core.lessons.content import load_lessons

        return {**LESSON_TITLES, **{lesson.id: lesson.title for lesson in load_lessons()}}
    except (ImportError, ValueError, OSError):   # a lesson file being edited must not break a workbench page
        return LESSON_TITLES


def explainer(lines: list[str], lessons: list[str]) -> None:
    """A page's collapsed "What am I looking at?" expander: short lines on its charts and numbers,
    then links to the Learn lessons that explain them (left out while the Learn page is missing)."""
    with st.expander(EXPLAINER_LABEL, icon=":material/help:"):
        st.markdown("\n".join(f"- {line}" for line in lines))
        learn = nav.page_file("learn")
        if learn is None or not lessons:
            return
        titles = _lesson_titles()
        st.markdown("**Learn more, live on the shipped models:**")
        for lesson in lessons:
            st.page_link(learn, label=f"Lesson: {titles.get(lesson, lesson)}", query_params={"lesson": lesson},
                         icon=":material/school:")
