"""Plotly figure builders: data in, figure out. No Streamlit here.

Weight matrices are shown as out x (in*kh*kw) (conv kernels flattened per output channel).
Large ones are block-reduced to at most MAX_CELLS cells (mean |w| per block, with the fraction of
pruned weights per block in the hover), because a browser slows down with cell count, not bytes;
the full-resolution view is a PNG image trace (`px.imshow(binary_string=True)`).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from core.base.units import fmt_sparsity

MAX_CELLS = (256, 1024)             # rows, columns of a block-reduced heatmap
PRUNED_COLOR = "#e4572e"            # pruned weights / removed channels
KEPT_COLOR = "#4f8bf9"
BEFORE_COLOR = "#9aa5b1"
INPUTS_COLOR = "#f2a541"           # input columns removed because the layer before lost channels
MAGNITUDE_SCALE = "Viridis"


def as_matrix(weight: torch.Tensor | np.ndarray) -> np.ndarray:
    """Any weight tensor -> 2-D float32 array: (out, in*kh*kw) for convs, (1, n) for vectors."""
    w = weight.detach().cpu().float().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float32)
    if w.ndim == 0:
        w = w.reshape(1, 1)
    elif w.ndim == 1:
        w = w.reshape(1, -1)
    elif w.ndim > 2:
        w = w.reshape(w.shape[0], -1)
    return w.astype(np.float32, copy=False)


def block_reduce(a: np.ndarray, max_cells: tuple[int, int] = MAX_CELLS, reduce: str = "mean"
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """Reduce a 2-D array by blocks so it has at most `max_cells` (rows, cols). Edge blocks that
    are only partly filled are reduced over their real cells. Returns (reduced, (by, bx))."""
    h, w = a.shape
    by = max(1, math.ceil(h / max_cells[0]))
    bx = max(1, math.ceil(w / max_cells[1]))
    if by == 1 and bx == 1:
        return a, (1, 1)
    H, W = math.ceil(h / by), math.ceil(w / bx)
    pad = np.full((H * by, W * bx), np.nan, dtype=np.float32)
    pad[:h, :w] = a
    blocks = pad.reshape(H, by, W, bx)
    with np.errstate(invalid="ignore"):
        out = np.nanmax(blocks, axis=(1, 3)) if reduce == "max" else np.nanmean(blocks, axis=(1, 3))
    return out.astype(np.float32), (by, bx)


def weight_heatmap(weight: torch.Tensor | np.ndarray, *, title: str = "", full_resolution: bool = False,
                   max_cells: tuple[int, int] = MAX_CELLS) -> go.Figure:
    """One layer's weights, pruned ones in PRUNED_COLOR.

    At one cell per weight: |w| on Viridis, pruned (zero) weights red. Block-reduced (a large
    layer): when the layer has pruned weights each cell is coloured by the FRACTION pruned in its
    block (so a 92%-sparse layer looks 92% red), with the block's mean |w| in the hover; an
    unpruned layer shows mean |w| per block. `full_resolution=True`: one pixel per weight as a PNG."""
    w = as_matrix(weight)
    mag = np.abs(w)
    pruned = w == 0
    h, wd = w.shape
    if full_resolution:
        fig = px.imshow(_rgb(mag, pruned), binary_string=True)
        fig.update_layout(title=two_line_title(title or "weights", f"{h} x {wd}, one pixel per weight, pruned in red"))
        fig.update_xaxes(title="input (in x kh x kw)")
        fig.update_yaxes(title="output channel")
        return _tidy(fig)

    mean_mag, (by, bx) = block_reduce(mag, max_cells)
    frac_pruned, _ = block_reduce(pruned.astype(np.float32), max_cells)
    pct = np.round(np.nan_to_num(frac_pruned) * 100).astype(np.uint8)
    x, y = np.arange(mean_mag.shape[1]) * bx, np.arange(mean_mag.shape[0]) * by
    reduced = (by, bx) != (1, 1)
    if reduced and pruned.any():
        block = f"each cell = {by}x{bx} weights, coloured by the fraction pruned"
        fig = go.Figure(go.Heatmap(
            z=frac_pruned.astype(np.float32), x=x, y=y, customdata=mean_mag.astype(np.float32), zmin=0, zmax=1,
            colorscale=[[0.0, KEPT_COLOR], [0.5, "#f4e4c1"], [1.0, PRUNED_COLOR]], name="weights",
            colorbar={"title": "pruned", "tickformat": ".0%"},
            hovertemplate="out %{y}, in %{x}<br>pruned %{z:.0%}<br>mean |w| %{customdata:.4g}<extra></extra>"))
        fig.update_layout(title=two_line_title(title or "weights", f"{h} x {wd}; {block}"))
    else:
        # One trace: pruned weights get a sentinel below zero that the colour scale paints red;
        # everything else is |w| (mean |w| per block) on Viridis.
        top = float(np.nanmax(mean_mag)) if mean_mag.size and np.isfinite(mean_mag).any() else 1.0
        top = top or 1.0
        sentinel = -0.03 * top
        z = np.where(frac_pruned >= 1.0, sentinel, mean_mag).astype(np.float32)
        cut = 0.03 / 1.03
        scale = [[0.0, PRUNED_COLOR], [cut, PRUNED_COLOR]]
        viridis = px.colors.sequential.Viridis
        stops = np.linspace(cut + 1e-6, 1.0, len(viridis)).tolist()
        stops[-1] = 1.0                      # plotly.js ignores a scale that does not end exactly at 1
        scale += [[xx, c] for xx, c in zip(stops, viridis, strict=True)]
        hover = "out %{y}, in %{x}<br>" + ("mean |w|" if reduced else "|w|") + " %{z:.4g}<br>pruned %{customdata}%"
        fig = go.Figure(go.Heatmap(z=z, x=x, y=y, customdata=pct, colorscale=scale, zmin=sentinel, zmax=top,
                                   hovertemplate=hover + "<extra></extra>", name="weights",
                                   colorbar={"title": "mean |w|" if reduced else "|w|",
                                             "tickvals": [sentinel, top / 2, top],
                                             "ticktext": ["pruned", f"{top / 2:.2g}", f"{top:.2g}"]}))
        detail = f"each cell = mean |w| of {by}x{bx} weights" if reduced else "|w|, pruned in red"
        fig.update_layout(title=two_line_title(title or "weights", f"{h} x {wd}; {detail}"))
    fig.update_xaxes(title="input (in x kh x kw)")
    fig.update_yaxes(title="output channel", autorange="reversed")
    return _tidy(fig)


def two_line_title(main: str, detail: str) -> dict:
    """A two-line title (the detail small, on its own line) that never runs off a narrow chart."""
    return {"text": f"{main}<br><sup>{detail}</sup>", "font": {"size": 15}}


def pct_tickformat(values: Sequence[float]) -> str:
    """A percent tick format with enough decimals that ticks over this range read differently
    (".1%" over 91.85%..91.95% gave '91.9%, 91.9%, 91.9%')."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    span = (max(vals) - min(vals)) if len(vals) > 1 else 0.0
    if span <= 0:
        return ".1%"
    step = span * 100 / 5                     # about five ticks, in percentage points
    return f".{min(3, max(0, math.ceil(-math.log10(step))))}%"


