"""Live experiments of the Learn lessons 1-3: which weights go, why 90% sparse is not faster, not
all layers are equal. Also the per-process caches every lesson experiment may use (`lesson_model`,
`lesson_val`): a model or a validation subset is loaded once, then each slider move costs only the
work it really changes."""
from __future__ import annotations

import copy
import functools

import plotly.graph_objects as go
import torch
import torch.nn as nn

from core.base.ratios import speed_words
from core.base.units import fmt_sparsity, human_bytes
from core.compress.pruning.masks import prunable_layers, prune_layer_to_
from core.compress.pruning.prune import PruneConfig, prune
from core.compress.pruning.schedule import sensitivity_scan, suggest_allocation
from core.formats.encoding import encode_best, encode_dense
from core.lessons.common import (
    LESSON_VARIANT,
    cached_model,
    dense_accuracy,
    fast_copy,
    lesson_model,
    lesson_val,
    lesson_variant,
    load_recording,
    recorded_note,
    val_note,
    weights_digest,
)
from core.lessons.registry import ExperimentResult, Metric, experiment
from core.measure.latency import time_models
from core.measure.metrics import accuracy, channels_last_, count_macs, count_params
from core.models.registry import classifier_name
from core.store.variants import arch_with_edits, file_metadata
from core.store.workspace import Variant, Workspace
from core.viz import charts as viz

