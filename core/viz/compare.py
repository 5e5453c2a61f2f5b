"""Plotly figures of the Compare page: accuracy against a cost (download size or measured latency)
with every variant a point, coloured by what its last step did, a thin line to its parent, and the
Pareto front; and the lineage as a tree. Rows come from core.measure.pareto.compare_rows. No Streamlit.

Every point carries its variant id as `customdata[0]`, so a selection in the page names a variant.
On a latency chart each point has its 95% interval as an error bar; the rows' runtime (PyTorch eager
or ONNX Runtime) names the axis, and a variant without a figure is not drawn (the page lists it)."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from core.base.ratios import RUNTIMES, speed_words
from core.base.units import human_bytes
from core.measure.pareto import COSTS, front_ids

FRONT_COLOR = "#e4572e"
LINK_COLOR = "rgba(154, 165, 177, 0.55)"
ACTIVE_COLOR = "#111827"
PALETTE = ("#4f8bf9", "#2ca58d", "#f2a541", "#9b5de5", "#e4572e", "#00a6a6", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#d62728")
METHOD_ORDER = ("trained", "uploaded", "transfer", "distill", "scratch (distill ablation)", "fine-tune")


def method_colors(methods: Sequence[str]) -> dict[str, str]:
    """A stable colour per method: the same method keeps its colour however many others appear."""
    ordered = sorted(set(methods), key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER), m))
    return {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(ordered)}


def cost_text(cost: str, value: float | None) -> str:
    if value is None:
        return "–"
    return human_bytes(value) if cost == "size_bytes" else f"{value:.3f} ms"


def _interval_text(r: dict, cost: str) -> str:
    low, high = r.get(f"{cost}_low"), r.get(f"{cost}_high")
    return f" (95% interval {low:.3f}-{high:.3f} ms)" if low is not None and high is not None else ""


def _hover(r: dict, cost: str) -> str:
    acc = r.get("accuracy")
    lines = [f"<b>{r['name']}</b> ({r['id']})", f"{r['method']} · {r['kind']}",
             f"accuracy {acc:.2%}" if acc is not None else "accuracy –",
             f"{COSTS[cost].lower()}: {cost_text(cost, r.get(cost))}"
             + (_interval_text(r, cost) if cost.startswith("latency") else "")]
    if cost.startswith("latency"):
        rt = RUNTIMES.get(r.get("runtime") or "torch", RUNTIMES["torch"])
        if r.get("device"):
            lines.append(f"in {rt.title} on {r['device']}" + (" (measured while busy)" if r.get("latency_busy")
                                                                 else ""))
        batch = cost.removeprefix("latency_ms_")
        ratio = r.get(f"faster_than_parent_{batch}")
        if ratio is not None:
            low, high = r.get(f"faster_than_parent_{batch}_low"), r.get(f"faster_than_parent_{batch}_high")
            interval = f" (95% interval {low:.2f}x-{high:.2f}x)" if low is not None and high is not None else ""
            lines.append(f"{speed_words(ratio)} than its parent{interval}")
    if r.get("nonzero_params") is not None and r.get("params"):
        lines.append(f"{r['nonzero_params']:,.0f} of {r['params']:,.0f} parameters non-zero")
    return "<br>".join(lines)


def _error_bars(group: Sequence[dict], cost: str) -> dict | None:
    """The 95% interval of each latency as an asymmetric error bar (none on the size chart)."""
    if not cost.startswith("latency") or not any(r.get(f"{cost}_low") is not None for r in group):
        return None
    plus = [max(0.0, r[f"{cost}_high"] - r[cost]) if r.get(f"{cost}_high") is not None else 0.0 for r in group]
    minus = [max(0.0, r[cost] - r[f"{cost}_low"]) if r.get(f"{cost}_low") is not None else 0.0 for r in group]
    return {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus, "thickness": 1.2, "width": 3}


def tradeoff_chart(rows: Sequence[dict], cost: str = "size_bytes", *, active_id: str | None = None,
                   title: str = "", height: int = 420) -> go.Figure:
    """Accuracy (y) against `cost` (x, log scale): a point per row that has both, coloured by
    method, a line from each point to its parent's, the Pareto front as a dashed staircase (the
    best accuracy reachable at or below each cost), the active variant ringed."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    pts = [r for r in rows if r.get(cost) is not None and r.get(cost) > 0 and r.get("accuracy") is not None]
    by_id = {r["id"]: r for r in pts}
    fig = go.Figure()
    # parent links first, so the points are drawn over them
    lx, ly = [], []
    for r in pts:
        p = by_id.get(r.get("parent_id"))
        if p is not None:
            lx += [p[cost], r[cost], None]
            ly += [p["accuracy"], r["accuracy"], None]
    if lx:
        fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line={"color": LINK_COLOR, "width": 1.2},
                                 name="parent → child", hoverinfo="skip"))
    front = [by_id[i] for i in front_ids(pts, cost)]
    if front:
        fx, fy = [f[cost] for f in front], [f["accuracy"] for f in front]
        fig.add_trace(go.Scatter(x=fx, y=fy, mode="lines", line={"color": FRONT_COLOR, "width": 2, "dash": "dash",
                                                                 "shape": "hv"},
                                 name="Pareto front", hoverinfo="skip"))
    colors = method_colors([r["method"] for r in pts])
    front_set = {f["id"] for f in front}
    for method, color in colors.items():
        group = [r for r in pts if r["method"] == method]
        fig.add_trace(go.Scatter(
            x=[r[cost] for r in group], y=[r["accuracy"] for r in group], mode="markers", name=method,
            customdata=[[r["id"]] for r in group], hovertext=[_hover(r, cost) for r in group],
            hovertemplate="%{hovertext}<extra></extra>", error_x=_error_bars(group, cost),
            marker={"color": color, "size": [13 if r["id"] in front_set else 9 for r in group],
                    "symbol": ["x" if cost.startswith("latency") and r.get("latency_busy") else "circle"
                               for r in group],
                    "line": {"color": "white", "width": 1}}))
    active = by_id.get(active_id) if active_id else None
    if active is not None:
        fig.add_trace(go.Scatter(x=[active[cost]], y=[active["accuracy"]], mode="markers", name="active variant",
                                 customdata=[[active["id"]]], hovertext=[_hover(active, cost)],
                                 hovertemplate="%{hovertext}<extra></extra>",
                                 marker={"size": 20, "color": "rgba(0,0,0,0)",
                                         "line": {"color": ACTIVE_COLOR, "width": 2.5}}))
    runtime = next((r.get("runtime") for r in pts if r.get("runtime")), None)
    where = f", {RUNTIMES[runtime].title}" if cost != "size_bytes" and runtime in RUNTIMES else ""
    x_title = COSTS[cost] + where + (" (bytes, log scale)" if cost == "size_bytes" else " (ms, log scale)")
    fig.update_xaxes(type="log", title=x_title)
    if cost == "size_bytes" and pts:
        ticks = _byte_ticks(min(r[cost] for r in pts), max(r[cost] for r in pts))
        fig.update_xaxes(tickvals=ticks, ticktext=[human_bytes(t) for t in ticks])
    fig.update_yaxes(title="Test accuracy", tickformat=".0%")
    if len({r["accuracy"] for r in pts}) == 1:   # one accuracy: a few points either side, not 0%-150%
        fig.update_yaxes(range=[pts[0]["accuracy"] - 0.03, pts[0]["accuracy"] + 0.03])
    fig.update_layout(title=title or None, height=height, margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
                      clickmode="event+select", dragmode="zoom", hovermode="closest")
    return fig


