"""Compression Workbench: `streamlit run app.py`.

The picture frame around every page: page config, navigation (the page list is `ui/nav.py`),
and the shared sidebar (active variant, device). Each page in pages/ holds its own body; ui/
holds what several pages share.
"""
import streamlit as st

from ui import nav, presenter

st.set_page_config(page_title="Compression Workbench", page_icon=":material/compress:", layout="wide",
                   initial_sidebar_state=presenter.sidebar_state())   # ?present=1: collapsed on a projector
page = st.navigation([st.Page(p.file, title=p.title, icon=p.icon, default=(i == 0),
                              url_path=None if i == 0 else p.url_path)
                      for i, p in enumerate(nav.available_pages())])

from ui import recovery, resources, sidebar  # noqa: E402  (heavy: torch; after the navigation is known)

resources.freeze_imported_objects()   # once per process: the garbage collector skips the imports
ws = recovery.open_workspace_or_stop(resources.workspace)   # a damaged index: a page that says how to recover
resources.reap_jobs()  # a worker that died while nobody watched is marked, and the queue moves
sidebar.render(ws)
recovery.lost_variants_banner(ws)
nav.shell_started()
page.run()
