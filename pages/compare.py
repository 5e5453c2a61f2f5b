"""Compare: every variant of one dataset on accuracy against download size and against measured
latency, with the Pareto front; the table of all variants (CSV), the lineage tree, and latency
measured again on demand. Selecting a point or a row opens that variant. The rows come from
core.measure.pareto (ratios to the root only where the engine says the figures compare), the
figures from core.viz.compare."""
import hashlib
import json
from collections import Counter

import streamlit as st

from core.base.ratios import RUNTIMES
from core.data.datasets import get_info
from core.measure.lane import is_lane_device
from core.measure.pareto import compare_rows, front_ids, rows_csv
from core.run import jobs
from core.tasks import MeasureJobConfig
from core.viz.compare import lineage_tree, tradeoff_chart
from ui import nav, recovery, resources, state, widgets
from ui.job_cards import show_jobs, start_job

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = "compare-"
RECENT_MEASURE_JOBS = 3

EXPLAINER = """
**Each dot is a variant** of the chosen dataset: the trained baselines and everything made from
them. Up is more accurate (the dataset's full test split); left is smaller (bytes of the file you
would download, log scale) or faster (median time of a forward pass, log scale).

- **Colour** says what the variant's last step did (trained, pruned, quantized, distilled...).
- **Grey lines** join a variant to its parent, so you can follow a model as it is compressed.
- **The dashed red staircase is the Pareto front**: the variants that nothing else beats on
  both axes at once. For any size (or latency) budget, the best choice is on it; larger dots
  are on the front.
- **A ringed dot is the active variant.** Click any dot (or a table row) to make it active.
- **Bars** across a latency dot are its 95% interval. A variant whose latency could not be measured
  within +/-10% (the machine was busy) has no dot: it is listed under the chart with the reason.
- A ✕ on the latency chart marks an old time taken while the machine was busy: measure it again.

**Runtime** picks where latency is measured: PyTorch eager (the framework itself) or ONNX Runtime on
the CPU (the exported model; int8 as a QDQ model), where most models are deployed. Latencies are
only comparable when measured on the same device and runtime, so the latency chart shows one device
at a time. Pruning with masks (kind *masked*) keeps zeros inside dense tensors: it is
smaller only where a sparse file really exists, and it is not faster. The table's ratios are to
each variant's root (the variant at the top of its lineage) and to its parent (timed together).
"""


def dataset_title(name: str) -> str:
    try:
        return get_info(name, resources.workspace().root).title
    except ValueError:
        return name


def dataset_picker(variants, active) -> str:
    """The dataset whose variants are compared (variants of different datasets are not comparable)."""
    counts = Counter(v.dataset for v in variants)
    options = sorted(counts, key=lambda d: (-counts[d], d))
    default = active.dataset if active is not None and active.dataset in counts else options[0]
    if st.session_state.get(K + "dataset") not in counts:
        st.session_state[K + "dataset"] = default
    if active is not None and st.session_state.get(K + "followed") != active.id:
        # another variant was made active (sidebar, a job card): show its dataset
        st.session_state[K + "followed"] = active.id
        st.session_state[K + "dataset"] = default
    return st.selectbox("Dataset", options, key=K + "dataset",
                        format_func=lambda d: f"{dataset_title(d)} ({counts[d]} variant{'s' if counts[d] != 1 else ''})",
                        help="Only variants of one dataset are compared: accuracy on another dataset's test split "
                             "means something else.")


def runtime_picker() -> str:
    return st.radio("Runtime", list(RUNTIMES), horizontal=True, key=K + "runtime",
                    format_func=lambda k: RUNTIMES[k].title,
                    help="Where latency is measured: PyTorch eager (the framework, on the variant's device) or ONNX "
                         "Runtime on the CPU (the exported model; int8 as a QDQ model). It drives the latency chart, "
                         "the latency columns of the table and the speed ratios.")


def rows_for(dataset: str, runtime: str) -> list[dict]:
    return compare_rows([v for v in resources.variants() if v.dataset == dataset], runtime=runtime)


