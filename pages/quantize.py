"""Quantize: pick a mode, see which layers it will touch, run it on a copy (live for the weight-only
bits slider) and see accuracy, file size, latency and the error per layer; Save makes a child
variant. Below, Deep Compression's later stages: trained weight sharing (a job) for a float
variant, Huffman coding (inline) for a weight-shared one. Figures come from core.viz, the numbers
from core (QuantPreview, QuantReport); runs on a copy are shared by every session."""
import math

import streamlit as st

from core.base.ratios import speed_change
from core.base.units import human_bytes
from core.compress.quant.preview import QUANTIZABLE, WHOLE_MODEL_MODES, grid_levels, quantizable_layers
from core.compress.quant.quantize import CALIB_BATCH, QuantConfig, coverage_warning, worst_layers
from core.formats.shared import file_breakdown
from core.tasks.common import existing_child
from core.tasks.quantize import find_quantized
from core.tasks.share_weights import EntropyCodeJobConfig
from core.viz import charts as viz
from core.viz.sharing import bytes_by_layer_chart, stage_rows
from ui import forms, nav, resources, state, widgets
from ui.job_cards import show_jobs, start_job
from ui.widgets import fmt_ms, table

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = forms.QUANT_KEY
SK = forms.SHARE_KEY             # the weight-sharing section's keys
ARMED_KEY = K + "armed"          # (variant id, created_at, mode) the user pressed Run for
LIVE_MODES = ("weight-only",)                          # fast enough to run on every change
INLINE_SAVE = ("weight-only", "static-int8", "dynamic-int8")   # a few seconds; the rest are jobs
ACTION_WORDS = {"quantized": "quantized", "float": "stays float", "folded": "folded", "unsupported": "stays float"}
EXPLAINER = [
    "**Coverage**: one row per layer with weights, saying what the chosen mode does to it (quantized, stays float, "
    "folded into the layer before). It is read off the model before anything runs.",
    "**Val. accuracy** is measured on a validation subset, against the float model in percentage points; **File "
    "size** is the file Save would write; **Latency b1 / b64**: the float and the quantized copy timed now, "
    "alternately, at batch 1 and 64 (weight-only computes in float, so it keeps the float model's time).",
    "**Top-1 agreement**: how often the quantized copy picks the same class as the float model. **SQNR** (dB) says "
    "how close its numbers stay: higher is closer, about 6 dB per bit.",
    "The badge says what runs: *quantized* means real int8 (or half-precision) kernels, which can be faster; "
    "*simulated* means low-bit codes turned back into floats (a smaller file, not a faster model).",
    "Left, the error per layer (keep the worst ones in float if they cost accuracy). Right, a layer's weights with "
    "one channel's grid as red lines: each weight is rounded to the nearest line.",
    "At the bottom, **weight sharing** and **Huffman coding**, Deep Compression's later stages: a few shared values "
    "per layer, then a lossless code for them.",
]


def coverage(rows, config: QuantConfig, *, key: str) -> None:
    """One row per layer with weights: what the mode does (or did) to it, and the warning when
    layers stay float without being asked."""
    quantized = [r for r in rows if r.action == "quantized"]
    share = sum(r.params for r in quantized) / (sum(r.params for r in rows) or 1)
    st.dataframe(table([{"layer": r.name, "type": r.type, "params": r.params, "action": ACTION_WORDS[r.action],
                         "what happens": r.detail} for r in rows]),
                 hide_index=True, width="stretch", key=key, column_config={
                     "params": st.column_config.NumberColumn(format="localized"),
                     "what happens": st.column_config.TextColumn(width="large")})
    st.caption(f"{len(quantized)} of {len(rows)} layers with weights quantized ({share:.0%} of the parameters).")
    warning = coverage_warning(rows, config)
    if warning:
        st.warning(warning, icon=":material/warning:")


def arm(v, mode: str) -> None:
    """Widget callback: the user asked to run `mode` on `v`; later changes of its settings (keep in
    float, calibration) run again by themselves."""
    st.session_state[ARMED_KEY] = (v.id, v.created_at, mode)


