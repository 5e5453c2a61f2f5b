"""Deep Compression's last two stages on the Quantize page: trained weight sharing (k-means
codebooks per layer, centroids fine-tuned; a background job) for a float variant, and Huffman
coding (a few seconds, inline) for a weight-shared one, with the stage table of its lineage and
where the file's bytes went."""
from __future__ import annotations

import streamlit as st

from core.formats.shared import file_breakdown
from core.store.jobstore import Job
from core.store.workspace import Variant, Workspace
from core.tasks import TaskContext, run_task
from core.tasks.common import existing_child
from core.tasks.share_weights import EntropyCodeJobConfig, ShareWeightsJobConfig
from core.viz.sharing import bytes_by_layer_chart, stage_rows
from ui import forms, recovery, resources, state, widgets
from ui.jobs_view import show_jobs, start_job

K = "share-"          # every widget key of this section starts with it
DEFAULT_SUBSET = 10_000   # centroid fine-tuning on 10,000 images: about a minute on 2 CPU cores


def is_shared(v: Variant) -> bool:
    return v.format.startswith("shared+")


def share_jobs(variant_id: str) -> list[Job]:
    return [j for j in resources.job_list(limit=200)
            if j.kind == "share_weights" and j.config.get("variant") == variant_id]


# ---------------------------------------------------------------- a float variant: share its weights

def share_form(v: Variant) -> ShareWeightsJobConfig | None:
    """The weight-sharing settings; a validated config when submitted, else None."""
    with st.form(K + "form", border=True):
        c = st.columns(4)
        bits_conv = c[0].slider("Conv codebook bits", 1, 8, 8, key=K + "bits-conv",
                                help="Each conv layer keeps 2^bits shared values (code 0 is the zero); every "
                                     "non-zero weight is stored as a code of this many bits. Han et al.: 8")
        bits_fc = c[1].slider("Fully connected codebook bits", 1, 8, 5, key=K + "bits-fc",
                              help="The same for linear layers, which tolerate fewer values. Han et al.: 5")
        epochs = c[2].number_input("Centroid fine-tuning epochs", min_value=0, max_value=20, value=1, step=1,
                                   key=K + "epochs", help="Gradients of the weights sharing a code are summed to "
                                   "train that code's value; 0 keeps the k-means centroids. The best epoch on the "
                                   "validation split is kept")
        subset = c[3].number_input("Training samples (0 = all)", min_value=0, max_value=1_000_000,
                                   value=DEFAULT_SUBSET, step=1000, key=K + "subset",
                                   help="Images used to fine-tune the centroids; validation and test stay whole")
        submitted = st.form_submit_button("Share weights (background job)", type="primary", icon=":material/hub:",
                                          help="Starts a job: k-means per layer, then centroid fine-tuning; the "
                                               "weight-shared child is measured on the full test split")
    if not submitted:
        return None
    return forms.validated(lambda: ShareWeightsJobConfig(variant=v.id, bits_conv=int(bits_conv), bits_fc=int(bits_fc),
                                                         epochs=int(epochs), subset=int(subset) or None))


def share_section(ws: Workspace, v: Variant) -> None:
    """Below the quantization modes of a float variant: trained weight sharing as a job."""
    st.subheader("Weight sharing (Deep Compression)")
    st.caption("The second stage of Han et al.'s Deep Compression: the non-zero weights of each layer are clustered "
               "into 2^bits shared values (k-means), the file stores one small codebook per layer, a code per "
               "non-zero weight and where the non-zeros are (relative indices), and the shared values are then "
               "fine-tuned. Afterwards, **Huffman coding** of the codes and indices shrinks the file further "
               "(offered here once the weight-shared variant is active).")
    nonzero, params = v.metrics.get("nonzero_params"), v.metrics.get("params")
    if nonzero and params and nonzero >= 0.9 * params:
        st.info(f"{v.name} is dense ({nonzero / params:.0%} of its weights are non-zero): sharing alone stores "
                "about 5 to 8 bits per weight instead of 32. Prune it first (Prune page: **Prune and recover**) for "
                "the ratios of the paper.", icon=":material/info:")
    cfg = share_form(v)
    if cfg is not None:
        existing = existing_child(ws, v.id, cfg.step())
        if existing is not None:
            st.info(f"{v.name} was already weight-shared with these settings: **{existing.name}**.",
                    icon=":material/content_copy:")
            widgets.make_active_button(existing, key=K + "open-existing", label=f"Make {existing.name} active")
        else:
            start_job(ws, "share_weights", cfg)
    jobs_here = share_jobs(v.id)
    if jobs_here:
        st.markdown("**Weight-sharing jobs of this variant**")
        show_jobs(lambda w, jid=jobs_here[0].id: [w.jobs.get(jid)], key=K + "job", curves=False, log=True)


