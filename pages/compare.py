"""Compare: every variant of one dataset on accuracy against download size and against measured
latency, with the Pareto front; the table of all variants (CSV), the lineage tree, and latency
measured again on demand. Selecting a point or a row opens that variant."""
import streamlit as st

from ui import compare_view, nav, resources, state

nav.leave_legacy_mode()  # a direct link to this page right after a server start

ws = resources.workspace()
active = state.active_variant(ws)
st.title("Compare")
st.caption("Which variant is best for your budget? Every variant is a dot: accuracy against the size of its file "
           "and against its measured latency. The dashed line is the Pareto front: nothing beats those on both.")
compare_view.explainer()

variants = resources.variants()
if not variants:
    st.info("No variants yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()

dataset = compare_view.dataset_picker(variants, active)
rows = compare_view.rows_for(dataset)
active_id = active.id if active is not None and active.dataset == dataset else None
if len(rows) == 1:
    st.info(f"Only one variant of this dataset so far: {nav.step_verbs() or 'compress'} it to have something to "
            "compare.", icon=":material/info:")

compare_view.charts(rows, active_id)
compare_view.opened_panel(ws, active if active_id else None)

st.subheader("All variants")
compare_view.table(rows, dataset)

st.subheader("Lineage")
compare_view.tree(rows, active_id)

st.subheader("Measure latency again")
compare_view.remeasure(ws, rows, active_id)
