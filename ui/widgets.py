"""Small widget groups and formatting shared by the pages."""
from __future__ import annotations

import math
import time

import pyarrow as pa
import streamlit as st

from core.base.ratios import size_ratio
from core.base.units import fmt_sparsity, human_bytes, human_count  # noqa: F401  (re-exported for pages)
from core.store.workspace import Variant, VariantNotFound, Workspace
from ui import latency, nav, state


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
    kind = v.kind_label
    kind_s = f" · {kind}" if kind != "dense" else ""
    return f"{v.name}{kind_s}{acc_s} · {human_bytes(v.metrics.get('size_bytes'))}"


def ratio(root_value: float | None, value: float | None) -> float | None:
    if not root_value or not value:
        return None
    return root_value / value


def metric_row(v: Variant, root: Variant | None = None, compact: bool = False, parent: Variant | None = None,
               key: str = "metrics", ws: Workspace | None = None) -> None:
    """The fixed metrics of a variant as st.metric cards, accuracy and size compared with the root;
    then (not `compact`) its latency in every runtime, compared with the parent timed in the same
    call (ui.latency), with a button that measures it again (given `ws`)."""
    m = v.metrics
    r = root.metrics if root is not None and root.id != v.id else None
    cols = st.columns(3 if compact else 4)
    acc = m.get("accuracy")
    delta = None
    if r and acc is not None and r.get("accuracy") is not None:
        delta = f"{(acc - r['accuracy']) * 100:+.2f} pp vs root"
    cols[0].metric("Test accuracy", fmt_pct(acc), delta,
                   help="Top-1 accuracy on the dataset's full test split, measured on this variant's stored file.")
    sr = size_ratio(m, r) if r else None
    smaller = f"{sr.value:.1f}x smaller" if sr and sr.value and sr.value >= 1.05 else None
    cols[1].metric("Download size", human_bytes(m.get("size_bytes")), smaller,
                   delta_color="normal", delta_description="than root" if smaller else None,
                   help=f"Bytes of the file you would download ({v.format} format). "
                        f"Dense float32 would be {human_bytes(m.get('dense_size_bytes'))}.")
    params, nonzero = m.get("params"), m.get("nonzero_params")
    cols[2].metric("Parameters", human_count(params),
                   f"{fmt_sparsity(1 - nonzero / params)} zeros" if params and nonzero is not None and nonzero < params
                   else None, delta_color="off", help=f"{params:,} parameters, {nonzero:,} non-zero" if params else None)
    if compact:
        return
    cols[3].metric("MACs / image", human_count(m.get("macs")),
                   help="Multiply-accumulates of one forward pass at batch 1.")
    latency.latency_panel(v, parent, key=key, ws=ws)


remeasure_latency = latency.remeasure_latency   # the "measure again" action, for the pages that name it here


def flash_box(ws: Workspace, key: str) -> str | None:
    """The message a previous run left with `state.set_flash`, once; with a button that makes its
    variant active when it names one (and that variant still exists). Returns that variant's id."""
    flash = state.pop_flash()
    if not flash:
        return None
    with st.container(border=True, key=f"{key}-flash-box"):
        st.success(flash["message"], icon=":material/check_circle:")
        if flash.get("variant_id"):
            try:
                v = ws.get_variant(flash["variant_id"])
            except VariantNotFound:
                return None
            make_active_button(v, key=f"{key}-open-child", label=f"Make {v.name} active")
            return v.id
    return None


def made_before(child: Variant, text: str, *, key: str) -> None:
    """Settings that made `child` before: say so (`text`, then the child's numbers) with a button
    that makes it active, instead of making the same child a second time."""
    with st.container(border=True, key=key + "already"):
        st.info(f"{text}: **{child.name}** (`{child.id}`, {child.kind_label}, test accuracy "
                f"{fmt_pct(child.metrics.get('accuracy'))}, {human_bytes(child.metrics.get('size_bytes'))}).",
                icon=":material/content_copy:")
        make_active_button(child, key=key + "open-existing", label=f"Make {child.name} active")


