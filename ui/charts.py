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
    accuracy is measured once per epoch (`epoch_end`). Events of several stages (e.g. a prune job's
    recovery fine-tune) are drawn as separate traces named after their stage. With `full_range`
    (for a running job) the x axis spans the whole run, so the curves grow into a fixed frame."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Training loss", "Accuracy"), horizontal_spacing=0.1)
    stages = list(dict.fromkeys(e.get("stage", "train") for e in events if e.get("kind") in ("batch_end", "epoch_end")))
    for stage in stages:
        prefix = "" if len(stages) == 1 else f"{stage}: "
        batch = [e for e in events if e.get("stage", "train") == stage and e.get("kind") == "batch_end" and "loss" in e]
        epoch = [e for e in events if e.get("stage", "train") == stage and e.get("kind") == "epoch_end"]
        # with too few batches per epoch for a logging window, fall back to the epoch means
        train_pts = batch if batch else [e for e in epoch if "loss" in e]
        if train_pts:
            fig.add_trace(go.Scatter(x=[e["step"] for e in train_pts], y=[e["loss"] for e in train_pts],
                                     mode="lines+markers" if len(train_pts) < 30 else "lines",
                                     name=f"{prefix}train loss", line={"color": TRAIN_COLOR},
                                     hovertemplate="step %{x}<br>loss %{y:.4f}<extra></extra>"), row=1, col=1)
            accs = [e for e in train_pts if "accuracy" in e]
            fig.add_trace(go.Scatter(x=[e["step"] for e in accs], y=[e["accuracy"] for e in accs],
                                     mode="lines+markers" if len(accs) < 30 else "lines",
                                     name=f"{prefix}train accuracy", line={"color": TRAIN_COLOR, "dash": "dot"},
                                     hovertemplate="step %{x}<br>train acc %{y:.2%}<extra></extra>"), row=1, col=2)
        vals = [e for e in epoch if "val_accuracy" in e]
        if vals:
            fig.add_trace(go.Scatter(x=[e["step"] for e in vals], y=[e["val_accuracy"] for e in vals],
                                     mode="lines+markers", name=f"{prefix}validation accuracy",
                                     line={"color": VAL_COLOR}, marker={"size": 9},
                                     hovertemplate="epoch %{text}<br>val acc %{y:.2%}<extra></extra>",
                                     text=[e.get("epoch") for e in vals]), row=1, col=2)
    totals = {e["total_steps"] for e in events if e.get("total_steps")}
    xrange = [0, max(totals)] if full_range and len(stages) <= 1 and totals else None
    for col in (1, 2):
        fig.update_xaxes(title_text="step", range=xrange, rangemode="tozero", row=1, col=col)
    fig.update_yaxes(title_text="cross-entropy", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", tickformat=".0%", range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 56, "b": 10},
                      legend={"orientation": "h", "y": -0.25}, uirevision="keep")
    return fig
