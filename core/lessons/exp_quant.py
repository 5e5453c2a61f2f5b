"""Live experiments of the Learn lesson 4: from float to int8.

Everything is the Quantize page's own code (`preview_quantize`, `kbit_quantize`, the SQNR per
layer of `quantize`), run on the shipped LeNet-5. Each bit width is quantized and measured once per
process; after that, moving a control only draws. Real static int8 (calibration, conversion,
timing: several seconds the first time in a process) is shown from a shipped recording until the
lesson's button measures it here; the live measurement is then kept for the process."""
from __future__ import annotations

import functools

import plotly.graph_objects as go

from core.base.ratios import speed_change
from core.base.units import human_bytes
from core.compress.pruning.masks import prunable_layers
from core.compress.quant.preview import grid_levels, preview_quantize
from core.compress.quant.quantize import QuantConfig, calibration_batches
from core.data.datasets import cached_dataset
from core.lessons.common import (
    cached_model,
    dense_accuracy,
    lesson_model,
    lesson_val,
    load_recording,
    recorded_note,
    val_note,
    weights_digest,
)
from core.lessons.registry import ExperimentResult, Metric, experiment
from core.store.variants import file_metadata
from core.store.workspace import Workspace
from core.viz import charts as viz

BITS = (8, 4, 2)
CALIB_BATCHES = QuantConfig().calib_batches      # the Quantize page's default (8 batches of 64 images)


@functools.lru_cache(maxsize=4)
def lesson_calibration(dataset: str, n_batches: int = CALIB_BATCHES) -> list:
    """The Quantize page's fixed calibration batches (training images), shared and read-only."""
    return calibration_batches(cached_dataset(dataset).train, n_batches)


@functools.lru_cache(maxsize=16)
def _quantized(root: str, variant_id: str, created_at: float, dataset: str, mode: str, bits: int,
               timing_budget_s: float = 0.5):
    """The Quantize page's in-page run of `mode` (weight-only at `bits`, or static int8) on the
    shipped model: accuracy on the validation subset, the bytes Save would write, the SQNR per layer
    and, for static int8, float and int8 timed alternately now. Once per process and setting."""
    import time

    v = Workspace(root, seed_baselines=False).get_variant(variant_id)
    cfg = QuantConfig(mode=mode, bits=bits if mode == "weight-only" else QuantConfig().bits)
    p = preview_quantize(cached_model(root, variant_id, created_at), cfg, lesson_val(dataset), lesson_calibration(dataset),
                         measure_speed=mode != "weight-only", timing_budget_s=timing_budget_s,
                         metadata=lambda: file_metadata(f"{v.name} | {cfg.label()}", v.dataset, v.arch))
    return p, time.strftime("%H:%M:%S")


INT8_FILE = "int8-base-lenet5.json"
RECORD_TIMING_S = 4.0


def _int8_summary(p) -> dict:
    """What the lesson shows of a static int8 run (JSON: also what is recorded)."""
    lat = p.latency
    # a timing that did not settle is None ("not measurable now"), with the reason as the note
    return {"size_bytes": p.size_bytes, "accuracy": p.accuracy, "device": lat.device,
            "busy_note": "" if lat.all_settled() else f"Latency {lat.unmeasurable_reason()}.",
            "runs_b64": lat.timings["after"][64].runs,
            "errors": {e.name: e.weight_sqnr_db for e in p.report.errors},
            "latency_ms": {"float": {"1": lat.shown_ms("before", 1), "64": lat.shown_ms("before", 64)},
                           "int8": {"1": lat.shown_ms("after", 1), "64": lat.shown_ms("after", 64)}}}


def _ms(x: float | None) -> str:
    return f"{x:.2f} ms" if x is not None else "not measurable now"


def _pair(lat: dict, b: str) -> str:
    """'11.42 → 2.91 ms' at batch `b`, or 'not measurable now'."""
    f, i = lat["float"][b], lat["int8"][b]
    return f"{f:.2f} → {i:.2f} ms" if f is not None and i is not None else "not measurable now"