def save_child(ws: Workspace, kind: str, config, *, spinner: str, message=None) -> None:
    """Run a step's task inline (a few seconds) and announce its child after the rerun, with a
    button that makes it active. Returns only when it could not be done (the error box is shown)."""
    from core.tasks import TaskContext, run_task
    from ui.recovery import run_or_report

    with st.spinner(spinner):
        out = run_or_report(lambda: run_task(kind, config, TaskContext(ws)), "Not saved")
    if out is None:
        return
    child = ws.get_variant(out.variant_id)
    state.set_flash(message(child) if message else
                    f"Saved **{child.name}** (`{child.id}`, {child.kind_label}): test accuracy "
                    f"{child.metrics['accuracy']:.2%}, file {human_bytes(child.metrics['size_bytes'])}. It is in the "
                    "sidebar's variant picker.", variant_id=child.id)
    st.rerun()


def make_active_button(v: Variant, *, key: str, label: str | None = None, disabled: bool | None = None) -> None:
    """A button that makes `v` the active variant (through a callback, so the sidebar follows)."""
    is_active = state.active_variant_id() == v.id
    st.button(label or ("Active" if is_active else f"Make active: {v.name}"), key=key,
              on_click=state.set_active_variant, args=(v.id,),
              disabled=is_active if disabled is None else disabled, icon=":material/check_circle:",
              help="Make this variant the active one: every page then works on it (the sidebar shows it)")


def table(rows: list[dict]) -> pa.Table:
    """Rows (dicts) as an Arrow table: st.dataframe sends an Arrow table as it is, where a pandas
    DataFrame is first built (a few ms) and then converted to Arrow (more). Arrow refuses a column
    of mixed text and numbers (e.g. "-" in a column of counts): such a column is shown as text."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    mixed = set()
    for k in keys:
        kinds = {type(r.get(k)) for r in rows if r.get(k) is not None}
        if len(kinds - {int, float}) > 1 or (kinds - {int, float} and kinds & {int, float}):
            mixed.add(k)
    if mixed:
        rows = [{k: (str(r[k]) if k in mixed and r.get(k) is not None else r.get(k)) for k in keys} for r in rows]
    return pa.Table.from_pylist(rows)


def layer_dataframe(rows: list[dict]) -> None:
    df = table([{"layer": r["name"], "type": r["type"], "shape": " x ".join(map(str, r["shape"])),
                 "params": r["params"], "non-zero": r["nonzero"],
                 "weight sparsity": round(r["sparsity"] * 100, 1)} for r in rows])
    st.dataframe(df, hide_index=True, width="stretch", column_config={
        "params": st.column_config.NumberColumn(format="localized", help="Weights and biases"),
        "non-zero": st.column_config.NumberColumn(format="localized"),
        "weight sparsity": st.column_config.ProgressColumn(
            format="%.1f%%", min_value=0.0, max_value=100.0,
            help="Zeros among the layer's weights (biases apart): the number the Prune page shows"),
    })


def lineage_view(ws: Workspace, v: Variant, key: str) -> None:
    """The parent chain (root first), the children, and buttons that make any of them active."""
    from ui import resources  # the shared index: read once per change, not on every run

    chain = resources.lineage(v.id)
    kids = resources.children(v.id)
    root = chain[0]
    rows = []
    for depth, a in enumerate(chain):
        rows.append(("ancestor" if a.id != v.id else "this variant", depth, a))
    for k in kids:
        rows.append(("child", len(chain), k))
    df = table([{
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
        st.caption(f"No children yet: {nav.step_verbs()} this variant to grow its tree.")
    others = [a for _, _, a in rows if a.id != v.id]
    if others:
        st.caption("Switch to a relative:")
        with st.container(horizontal=True):
            for a in others:
                st.button(a.name, key=f"{key}-goto-{a.id}", on_click=state.set_active_variant, args=(a.id,),
                          help=f"Make {a.name} ({a.id}) the active variant", icon=":material/arrow_forward:")
