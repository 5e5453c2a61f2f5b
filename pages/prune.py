"""Prune: move the sliders, see at once which weights go and what that does to accuracy, size and
speed; Apply saves a child variant; sensitivity scans and prune-and-recover run as jobs."""
import json

import streamlit as st

from core import viz
from core.metrics import accuracy, measure_latency
from core.models import classifier_name
from core.pruning import (
    DEFAULT_SENSITIVITY_AMOUNTS,
    METHODS,
    SCOPES,
    PruneConfig,
    predicted_sparsity,
    preview,
    preview_subset,
    prunable_layers,
    prune_variant,
    removed_view,
    suggest_allocation,
)
from core.tasks import sensitivity_from_events
from core.workspace import Job, Workspace
from ui import nav, resources, state, widgets
from ui.jobs_view import show_jobs, start_job

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = "prune-"            # every widget key of this page starts with it
FLASH = K + "flash"     # id of the child variant the last Apply created
METHOD_LABELS = {"l1": "L1 magnitude", "random": "Random", "channel": "Channels (structured)"}
SCOPE_LABELS = {"global": "Global (one ranking for all layers)", "layer": "Per layer (same amount each)"}
HEATMAP_CELLS = (128, 400)   # the interactive view: small enough to redraw instantly


# ---------------------------------------------------------------- cached, read-only

@st.cache_resource(show_spinner=False, max_entries=4)
def val_subset(dataset: str):
    """The fixed validation subset every preview is measured on (same images every time)."""
    return preview_subset(resources.dataset(dataset).val)


@st.cache_data(show_spinner=False, max_entries=16)
def reference_latency(root: str, variant_id: str, created_at: float, dataset: str) -> float:
    """Batch-64 latency of the unpruned variant, timed once (median of 7 runs after warm-up)."""
    v = Workspace(root, seed_baselines=False).get_variant(variant_id)
    shape = resources.dataset(dataset).info.input_shape
    return measure_latency(resources.model(v), shape, 64, "cpu", warmup=2, repeats=7, min_seconds=0.0)


@st.cache_resource(show_spinner=False, max_entries=24)
def cached_preview(root: str, variant_id: str, created_at: float, dataset: str, config_json: str):
    """Preview of one config on one variant; shared and read-only (it holds the pruned copy)."""
    v = Workspace(root, seed_baselines=False).get_variant(variant_id)
    config = PruneConfig.from_dict(json.loads(config_json))
    ref = reference_latency(root, variant_id, created_at, dataset) if config.structured else None
    return preview(resources.model(v), config, val_subset(dataset), reference_latency_ms_b64=ref)


@st.cache_data(show_spinner=False, max_entries=16)
def reference_accuracy(root: str, variant_id: str, created_at: float, dataset: str) -> float:
    v = Workspace(root, seed_baselines=False).get_variant(variant_id)
    return accuracy(resources.model(v), val_subset(dataset), "cpu", batch_size=1000)


def jobs_for(w: Workspace, kind: str, variant_id: str) -> list[Job]:
    return [j for j in w.list_jobs(limit=200) if j.kind == kind and j.config.get("variant") == variant_id]


# ---------------------------------------------------------------- guard

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Prune")
st.caption("Remove weights (masks) or whole channels (structural). The preview below is live: it prunes a copy "
           "of the active variant on every change. **Apply** saves a child variant measured on the full test set.")
if v is None:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()
if v.kind.get("quantized") or v.kind.get("simulated"):
    st.warning(f"{v.name} is quantized. Prune its float parent, then quantize the result.", icon=":material/block:")
    st.stop()

model = resources.model(v)               # shared: never changed here (preview and Apply copy it)
layers = [n for n, _ in prunable_layers(model)]
classifier = classifier_name(model)
data_info = resources.dataset(v.dataset).info