def record_int8(ws) -> dict:
    """What scripts/record_lessons.py stores in lessons/recorded/int8-base-lenet5.json."""
    v, _ = lesson_model(ws)
    # a longer timing than the page's (more passes, a steadier median): it is shown until re-measured
    p, _ = _quantized(str(ws.root), v.id, v.created_at, v.dataset, "static-int8", 8, RECORD_TIMING_S)
    return {"variant": v.id, "weights_sha256": weights_digest(ws, v), "calib_batches": CALIB_BATCHES,
            **_int8_summary(p)}


def _int8(ws, v, live: bool) -> tuple[dict, str, bool]:
    """(int8 summary, the note that says where it comes from, recorded?). A live run is kept for
    the process: once measured here (button, or no matching recording), it replaces the recording."""
    key = (str(ws.root), v.id, v.created_at, v.dataset, "static-int8", 8)
    if not live and key not in _LIVE_INT8:
        rec = load_recording(INT8_FILE)
        if rec is not None and rec.get("variant") == v.id and rec.get("weights_sha256") == weights_digest(ws, v):
            return rec, recorded_note(rec, "static int8 (size, accuracy, latency)") + (
                " Press **Quantize to int8 and time it now** to measure it on this machine."), True
    fresh = key not in _LIVE_INT8
    p, at = _quantized(*key)
    _LIVE_INT8.add(key)
    when = "now" if fresh else "earlier in this process"
    return _int8_summary(p), f"**Live**: static int8 was quantized and timed {when} (at {at}).", False


_LIVE_INT8: set = set()     # static int8 runs measured in this process (then shown instead of the recording)


def _accuracy_figure(accs: dict[int, float], dense: float, bits: int) -> go.Figure:
    xs = ["float32"] + [f"{b}-bit" for b in BITS]
    ys = [dense] + [accs[b] for b in BITS]
    colors = [viz.BEFORE_COLOR] + [viz.PRUNED_COLOR if b == bits else viz.KEPT_COLOR for b in BITS]
    fig = go.Figure(go.Bar(x=xs, y=ys, marker_color=colors, text=[f"{y:.1%}" for y in ys], textposition="outside",
                           cliponaxis=False, hovertemplate="%{x}: %{y:.2%}<extra></extra>"))
    fig.update_layout(title="validation accuracy, weights of every layer quantized (weight-only, symmetric)",
                      yaxis={"title": "validation-subset accuracy", "tickformat": ".0%", "range": [0, 1.08]},
                      height=360, showlegend=False)
    return fig


