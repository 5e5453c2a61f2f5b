"""Plotly figures of a sweep (core.tasks.sweep): data in, figure out. No Streamlit here.

Both take a sweep's result dict, finished or partial (`sweep_result` of a running job: trials not
yet run are "queued", the one running is "running" with its `progress`, no `best_trial`).
`sweep_heatmap` draws validation accuracy over the grid of the two settings, one annotated cell
per trial; `sweep_scatter` draws each finished trial's validation accuracy against its file size,
with the parent's validation accuracy (and, for "smallest_within", the tolerance band) as reference.
"""
from __future__ import annotations

import math

import plotly.graph_objects as go

from core.viz.charts import pct_tickformat

TRIAL_COLOR = "#4f8bf9"
BEST_COLOR = "#e4572e"
PARENT_COLOR = "#666666"
BAND_COLOR = "rgba(42, 157, 143, 0.15)"    # the tolerance band: trials in it are "as good as the parent"
BEST_MARK = "★"
PENDING_FILL = "#eceff3"     # a queued or running trial's cell
FAILED_FILL = "#f6c9bf"      # a failed or cancelled trial's cell
LIVE = ("queued", "running")


def fmt_value(axis: str, v) -> str:
    """An axis value as the UI writes it: amounts as percentages, the rest as plain numbers."""
    return f"{v:.0%}" if axis == "amount" else f"{v:g}"


def trial_label(result: dict, t: dict) -> str:
    """'amount 90%, epochs 2' for a trial row."""
    return ", ".join(f"{axis} {fmt_value(axis, t['params'][axis])}" for axis in result["axes"])


def _val(t: dict) -> float | None:
    v = (t.get("metrics") or {}).get("val_accuracy")
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _is_best(result: dict, t: dict) -> bool:
    return result.get("best_trial") is not None and t["trial"] == result["best_trial"]


def _cell_text(result: dict, t: dict, show_size: bool, digits: int = 1) -> str:
    state = t.get("state", "queued")
    if state == "running":
        return f"running {t.get('progress', 0.0):.0%}"
    val = _val(t)
    if state != "done" or val is None:
        return state             # queued, failed, cancelled
    text = f"{val:.{digits}%}"
    if show_size and (t.get("metrics") or {}).get("size_bytes") is not None:
        text += f"<br>{t['metrics']['size_bytes'] / 1000:,.0f} KB"
    return f"{BEST_MARK} {text}" if _is_best(result, t) else text


def _where(text: list[list[str]], z: list[list]) -> list[list[str]]:
    """The cells' texts where `z` has a value ("" elsewhere): each of the two layers writes its own cells."""
    return [[s if v is not None else "" for s, v in zip(tr, zr, strict=True)] for tr, zr in zip(text, z, strict=True)]


def sweep_heatmap(result: dict, *, title: str = "", height: int = 340) -> go.Figure:
    """Validation accuracy per trial over the grid: the first axis across, the second up. Each cell
    says its accuracy (and file size, where the sizes differ), or "queued", "running 40%", "failed";
    cells without an accuracy are grey (queued, running) or red (failed); the best trial's cell is starred and outlined."""
    ax, ay = result["axes"]
    lx, ly = (result.get("labels") or result["axes"])[:2]
    trials = result["trials"]
    xs = sorted({t["params"][ax] for t in trials})
    ys = sorted({t["params"][ay] for t in trials})
    sizes = {(t.get("metrics") or {}).get("size_bytes") for t in trials if _val(t) is not None}
    show_size = len(sizes - {None}) > 1
    done_vals = [_val(t) for t in trials if _val(t) is not None]
    digits = 2 if done_vals and max(done_vals) - min(done_vals) < 0.02 else 1   # close trials: tell them apart
    z = [[None] * len(xs) for _ in ys]
    text = [[""] * len(xs) for _ in ys]
    hover = [[""] * len(xs) for _ in ys]
    for t in trials:
        i, j = ys.index(t["params"][ay]), xs.index(t["params"][ax])
        z[i][j] = _val(t)
        text[i][j] = _cell_text(result, t, show_size, digits)
        m = t.get("metrics") or {}
        hover[i][j] = (f"trial {t['trial'] + 1}: {trial_label(result, t)}<br>state {t.get('state', 'queued')}"
                       + (f"<br>val acc {m['val_accuracy']:.2%}" if _val(t) is not None else "")
                       + (f"<br>test acc {m['accuracy']:.2%}" if m.get("accuracy") is not None else "")
                       + (f"<br>file {m['size_bytes'] / 1000:,.1f} KB" if m.get("size_bytes") is not None else "")
                       + (f"<br>{t['error'][:120]}" if t.get("error") else ""))
    xl = [fmt_value(ax, v) for v in xs]
    yl = [fmt_value(ay, v) for v in ys]
    vals = [v for row in z for v in row if v is not None]
    # the lightest colour a little below the worst trial, so every finished cell is visibly tinted
    lo, hi = (min(vals) - max(0.5 * (max(vals) - min(vals)), 0.01), max(vals)) if vals else (0.0, 1.0)
    # cells without an accuracy (queued, running, failed) under the accuracy layer, in grey or red, saying so
    status = [[None] * len(xs) for _ in ys]
    for t in trials:
        if _val(t) is None:
            status[ys.index(t["params"][ay])][xs.index(t["params"][ax])] = 0.0 if t.get("state") in LIVE else 1.0
    fig = go.Figure()
    if any(v is not None for row in status for v in row):
        fig.add_trace(go.Heatmap(
            z=status, x=xl, y=yl, text=_where(text, status), texttemplate="%{text}", customdata=hover, showscale=False,
            colorscale=[[0, PENDING_FILL], [1, FAILED_FILL]], zmin=0, zmax=1, hoverongaps=False, xgap=2, ygap=2,
            hovertemplate="%{customdata}<extra></extra>", name="not measured"))
    fig.add_trace(go.Heatmap(
        z=z, x=xl, y=yl, text=_where(text, z), texttemplate="%{text}", customdata=hover,
        hovertemplate="%{customdata}<extra></extra>",
        colorscale="Blues", zmin=lo, zmax=hi, hoverongaps=False, xgap=2, ygap=2, name="val accuracy",
        colorbar={"title": "val acc", "tickformat": pct_tickformat([lo, hi]), "nticks": 5}))
    best = next((t for t in trials if _is_best(result, t)), None)
    if best is not None:
        j, i = xs.index(best["params"][ax]), ys.index(best["params"][ay])
        fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5, xref="x", yref="y",
                      line={"color": BEST_COLOR, "width": 3}, name="best trial")
    done = sum(t.get("state") == "done" for t in trials)
    detail = f"{done} of {len(trials)} trials done" if result.get("partial") else f"{len(trials)} trials"
    if best is not None:
        detail += f"; {BEST_MARK} best"
    fig.update_layout(title={"text": title or f"Validation accuracy per trial ({detail})",
                             "font": {"size": 15}},
                      height=height, margin={"l": 60, "r": 20, "t": 50, "b": 50})
    fig.update_xaxes(title_text=lx, type="category")
    fig.update_yaxes(title_text=ly, type="category")
    return fig


