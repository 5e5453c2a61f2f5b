"""Figures and tables of Deep Compression's stages (prune, share weights, entropy-code): where a
weight-shared file's bytes went, and the stage table of a variant's lineage (as in Han et al.'s
Table 3). Data in, plotly figure or rows out; no Streamlit."""
from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

PART_COLORS = {"codes": "#4f8bf9", "values": "#4f8bf9", "indices": "#f2a541", "mask": "#f2a541",
               "codebook": "#2a9d8f", "tables": "#8e44ad", "other": "#9aa5b1", "header": "#6c757d"}
PART_LABELS = {"codes": "codes (one per non-zero weight)", "indices": "relative indices (where the non-zeros are)",
               "codebook": "codebooks (shared values)", "values": "non-zero values", "mask": "sparsity mask",
               "tables": "Huffman tables", "other": "biases and other tensors", "header": "file header"}
STEP_LABELS = {"prune": "pruned", "prune_recover": "pruned + retrained", "finetune": "fine-tuned",
               "share_weights": "weight sharing", "entropy_code": "entropy coding", "quantize": "quantized",
               "distill": "distilled", "train": "trained", "transfer": "transferred"}


def bytes_by_layer_chart(breakdown: dict[str, dict[str, int]], *, title: str = "") -> go.Figure:
    """Stacked horizontal bars: for each layer (and the header) the bytes of each part of the file."""
    layers = list(breakdown)
    parts = [p for p in PART_COLORS if any(p in breakdown[layer] for layer in layers)]
    fig = go.Figure()
    for part in parts:
        fig.add_bar(y=layers, x=[breakdown[layer].get(part, 0) for layer in layers], orientation="h",
                    name=PART_LABELS[part], marker_color=PART_COLORS[part],
                    hovertemplate="%{y}: %{x:,} bytes<extra>" + part + "</extra>")
    total = sum(sum(p.values()) for p in breakdown.values())
    # the legend goes under the bars: above them it collides with the title at page widths
    fig.update_layout(barmode="stack", height=190 + 34 * len(layers), margin=dict(l=10, r=10, t=50, b=10),
                      title=dict(text=title or f"Where the {total:,} bytes of the file went"),
                      xaxis_title="bytes", yaxis=dict(autorange="reversed"),
                      legend=dict(orientation="h", yanchor="top", y=-0.3, x=0))
    return fig


def stage_rows(lineage: Sequence, dense_bytes: int) -> list[dict]:
    """One row per variant of a lineage (root first): its last step, file bytes, the ratio to the
    root's float32 dense file, test accuracy and its change against the root, in points."""
    root_acc = lineage[0].metrics.get("accuracy")
    rows = []
    for i, v in enumerate(lineage):
        step = (v.recipe[-1].get("step") if v.recipe else None) if i else None
        size = dense_bytes if i == 0 else v.metrics.get("size_bytes")
        acc = v.metrics.get("accuracy")
        nonzero = v.metrics.get("nonzero_params")
        rows.append({"stage": "float32 dense (root)" if i == 0 else STEP_LABELS.get(step, step or "?"),
                     "file bytes": f"{size:,}" if size else "–",
                     "compression": f"{dense_bytes / size:.1f}x" if size else "–",
                     "non-zero weights": f"{nonzero:,}" if nonzero is not None else "–",
                     "test accuracy": f"{acc:.2%}" if acc is not None else "–",
                     "change (points)": (f"{100 * (acc - root_acc):+.2f}" if acc is not None and root_acc is not None
                                         else "–"),
                     "variant": v.name})       # last: names are long, the numbers should show first
    return rows