def compute(v, config: QuantConfig):
    """The preview (shared), or None with one error box when this model cannot be quantized this
    way (e.g. a graph FX cannot trace)."""
    what = ("Quantizing a copy and measuring it on the validation subset…" if config.mode == "weight-only" else
            "Quantizing a copy, measuring its accuracy on the validation subset and timing it against the float "
            "model on the CPU…")
    with st.spinner(what):
        try:
            return resources.quant_preview(v, config)
        except Exception as e:   # noqa: BLE001  (any engine failure is one readable box, not a traceback)
            st.error(f"Could not quantize {v.name} with {config.label()}: {type(e).__name__}: {e}",
                     icon=":material/error:")
            return None


def numbers(v, p, ref_acc: float, config: QuantConfig) -> None:
    """Accuracy, file size and latency before -> after, and what kind of model it is."""
    m, r = v.metrics, p.report
    cols = st.columns(5)
    cols[0].metric("Val. accuracy", f"{p.accuracy:.2%}", f"{(p.accuracy - ref_acc) * 100:+.2f} pp",
                   help=f"{p.accuracy_label}. {v.name} (float): {ref_acc:.2%} on the same images. "
                        "Save measures the full test set.")
    size = m.get("size_bytes")
    cols[1].metric("File size", human_bytes(p.size_bytes),
                   f"{size / p.size_bytes:.1f}x smaller" if size and p.size_bytes < 0.95 * size else None,
                   help=f"Length of the {p.size_format} file Save would write, header included; "
                        f"{v.name} is {human_bytes(size)}.")
    for col, batch in ((cols[2], 1), (cols[3], 64)):
        if p.latency is None:
            col.metric(f"Latency b{batch}", fmt_ms(m.get(f"latency_ms_b{batch}")), "as float", delta_color="off",
                       delta_arrow="off", help=p.speed_note)
            continue
        speed = p.latency.ratio_figure("before", "after", batch)
        if not speed.shown:   # timed, but the figure did not settle: no number, no pill
            col.metric(f"Latency b{batch}", "not measurable now", help=f"{speed.reason}. {p.speed_note}")
            continue
        before, after = p.latency.ms("before", batch), p.latency.ms("after", batch)
        col.metric(f"Latency b{batch}", fmt_ms(after), speed_change(before, after), delta_color="off",
                   delta_arrow="off", help=f"Float {fmt_ms(before)} -> quantized {fmt_ms(after)}: both timed "
                                           f"now, alternately, in one call ({speed.interval_words()}). "
                                           f"{p.speed_note}")
    if p.verdict:
        cols[3].caption(f":material/info: **{p.verdict}** in PyTorch eager",
                        help=f"Batch 64: {fmt_ms(p.latency.ms('before', 64))} float, "
                             f"{fmt_ms(p.latency.ms('after', 64))} quantized, timed alternately in one call: "
                             "less than 1.1x faster. Save also times it in ONNX Runtime.")
    cols[4].metric("Top-1 agreement", f"{r.agreement:.1%}",
                   f"logits SQNR {r.logits_sqnr_db:.1f} dB" if math.isfinite(r.logits_sqnr_db) else "exact",
                   delta_color="off", delta_arrow="off",
                   help=f"How often the quantized copy picks the same class as the float model, and how close its "
                        f"class scores are (signal-to-quantization-noise ratio), on {r.calib_images} "
                        "calibration images.")
    with st.container(horizontal=True, vertical_alignment="center"):
        if config.kind["quantized"]:
            st.badge("quantized", color="green", icon=":material/memory:")
            st.caption("real half-precision kernels run (fast on a GPU; this preview runs on the CPU)"
                       if config.mode in WHOLE_MODEL_MODES else "real int8 kernels run (x86, on the CPU)")
        else:
            st.badge("simulated", color="orange", icon=":material/science:")
            st.caption("the file stores low-bit codes; the model computes in float after dequantizing them")
        if p.latency is not None and p.latency.all_settled():
            st.badge("timed on the CPU", color="blue", icon=":material/developer_board:")
        elif p.latency is not None:
            st.button("Measure again", key="quant-retime", icon=":material/timer:",
                      help="Time float and quantized again (an unsettled timing is never kept)")
        st.caption(f"Preview took {p.seconds:.1f} s.")
    for note in [p.speed_note] if p.latency is not None else r.notes:   # the timing of this preview, else the report's
        st.caption(note)


