"""Prune: move the sliders, see at once which weights go and what that does to accuracy, size and
speed; Apply saves a child variant; sensitivity scans and prune-and-recover run as jobs. The
figures come from core.viz, the numbers from core (PreviewResult); the preview is shared by every
session (ui.resources.prune_preview)."""
import streamlit as st

from core.base.ratios import busy_warning, speed_words
from core.base.units import fmt_sparsity, human_bytes, human_count
from core.compress.pruning.masks import prunable_layers
from core.compress.pruning.schedule import predicted_sparsity, suggest_allocation
from core.models.registry import classifier_name
from core.tasks import PruneJobConfig, sensitivity_from_events, sensitivity_result
from core.tasks.prune import find_applied
from core.viz import charts as viz
from ui import forms, nav, resources, state, sweep, widgets
from ui.job_cards import show_jobs, start_job
from ui.widgets import fmt_ms

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = forms.PRUNE_KEY
HEATMAP_CELLS = (100, 200)   # the interactive view: small enough to redraw at once in the browser
VIEWS = ["Heatmap", "Histogram", "Removed channels", "All layers"]
EXPLAINER = [
    "**Sparsity**: the share of the pruned layers' weights that are now zero or removed. **Val. accuracy** is "
    "measured live on a fixed validation subset; under it, the change from the unpruned model in percentage points.",
    "**File size** is the file Apply would save (a masked model gets smaller only through its sparse encoding). "
    "**Latency b64** is the time for a batch of 64 images: timed now, before and after, for channel pruning; a "
    "masked model runs the same dense kernels, so its stored time stands.",
    "The **truth panel** says what the pruning really buys: *masked* keeps the zeros inside dense tensors (same "
    "shapes, same speed); *shrunk* removes whole channels (smaller layers, fewer MACs, faster).",
    "Left, the sparsity of every layer. Right, one layer: the heatmap draws pruned weights in red; the histogram "
    "shows its weights before and after (magnitude pruning empties the middle, around zero).",
    "The tabs at the bottom run jobs: the **sensitivity analysis** prunes one layer at a time to find the fragile "
    "ones; **prune and recover** prunes step by step and fine-tunes after each step.",
]
LESSONS = ["which-weights-go", "sparse-is-not-faster", "not-all-layers-equal", "recovery"]


# ---------------------------------------------------------------- the preview

def numbers(v, p, ref_acc: float) -> None:
    m = v.metrics
    cols = st.columns(5)
    cols[0].metric("Sparsity", fmt_sparsity(p.sparsity),
                   help="Zeros (or removed weights) among the weights of the pruned layers; excluded layers and "
                        "biases not counted")
    cols[1].metric("Val. accuracy", f"{p.accuracy:.2%}", f"{(p.accuracy - ref_acc) * 100:+.2f} pp",
                   help=f"{p.accuracy_label}. Unpruned: {ref_acc:.2%}. Apply measures the full test set.")
    smaller = m.get("size_bytes") and p.size_bytes < 0.95 * m["size_bytes"]
    cols[2].metric("File size", human_bytes(p.size_bytes),
                   f"{m['size_bytes'] / p.size_bytes:.1f}x smaller" if smaller else None,
                   help=f"Length of the {p.size_format} file Apply would save, header included (dense float32 "
                        f"would be {human_bytes(p.dense_size_bytes)}); now {human_bytes(m.get('size_bytes'))}.")
    cols[3].metric("Parameters", human_count(p.params),
                   f"{p.params / m['params']:.0%} of now" if m.get("params") and p.params < m["params"] else None,
                   delta_color="off", help=f"{p.params:,} parameters, {p.nonzero_params:,} non-zero")
    speed = p.speedup
    if speed is not None and speed.shown:
        cols[4].metric("Latency b64", fmt_ms(p.latency.ms("after", 64)), speed_words(speed.value),
                       help=f"{speed.interval_words()}. {p.speed_note}")
    elif speed is not None:   # timed, but the figure did not settle: no number, no pill
        cols[4].metric("Latency b64", "not measurable now", help=p.speed_note)
    else:
        cols[4].metric("Latency b64", fmt_ms(m.get("latency_ms_b64")),
                       help=f"As stored for the active variant: the same dense kernels run. {p.speed_note}")
    st.caption(f"Accuracy: {p.accuracy_label}. Preview took {p.seconds:.2f} s.")
    if speed is not None and not speed.shown:
        with st.container(horizontal=True, vertical_alignment="center"):
            st.warning(f"Speed-up {speed.reason}. Only undisturbed timings are shown.", icon=":material/timer_off:")
            st.button("Measure again", key=K + "retime", icon=":material/timer:",
                      help="Time the pair again (the preview is recomputed; an unsettled timing is never kept)")


