"""The task layer: one registry that the CLI, the pages and the job runner share; a step kind added
from outside core/ works everywhere; honesty that no caller can forget."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from core.base.paths import REPO_ROOT
from core.compress.pruning.prune import PruneConfig
from core.data import builtin
from core.data import datasets as data_mod
from core.measure.training import TrainConfig, train_
from core.models.registry import create_model
from core.run import jobs
from core.store.variants import base_arch, measure_and_store
from core.tasks import (
    PruneJobConfig,
    TaskContext,
    get_task,
    job_title,
    list_tasks,
    parse_config,
    run_task,
)
from core.tasks.common import DatasetMismatch, unique_name
from core.tasks.prune import preview_child

REPO = REPO_ROOT
PLUGIN = "tests.plugins.dummy_task"

def test_every_built_in_step_is_registered_with_a_typed_config():
    kinds = {s.kind: s for s in list_tasks()}
    assert {"train", "prune", "sensitivity", "prune_recover", "measure"} <= set(kinds)
    for spec in kinds.values():
        assert dataclasses.is_dataclass(spec.config_cls) and spec.summary
    cfg = parse_config("prune", {"variant": "x", "prune": {"amount": 0.9, "scope": "global"}, "unknown": 1})
    assert isinstance(cfg, PruneJobConfig) and isinstance(cfg.prune, PruneConfig) and cfg.prune.amount == 0.9
    assert parse_config("prune", cfg) is cfg
    with pytest.raises(ValueError, match="unknown job kind 'teleport'"):
        get_task("teleport")
    with pytest.raises(ValueError, match="takes a PruneJobConfig"):
        parse_config("prune", TrainConfig())


def test_job_titles_are_written_for_people(workspace):
    cfg = PruneJobConfig(variant="abc", prune=PruneConfig(amount=0.9, scope="global"))
    assert job_title("prune", cfg) == "Prune abc: L1 global 90%"
    title = job_title("prune_recover", {"variant": "abc", "steps": 5})
    assert title == "Prune and recover abc: L1 global 90% in 5 steps × 1 fine-tuning epoch"


# ---------------------------------------------------------------- a new step kind, from outside core/

def test_a_task_registered_outside_core_runs_inline_through_the_cli_and_as_a_job(workspace, monkeypatch):
    monkeypatch.setenv("WORKBENCH_TASK_MODULES", PLUGIN)
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    import importlib

    importlib.import_module(PLUGIN)
    events = []
    out = run_task("echo", {"text": "hi", "times": 3}, TaskContext(workspace, on_event=events.append))
    assert out.result == {"echo": "hi hi hi"} and [e["i"] for e in events] == [0, 1, 2]

    # the CLI, in a fresh process that only knows the plugin from the environment
    env = {**os.environ, "WORKBENCH_TASK_MODULES": PLUGIN, "PYTHONPATH": str(REPO)}
    cli = subprocess.run([sys.executable, "-m", "core", "--workspace", str(workspace.root), "--json", "run", "echo",
                          "text=cli", "times=2"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout.strip().splitlines()[-1])["result"] == {"echo": "cli cli"}
    bad = subprocess.run([sys.executable, "-m", "core", "--workspace", str(workspace.root), "run", "echo", "times=0",
                          "text=x"], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: times must be a positive whole number, got 0"

    # the job runner: a spawned worker process runs it and the result lands in the job store
    job_id = jobs.submit(workspace, "echo", {"text": "job", "times": 2})
    end = time.time() + 120
    while not (job := workspace.jobs.get(job_id)).is_final and time.time() < end:
        time.sleep(0.2)
    assert job.state == "done", job.log
    assert job.title == "Echo 'job' x2" and job.result == {"echo": "job job"}
    assert [e["i"] for e in workspace.jobs.events(job_id) if e.get("stage") == "echo"] == [0, 1]
    assert "echo 2: job" in job.log


# ---------------------------------------------------------------- honesty no caller can forget

@pytest.fixture(scope="module")
def lenet_variant(tmp_path_factory, tiny_data):
    """A workspace with a briefly trained lenet5 root variant on (a subset of) Fashion-MNIST."""
    from core.store.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("tasks_ws"), seed_baselines=False)
    torch.manual_seed(0)
    model = create_model("lenet5")
    small = dataclasses.replace(tiny_data, train=tiny_data.train.subset(500))
    train_(model, small, TrainConfig(epochs=1, device="cpu"))
    v = measure_and_store(ws, model, data=tiny_data, name="lenet", arch=base_arch("lenet5", tiny_data),
                          recipe=[{"step": "train"}], device="cpu")
    return ws, v


def test_a_child_is_never_measured_on_another_dataset_than_its_parent(lenet_variant, monkeypatch):
    ws, parent = lenet_variant

    def gone(*args, **kwargs):
        raise data_mod.DatasetUnavailable("fashion-mnist: not on this machine")

    # Fashion-MNIST disappears from this machine: loading it now falls back to scikit-learn's digits
    monkeypatch.setattr(builtin, "_mnist_like", gone)
    data_mod.cached_dataset.cache_clear()
    try:
        assert data_mod.cached_dataset("fashion-mnist").info.name == "digits"   # the stand-in
        before = len(ws.list_variants())
        with pytest.raises(DatasetMismatch, match="was measured on Fashion-MNIST, which is not available"):
            run_task("prune", {"variant": parent.id, "prune": {"amount": 0.5}, "device": "cpu"}, TaskContext(ws))
        with pytest.raises(DatasetMismatch):
            run_task("sensitivity", {"variant": parent.id, "amounts": [0.5]}, TaskContext(ws))
        assert len(ws.list_variants()) == before
    finally:
        data_mod.cached_dataset.cache_clear()


def test_a_stored_file_decoded_in_a_fresh_process_gives_the_measured_logits(lenet_variant, fashion):
    ws, parent = lenet_variant
    vid = run_task("prune", {"variant": parent.id, "prune": {"amount": 0.8, "scope": "global"}, "device": "cpu"},
                   TaskContext(ws)).variant_id
    child = ws.get_variant(vid)
    assert child.format == "sparse"
    # the logits of the model the metrics were measured on (decoded from the file, in this process)
    x, y = next(fashion.test.batches(1000))
    with torch.no_grad():
        here = ws.load_model(child)(x)
    torch.save({"x": x}, ws.root / "x.pt")
    code = ("import sys, torch; from core.store.workspace import Workspace; ws = Workspace(sys.argv[1], seed_baselines=False);"
            "m = ws.load_model(sys.argv[2]); x = torch.load(sys.argv[3])['x'];"
            "torch.save(m(x).detach(), sys.argv[4])")
    subprocess.run([sys.executable, "-c", code, str(ws.root), vid, str(ws.root / "x.pt"), str(ws.root / "out.pt")],
                   check=True, cwd=REPO, timeout=120)
    there = torch.load(ws.root / "out.pt")
    assert torch.equal(here, there)
    # and the stored accuracy is that model's accuracy on the full test split, where it was measured
    from core.measure.metrics import accuracy

    assert child.metrics["accuracy"] == accuracy(ws.load_model(child), fashion.test)


def test_preview_file_size_is_exactly_what_apply_writes(lenet_variant, tiny_data):
    ws, parent = lenet_variant
    model = ws.load_model(parent)
    for cfg in (PruneConfig(amount=0.7, scope="global"), PruneConfig(method="channel", amount=0.5)):
        p = preview_child(ws, parent, model, cfg, tiny_data.val.subset(200))
        vid = run_task("prune", PruneJobConfig(variant=parent.id, prune=cfg, device="cpu"), TaskContext(ws)).variant_id
        child = ws.get_variant(vid)
        assert p.size_bytes == child.metrics["size_bytes"] == ws.weights_path(child).stat().st_size
        assert p.size_format == child.format


def test_children_get_distinct_names_and_kind_flags_derived_from_the_model(lenet_variant):
    ws, parent = lenet_variant
    cfg = {"variant": parent.id, "prune": {"amount": 0.6, "scope": "layer"}, "device": "cpu"}
    a = ws.get_variant(run_task("prune", cfg, TaskContext(ws)).variant_id)
    b = ws.get_variant(run_task("prune", cfg, TaskContext(ws)).variant_id)
    assert a.name != b.name and b.name == f"{a.name} (2)"
    assert unique_name(ws, a.name) == f"{a.name} (3)"
    assert a.kind["masked"] and not a.kind["shrunk"]
    shrunk = ws.get_variant(run_task("prune", {**cfg, "prune": {"method": "channel", "amount": 0.5}},
                                     TaskContext(ws)).variant_id)
    assert shrunk.kind["shrunk"] and not shrunk.kind["masked"]
    # a masked child of the shrunk one is both: the flags follow the model, not the last step
    both = ws.get_variant(run_task("prune", {**cfg, "variant": shrunk.id}, TaskContext(ws)).variant_id)
    assert both.kind["shrunk"] and both.kind["masked"]


def test_a_child_is_timed_together_with_its_parent(lenet_variant, monkeypatch):
    monkeypatch.setenv("WORKBENCH_LATENCY_RUNTIMES", "torch,onnxruntime,openvino")
    ws, parent = lenet_variant
    child = ws.get_variant(run_task("prune", {"variant": parent.id, "prune": {"amount": 0.3}, "device": "cpu"},
                                    TaskContext(ws)).variant_id)
    m = child.metrics
    for p in ("", "ort_", "ov_"):         # PyTorch eager, ONNX Runtime and OpenVINO, each timed with the parent
        for b in (1, 64):
            ref = m[f"reference_{p}latency_ms_b{b}"]
            if ref is None:               # withheld on a busy machine: never a number, always a reason
                assert m[f"{p}latency_unmeasured"].startswith("not measurable now")
            else:
                low, high = m[f"{p}latency_ms_b{b}_vs_reference_ci"]
                assert ref > 0 and low <= ref / m[f"{p}latency_ms_b{b}"] <= high
    assert m["device"] == parent.metrics["device"] == m["ort_device"] == m["ov_device"]   # one device: the lane's
    assert m["ort_model"] == m["ov_model"] == "fp32" and m["ort_unavailable"] == m["ov_unavailable"] == ""
    # measure again: latency only, again with the parent, and the other metrics stay as they were
    out = run_task("measure", {"variant": child.id, "what": "latency", "device": "cpu"}, TaskContext(ws))
    again = ws.get_variant(out.variant_id)
    assert again.metrics["accuracy"] == m["accuracy"] and again.metrics["latency_measured_at"] > m["latency_measured_at"]
    assert again.metrics["reference_latency_ms_b64"] is None or again.metrics["reference_latency_ms_b64"] > 0


def test_other_jobs_are_recorded_but_do_not_discredit_a_lane_figure(lenet_variant):
    from core.base.ratios import busy_warning

    ws, parent = lenet_variant
    other = ws.jobs.create("train", {"model": "lenet5"}, "someone else's run")
    ws.jobs.update(other.id, state="running")
    try:
        vid = run_task("prune", {"variant": parent.id, "prune": {"amount": 0.4}, "device": "cpu"},
                       TaskContext(ws)).variant_id
    finally:
        ws.jobs.update(other.id, state="cancelled")
    m = ws.get_variant(vid).metrics
    assert m["other_jobs_while_measured"] == 1 and busy_warning(m) == ""   # the lane dropped disturbed passes
    # figures stored before the lane keep their flag
    assert "1 other job was running" in busy_warning({"latency_other_jobs": 1})
    assert busy_warning({"latency_busy": False, "latency_other_jobs": 0}) == ""
