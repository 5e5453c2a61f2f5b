"""Plotly figures of predictions: data in, figure out. No Streamlit here.

`topk_chart` draws several variants' class probabilities (core.measure.metrics.class_probabilities)
for one input side by side: the classes in any variant's top k (and the true one when known).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

COLOURS = ["#2f6fde", "#e4572e", "#29a36a", "#9b59b6"]


def pct(p: float) -> str:
    """A probability as a label: '12.3%', and '<0.1%' below a thousandth."""
    return f"{p:.1%}" if p >= 0.001 else "<0.1%"


def topk_chart(probs: Mapping[str, np.ndarray], row: int, class_names: Sequence[str], names: Mapping[str, str],
               k: int, true_label: int | None = None) -> go.Figure:
    """Horizontal bars, one per variant, for the classes in any variant's top-k of input `row`.
    `probs`: variant id -> (N, classes); `names`: variant id -> its name. The classes are ordered by
    the first variant's probability; the true class, when known, is always drawn and marked."""
    classes: list[int] = []
    for p in probs.values():
        for c in np.argsort(-p[row])[:k]:
            if int(c) not in classes:
                classes.append(int(c))
    if true_label is not None and true_label not in classes:
        classes.append(true_label)
    first = next(iter(probs.values()))[row]
    classes.sort(key=lambda c: -first[c])
    labels = [class_names[c] + (" (true)" if c == true_label else "") for c in classes]
    fig = go.Figure()
    for j, (vid, p) in enumerate(probs.items()):
        fig.add_bar(y=labels, x=[float(p[row][c]) for c in classes], orientation="h", name=names[vid],
                    marker_color=COLOURS[j % len(COLOURS)],
                    text=[pct(float(p[row][c])) for c in classes], textposition="outside", cliponaxis=False)
    fig.update_layout(barmode="group", height=70 + 16 * len(classes) * max(1, len(probs)),
                      margin=dict(l=10, r=40, t=30, b=10), bargap=0.25,
                      legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"),
                      xaxis=dict(range=[0, 1.15], tickformat=".0%", title=None), yaxis=dict(autorange="reversed"),
                      title=dict(text=f"Top-{k} probabilities of each variant", font=dict(size=13), x=0, y=0.99,
                                 yanchor="top"))
    return fig