def _rows_key(rows: list[dict]) -> str:
    return hashlib.sha1(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- opening a variant from a chart or the table

def _open_from_chart(key: str) -> None:
    """on_select callback of a chart: make the clicked variant active (the sidebar follows)."""
    event = st.session_state.get(key)
    points = (event or {}).get("selection", {}).get("points", []) if event is not None else []
    for p in points:
        data = p.get("customdata")
        vid = data[0] if isinstance(data, (list, tuple)) and data else data
        if isinstance(vid, str) and resources.variant(vid) is not None:
            state.set_active_variant(vid)
            st.session_state[K + "opened"] = vid
            return


def _open_from_table(key: str, ids: list[str]) -> None:
    event = st.session_state.get(key)
    sel = (event or {}).get("selection", {}).get("rows", []) if event is not None else []
    if sel and 0 <= sel[0] < len(ids):
        state.set_active_variant(ids[sel[0]])
        st.session_state[K + "opened"] = ids[sel[0]]


# ---------------------------------------------------------------- the charts

def _latency_device(rows: list[dict], cost: str) -> tuple[str | None, list[dict]]:
    """The device whose latencies are drawn (a picker when several appear) and the rows drawn."""
    devices = Counter(r["device"] for r in rows if r.get("device") and r.get("accuracy") is not None)
    if not devices:
        return None, []
    # figures of the measurement lane first: an old device string ('cpu: x86_64, 2 threads') came last
    options = sorted(devices, key=lambda d: (not is_lane_device(d), -devices[d], d))
    if len(options) > 1:
        device = st.selectbox("Timed on", options, key=K + "device", format_func=lambda d: f"{d} "
                              f"({devices[d]} variants{'' if is_lane_device(d) else ', timed before the lane'})",
                              help="Latencies are compared only when measured on the same device (CPU model, "
                                   "instruction sets and timing threads, or GPU): pick one.")
    else:
        device = options[0]
    return device, [r for r in rows if r.get("device") == device and r.get(cost) is not None]


def charts(ws, rows: list[dict], active_id: str | None, runtime: str) -> None:
    """Accuracy against size (left) and against latency at batch 1 or 64 in `runtime` (right)."""
    left, right = st.columns(2, gap="medium")
    with left:
        st.markdown("**Accuracy against download size**")
        st.caption("Up and to the left is better. Size is the file you would download, in its best honest format.")
        _chart(rows, "size_bytes", active_id)
    with right:
        st.markdown(f"**Accuracy against measured latency, {RUNTIMES[runtime].title}**")
        batch = st.radio("Batch size", ["b1", "b64"], horizontal=True, key=K + "batch",
                         format_func=lambda b: {"b1": "1 image", "b64": "64 images"}[b],
                         help="Median time of one forward pass with 1 image (interactive use) or a batch of 64 "
                              "(throughput), after warm-up; the bars are its 95% interval")
        cost = f"latency_ms_{batch}"
        device, shown = _latency_device(rows, cost)
        _chart(shown, cost, active_id)
        missing = [r for r in rows if r.get(cost) is None]
        if device and is_lane_device(device):   # figures taken before the lane do not compare: listed, not hidden
            missing += [{**r, f"latency_missing_{batch}": f"timed before the measurement lane (on {r['device']}), "
                         "not comparable with these: measure it again"}
                        for r in rows if r.get(cost) is not None and not is_lane_device(r.get("device"))]
        elsewhere = len(rows) - len(shown) - len(missing)
        if device:
            st.caption(f"Timed in {RUNTIMES[runtime].title} on {device}." + (
                f" {elsewhere} variant{'s' if elsewhere != 1 else ''} timed on another device not shown."
                if elsewhere else ""))
        not_drawn(ws, missing, batch, runtime)
        busy = [r for r in shown if r.get("latency_busy")]
        if busy:
            st.caption(f":material/warning: {len(busy)} latenc{'ies were' if len(busy) != 1 else 'y was'} measured "
                       "while the machine was busy (✕): measure again below to compare on the same footing.")


NOT_DRAWN_LISTED = 12


def not_drawn(ws, missing: list[dict], batch: str, runtime: str) -> None:
    """The variants with no figure at `batch` in `runtime`, each with why, and a way to measure them again."""
    if not missing:
        return
    title = RUNTIMES[runtime].title
    lines = [f"- **{r['name']}** (`{r['id']}`): {r[f'latency_missing_{batch}']}" for r in missing[:NOT_DRAWN_LISTED]]
    if len(missing) > NOT_DRAWN_LISTED:
        lines.append(f"- and {len(missing) - NOT_DRAWN_LISTED} more (see the table's note column)")
    with st.container(border=True, key=K + "not-drawn"):
        st.markdown(f"**Not drawn: {len(missing)} variant{'s' if len(missing) != 1 else ''} not measured / not "
                    f"measurable now in {title}**\n\n" + "\n".join(lines))
        again = [r["id"] for r in missing if not r.get("runtime_unavailable")]
        if again and st.button(f"Measure {'it' if len(again) == 1 else f'these {len(again)}'} again in {title}",
                               key=K + "measure-missing", icon=":material/timer:",
                               help="Queue one latency job per variant listed (one after another, so they do not "
                                    "slow each other down); each is timed alternately with its parent"):
            _queue_measure(ws, again, runtime)


def _queue_measure(ws, ids: list[str], runtime: str = "all") -> None:
    queued = [recovery.run_or_report(lambda i=i: jobs.submit(ws, "measure", MeasureJobConfig(
        variant=i, what="latency", runtime=runtime)), "Cannot start") for i in ids]
    last = next((q for q in reversed(queued) if q), None)
    if last:
        state.set_last_job(last)
        st.rerun()


def _chart(rows: list[dict], cost: str, active_id: str | None) -> None:
    usable = [r for r in rows if r.get(cost) is not None and r.get("accuracy") is not None]
    if not usable:
        st.info("No variant here has this measured yet.", icon=":material/info:")
        return
    fig = resources.figure(("compare-tradeoff", cost, active_id, _rows_key(usable)),
                           lambda: tradeoff_chart(usable, cost, active_id=active_id))
    key = K + "chart-" + ("size" if cost == "size_bytes" else "latency")
    st.plotly_chart(fig, key=key, width="stretch", on_select=lambda: _open_from_chart(key),
                    selection_mode="points", config={"displaylogo": False})
    front = front_ids(usable, cost)
    st.caption(f"{len(usable)} variant{'s' if len(usable) != 1 else ''}, {len(front)} on the Pareto front. "
               "Click a dot to open that variant.")


def opened_panel(ws, active) -> None:
    """The active variant's numbers right under the charts, with where to go next."""
    if active is None:
        return
    chain = resources.lineage(active.id)
    root = chain[0] if chain else None
    parent = chain[-2] if len(chain) > 1 else None
    just = st.session_state.pop(K + "opened", None) == active.id
    with st.container(border=True, key=K + "active"):
        head = "Opened" if just else "Active variant"
        acc = widgets.fmt_pct(active.metrics.get("accuracy"))
        st.markdown(f"**{head}: {active.name}** · `{active.id}` · {active.kind_label} · {acc}")
        widgets.metric_row(active, root=root, parent=parent, key=K + "active-metrics")
        with st.container(horizontal=True):
            for url, label, icon in (("model", "Inspect it", ":material/model_training:"),
                                     ("prune", "Prune it", ":material/content_cut:"),
                                     ("quantize", "Quantize it", ":material/compress:"),
                                     ("export", "Download it", ":material/download:")):
                page = nav.page_file(url)
                if page:
                    st.page_link(page, label=label, icon=icon)


# ---------------------------------------------------------------- the table

TABLE_COLUMNS = ("name", "method", "kind", "accuracy", "accuracy_vs_root_pp", "size_bytes", "smaller_than_root",
                 "latency_ms_b1", "latency_ci_b1", "vs_parent_b1", "vs_root_b1", "latency_ms_b64", "latency_ci_b64",
                 "vs_parent_b64", "vs_root_b64", "latency_note", "params", "nonzero_params", "dense_size_bytes", "macs",
                 "masked", "shrunk", "quantized", "simulated", "device", "latency_busy", "id", "parent_id")


def _ratio_text(r: dict, name: str) -> str | None:
    """'2.00x (1.80-2.20)': a ratio with its 95% interval; None when there is no ratio."""
    v, lo, hi = r.get(name), r.get(name + "_low"), r.get(name + "_high")
    if v is None:
        return None
    return f"{v:.2f}x ({lo:.2f}-{hi:.2f})" if lo is not None and hi is not None else f"{v:.2f}x (no interval)"


def _table_row(r: dict) -> dict:
    s = {k: r.get(k) for k in TABLE_COLUMNS}
    s["name"] = "    " * r["depth"] + ("└ " if r["depth"] else "") + r["name"]
    for k in ("size_bytes", "dense_size_bytes"):
        s[k] = s[k] / 1000 if s[k] is not None else None   # shown in kB; the CSV keeps bytes
    notes = []
    for b in (1, 64):
        lo, hi = r.get(f"latency_ms_b{b}_low"), r.get(f"latency_ms_b{b}_high")
        s[f"latency_ci_b{b}"] = f"{lo:.3f}-{hi:.3f}" if lo is not None and hi is not None else None
        s[f"vs_parent_b{b}"] = _ratio_text(r, f"faster_than_parent_b{b}")
        s[f"vs_root_b{b}"] = "root" if r["root_id"] == r["id"] else _ratio_text(r, f"faster_than_root_b{b}")
        if r.get(f"latency_missing_b{b}") and r[f"latency_missing_b{b}"] not in notes:
            notes.append(r[f"latency_missing_b{b}"])
    s["latency_note"] = "; ".join(notes) or None
    if r["root_id"] == r["id"]:   # the root against itself
        s["accuracy_vs_root_pp"], s["smaller_than_root"] = 0.0, 1.0
    return s


def variants_table(rows: list[dict], dataset: str, runtime: str) -> None:
    """Every variant of the dataset with the fixed metrics, ratios to its root and parent (latency
    in `runtime`, with 95% intervals) and kind flags."""
    title = RUNTIMES[runtime].title
    key = K + "table"
    ids = [r["id"] for r in rows]
    st.caption(f"Latency columns: {title}. Ratios are how many times faster than the parent or the root, with "
               "their 95% interval in brackets.")
    st.dataframe(widgets.table([_table_row(r) for r in rows]), key=key, hide_index=True, width="stretch",
                 on_select=lambda: _open_from_table(key, ids), selection_mode="single-row",
                 column_config={
        "name": st.column_config.TextColumn("variant", help="Indented under its parent; select a row to open it",
                                            pinned=True),
        "method": st.column_config.TextColumn("last step", help="What the last step of its recipe did"),
        "kind": st.column_config.TextColumn("kind", help="dense, or the flags below joined by +"),
        "masked": st.column_config.CheckboxColumn("masked", help="Pruned zeros kept inside dense tensors: no smaller "
                                                                 "or faster by itself"),
        "shrunk": st.column_config.CheckboxColumn("shrunk", help="Layers physically smaller (channels removed)"),
        "quantized": st.column_config.CheckboxColumn("quantized", help="Real low-precision kernels (int8)"),
        "simulated": st.column_config.CheckboxColumn("simulated", help="Low-bit weights computed in float "
                                                                       "(fake-quant or weight-only)"),
        "accuracy": st.column_config.NumberColumn("accuracy", format="percent",
                                                  help="Top-1 on the full test split"),
        "accuracy_vs_root_pp": st.column_config.NumberColumn("Δ acc vs root", format="%+.2f pp",
                                                             help="Accuracy minus its root's, in percentage points"),
        "params": st.column_config.NumberColumn("params", format="localized"),
        "nonzero_params": st.column_config.NumberColumn("non-zero", format="localized",
                                                        help="Parameters that are not exactly zero"),
        "size_bytes": st.column_config.NumberColumn("size (kB)", format="%.1f",
                                                    help="The downloadable file, in its best honest format"),
        "dense_size_bytes": st.column_config.NumberColumn("dense (kB)", format="%.1f",
                                                          help="The same weights as dense float32"),
        "smaller_than_root": st.column_config.NumberColumn("x smaller", format="%.2fx",
                                                           help="Root's file size / this one's"),
        **{f"latency_ms_b{b}": st.column_config.NumberColumn(
            f"ms, b{b}", format="%.3f", help=f"Median latency in {title}, batch {b}; empty when not measured or "
                                             "not measurable now (see the note)") for b in (1, 64)},
        **{f"latency_ci_b{b}": st.column_config.TextColumn(
            f"95% ms, b{b}", help=f"The 95% interval of the batch-{b} median, in ms") for b in (1, 64)},
        **{f"vs_parent_b{b}": st.column_config.TextColumn(
            f"x faster than parent b{b}", help=f"Parent's batch-{b} latency / this one's in {title}, timed together "
                                               "(alternately, in one call), with its 95% interval") for b in (1, 64)},
        **{f"vs_root_b{b}": st.column_config.TextColumn(
            f"x faster than root b{b}", help=f"Root's batch-{b} latency / this one's in {title}; empty when the two "
                                             "do not compare (see the CSV's latency_vs_root columns)") for b in (1, 64)},
        "latency_note": st.column_config.TextColumn("latency note", help="Why a latency is missing: not measurable "
                                                                         "now (and why), or not measured"),
        "macs": st.column_config.NumberColumn("MACs", format="compact", help="Multiply-accumulates per image"),
        "device": st.column_config.TextColumn("device", help=f"Where the {title} latency was measured"),
        "latency_busy": st.column_config.CheckboxColumn("busy", help="An old latency measured while the machine was "
                                                                    "busy"),
        "id": st.column_config.TextColumn("id"),
        "parent_id": st.column_config.TextColumn("parent"),
    })
    st.download_button("Download the table as CSV", rows_csv(rows), file_name=f"variants-{dataset}-{runtime}.csv",
                       mime="text/csv", key=K + "csv", icon=":material/table:",
                       help="Every column above with the exact metric names (bytes, ms), ratios, intervals and "
                            "how each latency ratio was obtained (latency in the runtime chosen above)")


def tree(rows: list[dict], active_id: str | None) -> None:
    fig = resources.figure(("compare-tree", active_id, _rows_key(rows)), lambda: lineage_tree(rows, active_id=active_id))
    key = K + "tree"
    st.plotly_chart(fig, key=key, width="stretch", on_select=lambda: _open_from_chart(key), selection_mode="points",
                    config={"displaylogo": False})
    st.caption("Each variant sits under the one it was made from; click a dot to open it.")


# ---------------------------------------------------------------- measuring latency again

def remeasure(ws, rows: list[dict], active_id: str | None) -> None:
    """Queue `measure` jobs (latency only, a child timed alternately with its parent) for one
    variant or for all of them, so points measured under different load meet on the same footing."""
    ids = [r["id"] for r in rows]
    names = {r["id"]: r["name"] for r in rows}
    st.caption("Latencies taken at different times (or while other work ran) are not on the same footing. Measuring "
               "again times the variant now, alternately with its parent, and updates its numbers everywhere.")
    with st.container(horizontal=True, vertical_alignment="bottom"):
        pick = st.selectbox("Variant", ids, index=ids.index(active_id) if active_id in ids else 0,
                            format_func=lambda i: f"{names[i]} ({i})", key=K + "measure-variant",
                            help="The variant whose latency is measured again")
        if st.button("Measure latency again", key=K + "measure", icon=":material/timer:",
                     help="Queue a background job that times this variant at batch 1 and 64"):
            start_job(ws, "measure", MeasureJobConfig(variant=pick, what="latency"))
        if st.button(f"Measure all {len(ids)} again", key=K + "measure-all", icon=":material/timer:",
                     help="Queue one job per variant shown; with one job slot (the default) they run one after "
                          "another, so no two of them slow each other down", disabled=len(ids) < 2):
            _queue_measure(ws, ids)
    show_jobs(lambda w: list(resources.jobs_for("measure", ids)[:RECENT_MEASURE_JOBS]), key=K + "measure-jobs",
              curves=False, log=False)


# ---------------------------------------------------------------- the page

ws = resources.workspace()
active = state.active_variant(ws)
st.title("Compare")
st.caption("Which variant is best for your budget? Every variant is a dot: accuracy against the size of its file "
           "and against its measured latency. The dashed line is the Pareto front: nothing beats those on both.")
with st.expander("What am I looking at?", icon=":material/help:"):
    st.markdown(EXPLAINER)

variants = resources.variants()
if not variants:
    st.info("No variants yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()

with st.container(horizontal=True, vertical_alignment="bottom"):
    dataset = dataset_picker(variants, active)
    runtime = runtime_picker()
rows = rows_for(dataset, runtime)
active_id = active.id if active is not None and active.dataset == dataset else None
if len(rows) == 1:
    st.info(f"Only one variant of this dataset so far: {nav.step_verbs() or 'compress'} it to have something to "
            "compare.", icon=":material/info:")

charts(ws, rows, active_id, runtime)
opened_panel(ws, active if active_id else None)

st.subheader("All variants")
variants_table(rows, dataset, runtime)

st.subheader("Lineage")
tree(rows, active_id)

st.subheader("Measure latency again")
remeasure(ws, rows, active_id)
