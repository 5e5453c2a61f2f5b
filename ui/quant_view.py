"""How the Quantize page draws: the coverage tables, the numbers of a quantized copy, the
per-layer error chart and the weight histogram with its quantization grid. Figures come from
core/viz; the numbers from core (QuantPreview, QuantReport)."""
from __future__ import annotations

import json
import math

import numpy as np
import streamlit as st
import torch
import torch.nn as nn

from core.base.units import human_bytes
from core.compress.quant.preview import QuantPreview
from core.compress.quant.quantize import (
    CALIB_BATCH,
    LayerCoverage,
    QuantConfig,
    coverage_warning,
    weighted_layers,
    worst_layers,
)
from core.store.workspace import Variant
from core.viz import charts as viz
from ui import forms, resources, state
from ui.widgets import fmt_ms, speed_words, table

K = forms.QUANT_KEY
ARMED_KEY = K + "armed"          # (variant id, created_at, mode) the user pressed Run for
QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LSTM, nn.GRU)
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
LESSONS = ["float-to-int8", "full-pipeline"]


def explainer() -> None:
    forms.explainer(EXPLAINER, LESSONS)


def quantizable_layers(model: nn.Module) -> list[str]:
    """The layers a quantization mode can touch (what "keep in float" offers), in model order."""
    return [n for n, m in weighted_layers(model) if isinstance(m, QUANTIZABLE)]


# ---------------------------------------------------------------- coverage

def coverage(rows: list[LayerCoverage], config: QuantConfig, *, key: str) -> None:
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


# ---------------------------------------------------------------- running a preview

def preview_key(v: Variant, config: QuantConfig) -> tuple:
    return (v.id, v.created_at, json.dumps(config.to_dict(), sort_keys=True))


def arm(v: Variant, mode: str) -> None:
    """Remember that the user asked to run `mode` on `v`: later changes of its settings (keep in
    float, calibration) run again by themselves."""
    st.session_state[ARMED_KEY] = (v.id, v.created_at, mode)


def armed(v: Variant, mode: str) -> bool:
    return st.session_state.get(ARMED_KEY) == (v.id, v.created_at, mode)


def compute(v: Variant, config: QuantConfig) -> QuantPreview | None:
    """The preview (shared cache), or None with one error box when this model cannot be quantized
    this way (e.g. a graph FX cannot trace)."""
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


# ---------------------------------------------------------------- the numbers

def _speed(before: float | None, after: float | None) -> str | None:
    if not before or not after:
        return None
    return speed_words(before / after)


def numbers(v: Variant, p: QuantPreview, ref_acc: float, config: QuantConfig) -> None:
    """Accuracy, file size and latency before -> after, and what kind of model it is."""
    m = v.metrics
    cols = st.columns(5)
    cols[0].metric("Val. accuracy", f"{p.accuracy:.2%}", f"{(p.accuracy - ref_acc) * 100:+.2f} pp",
                   help=f"{p.accuracy_label}. {v.name} (float): {ref_acc:.2%} on the same images. "
                        "Save measures the full test set.")
    size = m.get("size_bytes")
    cols[1].metric("File size", human_bytes(p.size_bytes),
                   f"{size / p.size_bytes:.1f}x smaller" if size and p.size_bytes < 0.95 * size else None,
                   help=f"Length of the {p.size_format} file Save would write, header included; "
                        f"{v.name} is {human_bytes(size)}.")
    if p.latency is not None:
        for col, batch in ((cols[2], 1), (cols[3], 64)):
            before, after = p.latency.ms("before", batch), p.latency.ms("after", batch)
            col.metric(f"Latency b{batch}", fmt_ms(after), _speed(before, after), delta_color="off",
                       delta_arrow="off", help=f"Float {fmt_ms(before)} -> quantized {fmt_ms(after)}: both timed "
                                               f"now on the CPU, alternately, in one call. {p.speed_note}")
        if p.verdict:
            cols[3].caption(f":material/info: **{p.verdict}**",
                            help=f"Batch 64: {fmt_ms(p.latency.ms('before', 64))} float, "
                                 f"{fmt_ms(p.latency.ms('after', 64))} quantized, timed alternately in one call: "
                                 "less than 1.1x faster.")
    else:
        cols[2].metric("Latency b1", fmt_ms(m.get("latency_ms_b1")), "as float", delta_color="off",
                       delta_arrow="off", help=p.speed_note)
        cols[3].metric("Latency b64", fmt_ms(m.get("latency_ms_b64")), "as float", delta_color="off",
                       delta_arrow="off", help=p.speed_note)
    r = p.report
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
                       if config.mode in forms.WHOLE_MODEL_MODES else "real int8 kernels run (x86, on the CPU)")
        else:
            st.badge("simulated", color="orange", icon=":material/science:")
            st.caption("the file stores low-bit codes; the model computes in float after dequantizing them")
        if p.latency is not None:
            st.badge("timed on the CPU", color="blue", icon=":material/developer_board:")
        st.caption(f"Preview took {p.seconds:.1f} s.")
    if p.latency is not None:
        st.caption(p.speed_note)     # the timing of this preview (the report's own speed notes would be a second one)
    else:
        for note in r.notes:
            st.caption(note)


