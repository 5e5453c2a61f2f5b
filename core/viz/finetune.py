"""Figures of the Fine-tune page: validation accuracy against epoch (reference lines, the best
epoch marked) and a grid of sample images per class. Data in, plotly figure out; no Streamlit."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go

from core.viz.charts import pct_tickformat

VAL_COLOR = "#e4572e"
BEST_COLOR = "#2a9d8f"
REF_COLORS = ("#6c757d", "#8e44ad", "#b08900")   # parent, dense root, anything else
MAX_GRID_CLASSES = 20                            # classes drawn in one sample grid (the rest are counted)


# ---------------------------------------------------------------- validation accuracy per epoch

def val_points(events: Sequence[dict], stage: str | None = None) -> dict:
    """What a training job's events say about validation accuracy per epoch.

    Returns {"points": [{"epoch", "val_accuracy"}] (epoch 0 = the starting weights, when the loop
    measured them), "epochs": planned epochs, "best_epoch": int | None (known at early stop or
    end), "stopped_early": bool, "start": the starting val accuracy or None}. `stage` keeps only
    the events of that training stage ("finetune", "transfer")."""
    evs = [e for e in events if stage is None or e.get("stage", stage) == stage]
    points: list[dict] = []
    start = None
    epochs = None
    best = None
    stopped = False
    for e in evs:
        kind = e.get("kind")
        if e.get("epochs"):
            epochs = int(e["epochs"])
        if kind == "start" and e.get("val_accuracy") is not None:
            start = float(e["val_accuracy"])
            points = [p for p in points if p["epoch"] != 0] + [{"epoch": 0, "val_accuracy": start}]
        elif kind == "epoch_end" and e.get("val_accuracy") is not None:
            points.append({"epoch": int(e["epoch"]), "val_accuracy": float(e["val_accuracy"])})
        elif kind == "early_stop":
            stopped = True
            best = e.get("best_epoch", best)
        elif kind == "end" and e.get("best_epoch") is not None:
            best = int(e["best_epoch"])
    points.sort(key=lambda p: p["epoch"])
    return {"points": points, "epochs": epochs, "best_epoch": best, "stopped_early": stopped, "start": start}


def val_accuracy_chart(points: Sequence[dict], *, references: Sequence[tuple[str, float]] = (),
                       best_epoch: int | None = None, epochs: int | None = None, restored: bool = True,
                       stopped_early: bool = False, title: str = "", height: int = 340) -> go.Figure:
    """Validation accuracy against epoch (epoch 0: the starting weights) with horizontal reference
    lines (label, accuracy) and the best epoch marked. With `epochs` the x axis spans the whole
    planned run, so a running job's curve grows into a fixed frame."""
    fig = go.Figure()
    xs = [p["epoch"] for p in points]
    ys = [p["val_accuracy"] for p in points]
    if points:
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name="validation accuracy",
                                 line={"color": VAL_COLOR, "width": 2}, marker={"size": 8},
                                 text=["start (epoch 0)" if x == 0 else f"epoch {x}" for x in xs],
                                 hovertemplate="%{text}<br>val acc %{y:.2%}<extra></extra>"))
    refs = [(label, float(acc)) for label, acc in references if acc is not None and math.isfinite(float(acc))]
    for i, (label, acc) in enumerate(refs):
        color = REF_COLORS[min(i, len(REF_COLORS) - 1)]
        # a legend entry (add_hline draws a shape, which has none) and the line itself
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=f"{label}: {acc:.2%}",
                                 line={"color": color, "dash": "dash" if i == 0 else "dot"}))
        fig.add_hline(y=acc, line={"color": color, "dash": "dash" if i == 0 else "dot", "width": 1.5},
                      annotation_text=f"{label} {acc:.2%}", annotation_position="top left" if i % 2 == 0
                      else "bottom right", annotation_font={"color": color, "size": 11})
    best = next((p for p in points if p["epoch"] == best_epoch), None) if best_epoch is not None else None
    if best is not None:
        what = "kept: no epoch beat the start" if best_epoch == 0 else f"best epoch {best_epoch}"
        if best_epoch and restored:
            what += " (its weights restored)"
        fig.add_trace(go.Scatter(x=[best["epoch"]], y=[best["val_accuracy"]], mode="markers", name=what,
                                 marker={"symbol": "star", "size": 18, "color": BEST_COLOR,
                                         "line": {"color": "white", "width": 1}},
                                 hovertemplate=what + "<br>val acc %{y:.2%}<extra></extra>"))
    if stopped_early and points:
        fig.add_vline(x=points[-1]["epoch"], line={"color": "#999", "dash": "dot", "width": 1},
                      annotation_text="stopped early", annotation_position="top right",
                      annotation_font={"size": 11, "color": "#666"})
    last = max([*xs, epochs or 0, 1])
    fig.update_xaxes(title_text="epoch (0 = before training)", range=[-0.2, last + 0.2], dtick=1 if last <= 20 else None)
    all_y = ys + [a for _, a in refs]
    if all_y:
        lo, hi = min(all_y), max(all_y)
        pad = max(0.01, (hi - lo) * 0.15)
        fig.update_yaxes(range=[max(0.0, lo - pad), min(1.0, hi + pad) + 0.005])
    fig.update_yaxes(title_text="validation accuracy", tickformat=pct_tickformat(all_y or [0.0, 1.0]))
    fig.update_layout(title={"text": title or "validation accuracy per epoch", "font": {"size": 15}}, height=height,
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.22},
                      uirevision="keep")
    return fig


