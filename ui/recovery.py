"""When the workspace is damaged, or variants need deleting: say what is wrong and offer the way
back (core.store.repair), never a traceback; deletes name the job or child that stops them."""
from __future__ import annotations

import streamlit as st

from core.base.paths import workspace_dir
from core.store.workspace import VariantHasChildren, VariantInUse, Workspace, WorkspaceError
from ui import state

REPAIR_HELP = ("Every variant's folder holds its weights and its record (variant.json), so the index can be rebuilt "
               "from them, lineage and metrics included. A damaged database is moved aside first; job history is "
               "not recovered.")


def open_workspace_or_stop(open_fn) -> Workspace:
    """`open_fn()` (the cached workspace), or a page that says what is wrong, where, and how to
    recover (with a Repair button when repairing can help), then stop."""
    try:
        return open_fn()
    except WorkspaceError as e:
        root = workspace_dir().resolve()
        st.title("The workspace cannot be opened")
        st.error(str(e), icon=":material/database_off:")
        foreign = "not a Compression Workbench database" in str(e)
        if foreign:
            st.markdown(f"Start the app with `WORKBENCH_HOME` set to a workspace directory (now `{root}`).")
        else:
            st.markdown(REPAIR_HELP)
            if st.button("Repair the index from the variant files", type="primary", icon=":material/build:",
                         key="recovery-repair"):
                _repair(root)
        st.stop()


def _repair(root) -> None:
    from core.store.repair import repair

    with st.spinner("Re-indexing the variant files…"):
        try:
            rep = repair(root)
        except (WorkspaceError, OSError) as e:
            st.error(f"Repair failed: {e}", icon=":material/error:")
            return
    st.cache_resource.clear()     # the cached Workspace and models belong to the old index
    state.set_flash("Repaired the workspace index: " + " ".join(rep.lines()))
    st.rerun()


def lost_variants_banner(ws: Workspace) -> None:
    """Variant files on disk that the index does not know (a lost or re-created database): say so
    and offer the repair, on every page."""
    lost = ws.unindexed()
    if not lost:
        return
    with st.container(border=True, key="recovery-banner"):
        st.warning(f"{len(lost)} variant(s) are on disk but missing from the workspace index "
                   f"({', '.join(p.name for p in lost[:5])}{'…' if len(lost) > 5 else ''}). " + REPAIR_HELP,
                   icon=":material/warning:")
        if st.button("Repair the index", key="recovery-banner-repair", icon=":material/build:"):
            _repair(ws.root)


def manage_variant(ws: Workspace, v, key: str) -> None:
    """Delete the variant (refused, with the reason, while a job uses it or it has children unless
    the user chooses what happens to them), and restore deleted shipped baselines."""
    with st.expander("Manage: delete this variant, restore the shipped baselines"):
        kids = ws.children(v.id)
        how = "only"
        if kids:
            how = st.radio(f"{v.name} has {len(kids)} child variant(s)", ["cascade", "reparent"], key=f"{key}-how",
                           format_func={"cascade": "delete them too", "reparent": "keep them (they move up to its "
                                        "parent)"}.get, horizontal=True)
        sure = st.checkbox(f"Yes, delete {v.name} ({v.id}) and its file", key=f"{key}-sure")
        if st.button("Delete", key=f"{key}-delete", icon=":material/delete:", disabled=not sure):
            try:
                gone = ws.delete_variant(v.id, cascade=how == "cascade", reparent=how == "reparent")
            except (VariantInUse, VariantHasChildren, WorkspaceError) as e:
                st.error(f"Not deleted: {e}", icon=":material/block:")
            else:
                state.set_flash(f"Deleted {', '.join(gone)}.")
                st.rerun()
        st.divider()
        if st.button("Restore the shipped baselines", key=f"{key}-restore", icon=":material/restore:",
                     help="Brings back any shipped baseline you deleted; deleted ones otherwise stay deleted."):
            try:
                added = ws.restore_baselines()
            except WorkspaceError as e:
                st.error(str(e), icon=":material/error:")
            else:
                state.set_flash(f"Restored {', '.join(a.name for a in added)}." if added
                                else "Every shipped baseline is already in the workspace.")
                st.rerun()


def run_or_report(fn, what: str):
    """`fn()`, or None with one clear error box when it cannot be done: a bad setting, a variant
    gone meanwhile, a dataset missing here, a full disk or an unwritable workspace (never a
    traceback box for a shared server's bad day)."""
    import sqlite3

    from core.base.errors import is_disk_full
    from core.store.workspace import VariantNotFound

    try:
        return fn()
    except (ValueError, VariantNotFound, VariantInUse, WorkspaceError) as e:
        st.error(f"{what}: {e}", icon=":material/error:")
    except (OSError, sqlite3.OperationalError) as e:
        reason = ("the workspace's disk is full or cannot be written; free some space and try again"
                  if is_disk_full(e) else f"{type(e).__name__}: {e}")
        st.error(f"{what}: {reason}", icon=":material/error:")
    return None
