import json
import os
import subprocess
import sys

import pytest

from core.base.paths import REPO_ROOT
from core.cli.main import main
from core.measure.metrics import METRIC_NAMES

ROOT = REPO_ROOT
def _run(*args, ws):
    env = {**os.environ, "WORKBENCH_HOME": str(ws)}
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (["train", "nosuchnet"], "unknown model 'nosuchnet'"),
    (["train", "lenet5", "--epochs", "two"], "expected a whole number from 1 to 1,000"),
    (["train", "lenet5", "--lr", "-1"], "expected a number above 0 and at most 10"),
    (["eval", "missing"], "no variant 'missing'"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    code = main(["--workspace", str(tmp_path / "ws"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error:") and message in err
    assert len(err.splitlines()) == 1


def test_subprocess_error_is_not_a_traceback(tmp_path):
    r = _run("train", "nosuchnet", ws=tmp_path / "ws")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "error: unknown model" in r.stderr


def test_train_then_eval_json(tmp_path, capsys):
    ws = str(tmp_path / "ws")
    assert main(["--workspace", ws, "--json", "train", "lenet5-small", "--epochs", "1", "--subset", "1000",
                 "--device", "cpu"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    trained = json.loads(out[-1])
    assert set(METRIC_NAMES) <= set(trained) and trained["accuracy"] > 0.3
    assert main(["--workspace", ws, "--json", "eval", trained["id"]]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["id"] == trained["id"]
    # a latency that did not settle is null in JSON (never NaN), with the reason beside it
    assert all(evaluated[k] is not None for k in METRIC_NAMES if not k.startswith("latency"))
    assert all(evaluated[k] is not None or evaluated["latency_unmeasured"] for k in ("latency_ms_b1", "latency_ms_b64"))
    assert set(evaluated["latency"]["runtimes"]) == {"torch", "onnxruntime", "openvino"}
    assert evaluated["accuracy"] == trained["accuracy"]      # same weights, same full test split
    assert main(["--workspace", ws, "--json", "variants"]) == 0
    listed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert trained["id"] in [v["id"] for v in listed["variants"]]


def test_models_and_datasets_commands(tmp_path, capsys):
    assert main(["--json", "models"]) == 0
    models = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]
    assert {"name": "lenet5", "params": 431080} .items() <= next(m for m in models if m["name"] == "lenet5").items()
    assert main(["datasets"]) == 0
    assert "fashion-mnist" in capsys.readouterr().out


NAN = float("nan")
TORCH_FIGURES = {"latency_ms_b1": 0.5, "latency_ms_b1_ci": [0.48, 0.52], "reference_latency_ms_b1": 0.5,
                 "latency_ms_b1_vs_reference_ci": [0.97, 1.03], "latency_ms_b64": NAN, "latency_ms_b64_ci": None,
                 "reference_latency_ms_b64": None, "latency_ms_b64_vs_reference_ci": None,
                 "latency_unmeasured": "not measurable now: other processes are using 1.8 of 2 cores (batch 64)",
                 "device": "cpu: test"}
ORT_FIGURES = {"ort_latency_ms_b1": 0.2, "ort_latency_ms_b1_ci": [0.19, 0.21], "reference_ort_latency_ms_b1": 0.21,
               "ort_latency_ms_b1_vs_reference_ci": [1.0, 1.1], "ort_latency_ms_b64": 4.0,
               "ort_latency_ms_b64_ci": [3.9, 4.2], "reference_ort_latency_ms_b64": 6.4,
               "ort_latency_ms_b64_vs_reference_ci": [1.5, 1.7], "ort_latency_unmeasured": "", "ort_device": "cpu: test",
               "ort_model": "fp32", "ort_unavailable": ""}


@pytest.fixture
def timed_child(tmp_path, monkeypatch):
    """A workspace with the shipped LeNet-5 and a child of it; latency 'measured' by hand: PyTorch
    eager batch 64 did not settle, ONNX Runtime 1.6x faster than the parent at batch 64."""
    import core.measure.metrics as metrics_mod
    from core.store.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    base = ws.get_variant("base-lenet5")
    child = ws.add_variant(ws.load_model(base), name="child", dataset=base.dataset, arch=base.arch,
                           metrics=dict(base.metrics), parent_id=base.id, recipe=[*base.recipe, {"step": "prune"}])
    asked = []

    def hand_made(model, input_shape, device, *, reference=None, runtimes=("torch", "onnxruntime"), **kw):
        asked.append(tuple(runtimes))
        assert reference is not None      # the parent is timed with it
        return ((TORCH_FIGURES if "torch" in runtimes else {}) | (ORT_FIGURES if "onnxruntime" in runtimes else {})
                | {"latency_measured_at": 1.0})

    monkeypatch.setattr(metrics_mod, "latency_metrics", hand_made)
    return str(ws.root), child.id, asked


def test_eval_runtime_prints_each_figure_with_its_interval_or_why_not(timed_child, capsys):
    ws, child, asked = timed_child
    assert main(["--workspace", ws, "eval", child, "--latency-only", "--runtime", "onnxruntime"]) == 0
    out = capsys.readouterr().out
    assert asked == [("onnxruntime",)]
    assert "latency in ONNX Runtime (fp32, on cpu: test):" in out and "PyTorch eager" not in out
    assert "batch 64  4.00 ms (95% interval 3.90-4.20 ms), 1.60x faster than its parent (95% interval 1.50x-1.70x)" in out
    assert "verdict: 1.60x faster in ONNX Runtime" in out

    assert main(["--workspace", ws, "eval", child, "--latency-only", "--runtime", "torch"]) == 0
    out = capsys.readouterr().out
    assert asked[-1] == ("torch",) and "ONNX Runtime" not in out.split("verdict")[0]
    assert "batch 1   0.500 ms (95% interval 0.480-0.520 ms), the same speed as its parent" in out
    assert "batch 64  not measurable now: other processes are using 1.8 of 2 cores (batch 64)" in out
    assert "nan" not in out.lower().replace("not measurable now", "")
    assert "verdict: Not measurable now in PyTorch eager" in out     # no settled batch 64 ratio in PyTorch eager


def test_eval_json_has_null_for_a_figure_that_did_not_settle(timed_child, capsys, monkeypatch):
    monkeypatch.setenv("WORKBENCH_LATENCY_RUNTIMES", "torch,onnxruntime")   # a server that times these two
    ws, child, asked = timed_child
    assert main(["--workspace", ws, "--json", "eval", child, "--latency-only"]) == 0
    text = capsys.readouterr().out.strip().splitlines()[-1]
    out = json.loads(text)       # strict JSON: no NaN
    assert "NaN" not in text and out["latency_ms_b64"] is None
    assert asked == [("torch", "onnxruntime")]   # "all" = this server's runtimes
    torch_b64 = out["latency"]["runtimes"]["torch"]["batches"]["64"]
    assert torch_b64["status"] == "not measurable" and torch_b64["median_ms"] is None
    assert torch_b64["text"] == "not measurable now: other processes are using 1.8 of 2 cores (batch 64)"
    ort = out["latency"]["runtimes"]["onnxruntime"]
    assert ort["device"] == "cpu: test" and ort["model"] == "fp32"
    assert ort["batches"]["64"]["ci_ms"] == [3.9, 4.2] and ort["batches"]["64"]["vs_parent_ci"] == [1.5, 1.7]
    assert out["latency"]["verdict"] == "Not measurable now in PyTorch eager, 1.60x faster in ONNX Runtime"