# ---------------------------------------------------------------- a weight-shared variant

def _huffman(ws: Workspace, v: Variant) -> None:
    cfg = EntropyCodeJobConfig(variant=v.id)
    existing = existing_child(ws, v.id, cfg.step())
    if existing is not None:
        st.info(f"Already Huffman-coded: **{existing.name}**, {widgets.human_bytes(existing.metrics['size_bytes'])}.",
                icon=":material/content_copy:")
        widgets.make_active_button(existing, key=K + "open-huffman", label=f"Make {existing.name} active")
        return
    if st.button(f"Huffman-code {v.name}", type="primary", key=K + "huffman", icon=":material/compress:",
                 help="Re-encode the codes and relative indices with canonical Huffman codes (frequent codes get "
                      "short bit strings): the same model, bit for bit, in fewer bytes. Measured on the full test "
                      "split and saved as a child variant (a few seconds)"):
        with st.spinner("Huffman coding and measuring on the full test split…"):
            out = recovery.run_or_report(lambda: run_task("entropy_code", cfg, TaskContext(ws)), "Not saved")
        if out is None:
            return
        child = ws.get_variant(out.variant_id)
        state.set_flash(f"Saved **{child.name}**: {widgets.human_bytes(v.metrics['size_bytes'])} → "
                        f"{widgets.human_bytes(child.metrics['size_bytes'])}, test accuracy "
                        f"{child.metrics['accuracy']:.2%} (the same weights).", variant_id=child.id)
        st.rerun()
    st.caption("Same weights, fewer bytes; saved as a child of the active variant.")


def shared_variant_section(ws: Workspace, v: Variant) -> None:
    """The active variant is weight-shared: its stage table, where its bytes went, and Huffman
    coding when it is not entropy-coded yet. Other quantization modes do not apply to it."""
    widgets.flash_box(ws, key=K + "saved")
    coding = "Huffman-coded" if v.format == "shared+huffman" else "bit-packed"
    st.info(f"**{v.name}** is weight-shared ({coding} codes): its layers hold a few shared values each, so the "
            "int8 and float modes of this page do not apply. Decoding it back gives a float model; its file is the one "
            "the Export page offers, with a small loader.", icon=":material/hub:")
    lineage = resources.lineage(v.id)
    dense = lineage[0].metrics.get("dense_size_bytes") or v.metrics.get("dense_size_bytes")
    st.markdown("**Stage by stage** (sizes are the files you can download; ratios against the root's float32 file)")
    st.dataframe(widgets.table(stage_rows(lineage, dense)), hide_index=True, key=K + "stages")
    if v.format == "shared+packed":
        _huffman(ws, v)
    data = ws.weights_path(v).read_bytes()
    st.plotly_chart(resources.figure(("shared-bytes", v.id, v.created_at),
                                     lambda: bytes_by_layer_chart(file_breakdown(data))),
                    key=K + "bytes", width="stretch")
    parent = resources.variant(v.parent_id) if v.parent_id else None
    if parent is not None and not is_shared(parent):
        widgets.make_active_button(parent, key=K + "use-parent", label=f"Make the float parent {parent.name} active")