def truth_panel(v, p) -> None:
    r, kind = p.report, p.report.kind
    with st.container(border=True, key=K + "truth"):
        st.markdown("**Truth panel: what this pruning really buys**")
        with st.container(horizontal=True):
            st.badge("masked" if kind["masked"] else "not masked", color="orange" if kind["masked"] else "gray",
                     icon=":material/grid_on:")
            st.badge("shrunk" if kind["shrunk"] else "not shrunk", color="green" if kind["shrunk"] else "gray",
                     icon=":material/compress:")
            st.caption(f"active variant now: {v.kind_label}")
        if kind["shrunk"]:
            st.markdown(f"- **Shrunk**: whole channels are physically removed, layers are smaller: parameters "
                        f"{r.params_before:,} → {r.params_after:,} ({r.params_ratio:.0%}).\n"
                        f"- **Speed**: {p.speed_note}\n"
                        f"- **Size**: a smaller dense file, {human_bytes(p.size_bytes)}.")
        if kind["masked"]:
            st.markdown(f"- **Masked**: pruned weights are zeros kept inside dense tensors; shapes are unchanged.\n"
                        f"- **Size**: bytes are saved only by the sparse file encoding (bitmask + packed non-zeros, "
                        f"compressed): {human_bytes(p.size_bytes)} vs {human_bytes(p.dense_size_bytes)} dense.\n"
                        "- **Speed**: " + (p.speed_note if not kind["shrunk"] else
                                           "zeros inside the kept channels add no further speed."))
        if not kind["masked"] and not kind["shrunk"]:
            st.markdown("Nothing is pruned at these settings.")
        for s in r.skipped:
            st.caption(f"Left alone: **{s['name']}** ({s['type']}): {s['reason']}")
        for note in r.notes:
            st.caption(note)
        stored = busy_warning(v.metrics)
        if stored:
            st.caption(f"The active variant's stored latency: {stored}")


