"""Plotly figure builders for the job views: data in, figure out (no Streamlit calls)."""
from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

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
