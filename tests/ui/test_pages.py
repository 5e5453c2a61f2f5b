"""AppTest: every page runs without an exception and shows its key widgets; the Model page's
upload path accepts a good checkpoint and refuses garbage, mismatched and malicious files."""
from __future__ import annotations

import io
import json
import math
import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from core.base.units import human_bytes
from core.models.registry import create_model

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 90


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def upload(at, name: str, data: bytes, model: str = "lenet5"):
    at.selectbox(key="ckpt-model").set_value(model)
    at.file_uploader(key="ckpt-file").set_value((name, data, "application/octet-stream"))
    at.run()
    at.button(key="ckpt-add").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ---------------------------------------------------------------- shell and Home

def test_home_shows_the_shipped_baseline_selected_with_its_numbers(app, app_env):
    assert app.session_state["variant"] == "base-lenet5"
    assert app.sidebar.selectbox(key="variant").value == "base-lenet5"
    assert app.title[0].value == "Compression Workbench"
    base = app_env.get_variant("base-lenet5")
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Test accuracy"] == f"{base.metrics['accuracy']:.2%}"
    assert metrics["Parameters"] == "431.1 K"
    assert metrics["Download size"] == human_bytes(base.metrics["size_bytes"])   # the stored file, as every page says it
    assert "Device" in texts(app.sidebar.caption)
    # the steps whose pages exist, named from the page list (ui/nav.py), no more
    intro = texts(app.markdown)
    assert "Start from a trained model, prune, quantize, distill or fine-tune it," in intro
    assert app.query_params["variant"] == "base-lenet5"


def test_the_url_picks_the_active_variant_and_the_picker_changes_it(app_env):
    from streamlit.testing.v1 import AppTest

    child = app_env.children("base-lenet5")[0]
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params["variant"] = child.id  # a shared link
    at.run()
    assert at.session_state["variant"] == child.id
    at.sidebar.selectbox(key="variant").set_value("base-lenet5").run()
    assert at.query_params["variant"] == "base-lenet5"
    assert not at.exception


# ---------------------------------------------------------------- Model page

def test_model_page_summary_layers_and_lineage(app, app_env):
    app.switch_page("pages/model.py").run()
    assert not app.exception
    assert [t.label for t in app.tabs] == ["Active variant", "Train a new baseline", "Upload a checkpoint"]
    labels = [m.label for m in app.metric]
    for label in ("Test accuracy", "Download size", "Parameters", "Batch 1 · eager", "MACs / image"):
        assert label in labels
    layers = app.dataframe[1].value
    assert list(layers["layer"]) == ["conv1", "conv2", "fc1", "fc2"]
    assert layers["params"].sum() == 431_080
    lineage = app.dataframe[0].value
    assert list(lineage["relation"]) == ["this variant", "child"]
    # a lineage button makes the child active (and the sidebar follows)
    child = app_env.children("base-lenet5")[0]
    app.button(key=f"model-lineage-goto-{child.id}").click().run()
    assert app.session_state["variant"] == child.id
    assert app.sidebar.selectbox(key="variant").value == child.id
    m = child.metrics
    params = next(x for x in app.metric if x.label == "Parameters")
    assert params.delta == f"{1 - m['nonzero_params'] / m['params']:.1%} zeros"   # sparsity shows on the child
    assert next(x for x in app.metric if x.label == "Test accuracy").delta.endswith("pp vs root")


def test_model_page_registry_preview_and_training_form(app, app_env):
    app.switch_page("pages/model.py").run()
    app.selectbox(key="train-model").set_value("lenet300").run()
    preview = {m.label: m.value for m in app.metric}
    assert preview["Layers with weights"] == "3" and preview["Parameters"] == "266.6 K"
    app.selectbox(key="train-dataset").set_value("cifar10").run()  # 3x32x32 inputs: a wider first layer
    preview = {m.label: m.value for m in app.metric}
    assert preview["Parameters"] == "953.0 K"
    assert not app.exception


def test_training_from_the_model_page_is_a_job_that_can_be_cancelled(app, app_env):
    app.switch_page("pages/model.py").run()
    app.selectbox(key="train-model").set_value("lenet5-small")
    app.number_input(key="train-subset").set_value(500)
    app.number_input(key="train-epochs").set_value(50)
    next(b for b in app.button if b.label == "Start training").click().run()
    assert not app.exception, [e.value for e in app.exception]
    new = [j for j in app_env.jobs.list() if j.kind == "train"]
    assert len(new) == 1
    job = new[0]
    assert job.state in ("queued", "running") and job.config["model"] == "lenet5-small"
    assert job.config["subset"] == 500 and job.config["train"]["epochs"] == 50
    assert app.session_state["last_job"] == job.id
    assert "Training runs" in texts(app.subheader)
    assert app.get("progress")  # the live card
    app.button(key=f"model-jobs-cancel-{job.id}").click().run()
    assert app_env.jobs.get(job.id).state == "cancelled"
    assert not app.exception