def layer_views(v, model, p, layer_names: list[str], norm: int) -> None:
    """Per-layer bars, and one layer (the largest by default) as heatmap, histogram and channels.
    Each figure is built once per preview and layer and shared by every session (see
    `resources.figure`): a page load or a rerun that changes nothing else redraws it for free."""
    shrunk = bool(p.report.removed_channels or p.report.removed_inputs)
    shown = (v.id, v.created_at, p.config)     # names the preview: variant and settings
    col_bars, col_layer = st.columns([2, 3])
    with col_bars:
        st.plotly_chart(resources.figure(("bars", *shown), lambda: viz.sparsity_bars(p.layers)),
                        key=K + "bars", width="stretch")
    modules = dict(model.named_modules())
    with col_layer:
        largest = max(layer_names, key=lambda n: modules[n].weight.numel())
        inspect = st.selectbox("Layer to inspect", layer_names, key=K + "inspect", index=layer_names.index(largest),
                               help="The layer drawn below; the largest layer is shown first.")
        before_w = modules[inspect].weight.detach()
        # one view at a time: tabs would build and ship every chart on every slider move
        view = st.segmented_control("View", VIEWS, default=VIEWS[0], key=K + "view", label_visibility="collapsed",
                                    help="Heatmap: where the zeros are. Histogram: which weights went. Removed "
                                         "channels: what channel pruning cut. All layers: every layer's mask.")
        if view == "Heatmap":
            full = st.toggle("Full resolution (one pixel per weight, as an image)", key=K + "fullres",
                             help="Off: a large layer is drawn in blocks, each coloured by the share of it pruned. "
                                  "On: one pixel per weight, sent as an image.")
            what = "original weights, removed channels in red" if shrunk else "weights after pruning"
            fig = resources.figure(("heatmap", *shown, inspect, full), lambda: viz.weight_heatmap(
                p.after_weight(model, inspect), full_resolution=full, max_cells=HEATMAP_CELLS,
                title=f"{inspect}: {what}"))
            st.plotly_chart(fig, key=K + "heatmap", width="stretch", theme=None)
        elif view == "Histogram":
            fig = resources.figure(("hist", *shown, inspect), lambda: viz.weight_histogram(
                before_w, p.after_weight(model, inspect), title=f"{inspect}: weights before / after"))
            st.plotly_chart(fig, key=K + "hist", width="stretch")
        elif view == "Removed channels":
            if shrunk:
                fig = resources.figure(("chan-norms", *shown, inspect, norm), lambda: viz.channel_norms(
                    before_w, p.report.removed_channels.get(inspect, []), norm=norm,
                    title=f"{inspect}: output channels (removed in red)"))
                st.plotly_chart(fig, key=K + "chan-norms", width="stretch")
                fig = resources.figure(("chan-all", *shown), lambda: viz.removed_channels_chart(
                    [r.to_dict() for r in p.report.layers], p.report.removed_channels))
                st.plotly_chart(fig, key=K + "chan-all", width="stretch")
            else:
                st.info("Only structured (channel) pruning removes channels. Pick **Channels** as the method.")
        elif view == "All layers":
            fig = resources.figure(("grid", *shown), lambda: viz.mask_grid(p.all_layers(model), cols=2))
            st.plotly_chart(fig, key=K + "grid", width="stretch", theme=None)


# ---------------------------------------------------------------- job results, drawn inside their cards

def sensitivity_chart(ws, job) -> None:
    """Drawn inside the job card's polling fragment: grows while the scan runs."""
    events = resources.job_events(job.id)     # shared, read only the new ones each second
    res = sensitivity_from_events(list(events))
    if not res or not res["layers"]:
        st.caption("The chart appears after the first layer is measured.")
        return
    if res.get("partial"):
        st.caption(f"{len(res['layers'])} of {res['layers_total']} layers measured so far")
    fig = resources.figure(("sensitivity", job.id, events[-1]["seq"]), lambda: viz.sensitivity_chart(res))
    st.plotly_chart(fig, key=f"{K}sens-chart-{job.id}", width="stretch")


def allocation(result: dict, job_id: str) -> None:
    """The suggested per-layer allocation of a finished scan, and the button that uses it."""
    st.markdown("**Suggested per-layer allocation**")
    top = max(result["amounts"])
    target = st.slider("Overall target sparsity", 0.05, float(top), min(0.8, float(top)), 0.05,
                       key=K + "sens-target", format="%.2f",
                       help="The sparsity to reach over the scanned layers; the table spreads it so the predicted "
                            "accuracy loss is smallest.")
    alloc = suggest_allocation(result, target)
    rows = {r["name"]: r for r in result["layers"]}
    st.dataframe([{"layer": n, "weights": rows[n]["weights"], "suggested amount": a} for n, a in alloc.items()],
                 hide_index=True, width="stretch",
                 column_config={"suggested amount": st.column_config.ProgressColumn(
                     format="percent", min_value=0.0, max_value=1.0)})
    overall = predicted_sparsity(result, alloc)
    st.caption(f"Predicted overall sparsity {fmt_sparsity(overall)} over the scanned layers "
               f"(scan {job_id}: {result['val_samples']} validation images).")
    st.button("Use this allocation in the per-layer sliders", key=K + "sens-use", on_click=forms.use_allocation,
              args=(alloc, overall), icon=":material/tune:",
              help="Sets the per-layer amounts at the top of the page and opens that section; the preview follows.")


