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

MAX_CELLS = (256, 1024)             # rows, columns of a block-reduced heatmap
PRUNED_COLOR = "#e4572e"            # pruned weights / removed channels
KEPT_COLOR = "#4f8bf9"
BEFORE_COLOR = "#9aa5b1"
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
    """|w| heatmap of one layer with pruned (zero) weights drawn in PRUNED_COLOR.

    Default: block-reduced to at most `max_cells`; each cell is the mean |w| of its block, and
    blocks whose weights are all pruned are drawn in PRUNED_COLOR (hover: fraction pruned).
    `full_resolution=True`: one pixel per weight as a PNG image trace."""
    w = as_matrix(weight)
    mag = np.abs(w)
    pruned = w == 0
    h, wd = w.shape
    if full_resolution:
        fig = px.imshow(_rgb(mag, pruned), binary_string=True)
        fig.update_layout(title=title or f"weights {h} x {wd}, full resolution (pruned in red)")
        fig.update_xaxes(title="input (in x kh x kw)")
        fig.update_yaxes(title="output channel")
        return _tidy(fig)

    mean_mag, (by, bx) = block_reduce(mag, max_cells)
    frac_pruned, _ = block_reduce(pruned.astype(np.float32), max_cells)
    # One trace: blocks that are entirely pruned get a sentinel below zero, which the colour scale
    # paints PRUNED_COLOR; everything else is mean |w| on Viridis. float32 z + uint8 hover data
    # keep a 256 x 1024 figure around a megabyte.
    top = float(np.nanmax(mean_mag)) if mean_mag.size and np.isfinite(mean_mag).any() else 1.0
    top = top or 1.0
    sentinel = -0.03 * top
    z = np.where(frac_pruned >= 1.0, sentinel, mean_mag).astype(np.float32)
    pct = np.round(np.nan_to_num(frac_pruned) * 100).astype(np.uint8)
    cut = 0.03 / 1.03
    scale = [[0.0, PRUNED_COLOR], [cut, PRUNED_COLOR]]
    viridis = px.colors.sequential.Viridis
    stops = np.linspace(cut + 1e-6, 1.0, len(viridis)).tolist()
    stops[-1] = 1.0                      # plotly.js ignores a scale that does not end exactly at 1
    scale += [[x, c] for x, c in zip(stops, viridis, strict=True)]
    block = "" if (by, bx) == (1, 1) else f", block-reduced: each cell = {by}x{bx} weights"
    hover = "out %{y}, in %{x}<br>mean |w| %{z:.4g}<br>pruned %{customdata}%<extra></extra>"
    fig = go.Figure(go.Heatmap(z=z, x=np.arange(z.shape[1]) * bx, y=np.arange(z.shape[0]) * by, customdata=pct,
                               colorscale=scale, zmin=sentinel, zmax=top, hovertemplate=hover, name="weights",
                               colorbar={"title": "|w|" if (by, bx) == (1, 1) else "mean |w|",
                                         "tickvals": [sentinel, top / 2, top],
                                         "ticktext": ["pruned", f"{top / 2:.2g}", f"{top:.2g}"]}))
    fig.update_layout(title=(title or f"|weights| {h} x {wd}; pruned in red") + block)
    fig.update_xaxes(title="input (in x kh x kw)")
    fig.update_yaxes(title="output channel", autorange="reversed")
    return _tidy(fig)


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
    """Per-layer sparsity (rows with "name", "sparsity", optional "weights", "excluded", "target")."""
    names = [r["name"] for r in layers]
    sp = [float(r["sparsity"]) for r in layers]
    colors = [BEFORE_COLOR if r.get("excluded") else KEPT_COLOR for r in layers]
    text = [f"{s:.0%}" for s in sp]
    custom = [[int(r.get("weights", 0)), "excluded" if r.get("excluded") else
               (f"target {r['target']:.0%}" if r.get("target") is not None else "")] for r in layers]
    fig = go.Figure(go.Bar(x=names, y=sp, marker_color=colors, text=text, textposition="outside", customdata=custom,
                           hovertemplate="%{x}<br>sparsity %{y:.1%}<br>%{customdata[0]:,} weights"
                                         "<br>%{customdata[1]}<extra></extra>", name="sparsity"))
    fig.update_layout(title=title or "sparsity per layer (grey: excluded)", yaxis={"range": [0, 1.1],
                      "tickformat": ".0%", "title": "zeros"}, xaxis_title="layer")
    return _tidy(fig)


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
        titles.append(f"{name} ({1 - kept.mean():.0%} pruned)")
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
                      yaxis={"title": "accuracy", "tickformat": ".0%"})
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
    fig.update_layout(title=title or "validation accuracy vs sparsity", xaxis={"title": "sparsity",
                      "tickformat": ".0%"}, yaxis={"title": "validation accuracy", "tickformat": ".1%"})
    return _tidy(fig)


def _tidy(fig: go.Figure) -> go.Figure:
    fig.update_layout(margin={"l": 50, "r": 20, "t": 60, "b": 40}, legend={"orientation": "h", "y": -0.2})
    return fig
