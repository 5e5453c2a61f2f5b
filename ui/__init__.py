"""Streamlit glue that several pages share: session state, cached resources, navigation, the job
cards and their polling fragment, forms that return engine configs, small widget groups. Each
page's own body is in pages/; the engine, and every decision, is in core/ (no Streamlit there)."""