flash = st.session_state.pop(FLASH, None)
if flash:
    try:
        child = ws.get_variant(flash)
    except Exception:  # deleted meanwhile
        child = None
    if child is not None:
        with st.container(border=True, key=K + "flash-box"):
            st.success(f"Saved **{child.name}** (`{child.id}`, {child.kind_label}): test accuracy "
                       f"{child.metrics['accuracy']:.2%}, file {widgets.human_bytes(child.metrics['size_bytes'])}. "
                       "It is in the sidebar's variant picker.", icon=":material/check_circle:")
            widgets.make_active_button(child, key=K + "open-child", label=f"Make {child.name} active")


# keep widget state valid for this variant's layers (another variant may have other names)
def _sanitize() -> None:
    ss = st.session_state
    if K + "exclude" not in ss:
        ss[K + "exclude"] = [classifier] if classifier else []
    for key in (K + "exclude", K + "overrides"):
        if key in ss and any(n not in layers for n in ss[key]):
            ss[key] = [n for n in ss[key] if n in layers]
    if K + "inspect" in ss and ss[K + "inspect"] not in layers:
        del ss[K + "inspect"]


_sanitize()

# ---------------------------------------------------------------- controls -> PruneConfig

c_method, c_scope, c_amount = st.columns([2, 2, 3])
method = c_method.radio("Method", METHODS, format_func=METHOD_LABELS.get, key=K + "method", horizontal=True,
                        help="L1: remove the smallest-magnitude weights. Random: a baseline to compare against. "
                             "Channels: remove whole output channels (and everything wired to them) with "
                             "Torch-Pruning, so layers get physically smaller.")
scope = c_scope.radio("Scope", SCOPES[::-1], format_func=SCOPE_LABELS.get, key=K + "scope", horizontal=True,
                      help="Global ranks all layers' weights (or channels) together; per layer prunes each layer "
                           "by the same amount.")
amount = c_amount.slider("Amount", 0.0, 0.95, 0.5, 0.05, key=K + "amount", format="%.2f",
                         help="L1/random: the target fraction of zeros among the prunable weights (earlier zeros "
                              "count). Channels: the fraction of output channels to remove.")
c_norm, c_seed, c_excl = st.columns([1, 1, 3])
norm = c_norm.radio("Channel norm", [1, 2], format_func=lambda n: f"L{n}", key=K + "norm", horizontal=True,
                    disabled=method != "channel", help="How a channel's importance is measured")
seed = int(c_seed.number_input("Seed", 0, 2**31 - 1, 0, key=K + "seed", disabled=method != "random",
                               help="Random pruning is repeatable for a given seed"))
exclude = c_excl.multiselect("Leave alone (excluded layers)", layers, key=K + "exclude",
                             help="The last classifier is excluded by default: its outputs are the class scores.")
with st.expander("Per-layer amounts (override the amount for chosen layers)"):
    overrides = st.multiselect("Layers with their own amount", [n for n in layers if n not in exclude],
                               key=K + "overrides")
    layer_amounts = {}
    cols = st.columns(3)
    for i, name in enumerate(overrides):
        st.session_state.setdefault(f"{K}layer-{name}", float(amount))
        layer_amounts[name] = cols[i % 3].slider(name, 0.0, 0.99, step=0.01, key=f"{K}layer-{name}", format="%.2f")

try:
    config = PruneConfig(method=method, amount=float(amount), scope=scope, norm=int(norm), seed=seed,
                         layer_amounts=layer_amounts,
                         exclude=None if exclude == ([classifier] if classifier else []) else tuple(exclude))
except ValueError as e:
    st.error(f"Invalid settings: {e}", icon=":material/error:")
    st.stop()

# ---------------------------------------------------------------- live preview
with st.spinner("Pruning a copy and measuring it…"):
    p = cached_preview(str(ws.root), v.id, v.created_at, v.dataset, json.dumps(config.to_dict(), sort_keys=True))
    ref_acc = reference_accuracy(str(ws.root), v.id, v.created_at, v.dataset)

st.subheader(f"Preview: {config.label()}")
m = v.metrics
cols = st.columns(5)
cols[0].metric("Sparsity of prunable weights", f"{p.sparsity:.1%}",
               help="Zeros (or removed weights) among the weights of the pruned layers; excluded layers not counted")
