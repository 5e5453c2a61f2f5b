"""Streamlit glue shared by the pages: navigation, session state, cached resources, the job view,
charts and small widget groups. The engine lives in `core/`, which never imports Streamlit."""