def errors_and_worst(v, p, current_keep: tuple[str, ...]) -> None:
    """The error per layer, then 'keep the worst N in float' (sets the keep-float selection above)."""
    errors, n = p.report.errors, int(p.config.get("calib_batches", 2))
    if not errors:
        st.info("No convolution or linear layer is quantized: there is no per-layer error to show.")
        return
    fig = resources.figure(("quant-errors", *resources.preview_key("quant", v, QuantConfig.from_dict(p.config))),
                           lambda: viz.quant_error_chart(errors))
    st.plotly_chart(fig, key=K + "errors-chart", width="stretch")
    st.caption("Weight SQNR: how close each stored weight is to its float value. Output SQNR: how close the layer's "
               "output is when its weights (and, for int8, its inputs) are quantized and the rest of the model is "
               f"float, on {min(2, n) * CALIB_BATCH} calibration images.")
    if p.config.get("mode") in WHOLE_MODEL_MODES:
        return
    if st.session_state.get(K + "worst-n", 1) > len(errors):    # fewer layers left quantized than before
        st.session_state[K + "worst-n"] = len(errors)
    c_n, c_btn = st.columns([1, 2], vertical_alignment="bottom")
    n = int(c_n.number_input("Worst layers", 1, len(errors), 1, key=K + "worst-n",
                             help="Counted by output SQNR, lowest first"))
    names = worst_layers(errors, n)
    c_btn.button(f"Keep the worst {n} in float", key=K + "keep-worst", on_click=forms.keep_worst,
                 args=(sorted({*current_keep, *names}),), icon=":material/tune:",
                 help="Adds them to 'Keep in float' above; the result is computed again with them left float.")
    st.caption(f"The worst {n} by output SQNR: {', '.join(names)}.")


def grid_histogram(v, model, config: QuantConfig, rows) -> None:
    """A layer's weights with the grid of one output channel drawn over them."""
    modules = dict(model.named_modules())
    names = [r.name for r in rows if r.action == "quantized" and isinstance(modules.get(r.name), QUANTIZABLE[:4])]
    if not names:
        st.info("No convolution or linear layer is quantized with these settings.")
        return
    if st.session_state.get(K + "grid-layer") not in names:
        st.session_state.pop(K + "grid-layer", None)
    c_layer, c_channel = st.columns(2)
    largest = max(names, key=lambda n: modules[n].weight.numel())
    layer = c_layer.selectbox("Layer", names, key=K + "grid-layer", index=names.index(largest),
                              help="The quantized layer whose weights and grid are drawn; the largest is shown first.")
    w = modules[layer].weight.detach()
    out = int(w.shape[0])
    if st.session_state.get(K + "grid-channel", 0) >= out:
        st.session_state[K + "grid-channel"] = 0
    channel = int(c_channel.number_input(f"Output channel (0-{out - 1})", 0, out - 1, 0, key=K + "grid-channel",
                                         help="Each output channel has its own scale, so its own grid"))
    whole = config.mode in WHOLE_MODEL_MODES
    how = {"weight-only": f"{config.bits}-bit {forms.GRID_LABELS[config.symmetric].lower()}"}.get(
        config.mode, "int8 symmetric per channel")
    title = f"{layer}, channel {channel}: {config.mode} weights" if whole else f"{layer}, grid of channel {channel}: {how}"
    fig = resources.figure(
        ("quant-grid", v.id, v.created_at, config.mode, config.bits, config.symmetric, layer, channel),
        lambda: viz.quant_grid_histogram(w, grid_levels(w, config, channel), channel_weight=w[channel], title=title))
    st.plotly_chart(fig, key=K + "grid-chart", width="stretch")
    folded = [r.name for r in rows if r.action == "folded" and layer in r.detail]
    if whole:
        st.caption(f"{config.mode} has no integer grid: each weight is rounded to the nearest {config.mode} number "
                   "(about 3 significant digits for fp16, 2 for bf16).")
        return
    st.caption("Every weight of the channel is rounded to the nearest red line; the grid spans the channel's "
               "largest weights, so one outlier spreads the lines and costs the others precision."
               + (" A symmetric grid keeps 0 exact and so uses one value fewer than 2^bits."
                  if config.mode == "weight-only" and config.symmetric else "")
               + (f" Here {', '.join(folded)} is folded into {layer} first, which rescales its channels: the "
                  "stored grid is that of the folded weights." if folded else ""))


# ---------------------------------------------------------------- Deep Compression's later stages

