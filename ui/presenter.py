"""Presenter mode (`?present=1` in the URL): larger type and no advanced sidebar controls, for a
projector. Any page may ask; the Learn page links lessons with it."""
from __future__ import annotations

import streamlit as st

QUERY_KEY = "present"


def is_presenter() -> bool:
    return str(st.query_params.get(QUERY_KEY, "")).lower() in ("1", "true", "yes", "on")
