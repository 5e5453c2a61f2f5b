"""A variant's latency as measured, in each runtime side by side (PyTorch eager and ONNX Runtime),
batch 1 and 64: the median with its 95% interval, the ratio to the parent timed in the same call
with its interval, the device, and a verdict that names the runtime. A figure that did not settle
says "not measurable now" with the stored reason, never a number; "Measure again" times it anew,
and a variant without figures from this machine is measured by itself once the machine is quiet."""
from __future__ import annotations

import os
import threading
import time

import streamlit as st

from core.base.ratios import RUNTIMES, busy_warning, latency_ratio, speed_words
from core.io.model_card import LATENCY_BATCHES, fmt_ms, latency_card
from core.measure.lane import BUSY_OTHER_CORES, other_cores_now, usable_cores
from core.measure.speed import needs_measuring
from core.store.workspace import Variant, Workspace
from ui import state

NOT_MEASURABLE = "Not measurable now"
SHORT = {"PyTorch eager": "eager", "ONNX Runtime": "ORT", "OpenVINO": "OV"}
RETRY_AUTO_MEASURE_S = 120          # a variant the machine was too busy to time is tried again after this long
_auto_tried: dict[tuple[str, str], float] = {}     # (workspace, variant) -> when it was last tried, server-wide
_auto_lock = threading.Lock()


def auto_measure_enabled() -> bool:
    return os.environ.get("WORKBENCH_AUTO_MEASURE", "1") != "0"


def measure_if_quiet(ws: Workspace, v: Variant) -> None:
    """Measure `v`'s latency now when it has no figure from this machine (retired, withheld when it
    was made, or taken on another CPU) and the machine is quiet: at most once per
    RETRY_AUTO_MEASURE_S per variant, whichever session shows it."""
    reason = needs_measuring(v.metrics)
    if not reason or not auto_measure_enabled() or ws.read_only_reason:
        return
    key = (str(ws.root), v.id)
    with _auto_lock:
        if time.monotonic() - _auto_tried.get(key, -1e9) < RETRY_AUTO_MEASURE_S:
            return
        _auto_tried[key] = time.monotonic()
    others = other_cores_now()
    # quiet enough unless every core is taken (the lane drops the passes other work disturbs, and
    # withholds a figure that does not settle; a browser drawing this page must not hold it back)
    if others is not None and others > max(BUSY_OTHER_CORES, usable_cores() - 0.5):
        st.caption(f":material/hourglass: Its latency will be measured when the machine is quiet (other processes "
                   f"use {others:.1f} cores now): {reason}.")
        return
    remeasure_latency(ws, v, why=f"the machine is quiet and {reason[0].lower()}{reason[1:]}")


def _figure_metric(fig: dict, title: str, batch: int, device: str | None) -> None:
    """One figure as an st.metric, with its interval (or why there is none) in a caption under it."""
    label = f"Batch {batch} · {SHORT.get(title, title)}"   # the box names the runtime; short, so it fits three across
    where = f" on {device}" if device else ""
    if fig["status"] == "not measurable":
        st.metric(label, "–", help=f"Timed{where}, but no figure is shown: {fig['reason']}. A median is shown "
                                   "only once its 95% interval is within +/-10%.")
        st.caption(f":material/block: **{NOT_MEASURABLE}**: {fig['reason']}")
        return
    if fig["status"] != "measured":
        st.metric(label, "–", help=fig["text"][0].upper() + fig["text"][1:] + ".")
        return
    ratio, ratio_ci = fig["vs_parent"], fig["vs_parent_ci"]
    st.metric(label, fmt_ms(fig["median_ms"]), speed_words(ratio) if ratio else None, delta_color="off",
              delta_arrow="off", delta_description="than parent" if ratio else None,
              help=f"Median of the timed passes{where}: {fig['text']}." + (
                  " The ratio compares timings of this variant and its parent taken alternately in one call."
                  if ratio else ""))
    ci = fig["ci_ms"]
    lines = [f"95% interval {fmt_ms(ci[0])[:-3]}–{fmt_ms(ci[1])}" if ci else "no interval (an older measurement)"]
    if ratio_ci:
        lines.append(f"ratio to parent {ratio_ci[0]:.2f}–{ratio_ci[1]:.2f}x")
    st.caption("  \n".join(lines))