def good_state(model="lenet5"):
    torch.manual_seed(1)
    return create_model(model, num_classes=10, in_channels=1).state_dict()


def test_upload_a_good_safetensors_file_makes_a_measured_root_variant(app, app_env):
    before = {v.id for v in app_env.list_variants()}
    app.switch_page("pages/model.py").run()
    upload(app, "my-lenet.safetensors", st_save(good_state("lenet5-small")), model="lenet5-small")
    added = [v for v in app_env.list_variants() if v.id not in before]
    assert len(added) == 1, texts(app.error)
    v = added[0]
    assert v.parent_id is None and v.arch["name"] == "lenet5-small" and v.recipe[0]["step"] == "upload"
    from core.data.datasets import cached_dataset
    from core.measure.metrics import accuracy

    uploaded = create_model("lenet5-small", num_classes=10, in_channels=1)
    uploaded.load_state_dict(good_state("lenet5-small"))
    assert v.metrics["accuracy"] == accuracy(uploaded, cached_dataset("fashion-mnist").test)   # full test split
    assert v.metrics["params"] == sum(t.numel() for t in good_state("lenet5-small").values())
    assert app.session_state["variant"] == v.id  # it became the active variant
    assert "Added" in texts(app.success)
    app_env.delete_variant(v.id)


def test_upload_a_pt_state_dict_nested_in_a_training_checkpoint(app, app_env):
    before = {v.id for v in app_env.list_variants()}
    buf = io.BytesIO()
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": t for k, t in good_state("lenet300").items()}}, buf)
    app.switch_page("pages/model.py").run()
    upload(app, "ckpt.pt", buf.getvalue(), model="lenet300")
    added = [v for v in app_env.list_variants() if v.id not in before]
    assert len(added) == 1, texts(app.error)
    app_env.delete_variant(added[0].id)


@pytest.mark.parametrize("name, payload, message", [
    ("junk.safetensors", os.urandom(4000), "not a readable safetensors file"),
    ("junk.pt", b"PK\x03\x04 this is not a zip archive at all", "not a PyTorch state_dict file"),
    ("junk.pth", b"garbage" * 10, "the safe (weights-only) loader refused it"),
    ("empty.pth", b"", "the file is empty"),
    ("wrong.safetensors", None, "does not fit lenet5"),
])
def test_upload_garbage_or_a_mismatched_file_is_refused_and_nothing_changes(app, app_env, name, payload, message):
    if payload is None:  # a real checkpoint, but of another architecture than the one chosen
        payload = st_save(good_state("lenet300"))
    before = [v.id for v in app_env.list_variants()]
    active = app.session_state["variant"]
    app.switch_page("pages/model.py").run()
    upload(app, name, payload)
    assert message in texts(app.error)
    assert [v.id for v in app_env.list_variants()] == before
    assert app.session_state["variant"] == active


