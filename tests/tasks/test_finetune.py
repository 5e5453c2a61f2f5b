"""Fine-tuning: masked zeros and shrunk shapes kept, never below the parent on the validation split
with restore_best, quantized variants refused with the way out, and the CLI handler."""
from __future__ import annotations

import argparse

import pytest
import torch

import core.tasks.finetune  # noqa: F401  (registers the task until core.tasks imports it)
from core.cli.common import CliError, Parser
from core.cli.finetune import add_commands, cmd_finetune
from core.tasks import TaskContext, job_title, list_tasks, run_task, validate_config
from core.tasks.finetune import FinetuneJobConfig

FAST = {"epochs": 1, "lr": 0.01, "batch_size": 64}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with the shipped, trained lenet5 and its 90%-pruned (global L1) child."""
    from core.store.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("finetune_ws"), seed_baselines=True)
    base = ws.get_variant("base-lenet5")
    vid = run_task("prune", {"variant": base.id, "prune": {"amount": 0.9, "scope": "global"}, "device": "cpu"},
                   TaskContext(ws)).variant_id
    ws.pruned = ws.get_variant(vid)
    ws.base = base
    return ws


def _finetune(ws, variant, events=None, **kw):
    cfg = {"variant": variant.id, "device": "cpu", "subset": 2000, **kw}
    out = run_task("finetune", cfg, TaskContext(ws, on_event=(events.append if events is not None else lambda e: None)))
    return out, ws.get_variant(out.variant_id)


def test_the_task_is_registered_with_defaults_that_finish_quickly():
    spec = {s.kind: s for s in list_tasks()}["finetune"]
    assert spec.config_cls is FinetuneJobConfig and spec.title == "Fine-tune" and spec.summary
    t = FinetuneJobConfig(variant="x").train
    assert (t.epochs, t.lr, t.early_stop, t.restore_best) == (3, 0.01, 2, True)
    assert job_title("finetune", {"variant": "abc"}) == "Fine-tune abc: 3 epochs at lr 0.01, early stop after 2"


@pytest.mark.parametrize("cfg, match", [
    ({"variant": ""}, "variant is required"),
    ({"variant": "x", "subset": 0}, "subset must be a positive number"),
    ({"variant": "x", "device": "tpu"}, "device must be auto, cpu or cuda"),
    ({"variant": "x", "train": {"early_stop": 0}}, "early_stop must be a whole number"),
    ({"variant": "x", "train": {"lr": 1e308}}, "lr must be a number above 0"),
    ({"variant": "x", "train": {"restore_best": "yes"}}, "restore_best must be true or false"),
])
def test_bad_configs_are_refused(cfg, match):
    with pytest.raises(ValueError, match=match):
        validate_config("finetune", cfg)


def test_a_pruned_variant_keeps_its_zeros_and_does_not_end_below_its_parent(ws):
    parent = ws.pruned
    events = []
    out, child = _finetune(ws, parent, events, train=FAST)
    assert child.parent_id == parent.id and child.kind["masked"] and not child.kind["shrunk"]
    assert child.metrics["nonzero_params"] == parent.metrics["nonzero_params"]
    assert child.metrics["params"] == parent.metrics["params"]
    res = out.result
    assert res["val_accuracy"] >= res["parent_val_accuracy"]
    assert res["parent_accuracy"] == parent.metrics["accuracy"]
    assert res["root_id"] == ws.base.id and res["root_accuracy"] == ws.base.metrics["accuracy"]
    assert len(res["history"]) == 1 and res["masked_layers"]
    step = child.recipe[-1]
    assert step["step"] == "finetune" and step["lr"] == 0.01 and step["epochs"] == 1 and step["subset"] == 2000
    assert step["best_epoch"] == res["best_epoch"] and step["stopped_early"] is False and "device" not in step
    assert [s["step"] for s in child.recipe[-2:]] == ["prune", "finetune"]
    assert any(e.get("stage") == "finetune" and e["kind"] == "epoch_end" for e in events)
    # the stored file holds the zeros in the same places as the parent's
    p_state, c_state = ws.load_state(parent), ws.load_state(child)
    for k, w in p_state.items():
        if k.endswith("weight") and w.ndim > 1:
            assert torch.equal(w == 0, c_state[k] == 0), k


def test_a_run_that_only_makes_things_worse_keeps_the_parents_weights(ws):
    parent = ws.pruned
    events = []
    ruin = {"epochs": 4, "lr": 5.0, "momentum": 0.0, "schedule": "constant", "early_stop": 1, "restore_best": True}
    out, child = _finetune(ws, parent, events, train=ruin)
    res = out.result
    assert res["best_epoch"] == 0 and res["stopped_early"] and res["epochs_run"] == 1
    assert res["history"][0]["val_accuracy"] < res["parent_val_accuracy"] == res["val_accuracy"]
    assert child.recipe[-1]["best_epoch"] == 0 and child.recipe[-1]["stopped_early"] is True
    p_state, c_state = ws.load_state(parent), ws.load_state(child)
    assert all(torch.equal(c_state[k], v) for k, v in p_state.items())
    assert child.metrics["accuracy"] == parent.metrics["accuracy"]
    assert child.metrics["nonzero_params"] == parent.metrics["nonzero_params"]
    assert "no epoch beat the parent on the validation split: the child keeps the parent's weights" in child.notes
    assert [e["kind"] for e in events if e.get("stage") == "finetune"][-2:] == ["early_stop", "end"]


def test_a_shrunk_variant_keeps_its_shapes(ws):
    pid = run_task("prune", {"variant": ws.base.id, "prune": {"method": "channel", "amount": 0.5}, "device": "cpu"},
                   TaskContext(ws)).variant_id
    parent = ws.get_variant(pid)
    assert parent.kind["shrunk"]
    _, child = _finetune(ws, parent, train=FAST, subset=1000)
    assert child.kind["shrunk"] and child.arch == parent.arch
    assert child.metrics["params"] == parent.metrics["params"]
    shapes = {k: v.shape for k, v in ws.load_state(parent).items()}
    assert {k: v.shape for k, v in ws.load_state(child).items()} == shapes
    assert {k: p.shape for k, p in ws.load_model(child).state_dict().items()} == shapes


def test_a_quantized_variant_is_refused_with_the_way_out(ws):
    qid = run_task("quantize", {"variant": ws.base.id, "quant": {"mode": "weight-only", "bits": 8}, "device": "cpu"},
                   TaskContext(ws)).variant_id
    assert ws.get_variant(qid).kind["simulated"]
    n = len(ws.list_variants())
    with pytest.raises(ValueError, match=r"Fine-tune its float parent .* Quantize page \(mode qat"):
        _finetune(ws, ws.get_variant(qid), train=FAST)
    assert len(ws.list_variants()) == n


def _parser() -> Parser:
    p = Parser(prog="python -m core")
    p.add_argument("--json", action="store_true")
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    add_commands(sub)
    return p


def test_cli_handler(ws, capsys):
    args = _parser().parse_args(["finetune", ws.pruned.id, "--epochs", "1", "--subset", "1000", "--lr", "0.005",
                                 "--early-stop", "0", "--device", "cpu", "--name", "ft-cli"])
    assert args.restore_best and args.early_stop == 0
    out = cmd_finetune(args, lambda: ws)
    printed = capsys.readouterr().out
    assert out["name"] == "ft-cli" and out["parent_id"] == ws.pruned.id
    assert out["nonzero_params"] == ws.pruned.metrics["nonzero_params"]
    assert out["parent_accuracy"] == ws.pruned.metrics["accuracy"] and len(out["history"]) == 1
    assert "vs parent" in printed and "epoch 1" in printed and f"dense root {ws.base.id}" in printed
    step = ws.get_variant(out["id"]).recipe[-1]
    assert step["early_stop"] is None and step["lr"] == 0.005 and step["restore_best"] is True


@pytest.mark.parametrize("argv, match", [
    (["--epochs", "0"], "expected a whole number from 1"), (["--lr", "1e308"], "expected a number above 0"),
    (["--lr", "nan"], "expected a number"), (["--early-stop", "-1"], "expected a whole number from 0"),
    (["--batch-size", "0"], "expected a whole number"), (["--subset", "0"], "expected a whole number"),
    (["--device", "tpu"], "invalid choice"), (["--no-restore-best=1"], "ignored explicit argument"),
])
def test_cli_bad_numbers_are_one_line_errors(argv, match):
    with pytest.raises(CliError, match=match):
        _parser().parse_args(["finetune", "x", *argv])


def test_no_restore_best_flag():
    args = _parser().parse_args(["finetune", "x", "--no-restore-best"])
    assert isinstance(args, argparse.Namespace) and args.restore_best is False and args.early_stop == 2


def test_partial_train_settings_keep_the_fine_tune_defaults():
    cfg = FinetuneJobConfig.from_dict({"variant": "x", "train": {"lr": 0.1}})
    assert cfg.train.lr == 0.1 and cfg.train.restore_best and cfg.train.early_stop == 2 and cfg.train.epochs == 3
    assert FinetuneJobConfig.from_dict(cfg.to_dict()) == cfg


def test_the_refusal_names_both_ways_out():
    from types import SimpleNamespace

    from core.tasks.finetune import quantized_refusal

    v = SimpleNamespace(id="q1", name="int8 child", parent_id="p1", kind={"quantized": True}, kind_label="quantized")
    text = quantized_refusal(v)
    assert "float parent (p1)" in text and "Quantize page (mode qat" in text
    assert quantized_refusal(SimpleNamespace(kind={"masked": True, "shrunk": True})) is None