def share_section(ws, v) -> None:
    """Below the quantization modes of a float variant: trained weight sharing as a job."""
    st.subheader("Weight sharing (Deep Compression)")
    st.caption("The second stage of Han et al.'s Deep Compression: the non-zero weights of each layer are clustered "
               "into 2^bits shared values (k-means), the file stores one small codebook per layer, a code per "
               "non-zero weight and where the non-zeros are (relative indices), and the shared values are then "
               "fine-tuned. Afterwards, **Huffman coding** of the codes and indices shrinks the file further "
               "(offered here once the weight-shared variant is active).")
    nonzero, params = v.metrics.get("nonzero_params"), v.metrics.get("params")
    if nonzero and params and nonzero >= 0.9 * params:
        st.info(f"{v.name} is dense ({nonzero / params:.0%} of its weights are non-zero): sharing alone stores "
                "about 5 to 8 bits per weight instead of 32. Prune it first (Prune page: **Prune and recover**) for "
                "the ratios of the paper.", icon=":material/info:")
    cfg = forms.share_form(v)
    if cfg is not None:
        existing = existing_child(ws, v.id, cfg.step())
        if existing is None:
            start_job(ws, "share_weights", cfg)
        else:
            widgets.made_before(existing, f"{v.name} was already weight-shared with these settings", key=SK)
    jobs_here = resources.jobs_for("share_weights", v.id)
    if jobs_here:
        st.markdown("**Weight-sharing jobs of this variant**")
        show_jobs(lambda w, jid=jobs_here[0].id: [w.jobs.get(jid)], key=SK + "job", curves=False, log=True)


def shared_variant_section(ws, v) -> None:
    """The active variant is weight-shared: its stage table, where its bytes went, and Huffman
    coding when it is not entropy-coded yet. Other quantization modes do not apply to it."""
    widgets.flash_box(ws, key=SK + "saved")
    coding = "Huffman-coded" if v.format == "shared+huffman" else "bit-packed"
    st.info(f"**{v.name}** is weight-shared ({coding} codes): its layers hold a few shared values each, so the "
            "int8 and float modes of this page do not apply. Decoding it back gives a float model; its file is the one "
            "the Export page offers, with a small loader.", icon=":material/hub:")
    lineage = resources.lineage(v.id)
    dense = lineage[0].metrics.get("dense_size_bytes") or v.metrics.get("dense_size_bytes")
    st.markdown("**Stage by stage** (sizes are the files you can download; ratios against the root's float32 file)")
    st.dataframe(table(stage_rows(lineage, dense)), hide_index=True, key=SK + "stages")
    cfg = EntropyCodeJobConfig(variant=v.id)
    coded = existing_child(ws, v.id, cfg.step()) if v.format == "shared+packed" else None
    if coded is not None:
        widgets.made_before(coded, "Already Huffman-coded", key=SK + "huffman-")
    elif v.format == "shared+packed":
        if st.button(f"Huffman-code {v.name}", type="primary", key=SK + "huffman", icon=":material/compress:",
                     help="Re-encode the codes and relative indices with canonical Huffman codes (frequent codes get "
                          "short bit strings): the same model, bit for bit, in fewer bytes. Measured on the full "
                          "test split and saved as a child variant (a few seconds)"):
            widgets.save_child(ws, "entropy_code", cfg, spinner="Huffman coding and measuring on the full test split…",
                               message=lambda c: f"Saved **{c.name}**: {human_bytes(v.metrics['size_bytes'])} → "
                                                 f"{human_bytes(c.metrics['size_bytes'])}, test accuracy "
                                                 f"{c.metrics['accuracy']:.2%} (the same weights).")
        st.caption("Same weights, fewer bytes; saved as a child of the active variant.")
    data = ws.weights_path(v).read_bytes()
    st.plotly_chart(resources.figure(("shared-bytes", v.id, v.created_at),
                                     lambda: bytes_by_layer_chart(file_breakdown(data))), key=SK + "bytes",
                    width="stretch")
    parent = resources.variant(v.parent_id) if v.parent_id else None
    if parent is not None and not parent.is_shared:
        widgets.make_active_button(parent, key=SK + "use-parent", label=f"Make the float parent {parent.name} active")


# ---------------------------------------------------------------- guard

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Quantize")
st.caption("Store weights (and activations) in fewer bits. The table says which layers a mode touches before "
           "anything runs; **Run** quantizes a copy and measures it (the weight-only bits slider runs live). "
           "**Save as a variant** stores a child measured on the full test set.")
forms.explainer(EXPLAINER, ["float-to-int8", "full-pipeline"])
if v is None:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()
if v.is_shared:      # Deep Compression's later stages: Huffman coding, the stage table
    shared_variant_section(ws, v)
    st.stop()
