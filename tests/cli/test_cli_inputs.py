"""No traceback for any command-line input: a table of bad values against every command, each
answered with exit status 2 and exactly one `error:` line."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from core.base.paths import REPO_ROOT
from core.cli.main import COMMANDS, main

ROOT = REPO_ROOT
# Commands that open the workspace: a bad --workspace must be refused by each of them.
WORKSPACE_COMMANDS = {"variants": [], "train": ["lenet5"], "eval": ["base-lenet5"], "prune": ["x", "--amount", "0.5"],
                      "quantize": ["x"], "distill": ["--teacher", "x", "--student", "lenet5-small"],
                      "check": [], "repair": [],
                      "run": ["prune"], "submit": ["prune"], "import": ["nofile.safetensors"], "delete": ["x"],
                      "restore-baselines": [], "jobs": [], "export": ["x", "--format", "onnx", "--out", "o.onnx"],
                      "replay": ["noroot.json"], "serve": ["x"], "finetune": ["x"],
                      "share-weights": ["x"], "entropy-code": ["x"]}
ANY = [["--nope"], ["--nope=1"], ["-z"], ["unexpected", "extra", "args"]]


def _bad_workspaces(tmp: Path) -> dict[str, Path]:
    a_file = tmp / "a-file"
    a_file.write_text("not a directory")
    foreign = tmp / "foreign"
    foreign.mkdir()
    conn = sqlite3.connect(foreign / "workbench.db")
    conn.execute("CREATE TABLE recipes (id INTEGER, title TEXT)")
    conn.commit()
    conn.close()
    garbage = tmp / "garbage"
    garbage.mkdir()
    (garbage / "workbench.db").write_bytes(b"SQLite format 3\x00" + os.urandom(3000))
    return {"a file": a_file, "a foreign database": foreign, "a damaged database": garbage,
            "an impossible place": Path("/proc/no-such-dir/ws")}


SPECIFIC = {
    "models": [["--dataset", "x"], ["lenet5"], ["--json", "extra"], ["--workspace"], ["--epochs", "3"], ["-h5"]],
    "datasets": [["fashion-mnist"], ["--all"], ["--json", "x"], ["--workspace"], ["--dataset", "x"], ["-d"]],
    "tasks": [["prune"], ["--kind", "x"], ["--json", "x"], ["--workspace"], ["-v"], ["all"]],
    "variants": [["--dataset", "nosuchds"], ["--dataset"], ["base-lenet5"]],
    "train": [["nosuchnet"], ["lenet5", "--lr", "1e308"], ["lenet5", "--lr", "-1"], ["lenet5", "--lr", "nan"],
              ["lenet5", "--epochs", "0"], ["lenet5", "--epochs", "99999999"], ["lenet5", "--batch-size", "0"],
              ["lenet5", "--subset", "-5"], ["lenet5", "--seed", "-1"], ["lenet5", "--dataset", "imagenet-22k"],
              ["lenet5", "--optimizer", "lbfgs"], ["lenet5", "--device", "tpu"], []],
    "eval": [["missing"], [""], ["%"], ["_"], ["base-lenet5", "--device", "tpu"], ["base-lenet5", "--runtime", "tensorrt"],
             []],
    "prune": [["base-lenet5", "--amount", "1.5"], ["base-lenet5", "--amount", "nan"], ["base-lenet5"],
              ["base-lenet5", "--amount", "0.5", "--method", "magic"], ["missing", "--amount", "0.5"],
              ["base-lenet5", "--amount", "0.5", "--layer-amount", "nope=0.5"],
              ["base-lenet5", "--amount", "0.5", "--layer-amount", "conv1"],
              ["base-lenet5", "--amount", "0.5", "--steps", "0"], ["base-lenet5", "--amount", "0.5", "--lr", "1e308"],
              ["base-lenet5", "--amount", "0.5", "--exclude", "nope"], ["base-lenet5", "--amount", "0.5", "--norm", "3"]],
    "quantize": [["missing"], [], ["base-lenet5", "--mode", "int4"], ["base-lenet5", "--bits", "1"],
                 ["base-lenet5", "--bits", "9"], ["base-lenet5", "--bits", "nan"], ["base-lenet5", "--calib-batches", "0"],
                 ["base-lenet5", "--calib-batches", "1e9"], ["base-lenet5", "--keep-float", "nope"],
                 ["base-lenet5", "--mode", "fp16", "--keep-float", "conv1"], ["base-lenet5", "--lr", "1e308"],
                 ["base-lenet5", "--epochs", "0"], ["base-lenet5", "--device", "tpu"], ["base-lenet5", "--keep-float"]],
    "distill": [[], ["--teacher", "base-lenet5"], ["--student", "lenet5-small"],
                ["--teacher", "missing", "--student", "lenet5-small"], ["--teacher", "base-lenet5", "--student", "nosuch"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--temperature", "0"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--temperature", "1e9"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--alpha", "1.5"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--alpha", "nan"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--epochs", "0"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--lr", "1e308"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--batch-size", "0"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--subset", "-5"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--device", "tpu"],
                ["--teacher", "base-lenet5", "--student", "lenet5-small", "--seed", "-1"]],
    "finetune": [["missing"], [], ["base-lenet5", "--epochs", "0"], ["base-lenet5", "--epochs", "99999999"],
                 ["base-lenet5", "--lr", "1e308"], ["base-lenet5", "--lr", "-1"], ["base-lenet5", "--lr", "nan"],
                 ["base-lenet5", "--batch-size", "0"], ["base-lenet5", "--early-stop", "-1"],
                 ["base-lenet5", "--early-stop", "two"], ["base-lenet5", "--subset", "0"], ["base-lenet5", "--seed", "-1"],
                 ["base-lenet5", "--device", "tpu"], ["base-lenet5", "--no-restore-best=1"], ["%"],
                 ["base-lenet5", "--dataset", "nope"], ["base-lenet5", "--dataset", "missing.zip"],
                 ["base-lenet5", "--dataset", "f"], ["base-lenet5", "--untrained"], ["base-lenet5", "--freeze-backbone"],
                 ["nosuchnet", "--dataset", "digits"], ["base-lenet5", "--dataset", "cifar10"]],
    "export": [["missing", "--format", "onnx", "--out", "o.onnx"], ["base-lenet5", "--format", "zip", "--out", "o"],
               ["base-lenet5", "--out", "o"], ["base-lenet5", "--format", "onnx"], [],
               ["base-lenet5", "--format", "onnx", "--out", "/proc/nope/x.onnx"]],
    "replay": [[], ["missing.json"], ["f"], ["obj.json"], ["unknown.json"], ["empty.json"], ["noroot.json"]],
    "serve": [["missing"], [], ["base-lenet5", "--port", "99999"], ["base-lenet5", "--port", "-1"],
              ["base-lenet5", "--top-k", "0"], ["base-lenet5", "--top-k", "1e9"], ["base-lenet5", "--device", "tpu"],
              ["base-lenet5", "--threads", "0"], ["base-lenet5", "--grpc-port", "abc"], ["base-lenet5", "--host"]],
    "run": [["teleport"], ["prune", "variant=missing"], ["prune", "prune.amount=2", "variant=base-lenet5"],
            ["prune", "noequals"], ["prune", "--config", "{not json"], ["prune", "--config", "[1, 2]"],
            ["train", "model=lenet5", "train.lr=1e308"], ["train", "model=lenet5", "train.epochs=0"],
            ["prune", "variant=base-lenet5", "prune=3"], ["sensitivity", "variant=base-lenet5", "amounts=[1.5]"]],
    "submit": [["teleport"], ["train", "model=nosuchnet"], ["train", "model=lenet5", "subset=-5"],
               ["prune", "variant="], ["prune", "--config", "{"], ["sensitivity", "amounts=[0]", "variant=x"]],
    "check": [["extra"], ["--fix"], ["--workspace"], ["-v"], ["all", "variants"], ["--json=1"]],
    "repair": [["extra"], ["--force"], ["--workspace"], ["-v"], ["all", "variants"], ["--json=1"]],
    "import": [["nofile.safetensors"], [], ["f", "--model", "nosuchnet"], ["f", "--dataset", "nosuchds"],
               ["f", "--device", "tpu"]],
    "delete": [["missing"], [], ["x", "--cascade", "--reparent"], ["%"], [""]],
    "restore-baselines": [["extra"], ["--all"]],
    "jobs": [["--state", "exploded"], ["--limit", "0"], ["--limit", "1e9"], ["extra"]],
    "share-weights": [["missing"], [], ["base-lenet5", "--bits-conv", "0"], ["base-lenet5", "--bits-fc", "9"],
                      ["base-lenet5", "--epochs", "-1"], ["base-lenet5", "--lr", "0"], ["base-lenet5", "--lr", "nan"],
                      ["base-lenet5", "--subset", "0"], ["base-lenet5", "--device", "tpu"], ["base-lenet5", "--seed", "-1"]],
    "entropy-code": [["missing"], [], ["base-lenet5"], ["base-lenet5", "--device", "tpu"], ["%"], [""]],
}


def _cases(tmp: Path) -> list[tuple[str, list[str]]]:
    cases = []
    for cmd in COMMANDS:
        table = [*ANY, *SPECIFIC.get(cmd, [])]
        if cmd in WORKSPACE_COMMANDS:   # fresh bad workspaces per command: `repair` mends what it is given
            (tmp / cmd).mkdir()
            bad = _bad_workspaces(tmp / cmd)
            if cmd == "check":          # a health report: a damaged or foreign index is its finding (exit 1)
                bad = {k: v for k, v in bad.items() if k in ("a file", "an impossible place")}
            if cmd == "repair":         # mending a damaged index is its job (exit 0)
                bad.pop("a damaged database")
            table += [["--workspace", str(ws), cmd, *WORKSPACE_COMMANDS[cmd]] for ws in bad.values()]
        cases += [(cmd, args if args and args[0] == "--workspace" else [cmd, *args]) for args in table]
    return cases


def test_every_command_is_in_the_table():
    assert set(COMMANDS) <= set(SPECIFIC) | set(WORKSPACE_COMMANDS)


def test_ten_bad_inputs_per_command_exit_2_with_one_line(tmp_path, capsys, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv("WORKBENCH_HOME", str(ws))
    (tmp_path / "f").write_bytes(b"not a checkpoint")
    for name, text in (("obj.json", '{"x": 1}'), ("unknown.json", '[{"step": "teleport"}]'), ("empty.json", "[]"),
                       ("noroot.json", '[{"step": "prune", "amount": 0.5}]')):   # recipes that cannot be replayed
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    per_command = {}
    failures = []
    (tmp_path / "bad").mkdir()
    cases = _cases(tmp_path / "bad")
    for cmd, argv in cases:
        per_command[cmd] = per_command.get(cmd, 0) + 1
        full = argv if argv[0] == "--workspace" else ["--workspace", str(ws), *argv]
        code = main(full)
        out = capsys.readouterr()
        lines = out.err.strip().splitlines()
        if code != 2 or len(lines) != 1 or not lines[0].startswith("error:") or "Traceback" in out.err + out.out:
            failures.append((full, code, out.err[-300:]))
    assert not failures, failures
    assert min(per_command.values()) >= 10, per_command


@pytest.mark.parametrize("argv", [
    ["train", "lenet5", "--lr", "1e308"],
    ["--workspace", "/etc/hostname", "variants"],
    ["variants", "--dataset", "nosuchds"],
    ["eval", "%"],
])
def test_no_traceback_from_the_real_entry_point(argv, tmp_path):
    env = {**os.environ, "WORKBENCH_HOME": str(tmp_path / "ws")}
    out = subprocess.run([sys.executable, "-m", "core", *argv], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("error: ")