cols[1].metric("Validation-subset accuracy", f"{p.accuracy:.2%}", f"{(p.accuracy - ref_acc) * 100:+.2f} pp",
               help=f"{p.accuracy_label}. Unpruned: {ref_acc:.2%}. Apply measures the full test set.")
cols[2].metric("File size", widgets.human_bytes(p.size_bytes),
               f"{m['size_bytes'] / p.size_bytes:.1f}x smaller" if m.get("size_bytes") and p.size_bytes
               < 0.95 * m["size_bytes"] else None,
               help=f"Length of the {p.size_format} file Apply would save (dense float32 would be "
                    f"{widgets.human_bytes(p.dense_size_bytes)}); now {widgets.human_bytes(m.get('size_bytes'))}.")
cols[3].metric("Parameters", widgets.human_count(p.params),
               f"{p.params / m['params']:.0%} of now" if m.get("params") and p.params < m["params"] else None,
               delta_color="off", help=f"{p.params:,} parameters, {p.nonzero_params:,} non-zero")
if p.latency_ms_b64 is not None:
    cols[4].metric("Latency, batch 64", widgets.fmt_ms(p.latency_ms_b64),
                   f"{p.reference_latency_ms_b64 / p.latency_ms_b64:.2f}x faster", help=p.speed_note)
else:
    cols[4].metric("Latency, batch 64", widgets.fmt_ms(m.get("latency_ms_b64")),
                   help=f"As measured for the active variant: {p.speed_note}")
st.caption(f"Accuracy: {p.accuracy_label}. Preview took {p.seconds:.2f} s.")

with st.container(border=True, key=K + "truth"):
    st.markdown("**Truth panel: what this pruning really buys**")
    kind = p.report.kind
    with st.container(horizontal=True):
        st.badge("masked" if kind["masked"] else "not masked", color="orange" if kind["masked"] else "gray",
                 icon=":material/grid_on:")
        st.badge("shrunk" if kind["shrunk"] else "not shrunk", color="green" if kind["shrunk"] else "gray",
                 icon=":material/compress:")
        st.caption(f"active variant now: {v.kind_label}")
    if kind["shrunk"]:
        st.markdown(f"- **Shrunk**: whole channels are physically removed, layers are smaller: parameters "
                    f"{p.report.params_before:,} → {p.report.params_after:,} ({p.report.params_ratio:.0%}).\n"
                    f"- **Speed**: {p.speed_note}\n"
                    f"- **Size**: a smaller dense file, {widgets.human_bytes(p.size_bytes)}.")
    if kind["masked"]:
        st.markdown(f"- **Masked**: pruned weights are zeros kept inside dense tensors; shapes are unchanged.\n"
                    f"- **Size**: bytes are saved only by the sparse file encoding (bitmask + packed non-zeros, "
                    f"compressed): {widgets.human_bytes(p.size_bytes)} vs {widgets.human_bytes(p.dense_size_bytes)} "
                    "dense.\n"
                    "- **Speed**: " + (p.speed_note if not kind["shrunk"] else
                                       "zeros inside the kept channels add no further speed."))
    if not kind["masked"] and not kind["shrunk"]:
        st.markdown("Nothing is pruned at these settings.")
    for s in p.report.skipped:
        st.caption(f"Left alone: **{s['name']}** ({s['type']}): {s['reason']}")
    for note in p.report.notes:
        st.caption(note)

col_bars, col_layer = st.columns([2, 3])
with col_bars:
    bars_title = ("weights removed per layer (grey: excluded)" if p.report.kind["shrunk"]
                  else "sparsity per layer (grey: excluded)")
    st.plotly_chart(viz.sparsity_bars(p.layers, title=bars_title), key=K + "bars", width="stretch")
