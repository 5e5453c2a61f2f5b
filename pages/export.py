"""Export: every download format of the active variant (safetensors + model card, the compact
encoding with its loader, ONNX, the recipe, a bundle), each reloaded in a fresh process and checked
against the variant's own predictions before its download button appears (core.io.export.pipeline
runs the check and caches the result); then how to serve it, and replaying its recipe."""
import functools
import json
from pathlib import Path

import streamlit as st

from core.base.units import human_bytes
from core.io.export import pipeline as ex
from ui import nav, recovery, replay, resources, state, widgets

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = "export-"
ICONS = {"safetensors": ":material/data_object:", "compact": ":material/compress:", "onnx": ":material/hub:",
         "recipe": ":material/receipt_long:", "bundle": ":material/folder_zip:"}
MIME = {".safetensors": "application/octet-stream", ".onnx": "application/octet-stream", ".json": "application/json",
        ".zip": "application/zip", ".py": "text/x-python"}


def _reader(path: str):
    """Read the file only when the button is clicked (Streamlit calls it then, on another thread)."""
    return functools.partial(Path(path).read_bytes)


def run_checks(ws, v, fmts: list[str], *, force: bool = False) -> None:
    """Export and check `fmts` (one fresh process for all of them); one session at a time per variant."""
    with resources.export_lock(v.id):
        ex.export_many(ws, v, fmts, force=force)


def check_button(ws, v, fmt: str, *, again: bool = False) -> None:
    label = "Check again" if again else "Export and check"
    if st.button(label, key=f"{K}{fmt}-run", icon=":material/fact_check:", type="secondary" if again else "primary",
                 help=f"Write the {fmt} file, load it again in a fresh Python process and compare its predictions on "
                      f"{ex.N_IMAGES} test images with the variant's own (about 10-30 s on this machine)"):
        with st.spinner(f"Exporting {fmt} and reloading it in a fresh process…"):
            done = recovery.run_or_report(lambda: run_checks(ws, v, [fmt], force=again) or True, "Not exported")
        if done:
            st.rerun()


def _numbers(r: ex.ExportResult) -> None:
    cols = st.columns(3)
    cols[0].metric("File size", human_bytes(r.size_bytes), help="Bytes of the file the button downloads")
    if r.format == "recipe":
        cols[1].metric("Reload", "same steps", help="Parsed again in a fresh process: the same steps as the variant's")
        return
    cols[1].metric("Max abs diff", f"{r.max_abs_diff:.2g}",
                   help=f"Largest difference between the reloaded file's logits and the workspace variant's, on "
                        f"{r.n_images} {r.inputs}"
                        + (f" (limit: {r.tolerance['rel']:g} x the largest logit)" if r.tolerance else ""))
    cols[2].metric("Top-1 agreement", f"{r.agreement:.1%}",
                   help="Share of those test images where the reloaded file predicts the same class")


def _downloads(r: ex.ExportResult, fmt: str) -> None:
    files = [r.path, *r.extras]
    cols = st.columns(len(files))
    for i, (col, p) in enumerate(zip(cols, files, strict=True)):
        name = r.filename if i == 0 else Path(p).name
        what = {".json": "the model card (JSON)", ".py": "the loader (Python)"}.get(Path(p).suffix, "the file")
        col.download_button(f"Download {name}", data=_reader(p), file_name=name, on_click="ignore",
                            mime=MIME.get(Path(p).suffix, "application/octet-stream"), key=f"{K}{fmt}-dl-{i}",
                            icon=":material/download:", type="primary" if i == 0 else "secondary",
                            help=f"Download {what}: checked by reloading it in a fresh process")


def format_card(ws, v, fmt: str) -> None:
    info = ex.FORMAT_INFO[fmt]
    reason = ex.unavailable_reason(ws, v, fmt)
    r = ex.cached_result(ws, v, fmt)
    with st.container(border=True, key=f"{K}card-{fmt}"):
        st.markdown(f"#### {info.title}")
        st.markdown(info.purpose)
        st.caption(f"**To load it:** {info.needs}")
        if reason or (r is not None and r.status == "unavailable"):
            st.info(f"**Not available for {v.name}:** {reason or r.message}", icon=":material/block:")
            parent = resources.variant(v.parent_id) if v.parent_id else None
            if fmt in ("safetensors", "onnx") and parent is not None and ex.quant_mode(ws, parent) is None \
                    and ex.quant_mode(ws, v) is not None:
                st.button(f"Make the float parent active: {parent.name}", key=f"{K}{fmt}-parent",
                          on_click=state.set_active_variant, args=(parent.id,), icon=":material/arrow_upward:",
                          help="Switch this page (and the sidebar) to the float variant this one was quantized from, "
                               "to export its float weights")
            return
        if r is None:
            st.caption("Not exported yet: the download appears once the file has been reloaded and checked.")
            check_button(ws, v, fmt)
            return
        if not r.ok:
            st.error(f"**Not offered:** {r.message}", icon=":material/error:")
            check_button(ws, v, fmt, again=True)
            return
        _numbers(r)
        if fmt in ("safetensors", "onnx") and v.kind.get("masked"):
            compact = ex.cached_result(ws, v, "compact")
            small = f" ({human_bytes(compact.size_bytes)})" if compact is not None and compact.ok else ""
            st.caption(f"Pruned weights are stored here as zeros, so this file is as large as the dense model; "
                       f"the compact encoding{small} is the small download of this pruned variant.")
        st.success(f"Checked: {r.message}.", icon=":material/verified:")
        if fmt == "bundle" and r.members:
            st.caption("In the zip: " + ", ".join(f"{m['format']} ({', '.join(m['files'])})" for m in r.members)
                       + ", model_card.json, README.txt.")
        _downloads(r, fmt)
        if fmt == "recipe":
            with st.expander("The recipe's steps"):
                st.json(v.recipe, expanded=2)
        if fmt == "safetensors":
            with st.expander("The model card (model_card.json)"):
                st.json(json.loads(Path(r.extras[0]).read_text()), expanded=1)


