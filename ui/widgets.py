"""Small widget groups and formatting shared by the pages."""
from __future__ import annotations

import math
import time

import pandas as pd
import streamlit as st

from core.workspace import Variant, Workspace
from ui import state


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def human_count(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}" if abs(n) < 10 * div else f"{n / div:.1f} {unit}"
    return f"{n:.0f}"


def fmt_ms(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.2f} ms"


def fmt_pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2%}"


def fmt_duration(s: float | None) -> str:
    if s is None:
        return "–"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def fmt_when(t: float | None) -> str:
    return "–" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def variant_label(v: Variant) -> str:
    acc = v.metrics.get("accuracy")
    acc_s = f" · {acc:.1%}" if acc is not None else ""
    return f"{v.name}{acc_s} · {human_bytes(v.metrics.get('size_bytes'))}"


def ratio(root_value: float | None, value: float | None) -> float | None:
    if not root_value or not value:
        return None
    return root_value / value


def metric_row(v: Variant, root: Variant | None = None, compact: bool = False) -> None:
    """The fixed metrics of a variant as st.metric cards, with ratios against its root variant."""
    m = v.metrics
    r = root.metrics if root is not None and root.id != v.id else None
    cols = st.columns(3 if compact else 6)
    acc = m.get("accuracy")
    delta = None
    if r and acc is not None and r.get("accuracy") is not None:
        delta = f"{(acc - r['accuracy']) * 100:+.2f} pp vs root"
    cols[0].metric("Test accuracy", fmt_pct(acc), delta,
                   help="Top-1 accuracy on the dataset's full test split, measured on this variant's stored file.")
    size_ratio = ratio(r.get("size_bytes"), m.get("size_bytes")) if r else None
    cols[1].metric("Download size", human_bytes(m.get("size_bytes")),
                   f"{size_ratio:.1f}x smaller than root" if size_ratio and size_ratio >= 1.05 else None,
                   delta_color="normal",
                   help=f"Bytes of the file you would download ({v.format} format). "
                        f"Dense float32 would be {human_bytes(m.get('dense_size_bytes'))}.")
    params, nonzero = m.get("params"), m.get("nonzero_params")
    cols[2].metric("Parameters", human_count(params),
                   f"{1 - nonzero / params:.1%} zeros" if params and nonzero is not None and nonzero < params else None,
                   delta_color="off", help=f"{params:,} parameters, {nonzero:,} non-zero" if params else None)
    if compact:
        return
    lat_ratio = ratio(r.get("latency_ms_b1"), m.get("latency_ms_b1")) if r else None
    cols[3].metric("Latency, batch 1", fmt_ms(m.get("latency_ms_b1")),
                   f"{lat_ratio:.2f}x vs root" if lat_ratio else None, delta_color="off",
                   help=f"Median of timed forward passes after warm-up, on {m.get('device', '?')}.")
    cols[4].metric("Latency, batch 64", fmt_ms(m.get("latency_ms_b64")), delta_color="off",
                   help=f"Median of timed forward passes after warm-up, on {m.get('device', '?')}.")
    cols[5].metric("MACs / image", human_count(m.get("macs")),
                   help="Multiply-accumulates of one forward pass at batch 1.")


def make_active_button(v: Variant, *, key: str, label: str | None = None, disabled: bool | None = None) -> None:
    """A button that makes `v` the active variant (through a callback, so the sidebar follows)."""
    is_active = state.active_variant_id() == v.id
    st.button(label or ("Active" if is_active else f"Make active: {v.name}"), key=key,
              on_click=state.set_active_variant, args=(v.id,),
              disabled=is_active if disabled is None else disabled, icon=":material/check_circle:")


def layer_dataframe(rows: list[dict]) -> None:
    df = pd.DataFrame([{"layer": r["name"], "type": r["type"], "shape": " x ".join(map(str, r["shape"])),
                        "params": r["params"], "non-zero": r["nonzero"], "sparsity": r["sparsity"]} for r in rows])
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "params": st.column_config.NumberColumn(format="localized"),
        "non-zero": st.column_config.NumberColumn(format="localized"),
        "sparsity": st.column_config.ProgressColumn(format="percent", min_value=0.0, max_value=1.0,
                                                    help="Fraction of this layer's parameters that are exactly zero"),
    })


def lineage_view(ws: Workspace, v: Variant, key: str) -> None:
    """The parent chain (root first), the children, and buttons that make any of them active."""
    chain = ws.lineage(v.id)
    kids = ws.children(v.id)
    root = chain[0]
    rows = []
    for depth, a in enumerate(chain):
        rows.append(("ancestor" if a.id != v.id else "this variant", depth, a))
    for k in kids:
        rows.append(("child", len(chain), k))
    df = pd.DataFrame([{
        "relation": rel, "variant": ("    " * depth) + ("└ " if depth else "") + a.name, "id": a.id,
        "step": (a.recipe[-1].get("step", "") if a.recipe else ""), "kind": a.kind_label,
        "accuracy": a.metrics.get("accuracy"), "size": human_bytes(a.metrics.get("size_bytes")),
        "x smaller": ratio(root.metrics.get("size_bytes"), a.metrics.get("size_bytes")),
    } for rel, depth, a in rows])
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "accuracy": st.column_config.NumberColumn(format="percent"),
        "x smaller": st.column_config.NumberColumn(format="%.1fx", help="Root's download size / this variant's"),
    })
    if not kids:
        st.caption("No children yet: prune, quantize or fine-tune this variant to grow its tree.")
    others = [a for _, _, a in rows if a.id != v.id]
    if others:
        st.caption("Switch to a relative:")
        with st.container(horizontal=True):
            for a in others:
                st.button(a.name, key=f"{key}-goto-{a.id}", on_click=state.set_active_variant, args=(a.id,),
                          help=f"Make {a.name} ({a.id}) the active variant", icon=":material/arrow_forward:")