def recover_curve(ws, job) -> None:
    pts = [e for e in resources.job_events(job.id) if e.get("stage") == "prune_recover" and e.get("kind") == "point"]
    if not pts:
        st.caption("The curve appears after the first step.")
        return
    dense = next((e["val_accuracy"] for e in pts if e["phase"] == "start"), None)
    fig = resources.figure(("recover", job.id, pts[-1]["seq"]),
                           lambda: viz.accuracy_sparsity_curve(pts, dense_accuracy=dense))
    st.plotly_chart(fig, key=f"{K}rec-chart-{job.id}", width="stretch")


# ---------------------------------------------------------------- guard

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Prune")
st.caption("Remove weights (masks) or whole channels (structural). The preview below is live: it prunes a copy "
           "of the active variant on every change. **Apply** saves a child variant measured on the full test set.")
forms.explainer(EXPLAINER, LESSONS)
if v is None:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()
if not v.is_float:
    st.warning(f"{v.name} is quantized. Prune its float parent, then quantize the result.", icon=":material/block:")
    st.stop()

model = resources.model(v)               # shared: never changed here (the preview and Apply copy it)
layers = [n for n, _ in prunable_layers(model)]
just_saved = widgets.flash_box(ws, key=K + "applied")

# ---------------------------------------------------------------- widgets -> config -> live preview

config = forms.prune_form(layers, classifier_name(model))
if config is None:
    st.stop()
with st.spinner("Pruning a copy and measuring it…"):
    p = resources.prune_preview(v, config)
    ref_acc = resources.reference_accuracy(v)

st.subheader(f"Preview: {p.label}")
numbers(v, p, ref_acc)
truth_panel(v, p)
layer_views(v, model, p, layers, config.norm)

# ---------------------------------------------------------------- Apply: the same `prune` task, inline

applied = find_applied(ws, v.id, config)
if applied is not None and applied.id == just_saved:
    pass   # the box at the top just announced it
elif applied is not None:
    widgets.made_before(applied, f"These settings were already applied to {v.name}", key=K)
elif st.button("Apply: save as a child variant", type="primary", key=K + "apply", icon=":material/content_cut:",
               help="Prune the stored variant with these settings and measure the result on the full test split"):
    widgets.save_child(ws, "prune", PruneJobConfig(variant=v.id, prune=config),
                       spinner="Pruning and measuring on the full test split…")
    st.stop()

# ---------------------------------------------------------------- jobs: sensitivity and prune-and-recover

st.divider()
tab_sens, tab_rec, tab_sweep = st.tabs(["Sensitivity analysis", "Prune and recover",
                                       "Sweep amount × fine-tune epochs"])

with tab_sens:
    st.markdown("For each layer and amount: the accuracy on the validation subset when **only that layer** is "
                "pruned (L1). Sensitive layers should keep more weights; the suggestion below spreads a target "
                "sparsity where it is predicted to cost least.")
    sens_config = forms.sensitivity_form(v.id, config.exclude)
    if sens_config is not None:
        start_job(ws, "sensitivity", sens_config)
    sens_jobs = resources.jobs_for("sensitivity", v.id)
    if sens_jobs:
        show_jobs(lambda w, jid=sens_jobs[0].id: [w.jobs.get(jid)], key=K + "sens-job", curves=False, log=False,
                  extra=sensitivity_chart)
        done = next((j for j in sens_jobs if j.state == "done"), None)
        result = sensitivity_result(done, ws.jobs.events(done.id)) if done else None
        if result:
            allocation(result, done.id)
    else:
        st.caption("No scan for this variant yet.")

with tab_rec:
    st.markdown(f"Gradual pruning to **{p.label}** (the settings above) with an automated gradual schedule "
                "(AGP, Zhu & Gupta: big steps first, small ones near the target), fine-tuning after each step with "
                "the pruned weights held at zero. The result is saved as a child variant.")
    rec_config = forms.recover_form(v.id, config)
    if rec_config is not None:
        start_job(ws, "prune_recover", rec_config)
    rec_jobs = resources.jobs_for("prune_recover", v.id)
    if rec_jobs:
        show_jobs(lambda w, jid=rec_jobs[0].id: [w.jobs.get(jid)], key=K + "rec-job", curves=False, log=False,
                  extra=recover_curve)
    else:
        st.caption("No prune-and-recover run for this variant yet.")

with tab_sweep:
    sweep.section(ws, "prune_finetune", v)
