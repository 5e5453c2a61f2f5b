"""All session state in one place.

The active variant is the sidebar picker's value (session state key `variant`), mirrored into the
URL as `?variant=<id>` so that a reload or a shared link keeps it: a new session takes it from
the URL. Other code changes it through `set_active_variant` inside a widget callback, or through
`request_active_variant` from a page body (applied at the start of the next run, before the
picker is drawn).
"""
from __future__ import annotations

import streamlit as st

from core.store.workspace import Workspace

VARIANT_KEY = "variant"          # the picker's key and the URL query parameter
DEFAULT_VARIANT = "base-lenet5"  # the shipped baseline a fresh workspace starts with
LAST_JOB_KEY = "last_job"        # the job this session started most recently on the Model page
IMPORTED_KEY = "imported_uploads"  # sha256 -> variant id of checkpoints this session imported
PENDING_KEY = "_pending_variant"    # set by a page body, applied before the next picker draw
FLASH_KEY = "_flash"                # a success message shown once, after a rerun
SHELL_KEY = "_shell_ran"            # set by app.py right before it runs the page (see ui/nav.py)
LEARN_RESULTS_KEY = "_learn_results"   # the Learn page's experiment answers: (experiment, params) -> result
LEARN_LIVE_KEY = "_learn_live"         # lesson id -> the params of the last run a lesson's button asked for


def default_variant_id(ws: Workspace) -> str | None:
    from ui import resources

    variants = resources.variants()   # `ws` is the shared workspace these are read from
    if not variants:
        return None
    ids = [v.id for v in variants]
    return DEFAULT_VARIANT if DEFAULT_VARIANT in ids else ids[0]


def active_variant_id() -> str | None:
    return st.session_state.get(VARIANT_KEY)


def active_variant(ws: Workspace):
    """The active Variant (shared and read-only), or None when the workspace is empty or it was
    deleted. `ws` is the shared workspace (resources.workspace()) whose index this reads."""
    from ui import resources

    vid = active_variant_id()
    if not vid:
        return None
    return resources.variant(vid)


def set_active_variant(variant_id: str) -> None:
    """Make a variant active. Call it from a widget callback (on_click) or before the picker is
    drawn in this run: the picker reads it from session state."""
    st.session_state[VARIANT_KEY] = variant_id


def request_active_variant(variant_id: str) -> None:
    """Make a variant active from a page body (after the picker was drawn): call st.rerun() next."""
    st.session_state[PENDING_KEY] = variant_id


def sync_active_variant(ids: list[str], default: str | None) -> str | None:
    """Settle the active variant before the picker is drawn: a pending request, else the current
    one, else the URL's `?variant=`, else the default. Returns it."""
    ss = st.session_state
    pending = ss.pop(PENDING_KEY, None)
    if pending in ids:
        ss[VARIANT_KEY] = pending
    if ss.get(VARIANT_KEY) not in ids:
        from_url = st.query_params.get(VARIANT_KEY)
        if from_url in ids:
            ss[VARIANT_KEY] = from_url
        elif default is not None:
            ss[VARIANT_KEY] = default
        else:
            ss.pop(VARIANT_KEY, None)
    return ss.get(VARIANT_KEY)


def mirror_to_url(variant_id: str | None) -> None:
    """Keep `?variant=` equal to the active variant (a reload or a shared link keeps it)."""
    if variant_id is None:
        if VARIANT_KEY in st.query_params:
            del st.query_params[VARIANT_KEY]
    elif st.query_params.get(VARIANT_KEY) != variant_id:
        st.query_params[VARIANT_KEY] = variant_id


def last_job() -> str | None:
    return st.session_state.get(LAST_JOB_KEY)


def set_last_job(job_id: str) -> None:
    st.session_state[LAST_JOB_KEY] = job_id


def imported_uploads() -> dict[str, str]:
    return st.session_state.setdefault(IMPORTED_KEY, {})


def set_flash(message: str, variant_id: str | None = None) -> None:
    """A message for the next run (e.g. 'Saved X') that survives the st.rerun() after it; with
    `variant_id`, the box offers to make that variant active."""
    st.session_state[FLASH_KEY] = {"message": message, "variant_id": variant_id}


def pop_flash() -> dict | None:
    """{"message", "variant_id"} set by `set_flash` in the previous run, once."""
    flash = st.session_state.pop(FLASH_KEY, None)
    return {"message": flash, "variant_id": None} if isinstance(flash, str) else flash


def mark_shell_ran() -> None:
    st.session_state[SHELL_KEY] = True


def pop_shell_ran() -> bool:
    return bool(st.session_state.pop(SHELL_KEY, False))