# ---------------------------------------------------------------- sample images per class

def sample_mosaic(grid: Sequence[tuple[str, np.ndarray]], *, pad: int = 2, max_classes: int = MAX_GRID_CLASSES
                  ) -> tuple[np.ndarray, list[str]]:
    """One uint8 image holding a row of samples per class: (H, W) for greyscale, (H, W, 3) for
    colour, with `pad` pixels of white between cells. `grid` is core.data.datasets.sample_grid's
    [(class name, uint8 (k, S, S) or (k, S, S, 3))]. Returns the image and the class names drawn."""
    rows = list(grid)[:max_classes]
    if not rows:
        raise ValueError("no classes to draw")
    first = next((x for _, x in rows if len(x)), None)
    if first is None:
        raise ValueError("no images to draw")
    size = first.shape[1]
    colour = first.ndim == 4
    per = max(len(x) for _, x in rows)
    h, w = len(rows) * (size + pad) + pad, per * (size + pad) + pad
    out = np.full((h, w, 3) if colour else (h, w), 255, dtype=np.uint8)
    for r, (_, imgs) in enumerate(rows):
        for c in range(len(imgs)):
            y, x = pad + r * (size + pad), pad + c * (size + pad)
            out[y:y + size, x:x + size] = imgs[c]
    return out, [name for name, _ in rows]


def sample_grid_figure(grid: Sequence[tuple[str, np.ndarray]], *, title: str = "", counts: dict | None = None,
                       max_classes: int = MAX_GRID_CLASSES, cell_px: int = 48) -> go.Figure:
    """The mosaic of `sample_mosaic` as one PNG image trace (light in the browser however many
    images), class names on the left; `counts` {class: images} adds each class's count."""
    img, names = sample_mosaic(grid, max_classes=max_classes)
    rows = len(names)
    size = next(x for _, x in grid if len(x)).shape[1]
    pad = 2
    fig = px.imshow(img, binary_string=True)
    centres = [pad + r * (size + pad) + size / 2 for r in range(rows)]
    labels = [f"{n} ({counts[n]:,})" if counts and n in counts else n for n in names]
    fig.update_yaxes(tickvals=centres, ticktext=labels, showticklabels=True, ticks="")
    fig.update_xaxes(showticklabels=False, ticks="")
    fig.update_traces(hoverinfo="skip", hovertemplate=None)
    more = len(grid) - rows
    detail = f"; {more} more classes not drawn" if more > 0 else ""
    scale = cell_px / (size + pad)
    fig.update_layout(title={"text": (title or "sample images per class") + (f"<br><sup>{detail[2:]}</sup>"
                                                                                if detail else ""),
                             "font": {"size": 15}},
                      height=int(min(1200, max(200, img.shape[0] * scale + 70))),
                      width=int(max(420, 9 * len(title or ""), img.shape[1] * scale + 40 + 7 * max(map(len, labels)))),
                      margin={"l": 10, "r": 10, "t": 60 if detail else 45, "b": 10})
    return fig