if not v.is_float:
    parent = resources.variant(v.parent_id) if v.parent_id else None
    st.info(f"**{v.name}** is already {'quantized' if v.kind.get('quantized') else 'simulated (weight-only quantized)'}"
            f". Quantize its float parent instead" + (f": **{parent.name}**." if parent else "."),
            icon=":material/block:")
    if parent is not None and parent.is_float:
        widgets.make_active_button(parent, key=K + "use-parent", label=f"Make {parent.name} active")
    st.stop()

model = resources.model(v)               # shared: never changed here (every run quantizes a copy)
just_saved = widgets.flash_box(ws, key=K + "saved")

# ---------------------------------------------------------------- widgets -> config -> coverage before

job_config = forms.quant_form(v.id, quantizable_layers(model))
if job_config is None:
    st.stop()
config: QuantConfig = job_config.quant
rows = resources.quant_plan(v, config)
st.subheader(f"Coverage: what {config.mode} will do to {v.name}")
coverage(rows, config, key=K + "coverage-before")

# ---------------------------------------------------------------- run a copy (live, or behind Run)

st.subheader(f"Result on a copy: {config.label()}")
p = None
if config.mode == "qat":
    st.info("QAT trains, so it runs as a background job: save it below and its measured variant appears when "
            "the job is done. To see what calibration alone gives, run **Static int8** first.",
            icon=":material/model_training:")
elif config.mode in LIVE_MODES or st.session_state.get(ARMED_KEY) == (v.id, v.created_at, config.mode):
    p = compute(v, config)
else:
    p = resources.cached_quant_preview(v, config)   # run already (by this or another session)
    if p is None:
        st.button(f"Run {config.mode} on a copy", type="primary", key=K + "run", icon=":material/play_arrow:",
                  on_click=arm, args=(v, config.mode),
                  help="Quantize a copy of the active variant, measure its accuracy on the validation subset "
                       "and time it against the float model (a few seconds). After that, changing the layers kept "
                       "in float runs it again by itself.")
        st.caption("Nothing run yet with these settings.")

if p is not None:
    numbers(v, p, resources.reference_accuracy(v), config)
    with st.expander("Coverage after running (read off the quantized copy)", expanded=bool(p.report.warning)):
        coverage(p.report.coverage_after, config, key=K + "coverage-after")
    col_err, col_grid = st.columns(2)
    with col_err:
        errors_and_worst(v, p, config.keep_float)
    with col_grid:
        grid_histogram(v, model, config, rows)

# ---------------------------------------------------------------- Save: the same `quantize` task

st.subheader("Save")
existing = find_quantized(ws, v.id, job_config)
jobs_here = resources.jobs_for("quantize", v.id)
running = [j for j in jobs_here if not j.is_final and QuantConfig.coerce(j.config.get("quant", {})) == config]
if existing is not None and existing.id == just_saved:
    st.caption(f"Saved as **{existing.name}** (the box at the top).")
elif existing is not None:
    widgets.made_before(existing, f"{v.name} was already quantized with these settings", key=K)
elif running:
    st.info(f"Job `{running[0].id}` is already quantizing {v.name} with these settings (below).",
            icon=":material/autorenew:")
elif config.mode in INLINE_SAVE:
    if st.button("Save as a variant", type="primary", key=K + "save", icon=":material/save:",
                 help="Quantize the stored variant with these settings, measure the result on the full test split "
                      "and store it as a child variant"):
        widgets.save_child(ws, "quantize", job_config, spinner="Quantizing and measuring on the full test split…")
        st.stop()
    st.caption("Saves a child variant of the active one (a few seconds).")
else:
    why = ("QAT trains first" if config.mode == "qat" else
           f"{config.mode} measured on the CPU's full test split takes a minute")
    if st.button("Save as a variant (background job)", type="primary", key=K + "save-job", icon=":material/save:",
                 help="Starts a job that quantizes the stored variant, measures it on the full test split and "
                      "stores it as a child variant"):
        start_job(ws, "quantize", job_config)
    st.caption(f"Runs as a background job ({why}); its progress shows below and on the Jobs page.")

if jobs_here:
    st.markdown("**Quantization jobs of this variant**")
    show_jobs(lambda w, jid=jobs_here[0].id: [w.jobs.get(jid)], key=K + "job", curves=True, log=False)

share_section(ws, v)   # k-means weight sharing, Deep Compression's second stage