def _runtime_box(card: dict, runtime: str, key: str) -> None:
    rt = RUNTIMES[runtime]
    entry = card["runtimes"][runtime]
    with st.container(border=True, key=f"{key}-{runtime}"):
        st.markdown(f"**{rt.title}**")
        what = entry.get("model") or ("the stored PyTorch module" if runtime == "torch" else "")
        st.caption("  \n".join(w for w in (what, f"on {entry['device']}" if entry.get("device") else "") if w))
        figures = entry["batches"]
        if entry.get("unavailable"):
            st.caption(f":material/info: No {rt.title} figure: {entry['unavailable']}")
            return
        if all(f["status"] == "not measured" for f in figures.values()):
            st.caption(f"No {rt.title} figure yet: measure again to time it.")
            return
        for b in LATENCY_BATCHES:   # one under the other: three boxes across leave no room for two numbers side by side
            _figure_metric(figures[str(b)], rt.title, b, entry.get("device"))


def _comparison_line(m: dict, parent: Variant | None) -> str:
    """Without a verdict: why the variant is not compared with its parent (or how it is)."""
    if parent is None:
        return "A root variant: there is no parent to compare its speed with."
    lr = latency_ratio(m, parent.metrics, batch=64, paired="reference")
    if str(lr.basis).startswith("not measurable"):
        return "No speed verdict against its parent: its batch 64 figures are not measurable now (see below)."
    if lr.shown:
        interval = f", {lr.interval_words()}" if lr.interval_words() else ""
        return f"Compared with its parent at batch 64: {speed_words(lr.value)} ({lr.basis}{interval})."
    return f"Not compared with its parent: {str(lr.basis).removeprefix('not compared: ')}."


def latency_panel(v: Variant, parent: Variant | None = None, *, key: str, ws: Workspace | None = None) -> None:
    """The latency of `v` in every runtime, side by side, with a "Measure again" button (given `ws`)."""
    m = v.metrics
    card = latency_card(m, masked=bool(v.kind.get("masked")))
    verdict = card["verdict"]
    st.markdown("**Latency**" + (f" · :material/speed: {verdict}" if verdict else ""))
    if not verdict:
        st.caption(_comparison_line(m, parent))
    for col, runtime in zip(st.columns(len(RUNTIMES)), RUNTIMES, strict=True):
        with col:
            _runtime_box(card, runtime, key)
    withheld = any(f["status"] == "not measurable" for e in card["runtimes"].values() for f in e["batches"].values())
    warning = busy_warning(m)
    with st.container(horizontal=True, vertical_alignment="center"):
        if warning:
            st.warning(warning, icon=":material/warning:")
        if ws is not None and st.button("Measure again", key=f"{key}-remeasure", icon=":material/timer:",
                                        type="primary" if withheld else "secondary",
                                        help="Time this variant again now, in every runtime"
                                             + (", alternately with its parent" if parent is not None else "")):
            remeasure_latency(ws, v)
    if ws is not None:
        measure_if_quiet(ws, v)


def remeasure_latency(ws: Workspace, v: Variant, why: str = "") -> None:
    """Time `v` again (with its parent, alternately) through the `measure` task, then rerun."""
    from core.tasks import MeasureJobConfig, TaskContext, run_task
    from ui.recovery import run_or_report

    with st.spinner(f"Timing {v.name}" + (f" ({why})" if why else "") + "…"):
        done = run_or_report(lambda: run_task("measure", MeasureJobConfig(variant=v.id, what="latency"),
                                              TaskContext(ws)), "Could not measure")
    if done is None:
        return
    state.set_flash(f"Measured the latency of {v.name} again.")
    st.rerun()