def _byte_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x powers of ten (bytes) covering [lo, hi], at most about 8 of them."""
    out, k = [], 1
    while k <= hi * 10:
        for m in (1, 2, 5):
            t = m * k
            if lo / 2 <= t <= hi * 2:
                out.append(t)
        k *= 10
    while len(out) > 8:
        out = out[::2]
    return out or [lo]


def lineage_tree(rows: Sequence[dict], *, active_id: str | None = None, height: int | None = None) -> go.Figure:
    """The lineage as a tree, left to right: one row per variant in tree order (a root, then its
    descendants depth first), indented by depth, a line to its parent, coloured by method."""
    rows = list(rows)
    y = {r["id"]: -i for i, r in enumerate(rows)}
    fig = go.Figure()
    ex, ey = [], []
    for r in rows:
        if r.get("parent_id") in y:
            p = next(q for q in rows if q["id"] == r["parent_id"])
            # an elbow: down from the parent, then across to the child
            ex += [p["depth"], p["depth"], r["depth"], None]
            ey += [y[p["id"]], y[r["id"]], y[r["id"]], None]
    if ex:
        fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line={"color": LINK_COLOR, "width": 1.5},
                                 hoverinfo="skip", showlegend=False))
    colors = method_colors([r["method"] for r in rows])
    for method, color in colors.items():
        group = [r for r in rows if r["method"] == method]
        fig.add_trace(go.Scatter(
            x=[r["depth"] for r in group], y=[y[r["id"]] for r in group], mode="markers+text", name=method,
            text=[_tree_label(r) for r in group], textposition="middle right", textfont={"size": 12},
            customdata=[[r["id"]] for r in group], hovertext=[_hover(r, "size_bytes") for r in group],
            hovertemplate="%{hovertext}<extra></extra>",
            marker={"color": color, "size": 11, "line": {"color": [ACTIVE_COLOR if r["id"] == active_id else "white"
                                                                    for r in group],
                                                          "width": [3 if r["id"] == active_id else 1 for r in group]}}))
    max_depth = max((r["depth"] for r in rows), default=0)
    fig.update_xaxes(visible=False, range=[-0.3, max_depth + 3.2])
    fig.update_yaxes(visible=False, range=[-(len(rows) - 0.5), 0.6])
    fig.update_layout(height=height or max(160, 34 * len(rows) + 60), margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "x": 0}, hovermode="closest",
                      clickmode="event+select")
    return fig


def _tree_label(r: dict) -> str:
    acc = r.get("accuracy")
    size = r.get("size_bytes")
    parts = [r["name"]]
    if acc is not None:
        parts.append(f"{acc:.1%}")
    if size is not None:
        parts.append(human_bytes(size))
    if r.get("kind") and r["kind"] != "dense":
        parts.append(r["kind"])
    return "  ·  ".join(parts)
