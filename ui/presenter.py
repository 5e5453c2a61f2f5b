"""Presenter mode (`?present=1` in the URL): larger type and no advanced sidebar controls, for a
projector. Any page may ask; the Learn page links lessons with it."""
from __future__ import annotations

import streamlit as st

QUERY_KEY = "present"

# Streamlit sizes its type and widgets in rem, so one root font size scales the whole page
# evenly; the rest only trims padding, which a 1280x720 projector needs more than margins.
_CSS = """<style>
html { font-size: 20px; }
[data-testid="stMainBlockContainer"] { padding-top: 4.2rem !important; padding-bottom: 2rem !important; }
h1 { font-size: 2.2rem !important; padding-top: 0.5rem !important; }
[data-testid="stMarkdownContainer"] p, [data-testid="stMarkdownContainer"] li { line-height: 1.5; }
[data-testid="stMetricValue"] { font-size: 2rem; }
[data-testid="stRadio"] label p, [data-testid="stWidgetLabel"] p { font-size: 1rem; }
</style>"""


def is_presenter() -> bool:
    return str(st.query_params.get(QUERY_KEY, "")).lower() in ("1", "true", "yes", "on")


def sidebar_state() -> str:
    """`initial_sidebar_state` for st.set_page_config: collapsed on a projector."""
    return "collapsed" if is_presenter() else "auto"


def apply_style() -> None:
    """The larger type, once per run of a page that is being presented (a no-op otherwise)."""
    if is_presenter():
        st.html(_CSS)


def carry(params: dict | None = None) -> dict:
    """Query parameters for a link or page switch that keeps presenter mode on when it is on."""
    out = dict(params or {})
    if is_presenter():
        out[QUERY_KEY] = "1"
    return out
