"""Plotly figures of a distillation run: data in, figure out. No Streamlit here.

`distill_curves` draws a distill job's events (core.compress.distill.kd.distill_ via the `distill` task):
the training losses (total = alpha * soft + (1 - alpha) * hard) against the optimizer step, and the
student's validation accuracy and its top-1 agreement with the teacher once per epoch.
`class_delta_chart` draws compare_distillation's per-class rows: what distillation bought per
class over the same student trained from scratch, and what it still misses of the teacher.
"""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

TOTAL_COLOR = "#2f6fde"
SOFT_COLOR = "#9b59b6"
HARD_COLOR = "#f2a541"
ACC_COLOR = "#e4572e"
AGREE_COLOR = "#2a9d8f"
GAIN_COLOR = "#2a9d8f"     # distilled - scratch
MISSING_COLOR = "#9aa5b1"  # teacher - distilled


def _curve_events(events: Sequence[dict]) -> list[dict]:
    return [e for e in events if e.get("kind") in ("batch_end", "epoch_end") and "step" in e]


def has_distill_curves(events: Sequence[dict]) -> bool:
    """True once a distill job has logged a training window or finished an epoch."""
    return bool(_curve_events(events))


def uses_teacher(events: Sequence[dict]) -> bool:
    """Whether the run trained against a teacher (its events carry a soft loss); False for the ablation."""
    return any("soft_loss" in e for e in events)


def distill_curves(events: Sequence[dict], *, height: int = 340, full_range: bool = True) -> go.Figure:
    """Two panels from a distill job's events. Left: total, soft and hard training loss (means over
    each logging window, `batch_end`; the epoch means when an epoch has too few batches for a
    window) against the optimizer step. Right: the student's validation accuracy and its top-1
    agreement with the teacher, measured at each epoch's end. A run without a teacher (the
    ablation) has one loss, plain cross-entropy. With `full_range` (a running job) the axes span
    the whole run, so the curves grow into a fixed frame."""
    curve = _curve_events(events)
    batch = [e for e in curve if e["kind"] == "batch_end" and "loss" in e]
    epoch = [e for e in curve if e["kind"] == "epoch_end"]
    pts = batch if batch else [e for e in epoch if "loss" in e]
    kd = uses_teacher(events)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "Training loss" if kd else "Training loss (no teacher: cross-entropy only)",
        "Student accuracy and agreement (validation)"))
    mode = "lines+markers" if len(pts) < 30 else "lines"
    hover = "step %{x}<br>%{fullData.name}: %{y:.4f}<extra></extra>"
    steps = [e["step"] for e in pts]
    if kd:
        for key, name, color, dash in (("loss", "total loss", TOTAL_COLOR, None),
                                       ("soft_loss", "soft loss (T²·KL to the teacher)", SOFT_COLOR, "dot"),
                                       ("hard_loss", "hard loss (cross-entropy with labels)", HARD_COLOR, "dash")):
            xs = [e["step"] for e in pts if key in e]
            fig.add_trace(go.Scatter(x=xs, y=[e[key] for e in pts if key in e], mode=mode, name=name,
                                     line={"color": color, "dash": dash}, hovertemplate=hover), row=1, col=1)
    elif pts:
        fig.add_trace(go.Scatter(x=steps, y=[e["loss"] for e in pts], mode=mode, name="loss (cross-entropy)",
                                 line={"color": TOTAL_COLOR}, hovertemplate=hover), row=1, col=1)
    for key, name, color in (("val_accuracy", "student val. accuracy", ACC_COLOR),
                             ("agreement", "agreement with the teacher (top-1)", AGREE_COLOR)):
        rows = [e for e in epoch if key in e]
        fig.add_trace(go.Scatter(x=[e["epoch"] for e in rows], y=[e[key] for e in rows], mode="lines+markers",
                                 name=name, line={"color": color}, marker={"size": 9},
                                 hovertemplate="epoch %{x}<br>%{fullData.name}: %{y:.2%}<extra></extra>"),
                      row=1, col=2)
    totals = [e["total_steps"] for e in events if e.get("total_steps")]
    epochs = [e["epochs"] for e in events if e.get("epochs")]
    fig.update_xaxes(title_text="optimizer step", rangemode="tozero", row=1, col=1,
                     range=[0, max(totals)] if full_range and totals else None)
    n_epochs = max(epochs) if epochs else max([e["epoch"] for e in epoch] or [1])
    fig.update_xaxes(title_text="epoch", dtick=1, range=[0.5, n_epochs + 0.5] if full_range or epoch else None,
                     row=1, col=2)
    fig.update_yaxes(title_text="loss", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="validation split", tickformat=".0%", range=[0, 1.02], row=1, col=2)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.28}, uirevision="keep")
    return fig


def class_delta_chart(per_class: Sequence[dict], class_names: Sequence[str] | None = None, *,
                      title: str = "") -> go.Figure:
    """Grouped bars per class, in percentage points of test accuracy: distilled - scratch (what
    the teacher's soft targets bought, below 0 where they cost) and teacher - distilled (what the
    student still misses). `per_class` is compare_distillation's "per_class" list."""
    names = [class_names[r["class"]] if class_names and r["class"] < len(class_names) else str(r["class"])
             for r in per_class]

    def pp(key: str) -> list[float | None]:
        return [None if r.get(key) is None else r[key] * 100 for r in per_class]

    def acc(r: dict, role: str) -> str:
        return "–" if r.get(role) is None else f"{r[role]:.1%}"

    text = [f"teacher {acc(r, 'teacher')}, distilled {acc(r, 'distilled')}, scratch {acc(r, 'scratch')}"
            for r in per_class]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=names, y=pp("distilled_minus_scratch"), name="distilled − scratch", marker_color=GAIN_COLOR,
                         customdata=text, hovertemplate="%{x}: %{y:+.1f} pp<br>%{customdata}<extra>"
                                                        "distilled − scratch</extra>"))
    fig.add_trace(go.Bar(x=names, y=pp("teacher_minus_distilled"), name="teacher − distilled",
                         marker_color=MISSING_COLOR, customdata=text,
                         hovertemplate="%{x}: %{y:+.1f} pp<br>%{customdata}<extra>teacher − distilled</extra>"))
    fig.add_hline(y=0, line={"color": "#666", "width": 1})
    fig.update_layout(barmode="group", height=340, margin={"l": 50, "r": 20, "t": 60, "b": 40},
                      legend={"orientation": "h", "y": -0.25},
                      title={"text": title or "Per-class test accuracy differences", "font": {"size": 15}})
    fig.update_yaxes(title_text="percentage points", ticksuffix=" pp", zeroline=True)
    return fig
