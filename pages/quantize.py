"""Quantize: pick a mode, see which layers it will touch, run it on a copy (live for the weight-only
bits slider) and see accuracy, file size, latency and the error per layer; Save makes a child variant."""
import streamlit as st

from core.compress.quant.quantize import QuantConfig
from core.store.jobstore import Job
from core.tasks import TaskContext, run_task
from core.tasks.quantize import find_quantized
from ui import forms, nav, quant_view, recovery, resources, sharing_view, state, widgets
from ui.jobs_view import show_jobs, start_job

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = forms.QUANT_KEY
LIVE_MODES = ("weight-only",)                          # fast enough to run on every change
INLINE_SAVE = ("weight-only", "static-int8", "dynamic-int8")   # a few seconds; the rest are jobs


def quantize_jobs(variant_id: str) -> list[Job]:
    return [j for j in resources.job_list(limit=200) if j.kind == "quantize" and j.config.get("variant") == variant_id]


# ---------------------------------------------------------------- guard

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Quantize")
st.caption("Store weights (and activations) in fewer bits. The table says which layers a mode touches before "
           "anything runs; **Run** quantizes a copy and measures it (the weight-only bits slider runs live). "
           "**Save as a variant** stores a child measured on the full test set.")
quant_view.explainer()
if v is None:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()
if sharing_view.is_shared(v):      # Deep Compression's later stages: Huffman coding, the stage table
    sharing_view.shared_variant_section(ws, v)
    st.stop()
if v.kind.get("quantized") or v.kind.get("simulated"):
    quant_view.quantized_guard(ws, v)

model = resources.model(v)               # shared: never changed here (every run quantizes a copy)
just_saved = widgets.flash_box(ws, key=K + "saved")

# ---------------------------------------------------------------- widgets -> config -> coverage before

job_config = forms.quant_form(v.id, quant_view.quantizable_layers(model))
if job_config is None:
    st.stop()
config: QuantConfig = job_config.quant
rows = resources.quant_plan(v, config)
st.subheader(f"Coverage: what {config.mode} will do to {v.name}")
quant_view.coverage(rows, config, key=K + "coverage-before")

# ---------------------------------------------------------------- run a copy (live, or behind Run)

st.subheader(f"Result on a copy: {config.label()}")
p = None
if config.mode == "qat":
    st.info("QAT trains, so it runs as a background job: save it below and its measured variant appears when "
            "the job is done. To see what calibration alone gives, run **Static int8** first.",
            icon=":material/model_training:")
elif config.mode in LIVE_MODES or quant_view.armed(v, config.mode):
    p = quant_view.compute(v, config)
else:
    ran = resources.cached_quant_preview(v, config)   # run already (by this or another session)
    if ran is not None:
        p = ran
    else:
        st.button(f"Run {config.mode} on a copy", type="primary", key=K + "run", icon=":material/play_arrow:",
                  on_click=quant_view.arm, args=(v, config.mode),
                  help="Quantize a copy of the active variant, measure its accuracy on the validation subset "
                       "and time it against the float model (a few seconds). After that, changing the layers kept "
                       "in float runs it again by itself.")
        st.caption("Nothing run yet with these settings.")

if p is not None:
    ref_acc = resources.reference_accuracy(v)
    quant_view.numbers(v, p, ref_acc, config)
    with st.expander("Coverage after running (read off the quantized copy)", expanded=bool(p.report.warning)):
        quant_view.coverage(p.report.coverage_after, config, key=K + "coverage-after")
    col_err, col_grid = st.columns(2)
    with col_err:
        quant_view.errors_chart(v, p)
        quant_view.keep_worst_controls(p, config.keep_float)
    with col_grid:
        quant_view.grid_histogram(v, model, config, rows)

# ---------------------------------------------------------------- Save: the same `quantize` task

st.subheader("Save")
existing = find_quantized(ws, v.id, job_config)
running = [j for j in quantize_jobs(v.id) if not j.is_final
           and QuantConfig.coerce(j.config.get("quant", {})) == config]
if existing is not None and existing.id == just_saved:
    st.caption(f"Saved as **{existing.name}** (the box at the top).")
elif existing is not None:
    with st.container(border=True, key=K + "already"):
        st.info(f"{v.name} was already quantized with these settings: **{existing.name}** (`{existing.id}`, "
                f"{existing.kind_label}, test accuracy {existing.metrics['accuracy']:.2%}, "
                f"{widgets.human_bytes(existing.metrics['size_bytes'])}).", icon=":material/content_copy:")
        widgets.make_active_button(existing, key=K + "open-existing", label=f"Make {existing.name} active")
elif running:
    st.info(f"Job `{running[0].id}` is already quantizing {v.name} with these settings (below).",
            icon=":material/autorenew:")
elif config.mode in INLINE_SAVE:
    if st.button("Save as a variant", type="primary", key=K + "save", icon=":material/save:",
                 help="Quantize the stored variant with these settings, measure the result on the full test split "
                      "and store it as a child variant"):
        with st.spinner("Quantizing and measuring on the full test split…"):
            out = recovery.run_or_report(lambda: run_task("quantize", job_config, TaskContext(ws)), "Not saved")
        if out is None:
            st.stop()
        quant_view.saved_message(ws.get_variant(out.variant_id))
        st.rerun()
    st.caption("Saves a child variant of the active one (a few seconds).")
else:
    why = ("QAT trains first" if config.mode == "qat" else
           f"{config.mode} measured on the CPU's full test split takes a minute")
    if st.button("Save as a variant (background job)", type="primary", key=K + "save-job", icon=":material/save:",
                 help="Starts a job that quantizes the stored variant, measures it on the full test split and "
                      "stores it as a child variant"):
        start_job(ws, "quantize", job_config)
    st.caption(f"Runs as a background job ({why}); its progress shows below and on the Jobs page.")

jobs_here = quantize_jobs(v.id)
if jobs_here:
    st.markdown("**Quantization jobs of this variant**")
    show_jobs(lambda w, jid=jobs_here[0].id: [w.jobs.get(jid)], key=K + "job", curves=True, log=False)

sharing_view.share_section(ws, v)   # k-means weight sharing, Deep Compression's second stage