STATUS_WORDS = {"ok": "checked, ready to download", "failed": "failed its check (not offered)",
                "unavailable": "does not apply"}


def overview(ws, v) -> None:
    """One row per format: its state, size and check, before the cards that explain each."""
    rows = []
    for fmt, why in ex.formats_for(ws, v):
        r = ex.cached_result(ws, v, fmt)
        status = "does not apply" if why else STATUS_WORDS[r.status] if r is not None else "not exported yet"
        ok = r is not None and r.ok
        check = ("–" if not ok else "same steps" if fmt == "recipe"
                 else f"{r.agreement:.1%} same class, max diff {r.max_abs_diff:.2g}")
        rows.append({"format": ex.FORMAT_INFO[fmt].title, "status": status,
                     "size": human_bytes(r.size_bytes) if ok else "–", "reload check": check})
    st.dataframe(widgets.table(rows), hide_index=True, width="stretch", key=K + "overview")


def summary(ws, v) -> None:
    """One line on the variant, and a button that checks every format not checked yet."""
    m = v.metrics
    acc = m.get("accuracy")
    st.markdown(f"**{v.name}** (`{v.id}`) · {v.kind_label} · "
                + (f"test accuracy {acc:.2%} · " if acc is not None else "")
                + f"stored as {v.format}, {human_bytes(m.get('size_bytes'))}")
    todo = [f for f, why in ex.formats_for(ws, v) if why is None and ex.cached_result(ws, v, f) is None]
    if todo:
        if st.button(f"Export and check all {len(todo)} remaining formats", key=K + "all", type="primary",
                     icon=":material/fact_check:",
                     help="Write every format that applies, load each one again in ONE fresh Python process and "
                          f"compare its predictions on {ex.N_IMAGES} test images with the variant's (about 20-40 s)"):
            with st.spinner("Exporting and reloading every format in a fresh process…"):
                done = recovery.run_or_report(lambda: run_checks(ws, v, todo) or True, "Not exported")
            if done:
                st.rerun()
        st.caption("Nothing is offered for download before it has been reloaded in a fresh Python process and "
                   "matched the variant's predictions; checked files are kept, so the next visit is instant.")
    else:
        st.caption("Every format that applies has been exported and checked (kept in the workspace).")


def _language(code: str) -> str:
    return "python" if code.lstrip().startswith(("import ", "from ")) else "bash"


def serve_section(v) -> None:
    st.subheader("Serve it")
    try:
        from core.io.serve.rest import serve_instructions
    except ImportError:
        serve_instructions = None
    if serve_instructions is not None:
        st.caption("A REST service (`POST /predict` with an image, `GET /health`, `GET /model` for the model card) "
                   "and the same predict call over gRPC, from this repository:")
        for title, code in serve_instructions(v.id):
            st.markdown(f"**{title}**")
            st.code(code, language=_language(code))
        return
    st.caption("Start a REST and a gRPC service for this variant from the repository:")
    st.code(f"python -m core serve {v.id} --port 8000 --grpc-port 50051", language="bash")
    st.code("curl -F file=@shoe.jpg http://127.0.0.1:8000/predict", language="bash")


# ---------------------------------------------------------------- the page

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Export")
st.caption("Every file is loaded again in a fresh Python process and run on real test images before its "
           "download button appears; the numbers say how closely its predictions match the variant's. "
           "Formats that cannot hold this kind of variant say why and what to use instead.")
if v is None:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()

summary(ws, v)
overview(ws, v)
for fmt in ex.FORMATS:
    format_card(ws, v, fmt)

serve_section(v)
replay.replay_section(ws, v, offer_download=False)   # the recipe card above offers the checked file