def _rgb(mag: np.ndarray, pruned: np.ndarray) -> np.ndarray:
    """uint8 RGB image: magnitudes through Viridis, pruned weights in PRUNED_COLOR."""
    top = float(mag.max()) or 1.0
    idx = np.clip((mag / top * 255).astype(np.int32), 0, 255)
    lut = _viridis_lut()
    img = lut[idx]
    img[pruned] = np.array(_hex(PRUNED_COLOR), dtype=np.uint8)
    return img


def _viridis_lut() -> np.ndarray:
    import plotly.colors as pc

    stops = pc.sequential.Viridis
    cols = np.array([_hex(c) for c in stops], dtype=np.float32)
    xs = np.linspace(0, 1, len(cols))
    t = np.linspace(0, 1, 256)
    return np.stack([np.interp(t, xs, cols[:, i]) for i in range(3)], axis=1).astype(np.uint8)


def _hex(c: str) -> tuple[int, int, int]:
    c = c.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def weight_histogram(before: torch.Tensor | np.ndarray, after: torch.Tensor | np.ndarray | None = None, *,
                     bins: int = 80, title: str = "") -> go.Figure:
    """Distribution of the non-zero weights before and after pruning (binned here, so a layer
    with millions of weights sends a few hundred numbers). Pruned zeros are counted in the legend."""
    b = as_matrix(before).ravel()
    a = as_matrix(after).ravel() if after is not None else None
    lo, hi = float(b.min()), float(b.max())
    if a is not None and a.size:
        lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    edges = np.linspace(lo, hi, bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    nb = b[b != 0]
    fig.add_trace(go.Bar(x=centers, y=np.histogram(nb, edges)[0], name=f"before ({nb.size:,} non-zero)",
                         marker_color=BEFORE_COLOR, opacity=0.6))
    if a is not None:
        na = a[a != 0]
        fig.add_trace(go.Bar(x=centers, y=np.histogram(na, edges)[0],
                             name=f"after ({na.size:,} non-zero, {a.size - na.size:,} pruned)",
                             marker_color=KEPT_COLOR, opacity=0.8))
    fig.update_layout(barmode="overlay", bargap=0, title=title or "weight values (zeros not drawn)",
                      xaxis_title="weight", yaxis_title="count")
    return _tidy(fig)


def channel_norms(weight_before: torch.Tensor | np.ndarray, removed: Sequence[int], *, norm: int = 1,
                  title: str = "") -> go.Figure:
    """One bar per output channel of the ORIGINAL layer: its L1/L2 norm, removed channels in red."""
    w = as_matrix(weight_before)
    norms = np.linalg.norm(w, ord=norm, axis=1) if w.shape[1] > 0 else np.zeros(w.shape[0])
    removed_set = set(int(i) for i in removed)
    colors = [PRUNED_COLOR if i in removed_set else KEPT_COLOR for i in range(len(norms))]
    fig = go.Figure(go.Bar(x=np.arange(len(norms)), y=norms.astype(np.float32), marker_color=colors,
                           hovertemplate="channel %{x}<br>norm %{y:.4g}<extra></extra>", name="channels"))
    fig.update_layout(title=title or f"output channels: {len(removed_set)} of {len(norms)} removed (red)",
                      xaxis_title="output channel", yaxis_title=f"L{norm} norm")
    return _tidy(fig)


def removed_channels_chart(layers: Sequence[dict], removed: dict[str, Sequence[int]], *, title: str = "") -> go.Figure:
    """Stacked bars per layer: output channels kept vs removed by structured pruning.
    `layers`: rows with "name" and "shape_before" (as in PruneReport.layers[i].to_dict())."""
    names, kept, gone = [], [], []
    for r in layers:
        out = int(r["shape_before"][0])
        n = len(removed.get(r["name"], ()))
        names.append(r["name"])
        kept.append(out - n)
        gone.append(n)
    fig = go.Figure([go.Bar(y=names, x=kept, name="kept", orientation="h", marker_color=KEPT_COLOR),
                     go.Bar(y=names, x=gone, name="removed", orientation="h", marker_color=PRUNED_COLOR)])
    fig.update_layout(barmode="stack", title=title or "output channels per layer", xaxis_title="channels",
                      yaxis={"autorange": "reversed"}, height=max(260, 28 * len(names) + 120))
    return _tidy(fig)


def sparsity_bars(layers: Sequence[dict], *, title: str = "") -> go.Figure:
    """Per-layer sparsity as horizontal bars (layer names stay readable however many there are).
    Rows: "name", "sparsity", optional "weights", "excluded", "target", and for channel pruning
    "removed_out" / "removed_in": the weights that went with the layer's own output channels, and
    the input columns that followed the channels removed from the layer before it (an excluded
    classifier loses only those)."""
    names = [r["name"] for r in layers]
    custom = [[int(r.get("weights", 0)), _status(r)] for r in layers]
    hover = "%{y}<br>%{customdata[1]}<br>%{x:.1%} of its weights<br>%{customdata[0]:,} weights left<extra></extra>"
    if any("removed_out" in r for r in layers):
        outs = [float(r.get("removed_out", 0.0)) for r in layers]
        ins = [float(r.get("removed_in", 0.0)) for r in layers]
        labels = [fmt_sparsity(o + i) + (" (excluded: outputs kept)" if r.get("excluded") else "")
                  for r, o, i in zip(layers, outs, ins, strict=True)]
        fig = go.Figure([
            go.Bar(y=names, x=outs, orientation="h", name="with its own output channels", marker_color=PRUNED_COLOR,
                   customdata=custom, hovertemplate=hover),
            go.Bar(y=names, x=ins, orientation="h", name="inputs that fed channels removed before it",
                   marker_color=INPUTS_COLOR, customdata=custom, hovertemplate=hover, text=labels,
                   textposition="outside", cliponaxis=False)])
        fig.update_layout(barmode="stack", title=title or "weights removed per layer")
    else:
        sp = [float(r["sparsity"]) for r in layers]
        colors = [BEFORE_COLOR if r.get("excluded") else KEPT_COLOR for r in layers]
        labels = [fmt_sparsity(v) + (" (excluded)" if r.get("excluded") else "") for r, v in zip(layers, sp, strict=True)]
        fig = go.Figure(go.Bar(y=names, x=sp, orientation="h", marker_color=colors, text=labels,
                               textposition="outside", cliponaxis=False, customdata=custom, hovertemplate=hover,
                               name="sparsity"))
        fig.update_layout(title=title or "sparsity per layer (grey: excluded)")
    fig.update_layout(xaxis={"range": [0, 1.35], "tickformat": ".0%", "title": "weights removed or zero",
                             "tickvals": [0, 0.25, 0.5, 0.75, 1.0]},
                      yaxis={"autorange": "reversed", "title": None}, height=max(300, 26 * len(names) + 160))
    return _tidy(fig)


def _status(r: dict) -> str:
    if r.get("excluded"):
        return "excluded" + (": its outputs are kept" if "removed_out" in r else "")
    return f"target {r['target']:.0%}" if r.get("target") is not None else ""


def mask_grid(weights: Sequence[tuple[str, torch.Tensor | np.ndarray]], *, cols: int = 3, cells: int = 48,
              title: str = "") -> go.Figure:
    """Overview of every layer's mask: fraction of weights kept per block, one small panel each."""
    n = max(1, len(weights))
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    titles = []
    mats = []
    for name, w in weights:
        m = as_matrix(w)
        kept = (m != 0).astype(np.float32)
        red, _ = block_reduce(kept, (cells, cells))
        mats.append(red)
        titles.append(f"{name} ({fmt_sparsity(1 - float(kept.mean()))} pruned)")
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.04, vertical_spacing=0.12)
    for i, red in enumerate(mats):
        fig.add_trace(go.Heatmap(z=red, zmin=0, zmax=1, colorscale=[[0, PRUNED_COLOR], [1, KEPT_COLOR]],
                                 showscale=i == 0, colorbar={"title": "kept", "tickformat": ".0%"},
                                 hovertemplate="kept %{z:.0%}<extra></extra>"),
                      row=i // cols + 1, col=i % cols + 1)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(title=title or "masks of all layers (red: pruned, blue: kept)", height=220 * rows + 80)
    return _tidy(fig)


def sensitivity_chart(sensitivity: dict, *, kind: str = "lines", title: str = "") -> go.Figure:
    """Accuracy on the validation subset when only one layer is pruned, per layer and amount.
    kind="lines": one curve per layer; kind="heatmap": layers x amounts, coloured by accuracy drop."""
    amounts = [float(a) for a in sensitivity["amounts"]]
    base = float(sensitivity["baseline_accuracy"])
    rows = sensitivity["layers"]
    label = f"{sensitivity.get('val_samples', '')}-image validation subset".strip("-")
    if kind == "heatmap":
        z = np.array([[base - a for a in r["accuracy"]] for r in rows], dtype=np.float32)
        fig = go.Figure(go.Heatmap(z=z, x=[f"{a:.0%}" for a in amounts], y=[r["name"] for r in rows],
                                   colorscale="Reds", colorbar={"title": "acc. drop", "tickformat": ".0%"},
                                   hovertemplate="%{y} at %{x}<br>drop %{z:.1%}<extra></extra>"))
        fig.update_yaxes(autorange="reversed")
        fig.update_layout(title=title or f"accuracy drop per layer and amount ({label})",
                          xaxis_title="amount pruned (this layer only)")
        return _tidy(fig)
    fig = go.Figure()
    for r in rows:
        fig.add_trace(go.Scatter(x=[0.0, *amounts], y=[base, *r["accuracy"]], mode="lines+markers",
                                 name=f"{r['name']} ({r['weights']:,})"))
    fig.add_hline(y=base, line_dash="dot", line_color=BEFORE_COLOR, annotation_text="unpruned")
    fig.update_layout(title=title or f"sensitivity: accuracy when only one layer is pruned ({label})",
                      xaxis={"title": "amount pruned (this layer only)", "tickformat": ".0%"},
                      yaxis={"title": "accuracy", "tickformat": pct_tickformat(
                          [base, *(a for r in rows for a in r["accuracy"])])})
    return _tidy(fig)


def accuracy_sparsity_curve(points: Sequence[dict], *, dense_accuracy: float | None = None,
                            title: str = "") -> go.Figure:
    """Prune-and-recover curves. `points`: {"sparsity", "val_accuracy", "phase": "start" | "pruned" |
    "recovered"}; the start point begins both curves."""
    fig = go.Figure()
    styles = {"pruned": ("after pruning", PRUNED_COLOR, "dot"), "recovered": ("after fine-tuning", KEPT_COLOR, "solid")}
    start = [p for p in points if p.get("phase") == "start"]
    for phase, (label, color, dash) in styles.items():
        pts = start + [p for p in points if p.get("phase", "recovered") == phase]
        if pts:
            fig.add_trace(go.Scatter(x=[p["sparsity"] for p in pts], y=[p["val_accuracy"] for p in pts],
                                     mode="lines+markers", name=label, line={"color": color, "dash": dash}))
    if dense_accuracy is not None:
        fig.add_hline(y=dense_accuracy, line_dash="dot", line_color=BEFORE_COLOR, annotation_text="dense")
    accs = [p["val_accuracy"] for p in points] + ([dense_accuracy] if dense_accuracy is not None else [])
    fig.update_layout(title=title or "validation accuracy vs sparsity", xaxis={"title": "sparsity",
                      "tickformat": ".0%"}, yaxis={"title": "validation accuracy", "tickformat": pct_tickformat(accs)})
    return _tidy(fig)


# ---------------------------------------------------------------- training curves (job views)

TRAIN_COLOR, VAL_COLOR = "#2f6fde", "#e4572e"


def has_curves(events: list[dict]) -> bool:
    return any(e.get("kind") in ("batch_end", "epoch_end") and "step" in e for e in events)


def training_curves(events: list[dict], height: int = 320, full_range: bool = True) -> go.Figure:
    """Loss and accuracy against optimizer step from a job's training events.

    Training loss/accuracy are the means over each logging window (`batch_end`); validation
    accuracy is measured once per epoch (`epoch_end`). A job with several training stages (e.g. the
    fine-tunes of prune-and-recover) has its stages laid end to end on one step axis, with a dotted
    line where each stage starts. With `full_range` (for a running job) the x axis spans the whole
    run, so the curves grow into a fixed frame."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Training loss", "Accuracy"), horizontal_spacing=0.1)
    curve_events = [e for e in events if e.get("kind") in ("batch_end", "epoch_end") and "step" in e]
    stages = list(dict.fromkeys(e.get("stage", "train") for e in curve_events))
    # each stage's steps start at 0: shift every stage past the end of the one before it
    offsets, total = {}, 0
    for stage in stages:
        offsets[stage] = total
        total += max((e.get("total_steps") or e["step"]) for e in curve_events if e.get("stage", "train") == stage)

    def x(e: dict) -> int:
        return offsets[e.get("stage", "train")] + e["step"]

    batch = [e for e in curve_events if e["kind"] == "batch_end" and "loss" in e]
    epoch = [e for e in curve_events if e["kind"] == "epoch_end"]
    # with too few batches per epoch for a logging window, fall back to the epoch means
    train_pts = batch if batch else [e for e in epoch if "loss" in e]
    hover = "%{text}<br>step %{x}<br>"
    if train_pts:
        mode = "lines+markers" if len(train_pts) < 30 else "lines"
        names = [e.get("stage", "train") for e in train_pts]
        fig.add_trace(go.Scatter(x=[x(e) for e in train_pts], y=[e["loss"] for e in train_pts], mode=mode,
                                 name="train loss", line={"color": TRAIN_COLOR}, text=names,
                                 hovertemplate=hover + "loss %{y:.4f}<extra></extra>"), row=1, col=1)
        accs = [e for e in train_pts if "accuracy" in e]
        fig.add_trace(go.Scatter(x=[x(e) for e in accs], y=[e["accuracy"] for e in accs], mode=mode,
                                 name="train accuracy", line={"color": TRAIN_COLOR, "dash": "dot"},
                                 text=[e.get("stage", "train") for e in accs],
                                 hovertemplate=hover + "train acc %{y:.2%}<extra></extra>"), row=1, col=2)
    vals = [e for e in epoch if "val_accuracy" in e]
    if vals:
        fig.add_trace(go.Scatter(x=[x(e) for e in vals], y=[e["val_accuracy"] for e in vals], mode="lines+markers",
                                 name="validation accuracy", line={"color": VAL_COLOR}, marker={"size": 9},
                                 text=[f"{e.get('stage', 'train')}, epoch {e.get('epoch')}" for e in vals],
                                 hovertemplate=hover + "val acc %{y:.2%}<extra></extra>"), row=1, col=2)
    if len(stages) > 1:
        for stage in stages[1:]:
            for col in (1, 2):
                fig.add_vline(x=offsets[stage], line={"color": "#999", "dash": "dot", "width": 1}, row=1, col=col)
    totals = {e["total_steps"] for e in events if e.get("total_steps")}
    xrange = [0, max(totals)] if full_range and len(stages) <= 1 and totals else None
    for col in (1, 2):
        fig.update_xaxes(title_text="step" if len(stages) <= 1 else "step (stages end to end)", range=xrange,
                         rangemode="tozero", row=1, col=col)
    fig.update_yaxes(title_text="cross-entropy", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 56, "b": 10},
                      legend={"orientation": "h", "y": -0.25}, uirevision="keep")
    return fig


def _tidy(fig: go.Figure) -> go.Figure:
    fig.update_layout(margin={"l": 50, "r": 20, "t": 60, "b": 40}, legend={"orientation": "h", "y": -0.2})
    return fig


# ---------------------------------------------------------------- quantization

SQNR_CAP_DB = 99.0                  # an exact layer (infinite SQNR) is drawn at this height
WEIGHT_SQNR_COLOR = "#9aa5b1"
OUTPUT_SQNR_COLOR = "#4f8bf9"
GRID_COLOR = "#e4572e"


def _db(x) -> float | None:
    """A dB value for plotting: None (a gap) for NaN/None, capped for an exact (inf) layer."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(max(min(float(x), SQNR_CAP_DB), -SQNR_CAP_DB))


def quant_error_chart(errors: Sequence, *, title: str = "") -> go.Figure:
    """Grouped horizontal bars per layer, in model order (names stay readable however many): the
    SQNR of the stored weight and of the layer's output (weights and inputs quantized as the mode
    does, the rest float), in dB. Higher is closer to float; the lowest output bar is where accuracy
    goes, and the title names it. `errors`: LayerError objects or dicts with name, type,
    weight_sqnr_db, output_sqnr_db."""
    rows = [e if isinstance(e, dict) else vars(e) for e in errors]
    names = [r["name"] for r in rows]
    weight = [_db(r.get("weight_sqnr_db")) for r in rows]
    output = [_db(r.get("output_sqnr_db")) for r in rows]
    types = [[r.get("type", "")] for r in rows]
    hover = "%{y} (%{customdata[0]})<br>%{fullData.name}: %{x:.1f} dB<extra></extra>"
    fig = go.Figure([
        go.Bar(y=names, x=weight, name="weight SQNR", orientation="h", marker_color=WEIGHT_SQNR_COLOR,
               customdata=types, hovertemplate=hover, text=[f"{w:.1f}" if w is not None else "" for w in weight],
               textposition="outside", cliponaxis=False),
        go.Bar(y=names, x=output, name="output SQNR", orientation="h", marker_color=OUTPUT_SQNR_COLOR,
               customdata=types, hovertemplate=hover, text=[f"{o:.1f}" if o is not None else "" for o in output],
               textposition="outside", cliponaxis=False)])
    known = [(o, n) for o, n in zip(output, names, strict=True) if o is not None]
    detail = "higher = closer to float; 6 dB is about one bit"
    if known:
        worst = min(known)
        detail = f"lowest output: {worst[1]} ({worst[0]:.1f} dB), where accuracy goes first"
    fig.update_layout(barmode="group", title=two_line_title(title or "quantization error per layer (SQNR)", detail),
                      xaxis={"title": None, "ticksuffix": " dB"}, yaxis={"autorange": "reversed", "title": None},
                      height=max(320, 34 * len(names) + 160))
    _tidy(fig)
    fig.update_layout(legend={"orientation": "h", "y": -0.12 if len(names) > 6 else -0.2})
    return fig


def quant_grid_histogram(weight: torch.Tensor | np.ndarray, grid_levels: Sequence[float] | np.ndarray | None = None,
                         *, channel_weight: torch.Tensor | np.ndarray | None = None, bins: int = 120,
                         title: str = "") -> go.Figure:
    """The distribution of a layer's weights (grey), optionally one output channel's own weights
    (blue), each as a share of its own count so both read on one axis, and the values that
    channel's quantization can represent drawn behind them as vertical lines: the grid every weight
    of the channel is rounded to. Binned here, so a large layer sends a few hundred numbers; the
    grid is one path shape, however many levels (255 for int8 fill the channel's range densely)."""
    w = as_matrix(weight).ravel()
    levels = np.asarray([] if grid_levels is None else grid_levels, dtype=np.float64).ravel()
    ch = as_matrix(channel_weight).ravel() if channel_weight is not None else None
    lo, hi = float(w.min()), float(w.max())
    if levels.size:   # the grid may reach past the weights (affine or symmetric ranges): show all of it
        lo, hi = min(lo, float(levels.min())), max(hi, float(levels.max()))
    if lo == hi:
        lo, hi = lo - 1, hi + 1
    edges = np.linspace(lo, hi, bins + 1)
    centers = ((edges[:-1] + edges[1:]) / 2).astype(np.float32)
    share = (np.histogram(w, edges)[0] / max(1, w.size)).astype(np.float32)
    fig = go.Figure(go.Bar(x=centers, y=share, name=f"layer ({w.size:,} weights)", marker_color=BEFORE_COLOR,
                           opacity=0.7, hovertemplate="%{x:.4g}: %{y:.1%} of the layer<extra></extra>"))
    if ch is not None:
        cs = (np.histogram(ch, edges)[0] / max(1, ch.size)).astype(np.float32)
        fig.add_trace(go.Bar(x=centers, y=cs, name=f"this channel ({ch.size:,} weights)", marker_color=KEPT_COLOR,
                             opacity=0.75, hovertemplate="%{x:.4g}: %{y:.1%} of the channel<extra></extra>"))
    if levels.size:
        path = " ".join(f"M {x:.6g},0 V 1" for x in levels)
        fig.add_shape(type="path", path=path, xref="x", yref="paper", layer="below",
                      line={"color": GRID_COLOR, "width": 1}, opacity=0.55 if levels.size <= 64 else 0.25)
        # shapes have no legend entry: an empty line trace stands for the grid
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line={"color": GRID_COLOR, "width": 1},
                                 name=f"grid of this channel ({levels.size} values)"))
    sub = (f"the {levels.size} values the channel can store (red lines)"
           if levels.size else "no integer grid: the values are kept as floats")
    fig.update_layout(barmode="overlay", bargap=0, title=two_line_title(title or "weights and the quantization grid", sub),
                      xaxis_title=None, yaxis={"title": "share of weights", "tickformat": ".0%"}, height=380)
    _tidy(fig)
    fig.update_layout(legend={"orientation": "h", "y": -0.12})
    return fig
