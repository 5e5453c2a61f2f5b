"""The app's pages, in sidebar order. Adding a page is one line here; a listed page whose file
does not exist yet is left out, so the later pages appear as they land."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PageInfo:
    file: str          # relative to the repository root
    title: str
    icon: str
    url_path: str
    blurb: str         # one line for the Home page's "where to start"


PAGES = [
    PageInfo("pages/home.py", "Home", ":material/home:", "home", "What the workbench does"),
    PageInfo("pages/model.py", "Model", ":material/model_training:", "model",
             "Inspect a variant, train a new baseline or upload a checkpoint"),
    PageInfo("pages/prune.py", "Prune", ":material/content_cut:", "prune",
             "Remove weights or whole channels, then fine-tune to recover accuracy"),
    PageInfo("pages/quantize.py", "Quantize", ":material/compress:", "quantize",
             "Store weights in 8 bits or fewer"),
    PageInfo("pages/distill.py", "Distill", ":material/school:", "distill",
             "Train a small student to imitate a large teacher"),
    PageInfo("pages/finetune.py", "Fine-tune", ":material/tune:", "finetune", "Train a variant further"),
    PageInfo("pages/compare.py", "Compare", ":material/compare_arrows:", "compare",
             "Accuracy against size and latency across variants"),
    PageInfo("pages/predict.py", "Predict", ":material/image:", "predict", "Run a variant on your own images"),
    PageInfo("pages/export.py", "Export", ":material/download:", "export", "Download a checkpoint in a checked format"),
    PageInfo("pages/jobs.py", "Jobs", ":material/work_history:", "jobs",
             "Every background run: progress, curves, logs, cancel"),
    PageInfo("pages/learn.py", "Learn", ":material/menu_book:", "learn", "Guided lessons: one idea at a time, live"),
]


def available_pages() -> list[PageInfo]:
    return [p for p in PAGES if (ROOT / p.file).is_file()]


STEP_VERBS = {"prune": "prune", "quantize": "quantize", "distill": "distill", "finetune": "fine-tune"}


def step_verbs() -> str:
    """The compression steps the app offers today, as words ('prune', 'prune or quantize', ...),
    so no page promises a step whose page does not exist yet."""
    verbs = [STEP_VERBS[p.url_path] for p in available_pages() if p.url_path in STEP_VERBS]
    if len(verbs) <= 1:
        return "".join(verbs)
    return ", ".join(verbs[:-1]) + " or " + verbs[-1]


def page_file(url_path: str) -> str | None:
    """The file of an available page by its url_path, for st.page_link / st.switch_page."""
    for p in available_pages():
        if p.url_path == url_path:
            return p.file
    return None


def shell_started() -> None:
    """Called by app.py before it runs the page: the page then knows it runs inside the shell."""
    from ui import state

    state.mark_shell_ran()


def leave_legacy_mode() -> None:
    """Make sure a page runs inside app.py's shell, not alone in Streamlit's legacy pages/ mode.

    Streamlit starts every server process in its legacy multipage mode (a `pages/` folder sits
    next to app.py) until some script calls `st.navigation`. A direct link such as /model opened
    first after a server start would run the page file alone, without app.py's navigation and
    sidebar. Every page calls this first: run alone, it switches the process over to
    `st.navigation` and reruns the session, which then goes through app.py."""
    import streamlit as st

    from ui import state

    if state.pop_shell_ran():
        return
    st.navigation([st.Page(p.file, title=p.title, default=(i == 0), url_path=None if i == 0 else p.url_path)
                   for i, p in enumerate(available_pages())], position="hidden")
    st.rerun()
