"""AppTest: the Export page. One card per format says what it is for and what loads it; nothing
can be downloaded before the file was reloaded in a fresh process and matched; after the check the
numbers and the download buttons appear; a format that does not apply says why; Serve it shows
how to start the services."""
from __future__ import annotations

from pathlib import Path

from ui_helpers import ok, texts

from core.io.export import pipeline as ex

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def downloads(at) -> list[str]:
    return [d.proto.label for d in at.get("download_button")]


def test_export_page_checks_then_offers_downloads(app, app_env):
    ws = app_env
    ex.clear_cache(ws, "base-lenet5")
    at = ok(app.switch_page("pages/export.py").run())
    assert at.title[0].value == "Export"
    md = texts(at.markdown)
    for info in ex.FORMAT_INFO.values():
        assert f"#### {info.title}" in md
    assert "To load it:" in texts(at.caption)
    # the dense baseline's stored file is plain safetensors already: compact says so
    assert "Not available for" in texts(at.info) and "already the plain dense" in texts(at.info)
    # nothing offered before the check
    assert not [d for d in downloads(at) if d.startswith("Download LeNet")]
    assert at.button(key="export-all").label == "Export and check all 4 remaining formats"
    assert at.button(key="export-safetensors-run").label == "Export and check"
    for b in at.button:
        assert b.help, f"button {b.key} has no help"

    at.button(key="export-all").click()
    at = ok(at.run(timeout=240))
    labels = downloads(at)
    base = ex.base_name(ws.get_variant("base-lenet5"))
    for name in (f"{base}.safetensors", "model_card.json", f"{base}.onnx", f"{base}.recipe.json", f"{base}.zip"):
        assert f"Download {name}" in labels
    assert "export-all" not in [b.key for b in at.button]
    metrics = [(m.label, m.value) for m in at.metric]
    assert ("Top-1 agreement", "100.0%") in metrics
    assert "identical predictions" in texts(at.success)
    for d in at.get("download_button"):
        assert d.proto.help

    # a second visit reads the checked files from the workspace: no button, the same downloads
    at2 = ok(at.run())
    assert downloads(at2) == labels

    # Serve it: the commands to start the services and a request for each
    assert any(h.value == "Serve it" for h in at.subheader)
    code = texts(at.code)
    assert "python -m core serve base-lenet5" in code and "curl" in code


def test_export_page_quantized_variant_says_what_cannot_be_exported(app_env):
    """A static-int8 child: no plain float safetensors (why, and what to use), compact offered."""
    ws = app_env
    v = ws.get_variant("base-lenet5")
    from core.compress.quant.files import encode_quantized
    from core.compress.quant.quantize import QuantConfig, calibration_batches, quantize
    from core.store.variants import file_metadata
    from ui.resources import dataset

    model = ws.load_model(v)
    cfg = QuantConfig(mode="static-int8", calib_batches=1)
    q, _ = quantize(model, cfg, calibration_batches(dataset(v.dataset).train, 1), time_half_precision=False)
    weights, fmt = encode_quantized(q, cfg, file_metadata("q8", v.dataset, v.arch), float_model=model)
    child = ws.add_variant({}, name="LeNet-5 int8 (export test)", dataset=v.dataset, arch=v.arch,
                           recipe=[*v.recipe, cfg.step()], metrics={"accuracy": 0.9, "device": "cpu"},
                           kind=cfg.kind, parent_id=v.id, weights=weights, fmt=fmt)
    try:
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(APP, default_timeout=90)   # a new session, opened on the child's link
        at.query_params["variant"] = child.id
        at = ok(at.run())
        at = ok(at.switch_page("pages/export.py").run())
        assert f"**{child.name}**" in texts(at.markdown)
        info = texts(at.info)
        assert "no plain float state_dict" in info and "compact int8 file" in info
        assert at.button(key="export-compact-run").label == "Export and check"
        assert at.button(key="export-all").label == "Export and check all 4 remaining formats"
        # the way to float weights: one click makes the float parent active
        parent_button = at.button(key="export-safetensors-parent")
        assert parent_button.label.endswith(v.name) and parent_button.help
        at = ok(parent_button.click().run())
        assert at.session_state["variant"] == v.id
    finally:
        ws.delete_variant(child.id)