# ---------------------------------------------------------------- per layer

def errors_chart(v: Variant, p: QuantPreview) -> None:
    errors, n = p.report.errors, int(p.config.get("calib_batches", 2))
    if not errors:
        st.info("No convolution or linear layer is quantized: there is no per-layer error to show.")
        return
    fig = resources.figure(("quant-errors", *preview_key(v, QuantConfig.from_dict(p.config))),
                           lambda: viz.quant_error_chart(errors))
    st.plotly_chart(fig, key=K + "errors-chart", width="stretch")
    st.caption("Weight SQNR: how close each stored weight is to its float value. Output SQNR: how close the layer's "
               "output is when its weights (and, for int8, its inputs) are quantized and the rest of the model is "
               f"float, on {min(2, n) * CALIB_BATCH} calibration images.")


def keep_worst_controls(p: QuantPreview, current_keep: tuple[str, ...]) -> None:
    """'Keep the worst N layers in float': sets the keep-float selection above (then it runs again)."""
    errors = p.report.errors
    if not errors or p.config.get("mode") in forms.WHOLE_MODEL_MODES:
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


def grid_levels(weight: torch.Tensor, config: QuantConfig, channel: int) -> np.ndarray:
    """The values output channel `channel` of `weight` can take under `config` (per-channel grid):
    (k - zp[c]) * scale[c] for every code k. Empty for fp16/bf16 (no integer grid)."""
    from core.formats.quant import kbit_quantize

    if config.mode in forms.WHOLE_MODEL_MODES:
        return np.array([], dtype=np.float64)
    bits, symmetric = (config.bits, config.symmetric) if config.mode == "weight-only" else (8, True)
    _, scale, zp, qmax = kbit_quantize(weight, bits, symmetric)
    top = 2 * qmax if symmetric else qmax           # symmetric codes run 0..2*qmax (zero at qmax)
    k = np.arange(top + 1, dtype=np.float64)
    return (k - float(zp[channel])) * float(scale[channel])


def grid_histogram(v: Variant, model: nn.Module, config: QuantConfig, rows: list[LayerCoverage]) -> None:
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
    how = {"weight-only": f"{config.bits}-bit {forms.GRID_LABELS[config.symmetric].lower()}"}.get(
        config.mode, "int8 symmetric per channel")
    chart_title = (f"{layer}, channel {channel}: {config.mode} weights" if config.mode in forms.WHOLE_MODEL_MODES
                   else f"{layer}, grid of channel {channel}: {how}")
    fig = resources.figure(
        ("quant-grid", v.id, v.created_at, config.mode, config.bits, config.symmetric, layer, channel),
        lambda: viz.quant_grid_histogram(w, grid_levels(w, config, channel), channel_weight=w[channel],
                                         title=chart_title))
    st.plotly_chart(fig, key=K + "grid-chart", width="stretch")
    folded = [r.name for r in rows if r.action == "folded" and layer in r.detail]
    if config.mode in forms.WHOLE_MODEL_MODES:
        st.caption(f"{config.mode} has no integer grid: each weight is rounded to the nearest {config.mode} number "
                   "(about 3 significant digits for fp16, 2 for bf16).")
    else:
        st.caption("Every weight of the channel is rounded to the nearest red line; the grid spans the channel's "
                   "largest weights, so one outlier spreads the lines and costs the others precision."
                   + (" A symmetric grid keeps 0 exact and so uses one value fewer than 2^bits."
                      if config.mode == "weight-only" and config.symmetric else "")
                   + (f" Here {', '.join(folded)} is folded into {layer} first, which rescales its channels: the "
                      "stored grid is that of the folded weights." if folded else ""))


# ---------------------------------------------------------------- guard

def quantized_guard(ws, v: Variant) -> None:
    """The active variant is already quantized: say so and offer its float parent."""
    from ui.widgets import make_active_button

    what = "quantized" if v.kind.get("quantized") else "simulated (weight-only quantized)"
    parent = resources.variant(v.parent_id) if v.parent_id else None
    st.info(f"**{v.name}** is already {what}. Quantize its float parent instead"
            + (f": **{parent.name}**." if parent else "."), icon=":material/block:")
    if parent is not None and not (parent.kind.get("quantized") or parent.kind.get("simulated")):
        make_active_button(parent, key=K + "use-parent", label=f"Make {parent.name} active")
    st.stop()


def saved_message(child: Variant) -> None:
    state.set_flash(f"Saved **{child.name}** (`{child.id}`, {child.kind_label}): test accuracy "
                    f"{child.metrics['accuracy']:.2%}, file {human_bytes(child.metrics['size_bytes'])}. "
                    "It is in the sidebar's variant picker.", variant_id=child.id)
