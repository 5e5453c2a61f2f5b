"""Plotly figure builders: data in, figure out; no Streamlit.
Imports core.base and core.measure only."""