class Payload:
    """Unpickling this object runs code: it would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_malicious_pickle_is_rejected_and_its_payload_never_runs(app, app_env, tmp_path):
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(1), "evil": Payload(str(marker))}, buf)
    data = buf.getvalue()
    before = [v.id for v in app_env.list_variants()]
    app.switch_page("pages/model.py").run()
    upload(app, "innocent.pt", data)
    assert "rejected: the file holds Python objects other than tensors (io.open)" in texts(app.error)
    assert "weights_only" not in texts(app.error)
    assert not marker.exists()
    assert [v.id for v in app_env.list_variants()] == before
    # the payload is live: an unsafe load (never done by the app) would have run it
    torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()


def hostile_upload(case: str) -> bytes:
    """Files that used to reach the Model page as an exception box or a 10 GB allocation."""
    import zlib

    state = good_state("lenet5")
    meta = {"workbench_format": "dense", "arch": json.dumps({"name": "lenet5", "kwargs": {}, "edits": {}})}
    if case == "forward":
        meta["arch"] = json.dumps({"name": "lenet5", "kwargs": {}, "edits": {"fc1": {"forward": 1}}})
    elif case == "no-run":   # conv2 cut to 30 channels, fc1 still wired for 50: loads, then fails on its first batch
        meta["arch"] = json.dumps({"name": "lenet5", "kwargs": {}, "edits": {"conv2": {"out_channels": 30}}})
        state["conv2.weight"], state["conv2.bias"] = state["conv2.weight"][:30].clone(), state["conv2.bias"][:30].clone()
    elif case == "bomb":     # a mask that inflates to 1 GiB (about 1 MB of zlib)
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        mask = b"\x78\xda" + (c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)) * 1024
        state.pop("fc1.weight")
        state["fc1.weight.__mask__"] = torch.frombuffer(bytearray(mask), dtype=torch.uint8)
        state["fc1.weight.__values__"] = torch.zeros(0)
        meta.update(workbench_format="sparse", sparse_shapes=json.dumps({"fc1.weight": [500, 800]}))
    return st_save(state, metadata=meta)


@pytest.mark.parametrize("case, message", [
    ("forward", "structural edit fc1.forward: not allowed on a Linear"),
    ("no-run", "with these weights does not run: RuntimeError"),
    ("bomb", "fc1.weight mask: decompresses to more than the 50,000 bytes its shape allows"),
])
def test_hostile_uploads_are_one_error_box_never_an_exception(app, app_env, case, message):
    before = [v.id for v in app_env.list_variants()]
    app.switch_page("pages/model.py").run()
    upload(app, f"{case}.safetensors", hostile_upload(case))   # asserts no exception box
    assert message in texts(app.error) and f"{case}.safetensors was not added" in texts(app.error)
    assert [v.id for v in app_env.list_variants()] == before


# ---------------------------------------------------------------- Jobs page

def fake_finished_job(ws, variant_id: str) -> str:
    """A finished training job as a worker records it (state, events, log), without running one."""
    job = ws.jobs.create("train", {"model": "lenet5", "train": {"epochs": 2}}, "train lenet5 (recorded)")
    now = time.time()
    events = [{"stage": "train", "kind": "start", "epoch": 1, "epochs": 2, "step": 0, "total_steps": 40}]
    for step in range(5, 41, 5):
        events.append({"stage": "train", "kind": "batch_end", "epoch": 1 + (step > 20), "epochs": 2, "step": step,
                       "total_steps": 40, "loss": 2.3 / step ** 0.3, "accuracy": min(0.9, step / 40)})
        if step % 20 == 0:
            events.append({"stage": "train", "kind": "epoch_end", "epoch": step // 20, "epochs": 2, "step": step,
                           "total_steps": 40, "loss": 1.0, "accuracy": 0.7, "val_accuracy": 0.6 + step / 200})
    ws.jobs.add_events(job.id, events)
    ws.jobs.update(job.id, state="done", progress=1.0, message=f"done: variant {variant_id}", variant_id=variant_id,
                   device="cpu: x86_64, 2 threads", started_at=now - 75, finished_at=now, pid=12345)
    ws.jobs.append_log(job.id, "12:00:00 worker started\n12:01:15 saved variant\n")
    return job.id


def test_jobs_page_lists_jobs_with_curves_log_and_a_link_to_the_variant(app, app_env):
    child = app_env.children("base-lenet5")[0]
    job_id = fake_finished_job(app_env, child.id)
    failed = app_env.jobs.create("train", {"model": "lenet5"}, "a failing run")
    app_env.jobs.update(failed.id, state="failed", error="worker process 4242 died unexpectedly: killed by signal 9 "
                       "(SIGKILL)", started_at=time.time() - 3, finished_at=time.time())
    app.switch_page("pages/jobs.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.title[0].value == "Jobs"
    assert "killed by signal 9" in texts(app.error)
    metrics = {(m.label, m.value) for m in app.metric}
    assert ("Duration", "1 min 15 s") in metrics
    spec = json.loads(app.get("plotly_chart")[0].proto.spec)
    names = {t["name"] for t in spec["data"]}
    assert {"train loss", "train accuracy", "validation accuracy"} <= names
    assert "saved variant" in texts(app.code)
    # the produced variant's button makes it active and opens the Model page
    app.button(key=f"jobs-page-open-{job_id}").click().run()
    assert app.session_state["variant"] == child.id
    assert app.title[0].value == "Model"
    assert not app.exception


def test_jobs_page_filters_by_state_and_handles_an_empty_list(app, app_env):
    app.switch_page("pages/jobs.py").run()
    assert "No jobs yet" in texts(app.info)
    app.pills(key="jobs-states").set_value(["failed"]).run()
    assert not app.exception


def test_an_empty_workspace_says_where_to_start_on_every_page(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.store.workspace import Workspace

    monkeypatch.setattr(Workspace, "seed_baselines", lambda self, *a, **k: [])  # as before baselines ship
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    assert "No variants yet" in texts(at.sidebar.info)
    assert "no variants yet" in texts(at.info) and "variant" not in at.query_params
    for page in ("pages/model.py", "pages/jobs.py"):
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
    at.switch_page("pages/model.py").run()
    assert "No variant yet" in texts(at.info)


NAN = float("nan")
# a child's latency as the lane stores it, by hand (tests never depend on timing): PyTorch eager
# settled at batch 1 (no real speed-up), batch 64 did not; ONNX Runtime 1.60x faster at batch 64
HAND_TIMED = {"latency_ms_b1": 1.0, "latency_ms_b1_ci": [0.97, 1.04], "reference_latency_ms_b1": 1.02,
              "latency_ms_b1_vs_reference_ci": [0.98, 1.05], "latency_ms_b64": NAN, "latency_ms_b64_ci": None,
              "reference_latency_ms_b64": None, "latency_ms_b64_vs_reference_ci": None,
              "latency_unmeasured": "not measurable now: other processes are using 1.8 of 2 cores (batch 64)",
              "ort_latency_ms_b1": 0.25, "ort_latency_ms_b1_ci": [0.24, 0.26], "reference_ort_latency_ms_b1": 0.4,
              "ort_latency_ms_b1_vs_reference_ci": [1.5, 1.7], "ort_latency_ms_b64": 4.0,
              "ort_latency_ms_b64_ci": [3.9, 4.2], "reference_ort_latency_ms_b64": 6.4,
              "ort_latency_ms_b64_vs_reference_ci": [1.52, 1.68], "ort_latency_unmeasured": "",
              "ort_device": "cpu: Test CPU, AVX2 kernels, 1 thread", "ort_model": "int8 QDQ (static)",
              "ort_unavailable": "", "latency_busy": False, "latency_other_jobs": 0}


def test_model_page_shows_latency_per_runtime_and_withholds_what_did_not_settle(app, app_env):
    """PyTorch eager and ONNX Runtime side by side, each figure with its 95% interval and its ratio
    to the parent; a figure that did not settle says "not measurable now" with the reason, never a
    number or a "faster" pill; the verdict names the runtime; Measure again times it anew."""
    child = app_env.children("base-lenet5")[0]
    base = app_env.get_variant("base-lenet5")
    original = dict(child.metrics)
    try:
        app_env.update_variant(child.id, metrics={**HAND_TIMED, "device": base.metrics["device"]})
        app.switch_page("pages/model.py").run()
        app.button(key=f"model-lineage-goto-{child.id}").click().run()
        assert not app.exception, [e.value for e in app.exception]
        lat = {m.label: m for m in app.metric}
        eager1, eager64 = lat["Batch 1 · eager"], lat["Batch 64 · eager"]
        ort1, ort64 = lat["Batch 1 · ORT"], lat["Batch 64 · ORT"]
        assert eager1.value == "1.00 ms" and eager1.delta == "same speed"
        assert eager64.value == "–" and not eager64.delta and "nan" not in eager64.value.lower()
        assert ort1.value == "0.250 ms" and ort1.delta == "1.60x faster"
        assert ort64.value == "4.00 ms" and ort64.delta == "1.60x faster"
        assert "timed together with its parent" not in eager64.help and "other processes" in eager64.help
        captions = texts(app.caption)
        assert "Not measurable now**: other processes are using 1.8 of 2 cores (batch 64)" in captions
        assert "95% interval 3.90–4.20 ms" in captions and "ratio to parent 1.52–1.68x" in captions
        assert "int8 QDQ (static)" in captions and "on cpu: Test CPU, AVX2 kernels, 1 thread" in captions
        # the verdict names the runtime: only ONNX Runtime has a settled batch 64 ratio here
        assert "1.60x faster in ONNX Runtime" in texts(app.markdown)
        assert "faster in PyTorch eager" not in texts(app.markdown)
        again = app.button(key="model-metrics-remeasure")
        assert again.label == "Measure again" and again.proto.type == "primary"   # a figure is withheld

        # both runtimes settled: the verdict says each
        app_env.update_variant(child.id, metrics={"latency_ms_b64": 10.0, "latency_ms_b64_ci": [9.8, 10.3],
                                                  "reference_latency_ms_b64": 10.2, "latency_unmeasured": "",
                                                  "latency_ms_b64_vs_reference_ci": [0.99, 1.04]})
        app.run()
        verdict = texts(app.markdown)
        assert "No real speed-up in PyTorch eager, 1.60x faster in ONNX Runtime" in verdict
        assert app.button(key="model-metrics-remeasure").proto.type == "secondary"

        # ONNX Runtime cannot run it: said, with no figure; an older figure taken under load is flagged
        app_env.update_variant(child.id, metrics={"ort_unavailable": "ONNX Runtime cannot run this model: Conv",
                                                  "latency_busy": True, "latency_other_cores": 1.4})
        app.run()
        assert "No ONNX Runtime figure: ONNX Runtime cannot run this model: Conv" in texts(app.caption)
        assert not [m for m in app.metric if m.label.endswith("· ORT")]
        assert "in ONNX Runtime" not in texts(app.markdown)
        assert "Latency measured while other processes used 1.4 CPU cores" in texts(app.warning)

        # measure again: timed now, alternately with the parent, on this machine, in both runtimes
        app.button(key="model-metrics-remeasure").click().run()
        assert not app.exception, [e.value for e in app.exception]
        again = app_env.get_variant(child.id).metrics
        assert again["device"] == base.metrics["device"] and again["accuracy"] == original["accuracy"]
        assert again["latency_measured_at"] > 1 and not again.get("latency_busy")
        assert f"Measured the latency of {child.name} again." in texts(app.success)
    finally:
        app_env.update_variant(child.id, metrics=original)


def test_latency_between_separate_runs_is_not_compared_across_devices(app, app_env):
    """Without a timing taken with the parent, a child measured on another device is not compared."""
    child = app_env.children("base-lenet5")[0]
    base = app_env.get_variant("base-lenet5")
    original, base_original = dict(child.metrics), dict(base.metrics)
    try:   # the parent's own figure, by hand too (the fixture's real one may not have settled)
        app_env.update_variant(base.id, metrics={"latency_ms_b64": 11.0, "latency_ms_b64_ci": [10.8, 11.3]})
        app_env.update_variant(child.id, metrics={**HAND_TIMED, "latency_ms_b64": 10.0, "latency_ms_b64_ci": [9.8, 10.3],
                                                  "reference_latency_ms_b1": None, "reference_ort_latency_ms_b1": None,
                                                  "reference_ort_latency_ms_b64": None, "reference_ov_latency_ms_b1": None,
                                                  "reference_ov_latency_ms_b64": None, "device": "cuda: NVIDIA H100"})
        app.switch_page("pages/model.py").run()
        app.button(key=f"model-lineage-goto-{child.id}").click().run()
        lat = {m.label: m for m in app.metric}
        assert not any(m.delta for m in lat.values() if "batch" in m.label)
        assert "Not compared with its parent: measured on different devices" in texts(app.caption)
    finally:
        app_env.update_variant(child.id, metrics=original)
        app_env.update_variant(base.id, metrics=base_original)


def test_only_the_steps_whose_pages_exist_are_named(monkeypatch):
    from ui import nav

    assert nav.step_verbs() == "prune, quantize, distill or fine-tune"
    present = [p for p in nav.PAGES if p.url_path not in ("distill", "finetune")]
    monkeypatch.setattr(nav, "available_pages", lambda: present)
    assert nav.step_verbs() == "prune or quantize"


def test_a_variant_without_figures_from_this_machine_is_measured_once_the_machine_is_quiet(app, app_env, monkeypatch):
    """A retired (pre-lane) latency is measured by the page itself when the machine is quiet, or
    the page says it will be; either way it never shows the old figure as a number."""
    from core.measure.speed import legacy_latency_update
    from ui import latency

    monkeypatch.setenv("WORKBENCH_AUTO_MEASURE", "1")
    child = app_env.children("base-lenet5")[0]
    original = dict(child.metrics)
    old = {**original, "latency_ms_b1": 0.4, "latency_ms_b64": 11.2, "device": "cpu: x86_64, 2 threads"}
    try:
        app_env.update_variant(child.id, metrics=old | legacy_latency_update(old))
        latency._auto_tried.clear()
        app.switch_page("pages/model.py").run()
        app.button(key=f"model-lineage-goto-{child.id}").click().run()
        assert not app.exception, [e.value for e in app.exception]
        after = app_env.get_variant(child.id).metrics
        if "when the machine is quiet" in texts(app.caption):       # busy now: said, and not measured
            assert math.isnan(after["latency_ms_b64"])
        else:                                                      # measured here, by the page, once
            assert after["latency_measured_at"] > 1 and after.get("legacy_latency") is not None
            assert after["device"] == app_env.get_variant("base-lenet5").metrics["device"]
            assert "not measured here yet" not in str(after.get("latency_unmeasured"))
        measured_at = after.get("latency_measured_at")
        app.run()                                                  # no second try within the retry period
        assert app_env.get_variant(child.id).metrics.get("latency_measured_at") == measured_at
    finally:
        app_env.update_variant(child.id, metrics=original)