@experiment("quantize_weights")
def quantize_weights(ws, params: dict) -> ExperimentResult:
    """One layer's weights on the k-bit grid, the error per layer, accuracy at 8/4/2 bits
    (weight-only) and the size and latency of real static int8, on base-lenet5."""
    v, model = lesson_model(ws)
    names = [n for n, _ in prunable_layers(model)]
    layer = params.get("layer", "fc1")
    if layer not in names:
        raise ValueError(f"layer {layer!r} is not a quantizable layer of {v.name}; choose one of {', '.join(names)}")
    try:
        bits = int(params.get("bits", 8))
    except (TypeError, ValueError):
        raise ValueError(f"bits must be one of {', '.join(map(str, BITS))}, got {params.get('bits')!r}") from None
    if bits not in BITS:
        raise ValueError(f"bits must be one of {', '.join(map(str, BITS))}, got {bits}")
    root, key = str(ws.root), (str(ws.root), v.id, v.created_at, v.dataset)
    # every bit width at once on the first call, so that moving the bits control later only draws
    runs = {b: _quantized(*key, "weight-only", b)[0] for b in BITS}
    p = runs[bits]
    accs = {b: r.accuracy for b, r in runs.items()}
    int8, int8_note, int8_recorded = _int8(ws, v, bool(params.get("int8_live")))
    dense = dense_accuracy(root, v.id, v.created_at, v.dataset)
    w = dict(model.named_modules())[layer].weight.detach()
    channel = 0     # the Quantize page's default channel: each output channel has its own grid
    levels = grid_levels(w, QuantConfig(mode="weight-only", bits=bits, symmetric=True), channel)
    err = {e.name: e for e in p.report.errors}[layer]
    step = float(levels[1] - levels[0])
    figures = [
        viz.quant_grid_histogram(w, levels, channel_weight=w[channel],
                                 title=f"{layer}: weights and the {bits}-bit grid of output channel {channel}"),
        viz.quant_error_chart(p.report.errors, title=f"error per layer at {bits} bits (weight-only)"),
        _accuracy_figure(accs, dense, bits),
    ]
    float_bytes = v.metrics.get("size_bytes") or 0
    lat = int8["latency_ms"]
    metrics = [
        Metric(f"{layer} weight SQNR", f"{err.weight_sqnr_db:.1f} dB",
               help="10·log10(Σw² / Σ(w − q(w))²): signal over rounding noise of the stored weights; about 6 dB "
                    "per bit"),
        Metric(f"Val. accuracy, {bits}-bit", f"{p.accuracy:.2%}", f"{(p.accuracy - dense) * 100:+.2f} pp",
               help=f"every layer's weights on the {bits}-bit grid (weight-only), on the validation subset; "
                    f"float {dense:.2%}"),
        Metric(f"File, {bits}-bit weights", human_bytes(p.size_bytes),
               f"{float_bytes / p.size_bytes:.1f}x smaller" if float_bytes else None,
               help=f"the bytes the Quantize page would save (packed {bits}-bit codes + one scale per channel); "
                    f"float32: {human_bytes(float_bytes)}"),
        Metric("Static int8: b64 latency", _ms(lat["int8"]["64"]),
               speed_change(lat["float"]["64"], lat["int8"]["64"]),
               help=f"real int8 kernels (x86), weights AND activations int8: float {_ms(lat['float']['64'])} at "
                    f"batch 64; file {human_bytes(int8['size_bytes'])}"
                    + (" (recorded)" if int8_recorded else " (measured in this process)")),
    ]
    sqnr_col = f"{layer} weight SQNR"
    table = [{"setting": "float32", "file": human_bytes(float_bytes), "val. accuracy": f"{dense:.2%}",
              sqnr_col: "exact", "latency b1 / b64": "float", "kind": "float"}]
    for b, r in runs.items():
        table.append({"setting": f"weight-only {b}-bit", "file": human_bytes(r.size_bytes),
                      "val. accuracy": f"{r.accuracy:.2%}",
                      sqnr_col: f"{({e.name: e for e in r.report.errors})[layer].weight_sqnr_db:.1f} dB",
                      "latency b1 / b64": "as float (computed in float)", "kind": "simulated"})
    i8 = int8["errors"].get(layer)
    table.append({"setting": "static int8 (weights + activations)" + (" (recorded)" if int8_recorded else ""),
                  "file": human_bytes(int8["size_bytes"]), "val. accuracy": f"{int8['accuracy']:.2%}",
                  sqnr_col: f"{i8:.1f} dB" if i8 is not None else "float (not quantized)",
                  "latency b1 / b64": f"{_pair(lat, '1')} / {_pair(lat, '64')}",
                  "kind": "quantized"})
    notes = [
        f"{bits}-bit symmetric grid: {len(levels)} values per output channel, one step = {step:.3g} for channel "
        f"{channel} of {layer} (its largest |w| divided by {(len(levels) - 1) // 2}). Each weight is rounded to the "
        "nearest red line.",
        "Weight-only k-bit (the Quantize page's mode): the file stores packed k-bit codes, the model computes in "
        "float after dequantizing them, so it is smaller but not faster (kind simulated). Each bit width is "
        "quantized and measured once per process (all three on the first call).",
        f"{int8_note} Static int8 uses {CALIB_BATCHES} calibration batches of 64 training images, as on the Quantize "
        f"page; latency on {int8['device']}, {int8['runs_b64']} passes each at batch 64: "
        f"{_pair(lat, '64')} at batch 64, {_pair(lat, '1')} at batch 1. Only int8 kernels for weights and "
        "activations make it faster."
        + (f" {int8['busy_note']}" if int8.get("busy_note") else ""),
        val_note(lesson_val(v.dataset)),
    ]
    state = {"quant-mode": "weight-only", "quant-bits": bits, "quant-symmetric": True, "quant-grid-layer": layer}
    return ExperimentResult(figures=figures, metrics=metrics, table=table, notes=notes, recorded=int8_recorded,
                            workbench={"page": "quantize", "variant": v.id, "state": state})


RECORDINGS = {INT8_FILE: record_int8}
