"""Export: every download format of the active variant (safetensors + model card, the compact
encoding with its loader, ONNX, the recipe, a bundle), each reloaded in a fresh process and checked
against the variant's own predictions before its download button appears; then how to serve it."""
import streamlit as st

from core.io.export.pipeline import FORMATS
from ui import export_view as view
from ui import nav, resources, state

nav.leave_legacy_mode()  # a direct link to this page right after a server start

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Export")
view.page_help()
if v is None:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()

view.summary(ws, v)
view.overview(ws, v)
for fmt in FORMATS:
    view.format_card(ws, v, fmt)

view.serve_section(v)
view.replay_section(ws, v)