with col_layer:
    inspect = st.selectbox("Layer to inspect", layers, key=K + "inspect",
                           index=layers.index(max(layers, key=lambda n: dict(model.named_modules())[n].weight.numel())))
    before_w = dict(model.named_modules())[inspect].weight.detach()
    if p.report.kind["shrunk"]:  # the ORIGINAL matrix with the removed channels zeroed (drawn as pruned)
        after_w = removed_view(before_w, p.report, inspect)
    else:
        after_w = dict(p.model.named_modules())[inspect].weight.detach()
    full = st.toggle("Full resolution (one pixel per weight, as an image)", key=K + "fullres")
    tabs = st.tabs(["Heatmap", "Histogram", "Removed channels", "All layers"])
    with tabs[0]:
        what = "original |weights|, removed channels in red" if p.report.kind["shrunk"] else "|weights|, pruned in red"
        st.plotly_chart(viz.weight_heatmap(after_w, full_resolution=full, max_cells=HEATMAP_CELLS,
                                           title=f"{inspect}: {what}"),
                        key=K + "heatmap", width="stretch", theme=None)
    with tabs[1]:
        st.plotly_chart(viz.weight_histogram(before_w, after_w, title=f"{inspect}: weights before / after"),
                        key=K + "hist", width="stretch")
    with tabs[2]:
        if p.report.kind["shrunk"]:
            st.plotly_chart(viz.channel_norms(before_w, p.report.removed_channels.get(inspect, []), norm=config.norm,
                                              title=f"{inspect}: output channels (removed in red)"),
                            key=K + "chan-norms", width="stretch")
            st.plotly_chart(viz.removed_channels_chart([r.to_dict() for r in p.report.layers],
                                                       p.report.removed_channels),
                            key=K + "chan-all", width="stretch")
        else:
            st.info("Only structured (channel) pruning removes channels. Pick **Channels** as the method.")
    with tabs[3]:
        before_mods, after_mods = dict(model.named_modules()), dict(p.model.named_modules())
        grid = [(r.name, removed_view(before_mods[r.name].weight, p.report, r.name) if p.report.kind["shrunk"]
                 else after_mods[r.name].weight.detach()) for r in p.report.layers]
        st.plotly_chart(viz.mask_grid(grid, cols=2), key=K + "grid", width="stretch", theme=None)

if st.button("Apply: save as a child variant", type="primary", key=K + "apply", icon=":material/content_cut:",
             help="Prune the stored variant with these settings and measure the result on the full test split"):
    with st.spinner("Pruning and measuring on the full test split…"):
        child, _ = prune_variant(ws, v.id, config)
    st.session_state[FLASH] = child.id
    st.rerun()


# ---------------------------------------------------------------- jobs: sensitivity and prune-and-recover

@st.fragment(run_every=1.0)
def live_chart(job_id: str, draw) -> None:
    """Redraw a chart from a running job's events every second; one app rerun when it ends."""
    w = resources.workspace()
    job = w.get_job(job_id)
    draw(w, job)
    if job.is_final:
        st.rerun(scope="app")


def show_live(job: Job, draw) -> None:
    if job.is_final:
        draw(ws, job)
    else:
        live_chart(job.id, draw)


def use_allocation(alloc: dict) -> None:
    """Callback: put a suggested allocation into the per-layer sliders (before they are drawn)."""
    ss = st.session_state
    ss[K + "method"] = "l1"
    ss[K + "overrides"] = list(alloc)
    for name, a in alloc.items():
        ss[f"{K}layer-{name}"] = min(0.99, round(float(a), 2))


st.divider()
tab_sens, tab_rec = st.tabs(["Sensitivity analysis", "Prune and recover"])