CURVE_AMOUNTS = (0.0, 0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


# ---------------------------------------------------------------- shared caches (read-only objects)


# ---------------------------------------------------------------- lesson 1: which weights go

def one_layer_config(layer: str, amount: float) -> PruneConfig:
    """L1 per-layer pruning of exactly one layer (the classifier too, when asked for): the Prune
    page builds this config from the workbench state below."""
    return PruneConfig(method="l1", scope="layer", amount=0.0, layer_amounts={layer: float(amount)}, exclude=())


def prune_page_state(layer_amounts: dict[str, float], exclude: list[str], amount: float = 0.0) -> dict:
    """Prune page widget values (ui/forms.py prune_form) for L1 per-layer amounts."""
    state = {"prune-method": "l1", "prune-scope": "layer", "prune-amount": amount, "prune-exclude": list(exclude),
             "prune-overrides": list(layer_amounts)}
    state.update({f"prune-layer-{n}": min(0.99, round(float(a), 2)) for n, a in layer_amounts.items()})
    return state


@functools.lru_cache(maxsize=32)
def _layer_curve(root: str, variant_id: str, created_at: float, dataset: str, layer: str) -> tuple:
    """Val-subset accuracy at CURVE_AMOUNTS when only `layer` is pruned (one private copy, the
    layer restored after each point, as the sensitivity scan does)."""
    m = copy.deepcopy(fast_copy(root, variant_id, created_at))
    mod = dict(m.named_modules())[layer]
    original = mod.weight.detach().clone()
    val = lesson_val(dataset)
    out = []
    with torch.no_grad():
        for a in CURVE_AMOUNTS:
            prune_layer_to_(mod, "l1", a)
            out.append(accuracy(m, val))
            mod.weight.data.copy_(original)
    return tuple(out)


def _curve_figure(layer: str, amounts, accs, point: tuple[float, float], dense: float) -> go.Figure:
    fig = go.Figure(go.Scatter(x=list(amounts), y=list(accs), mode="lines+markers", name=f"{layer} alone",
                               line={"color": viz.KEPT_COLOR}, hovertemplate="%{x:.0%}: %{y:.2%}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", name="your setting",
                             marker={"color": viz.PRUNED_COLOR, "size": 14, "symbol": "diamond"},
                             hovertemplate="%{x:.0%}: %{y:.2%}<extra></extra>"))
    fig.add_hline(y=dense, line_dash="dot", line_color=viz.BEFORE_COLOR, annotation_text="unpruned")
    fig.update_layout(title=f"validation accuracy when only {layer} is pruned",
                      xaxis={"title": f"sparsity of {layer}", "tickformat": ".0%", "range": [-0.02, 1.01]},
                      yaxis={"title": "validation-subset accuracy", "tickformat": ".0%"}, height=380)
    return fig


@experiment("prune_one_layer")
def prune_one_layer(ws, params: dict) -> ExperimentResult:
    """Magnitude (L1) pruning of one layer of base-lenet5: heatmap, histogram, accuracy curve."""
    v, model = lesson_model(ws)
    names = [n for n, _ in prunable_layers(model)]
    layer = params.get("layer", "fc1")
    if layer not in names:
        raise ValueError(f"layer {layer!r} is not a prunable layer of {v.name}; choose one of {', '.join(names)}")
    amount = float(params.get("amount", 0.5))
    if not 0.0 <= amount < 1.0:
        raise ValueError(f"amount must be in [0, 1), got {amount}")
    val = lesson_val(v.dataset)
    rec = recorded_scan(ws, v)
    if rec is not None:   # the same measurement (same subset, same code), shipped: no wait on a layer change
        scan = rec["result"]
        row_ = next(r for r in scan["layers"] if r["name"] == layer)
        amounts, curve = (0.0, *scan["amounts"]), (scan["baseline_accuracy"], *row_["accuracy"])
    else:
        amounts, curve = CURVE_AMOUNTS, _layer_curve(str(ws.root), v.id, v.created_at, v.dataset, layer)
    dense = curve[0]
    pruned, report = prune(model, one_layer_config(layer, amount))
    acc = accuracy(channels_last_(pruned), val)
    row = report.layer(layer)
    before_w = dict(model.named_modules())[layer].weight.detach()
    after_w = dict(pruned.named_modules())[layer].weight.detach()
    params_all, nonzero_all = count_params(pruned)
    figures = [
        viz.weight_heatmap(after_w, title=f"{layer} after pruning {amount:.0%} (red: removed)", max_cells=(100, 200)),
        viz.weight_histogram(before_w, after_w, title=f"{layer}: weight values before / after"),
        _curve_figure(layer, amounts, curve, (row.sparsity_after, acc), dense),
    ]
    metrics = [
        Metric("Sparsity of " + layer, fmt_sparsity(row.sparsity_after),
               help=f"{row.weights_before - row.nonzero_after:,} of {row.weights_before:,} weights are zero"),
        Metric("Sparsity of the model", fmt_sparsity(1 - nonzero_all / params_all),
               help=f"zeros among all {params_all:,} parameters (weights and biases of every layer)"),
        Metric("Val. accuracy", f"{acc:.2%}", _pp(acc - dense),
               help=f"on the fixed {len(val):,}-image validation subset; unpruned {dense:.2%}"),
    ]
    threshold = float(before_w.abs().flatten().kthvalue(max(1, round(amount * before_w.numel())))[0]) if amount else 0.0
    notes = [val_note(val),
             f"Pruned: **{layer}** only, L1 magnitude. Weights with |w| ≤ {threshold:.4g} are now zero "
             f"({row.weights_before - row.nonzero_after:,} of {row.weights_before:,}).",
             (recorded_note(rec, "the curve (lesson 3's sensitivity scan, same subset)") if rec is not None else
              "The curve's points are measured once per layer (the same subset) and kept for this process.")
             + " The diamond is your setting, measured now."]
    state = prune_page_state({layer: amount}, exclude=[])
    return ExperimentResult(figures=figures, metrics=metrics, notes=notes, recorded=rec is not None,
                            workbench={"page": "prune", "variant": v.id, "state": state})


# ---------------------------------------------------------------- lesson 2: sparse is not faster

LATENCY_BUDGET_S = 3.0      # at most, for the three models at both batch sizes (stops once settled)
KIND_ORDER = ("dense", "masked", "shrunk")


@functools.lru_cache(maxsize=16)
def _masked_and_shrunk(root: str, variant_id: str, created_at: float, dataset: str, amount: float) -> dict:
    """The dense model and its two pruned copies at `amount`, with everything about them that does
    not change between calls (files, counts, MACs, val-subset accuracy). Latency is NOT cached: it
    is timed on every call."""
    ws = Workspace(root, seed_baselines=False)
    v = ws.get_variant(variant_id)
    dense = cached_model(root, variant_id, created_at)
    val = lesson_val(dataset)
    shape = tuple(val.images.shape[1:])
    masked, masked_rep = prune(dense, PruneConfig(method="l1", scope="layer", amount=amount))
    shrunk, shrunk_rep = prune(dense, PruneConfig(method="channel", scope="layer", amount=amount), input_shape=shape)
    out = {"input_shape": shape, "models": {}, "rows": {}}
    for label, m, rep in (("dense", dense, None), ("masked", masked, masked_rep), ("shrunk", shrunk, shrunk_rep)):
        meta = file_metadata(f"{v.name} ({label})", v.dataset, arch_with_edits(v.arch, m))
        state = m.state_dict()
        best, fmt = encode_best(state, meta)
        params, nonzero = count_params(m)
        kind = rep.kind if rep else {"masked": False, "shrunk": False}
        if label == "dense":   # all three timed and measured in the same (fast) layout
            m = fast_copy(root, variant_id, created_at)
            acc = dense_accuracy(root, variant_id, created_at, dataset)
        else:
            acc = accuracy(channels_last_(m), val)
        out["models"][label] = m
        out["rows"][label] = {
            "model": label, "masked": bool(kind.get("masked")), "shrunk": bool(kind.get("shrunk")),
            "params": params, "nonzero_params": nonzero, "dense_size_bytes": len(encode_dense(state, meta)),
            "size_bytes": len(best), "format": fmt, "macs": count_macs(m, shape),
            "val_accuracy": acc,
            "sparsity": rep.sparsity if rep else 0.0}
    return out


def _ratio_figure(rows: dict[str, dict], amount: float) -> go.Figure:
    """Grouped bars: each measure relative to the dense model (1.0 = the same), the real value in
    the label; the masked model's bars stay at 1.0 except for the sparse file."""
    measures = [("size_bytes", "file (best format)"), ("macs", "MACs"), ("latency_ms_b1", "latency, batch 1"),
                ("latency_ms_b64", "latency, batch 64")]
    colors = {"dense": viz.BEFORE_COLOR, "masked": viz.INPUTS_COLOR, "shrunk": viz.KEPT_COLOR}
    fig = go.Figure()
    for label in KIND_ORDER:
        r = rows[label]
        # a latency that did not settle has no bar (None), not a number
        ys = [r[k] / rows["dense"][k] if r[k] is not None and rows["dense"][k] is not None else None
              for k, _ in measures]
        texts = [_short(k, r[k]) if r[k] is not None else "not measurable now" for k, _ in measures]
        fig.add_trace(go.Bar(x=[t for _, t in measures], y=ys, name=label, marker_color=colors[label], text=texts,
                             textposition="outside", cliponaxis=False,
                             hovertemplate="%{x}: %{text} (%{y:.2f}x of dense)<extra>" + label + "</extra>"))
    fig.add_hline(y=1.0, line_dash="dot", line_color=viz.BEFORE_COLOR)
    fig.update_layout(barmode="group", title=f"masked vs shrunk at {amount:.0%}, relative to the dense model "
                                              "(lower is better)",
                      yaxis={"title": "relative to dense", "rangemode": "tozero"}, height=420)
    return fig


def _short(key: str, value: float) -> str:
    if key == "size_bytes":
        return human_bytes(value)
    if key == "macs":
        return f"{value / 1e6:.2f} M"
    return f"{value:.2f} ms"


@experiment("masked_vs_shrunk")
def masked_vs_shrunk(ws, params: dict) -> ExperimentResult:
    """The same model masked (L1, zeros kept) and channel-pruned (layers smaller) at one amount,
    file sizes, MACs and latency measured now, alternately, on this machine."""
    v, _ = lesson_model(ws)
    amount = round(float(params.get("amount", 0.9)), 4)
    if not 0.0 < amount < 1.0:
        raise ValueError(f"amount must be between 0 and 1, got {amount}")
    got = _masked_and_shrunk(str(ws.root), v.id, v.created_at, v.dataset, amount)
    lat = time_models_for_lesson(got["models"], got["input_shape"])
    rows = {k: {**got["rows"][k], "latency_ms_b1": lat.shown_ms(k, 1), "latency_ms_b64": lat.shown_ms(k, 64)}
            for k in KIND_ORDER}
    d, m, s = (rows[k] for k in KIND_ORDER)

    metrics = [
        Metric("Masked: b64 latency", _ms_text(m["latency_ms_b64"]), _paired_change(lat, "masked"),
               help=f"batch 64, timed now against the dense model ({_ms_text(d['latency_ms_b64'])}): the same dense "
                    "kernels run, so expect the same speed up to timing noise"),
        Metric("Shrunk: b64 latency", _ms_text(s["latency_ms_b64"]), _paired_change(lat, "shrunk"),
               help=f"batch 64, timed now against the dense model ({_ms_text(d['latency_ms_b64'])}): the layers are "
                    "physically smaller"),
        Metric("Masked: file", human_bytes(m["size_bytes"]), f"{d['size_bytes'] / m['size_bytes']:.1f}x smaller",
               help=f"{m['format']} encoding (bitmask + packed non-zeros); as dense float32 it would be "
                    f"{human_bytes(m['dense_size_bytes'])}, the same as the original"),
        Metric("Shrunk: file", human_bytes(s["size_bytes"]), f"{d['size_bytes'] / s['size_bytes']:.1f}x smaller",
               help="a plain dense file of the smaller tensors"),
    ]
    table = [{"model": r["model"], "masked": r["masked"], "shrunk": r["shrunk"], "params": r["params"],
              "non-zero params": r["nonzero_params"], "dense file": human_bytes(r["dense_size_bytes"]),
              "best file": f"{human_bytes(r['size_bytes'])} ({r['format']})", "MACs": r["macs"],
              "latency b1 (ms)": _ms_cell(r["latency_ms_b1"]), "latency b64 (ms)": _ms_cell(r["latency_ms_b64"]),
              "val. accuracy": f"{r['val_accuracy']:.2%}"} for r in rows.values()]
    runs = lat.timings["dense"][64].runs
    notes = [
        f"Latency timed now on {lat.device}: the three models alternately, pass by pass, after a warm-up; median of "
        f"{runs} undisturbed passes at batch 64 and {lat.timings['dense'][1].runs} at batch 1, shown when its 95% "
        "interval is within +/-10%.",
        f"Masked: L1 per layer, {amount:.0%} of each layer's weights are zeros ({m['sparsity']:.1%} of the pruned "
        "layers; the classifier left alone). Shrunk: Torch-Pruning removes "
        f"{amount:.0%} of each layer's output channels and everything wired to them, so more weights go than the "
        f"amount says ({s['sparsity']:.1%} of the pruned layers' weights).",
        val_note(lesson_val(v.dataset)),
    ]
    if not lat.all_settled():   # first, and on the chart: no latency is shown that did not settle
        notes.insert(0, f"**Latency {lat.unmeasurable_reason()}**: the latencies that did not settle are left out; "
                        "the file sizes, parameters and MACs do not depend on it. Run it again when the machine is "
                        "quiet.")
    state = {"prune-method": "channel", "prune-scope": "layer", "prune-amount": round(amount * 20) / 20}
    fig = _ratio_figure(rows, amount)
    if not lat.all_settled():
        fig.update_layout(title=fig.layout.title.text + "<br><sup>some latencies not measurable now (the machine "
                                                        "was busy): left out</sup>")
    return ExperimentResult(figures=[fig], metrics=metrics, table=table, notes=notes,
                            workbench={"page": "prune", "variant": v.id, "state": state})


def _ms_text(ms: float | None) -> str:
    return f"{ms:.2f} ms" if ms is not None else "not measurable now"


def _ms_cell(ms: float | None) -> float | str:
    return round(ms, 3) if ms is not None else "not measurable now"


def _paired_change(lat, label: str) -> str | None:
    """'2.10x faster' than dense at batch 64 when that ratio settled, else None (no pill)."""
    r = lat.ratio_figure("dense", label, 64)
    return speed_words(r.value) if r.shown else None


def time_models_for_lesson(models: dict[str, nn.Module], input_shape: tuple[int, ...]):
    """Batch 1 and 64, alternately, a short budget (an answer within about a second)."""
    # 15 passes each (alternately) on a quiet machine: a median that holds; under load the budget stops it
    return time_models(models, input_shape, (1, 64), "cpu", warmup=2, min_runs=15, min_seconds=0.15,
                       budget_s=LATENCY_BUDGET_S)


# ---------------------------------------------------------------- lesson 3: not all layers are equal

SCAN_FILE = "sensitivity-base-lenet5.json"
# the Prune page's default amounts plus a few more, so lesson 1's curves are drawn from the same scan
SCAN_AMOUNTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def run_scan(ws, variant_id: str = LESSON_VARIANT) -> dict:
    """The Prune page's sensitivity scan (L1, one layer at a time) of every prunable layer, the
    classifier included, on the lesson's validation subset."""
    v, model = lesson_model(ws, variant_id)
    return sensitivity_scan(model, lesson_val(v.dataset), SCAN_AMOUNTS, method="l1", exclude=())


def record_sensitivity(ws) -> dict:
    """What scripts/record_lessons.py stores in lessons/recorded/sensitivity-base-lenet5.json."""
    import time

    v = lesson_variant(ws)
    t0 = time.perf_counter()
    result = run_scan(ws)
    return {"variant": v.id, "weights_sha256": weights_digest(ws, v), "seconds": round(time.perf_counter() - t0, 2),
            "result": result}


def recorded_scan(ws, v: Variant) -> dict | None:
    """The shipped recording of the scan, when it was made on exactly these weights."""
    rec = load_recording(SCAN_FILE)
    if rec is None or rec.get("variant") != v.id or rec.get("weights_sha256") != weights_digest(ws, v):
        return None
    return rec


@functools.lru_cache(maxsize=4)
def _live_scan(root: str, variant_id: str, created_at: float) -> tuple[dict, float]:
    import time

    t0 = time.perf_counter()
    result = run_scan(Workspace(root, seed_baselines=False), variant_id)
    return result, time.perf_counter() - t0


def without(result: dict, names: set[str]) -> dict:
    """A scan result without some layers' rows (the classifier, left alone as on the Prune page)."""
    return {**result, "layers": [r for r in result["layers"] if r["name"] not in names]}


@functools.lru_cache(maxsize=64)
def _measure_amounts(root: str, variant_id: str, created_at: float, dataset: str, amounts: tuple) -> tuple:
    """(val-subset accuracy, overall sparsity of the pruned layers) of L1 per-layer `amounts`."""
    cfg = PruneConfig(method="l1", scope="layer", amount=0.0, layer_amounts=dict(amounts))
    pruned, report = prune(cached_model(root, variant_id, created_at), cfg)
    return accuracy(channels_last_(pruned), lesson_val(dataset)), report.sparsity


def _amounts_figure(uniform: dict[str, float], alloc: dict[str, float], weights: dict[str, int]) -> go.Figure:
    names = list(alloc)
    fig = go.Figure([
        go.Bar(x=names, y=[uniform[n] for n in names], name="uniform", marker_color=viz.BEFORE_COLOR,
               text=[f"{uniform[n]:.0%}" for n in names], textposition="outside", cliponaxis=False),
        go.Bar(x=names, y=[alloc[n] for n in names], name="from the scan", marker_color=viz.KEPT_COLOR,
               text=[f"{alloc[n]:.0%}" for n in names], textposition="outside", cliponaxis=False)])
    fig.update_layout(barmode="group", title="sparsity per layer: uniform vs allocated from the scan",
                      xaxis={"ticktext": [f"{n}<br>({weights[n]:,} weights)" for n in names], "tickvals": names},
                      yaxis={"title": "layer sparsity", "tickformat": ".0%", "range": [0, 1.12]}, height=380)
    return fig


@experiment("sensitivity_allocation")
def sensitivity_allocation(ws, params: dict) -> ExperimentResult:
    """The sensitivity scan (recorded, or re-run live on request) and what a per-layer allocation
    from it buys over uniform pruning at the same overall sparsity, both measured now."""
    v, model = lesson_model(ws)
    target = round(float(params.get("sparsity", 0.8)), 4)
    if not 0.0 < target <= max(SCAN_AMOUNTS):
        raise ValueError(f"overall sparsity must be in (0, {max(SCAN_AMOUNTS)}], got {target}")
    root = str(ws.root)
    notes: list[str] = []
    recorded = False
    rec = None if params.get("rerun") else recorded_scan(ws, v)
    if rec is not None:
        scan = rec["result"]
        recorded = True
        notes.append(recorded_note(rec, f"the sensitivity scan ({len(scan['layers'])} layers x "
                                        f"{len(scan['amounts'])} amounts, {rec.get('seconds', '?')} s)")
                     + " Press **Re-run the scan live** to measure it again here.")
    else:
        was_cached = _live_scan.cache_info().currsize
        scan, seconds = _live_scan(root, v.id, v.created_at)
        fresh = _live_scan.cache_info().currsize > was_cached
        why = "" if params.get("rerun") else " (no recording of these weights is shipped)"
        notes.append(f"**Live**: the scan was {'run now' if fresh else 'run earlier in this process'}{why}, "
                     f"{len(scan['layers'])} layers x {len(scan['amounts'])} amounts on {scan['val_samples']:,} "
                     f"validation images: it took {seconds:.1f} s, which is why a recording is shown by default.")
    cls = classifier_name(model)
    scanned = without(scan, {cls})
    alloc = {n: min(0.99, round(a, 2)) for n, a in suggest_allocation(scanned, target).items()}
    uniform = {r["name"]: target for r in scanned["layers"]}
    u_acc, u_sp = _measure_amounts(root, v.id, v.created_at, v.dataset, tuple(sorted(uniform.items())))
    a_acc, a_sp = _measure_amounts(root, v.id, v.created_at, v.dataset, tuple(sorted(alloc.items())))
    dense = scan["baseline_accuracy"]
    weights = {r["name"]: r["weights"] for r in scan["layers"]}
    figures = [viz.sensitivity_chart(scan, title=f"sensitivity of {v.name}: accuracy when only one layer is pruned"),
               _amounts_figure(uniform, alloc, weights)]
    metrics = [
        Metric("Uniform: val. accuracy", f"{u_acc:.2%}", _pp(u_acc - dense),
               help=f"every layer but {cls} at {target:.0%}; overall {u_sp:.1%}; change from unpruned"),
        Metric("Allocated: val. accuracy", f"{a_acc:.2%}", _pp(a_acc - u_acc),
               help=f"per-layer amounts from the scan, overall {a_sp:.1%}; change from uniform"),
        Metric("Overall sparsity", f"{a_sp:.1%}", help=f"of {', '.join(uniform)} ({cls}, the classifier, left alone "
               "as on the Prune page); uniform: " + f"{u_sp:.1%}"),
        Metric("Unpruned: val. accuracy", f"{dense:.2%}", help="val-subset accuracy of the unpruned model"),
    ]
    table = [{"layer": n, "weights": weights[n], "uniform": f"{uniform[n]:.0%}", "from the scan": f"{alloc[n]:.0%}",
              f"val. acc. with only this layer at {max(scan['amounts']):.0%}":
                  f"{next(r for r in scan['layers'] if r['name'] == n)['accuracy'][-1]:.2%}"} for n in alloc]
    notes += [
        "The allocation is the Prune page's (`suggest_allocation`): it raises, step by step, the layer whose "
        "predicted accuracy loss per weight removed is smallest, until the overall sparsity is met. Amounts are "
        "rounded to the Prune page's 1% slider steps, so the overall sparsity can differ from the target by a "
        "fraction of a percent.",
        "Both prunings (uniform and allocated) are L1 per layer, measured now (once per setting in this process). "
        + val_note(lesson_val(v.dataset)),
    ]
    state = prune_page_state(alloc, exclude=[cls], amount=round(target * 20) / 20)
    return ExperimentResult(figures=figures, metrics=metrics, table=table, notes=notes, recorded=recorded,
                            workbench={"page": "prune", "variant": v.id, "state": state})


RECORDINGS = {SCAN_FILE: record_sensitivity}


def _pp(x: float) -> str:
    return f"{x * 100:+.2f} pp"