def sweep_scatter(result: dict, *, parent_size_bytes: int | None = None, title: str = "",
                  height: int = 340) -> go.Figure:
    """Each finished trial's validation accuracy against its file size (KB), the best one starred;
    the parent's (a distill sweep's teacher's) validation accuracy as a dotted line (its point too,
    when its size is given) and,
    under the "smallest_within" objective, the band of accuracies within the tolerance of it."""
    trials = [t for t in result["trials"] if t.get("state") == "done" and _val(t) is not None
              and (t.get("metrics") or {}).get("size_bytes") is not None]
    ref = result.get("reference_val_accuracy")
    tol = result.get("tolerance") or 0.0
    within = result.get("objective") == "smallest_within" and ref is not None
    fig = go.Figure()
    who = "teacher" if result.get("family") == "distill" else "parent"
    if within:
        fig.add_hrect(y0=ref - tol, y1=max([ref, *(_val(t) for t in trials)]) + 0.005, fillcolor=BAND_COLOR,
                      line_width=0, layer="below", name="tolerance band",
                      annotation_text=f"kept if at most {tol * 100:g} pt below the {who}",
                      annotation_position="bottom right", annotation_font={"size": 10, "color": "#2a9d8f"})
    if ref is not None:
        fig.add_hline(y=ref, line_dash="dot", line_color=PARENT_COLOR, name=who,
                      annotation_text=f"{who} (validation) {ref:.1%}", annotation_position="top right",
                      annotation_font={"size": 10, "color": PARENT_COLOR})
    if ref is not None and parent_size_bytes:
        fig.add_trace(go.Scatter(x=[parent_size_bytes / 1000], y=[ref], mode="markers", name=who,
                                 marker={"symbol": "diamond", "size": 11, "color": PARENT_COLOR},
                                 hovertemplate=who + "<br>%{x:,.1f} KB<br>val acc %{y:.2%}<extra></extra>"))
    others = [t for t in trials if not _is_best(result, t)]
    best = [t for t in trials if _is_best(result, t)]
    # only the best point is labelled (trials often share a size, and labels would pile up); hover names each
    for rows, name, mode, marker in ((others, "trials", "markers", {"size": 10, "color": TRIAL_COLOR}),
                                     (best, f"{BEST_MARK} best trial", "markers+text",
                                      {"size": 18, "color": BEST_COLOR, "symbol": "star"})):
        if rows:
            fig.add_trace(go.Scatter(
                x=[t["metrics"]["size_bytes"] / 1000 for t in rows], y=[_val(t) for t in rows],
                mode=mode, name=name, marker=marker, text=[trial_label(result, t) for t in rows],
                textposition="middle right", textfont={"size": 10, "color": BEST_COLOR},
                customdata=[t.get("metrics", {}).get("accuracy") for t in rows],
                hovertemplate="%{text}<br>%{x:,.1f} KB<br>val acc %{y:.2%}<br>test acc %{customdata:.2%}"
                              "<extra></extra>"))
    accs = [_val(t) for t in trials] + ([ref] if ref is not None else [])
    note = "" if trials else " (no finished trial yet)"
    fig.update_layout(title={"text": title or f"Validation accuracy vs file size{note}", "font": {"size": 15}},
                      height=height, margin={"l": 60, "r": 20, "t": 50, "b": 40},
                      legend={"orientation": "h", "y": -0.25})
    fig.update_xaxes(title_text="file size (KB, the download)", rangemode="tozero")
    fig.update_yaxes(title_text="validation accuracy", tickformat=pct_tickformat(accs) if accs else ".0%")
    return fig