with tab_sens:
    st.markdown("For each layer and amount: the accuracy on the validation subset when **only that layer** is "
                "pruned (L1). Sensitive layers should keep more weights; the suggestion below spreads a target "
                "sparsity where it is predicted to cost least.")
    c1, c2 = st.columns([3, 1])
    sens_amounts = c1.multiselect("Amounts", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98],
                                  default=list(DEFAULT_SENSITIVITY_AMOUNTS), key=K + "sens-amounts",
                                  format_func=lambda a: f"{a:.0%}")
    c2.write("")
    if c2.button("Start sensitivity scan", key=K + "sens-start", icon=":material/play_arrow:",
                 disabled=not sens_amounts):
        start_job(ws, "sensitivity", {"variant": v.id, "amounts": sorted(sens_amounts),
                                       "exclude": None if config.exclude is None else list(config.exclude)})
    sens_jobs = jobs_for(ws, "sensitivity", v.id)
    if sens_jobs:
        sens_job = sens_jobs[0]
        show_jobs(lambda w, jid=sens_job.id: [w.get_job(jid)], key=K + "sens-job", curves=False, log=False)

        def draw_sensitivity(w: Workspace, job: Job) -> None:
            res = sensitivity_from_events(w.job_events(job.id))
            if not res or not res["layers"]:
                st.caption("The chart appears after the first layer is measured.")
                return
            if res.get("partial"):
                st.caption(f"{len(res['layers'])} of {res['layers_total']} layers measured so far")
            st.plotly_chart(viz.sensitivity_chart(res), key=f"{K}sens-chart-{job.id}", width="stretch")

        show_live(sens_job, draw_sensitivity)
        done = next((j for j in sens_jobs if j.state == "done"), None)
        result = sensitivity_from_events(ws.job_events(done.id)) if done else None
        if result and not result.get("partial"):
            st.markdown("**Suggested per-layer allocation**")
            top = max(result["amounts"])
            target = st.slider("Overall target sparsity", 0.05, float(top), min(0.8, float(top)), 0.05,
                               key=K + "sens-target", format="%.2f")
            alloc = suggest_allocation(result, target)
            rows = {r["name"]: r for r in result["layers"]}
            st.dataframe([{"layer": n, "weights": rows[n]["weights"], "suggested amount": a} for n, a in alloc.items()],
                         hide_index=True, width="stretch",
                         column_config={"suggested amount": st.column_config.ProgressColumn(
                             format="percent", min_value=0.0, max_value=1.0)})
            st.caption(f"Predicted overall sparsity {predicted_sparsity(result, alloc):.1%} over the scanned layers "
                       f"(scan of {done.id}: {result['val_samples']} validation images).")
            st.button("Use this allocation in the per-layer sliders", key=K + "sens-use", on_click=use_allocation,
                      args=(alloc,), icon=":material/tune:")
    else:
        st.caption("No scan for this variant yet.")

with tab_rec:
    st.markdown(f"Gradual pruning to **{config.label()}** (the settings above) with an automated gradual schedule "
                "(AGP, Zhu & Gupta: big steps first, small ones near the target), fine-tuning after each step with "
                "the pruned weights held at zero. The result is saved as a child variant.")
    c = st.columns(4)
    steps = c[0].number_input("Steps", 1, 50, 5, key=K + "rec-steps")
    epochs = c[1].number_input("Fine-tune epochs per step", 1, 50, 1, key=K + "rec-epochs")
    lr = c[2].number_input("Learning rate", 1e-5, 1.0, 0.01, 0.005, format="%.4f", key=K + "rec-lr")
    subset = c[3].number_input("Training samples (0 = all)", 0, 1_000_000, 0, 1000, key=K + "rec-subset")
    if st.button("Start prune-and-recover", key=K + "rec-start", icon=":material/play_arrow:", type="primary"):
        start_job(ws, "prune_recover", {"variant": v.id, "prune": config.to_dict(), "steps": int(steps),
                                         "subset": int(subset) or None,
                                         "finetune": {"epochs": int(epochs), "lr": float(lr)}})
    rec_jobs = jobs_for(ws, "prune_recover", v.id)
    if rec_jobs:
        rec_job = rec_jobs[0]
        show_jobs(lambda w, jid=rec_job.id: [w.get_job(jid)], key=K + "rec-job", curves=False, log=False)

        def draw_recover(w: Workspace, job: Job) -> None:
            pts = [e for e in w.job_events(job.id) if e.get("stage") == "prune_recover" and e.get("kind") == "point"]
            if not pts:
                st.caption("The curve appears after the first step.")
                return
            dense = next((e["val_accuracy"] for e in pts if e["phase"] == "start"), None)
            st.plotly_chart(viz.accuracy_sparsity_curve(pts, dense_accuracy=dense), key=f"{K}rec-chart-{job.id}",
                            width="stretch")

        show_live(rec_job, draw_recover)
    else:
        st.caption("No prune-and-recover run for this variant yet.")
