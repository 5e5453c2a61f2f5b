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
    assert all(evaluated[k] is not None for k in METRIC_NAMES)
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
