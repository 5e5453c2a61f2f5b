"""Prune: move the sliders, see at once which weights go and what that does to accuracy, size and
speed; Apply saves a child variant; sensitivity scans and prune-and-recover run as jobs."""
import streamlit as st

from core.compress.pruning.masks import prunable_layers
from core.models.registry import classifier_name
from core.store.jobstore import Job
from core.tasks import PruneJobConfig, TaskContext, run_task, sensitivity_result
from core.tasks.prune import find_applied
from ui import forms, nav, prune_view, recovery, resources, state, sweep_view, widgets
from ui.jobs_view import show_jobs, start_job

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = forms.PRUNE_KEY


def jobs_for(kind: str, variant_id: str) -> list[Job]:
    return [j for j in resources.job_list(limit=200) if j.kind == kind and j.config.get("variant") == variant_id]


# ---------------------------------------------------------------- guard

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Prune")
st.caption("Remove weights (masks) or whole channels (structural). The preview below is live: it prunes a copy "
           "of the active variant on every change. **Apply** saves a child variant measured on the full test set.")
prune_view.explainer()
if v is None:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()
if v.kind.get("quantized") or v.kind.get("simulated"):
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
prune_view.numbers(v, p, ref_acc)
prune_view.truth_panel(v, p)
prune_view.layers(v, model, p, layers, config.norm)

# ---------------------------------------------------------------- Apply: the same `prune` task, inline

applied = find_applied(ws, v.id, config)
if applied is not None and applied.id == just_saved:
    pass   # the box at the top just announced it
elif applied is not None:
    with st.container(border=True, key=K + "already"):
        st.info(f"These settings were already applied to {v.name}: **{applied.name}** (`{applied.id}`, test accuracy "
                f"{applied.metrics['accuracy']:.2%}, {widgets.human_bytes(applied.metrics['size_bytes'])}).",
                icon=":material/content_copy:")
        widgets.make_active_button(applied, key=K + "open-existing", label=f"Make {applied.name} active")
elif st.button("Apply: save as a child variant", type="primary", key=K + "apply", icon=":material/content_cut:",
               help="Prune the stored variant with these settings and measure the result on the full test split"):
    with st.spinner("Pruning and measuring on the full test split…"):
        out = recovery.run_or_report(lambda: run_task("prune", PruneJobConfig(variant=v.id, prune=config),
                                                      TaskContext(ws)), "Not saved")
    if out is None:
        st.stop()
    child = ws.get_variant(out.variant_id)
    state.set_flash(f"Saved **{child.name}** (`{child.id}`, {child.kind_label}): test accuracy "
                    f"{child.metrics['accuracy']:.2%}, file {widgets.human_bytes(child.metrics['size_bytes'])}. "
                    "It is in the sidebar's variant picker.", variant_id=child.id)
    st.rerun()

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
    sens_jobs = jobs_for("sensitivity", v.id)
    if sens_jobs:
        show_jobs(lambda w, jid=sens_jobs[0].id: [w.jobs.get(jid)], key=K + "sens-job", curves=False, log=False,
                  extra=prune_view.sensitivity_chart)
        done = next((j for j in sens_jobs if j.state == "done"), None)
        result = sensitivity_result(done, ws.jobs.events(done.id)) if done else None
        if result:
            prune_view.allocation(result, done.id)
    else:
        st.caption("No scan for this variant yet.")

with tab_rec:
    st.markdown(f"Gradual pruning to **{p.label}** (the settings above) with an automated gradual schedule "
                "(AGP, Zhu & Gupta: big steps first, small ones near the target), fine-tuning after each step with "
                "the pruned weights held at zero. The result is saved as a child variant.")
    rec_config = forms.recover_form(v.id, config)
    if rec_config is not None:
        start_job(ws, "prune_recover", rec_config)
    rec_jobs = jobs_for("prune_recover", v.id)
    if rec_jobs:
        show_jobs(lambda w, jid=rec_jobs[0].id: [w.jobs.get(jid)], key=K + "rec-job", curves=False, log=False,
                  extra=prune_view.recover_curve)
    else:
        st.caption("No prune-and-recover run for this variant yet.")

with tab_sweep:
    sweep_view.section(ws, "prune_finetune", v)
