"""core.compress.pruning.prune: real pruning on tiny models and real (subset) Fashion-MNIST data."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from core.base.kinds import empty_kind
from core.compress.pruning.masks import attach_masks_from_zeros_, prunable_layers, remove_masks_, weight_sparsity
from core.compress.pruning.preview import preview
from core.compress.pruning.prune import PruneConfig, prune
from core.compress.pruning.schedule import agp_schedule, predicted_sparsity, sensitivity_scan, suggest_allocation
from core.compress.pruning.structural import relative_channel_amount, removed_view
from core.formats.encoding import decode, encode_best, encode_dense
from core.measure.training import TrainConfig, train_
from core.models.registry import create_model, list_models

PRUNABLE_LENET5 = ("conv1", "conv2", "fc1")   # fc2 is the classifier, excluded by default


def _lenet5(seed=0):
    torch.manual_seed(seed)
    return create_model("lenet5").eval()


def _nonzero(model, names):
    mods = dict(model.named_modules())
    return sum(int(torch.count_nonzero(mods[n].weight)) for n in names)


def _numel(model, names):
    mods = dict(model.named_modules())
    return sum(mods[n].weight.numel() for n in names)


@pytest.fixture(scope="module")
def trained_small(tiny_data):
    """lenet5-small trained for one epoch on 2,000 real images (about 70% accuracy)."""
    torch.manual_seed(0)
    model = create_model("lenet5-small")
    train_(model, tiny_data, TrainConfig(epochs=1, lr=0.05, device="cpu"))
    return model.eval()


# ---------------------------------------------------------------- config

@pytest.mark.parametrize("kwargs, match", [
    ({"method": "magic"}, "method must be one of"),
    ({"scope": "everything"}, "scope must be one of"),
    ({"amount": 1.0}, r"amount must be in \[0, 1\)"),
    ({"amount": -0.1}, r"amount must be in \[0, 1\)"),
    ({"amount": "lots"}, "amount must be a number"),
    ({"norm": 3}, "norm must be 1 or 2"),
    ({"layer_amounts": {"conv1": 1.5}}, r"layer_amounts\['conv1'\] must be in"),
    ({"layer_amounts": [("conv1", 0.5)]}, "layer_amounts must be a dict"),
    ({"exclude": "fc2"}, "exclude must be a list"),
    ({"exclude": ("conv1",), "layer_amounts": {"conv1": 0.5}}, "both excluded and given an amount"),
])
def test_bad_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PruneConfig(**kwargs)


def test_unknown_layer_names_raise():
    with pytest.raises(ValueError, match="unknown layer.*in layer_amounts: nope; prunable layers: conv1"):
        prune(_lenet5(), PruneConfig(layer_amounts={"nope": 0.5}))
    with pytest.raises(ValueError, match="unknown layer.*in exclude: bn9"):
        prune(_lenet5(), PruneConfig(exclude=("bn9",)))
    with pytest.raises(ValueError, match="channel pruning needs input_shape"):
        prune(_lenet5(), PruneConfig(method="channel"))


def test_config_round_trips_and_hashes():
    cfg = PruneConfig(method="channel", amount=0.4, scope="global", norm=2, layer_amounts={"conv2": 0.1},
                      exclude=("fc2",), seed=3)
    again = PruneConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and hash(again) == hash(cfg)
    assert cfg.label() == "channel L2 global 40% (+1 override)"


# ---------------------------------------------------------------- unstructured

def test_global_l1_90_hits_the_count_and_leaves_the_classifier():
    model = _lenet5()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, report = prune(model, PruneConfig(method="l1", amount=0.9, scope="global"))
    total = _numel(pruned, PRUNABLE_LENET5)
    assert total == report.prunable_weights == 425_500
    assert abs(_nonzero(pruned, PRUNABLE_LENET5) - 0.1 * total) <= 0.01 * 0.1 * total
    assert report.sparsity == pytest.approx(0.9, abs=1e-4)
    # the input is untouched, the classifier too, and it is reported with its reason
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(pruned.fc2.weight, model.fc2.weight)
    assert [(s["name"], "classifier" in s["reason"]) for s in report.skipped] == [("fc2", True)]
    assert report.kind == {**empty_kind(), "masked": True}
    # masks were made permanent: a plain state_dict, same keys as the original
    assert set(pruned.state_dict()) == set(before)
    assert not any(k.endswith(("_orig", "_mask")) for k in pruned.state_dict())
    # global L1: every kept weight is at least as large as every pruned one
    kept = torch.cat([dict(pruned.named_modules())[n].weight.flatten() for n in PRUNABLE_LENET5])
    orig = torch.cat([dict(model.named_modules())[n].weight.flatten() for n in PRUNABLE_LENET5])
    assert orig[kept == 0].abs().max() <= orig[kept != 0].abs().min()


def test_per_layer_scope_and_overrides():
    model = _lenet5()
    cfg = PruneConfig(amount=0.5, scope="layer", layer_amounts={"conv1": 0.2, "fc1": 0.8})
    pruned, report = prune(model, cfg)
    got = {r.name: r.sparsity_after for r in report.layers}
    assert got["conv1"] == pytest.approx(0.2, abs=1e-3)
    assert got["conv2"] == pytest.approx(0.5, abs=1e-3)
    assert got["fc1"] == pytest.approx(0.8, abs=1e-3)
    assert got["fc2"] == 0
    assert report.layer("conv1").target == 0.2 and report.layer("fc2").target is None


def test_global_scope_with_an_override_prunes_the_rest_to_the_amount():
    pruned, report = prune(_lenet5(), PruneConfig(amount=0.7, scope="global", layer_amounts={"conv1": 0.1}))
    assert report.layer("conv1").sparsity_after == pytest.approx(0.1, abs=1e-3)
    rest = ("conv2", "fc1")
    assert 1 - _nonzero(pruned, rest) / _numel(pruned, rest) == pytest.approx(0.7, abs=1e-4)


def test_exclude_replaces_the_default_and_empty_prunes_everything():
    pruned, report = prune(_lenet5(), PruneConfig(amount=0.5, exclude=("conv1",)))
    assert weight_sparsity(pruned, ["conv1"]) == 0 and weight_sparsity(pruned, ["fc2"]) == pytest.approx(0.5)
    assert report.skipped == [{"name": "conv1", "type": "Conv2d", "reason": "excluded in the config"}]
    pruned, report = prune(_lenet5(), PruneConfig(amount=0.5, exclude=()))
    assert report.skipped == [] and weight_sparsity(pruned) == pytest.approx(0.5, abs=1e-3)


def test_re_pruning_keeps_earlier_zeros_and_reaches_the_total():
    first, _ = prune(_lenet5(), PruneConfig(method="random", amount=0.5, scope="layer", seed=1))
    second, report = prune(first, PruneConfig(method="l1", amount=0.8, scope="global"))
    for n in PRUNABLE_LENET5:
        a, b = dict(first.named_modules())[n].weight, dict(second.named_modules())[n].weight
        assert bool(((a == 0) <= (b == 0)).all()), f"{n} lost an earlier zero"
    assert report.sparsity_before == pytest.approx(0.5, abs=1e-3)
    assert report.sparsity == pytest.approx(0.8, abs=1e-4)
    # asking for less than is already there adds nothing and says why
    third, report = prune(second, PruneConfig(amount=0.3, scope="layer"))
    assert torch.equal(third.fc1.weight, second.fc1.weight)
    assert any("already at" in s["reason"] for s in report.skipped)


def test_random_method_is_seeded_and_not_magnitude():
    model = _lenet5()
    a, ra = prune(model, PruneConfig(method="random", amount=0.6, scope="global", seed=7))
    b, _ = prune(model, PruneConfig(method="random", amount=0.6, scope="global", seed=7))
    c, _ = prune(model, PruneConfig(method="random", amount=0.6, scope="global", seed=8))
    l1, _ = prune(model, PruneConfig(method="l1", amount=0.6, scope="global"))
    assert ra.sparsity == pytest.approx(0.6, abs=1e-4)
    assert torch.equal(a.fc1.weight, b.fc1.weight) and not torch.equal(a.fc1.weight, c.fc1.weight)
    assert not torch.equal(a.fc1.weight == 0, l1.fc1.weight == 0)


def test_masks_hold_zeros_through_training(tiny_data):
    pruned, _ = prune(_lenet5(), PruneConfig(amount=0.8, scope="global"))
    zeros = {n: dict(pruned.named_modules())[n].weight == 0 for n in PRUNABLE_LENET5}
    attach_masks_from_zeros_(pruned, list(PRUNABLE_LENET5))
    small = dataclasses.replace(tiny_data, train=tiny_data.train.subset(256))
    train_(pruned, small, TrainConfig(epochs=1, lr=0.05, device="cpu"))
    remove_masks_(pruned)
    assert not any(k.endswith(("_orig", "_mask")) for k in pruned.state_dict())
    for n, z in zeros.items():
        w = dict(pruned.named_modules())[n].weight
        assert bool((w[z] == 0).all()), f"{n}: a pruned weight came back during fine-tuning"
        assert bool((w[~z] != 0).any())


# ---------------------------------------------------------------- sparse file format

def test_sparse_format_is_small_and_reloads_to_identical_logits():
    model = _lenet5()
    pruned, _ = prune(model, PruneConfig(amount=0.9, scope="global"))
    data, fmt = encode_best(pruned.state_dict())
    dense = encode_dense(pruned.state_dict())
    assert fmt == "sparse" and len(data) <= 0.2 * len(dense)
    state, _ = decode(data)
    again = create_model("lenet5").eval()
    again.load_state_dict(state)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again(x), pruned(x))


# ---------------------------------------------------------------- channel pruning

def test_channel_pruning_shrinks_resnet_and_reloads_from_arch(workspace, tiny_data):
    from core.store.variants import base_arch, measure_and_store

    torch.manual_seed(0)
    model = create_model("resnet-small").eval()
    pruned, report = prune(model, PruneConfig(method="channel", amount=0.5, norm=2), input_shape=(1, 28, 28))
    assert report.kind == {**empty_kind(), "shrunk": True}
    assert report.params_after <= 0.6 * report.params_before
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        out = pruned(x)
    assert out.shape == (4, 10)
    # the recorded removed channels are exactly what the shapes lost, outputs and inputs
    mods = dict(model.named_modules())
    for r in report.layers:
        assert r.shape_before[0] - r.shape_after[0] == len(report.removed_channels.get(r.name, []))
        assert r.shape_before[1] - r.shape_after[1] == len(report.removed_inputs.get(r.name, []))
        view = removed_view(mods[r.name].weight, report.removed_channels.get(r.name, []), report.removed_inputs.get(r.name, []))
        gone = int((view == 0).sum())
        assert gone == r.weights_before - r.weights_after
    assert report.layer("stem.0").shape_after[0] == 8 and "fc" not in report.removed_channels
    assert report.layer("fc").shape_after == [10, 32]      # classes kept, inputs shrank
    # store as a variant and rebuild it from arch edits: identical logits
    v = measure_and_store(workspace, pruned, data=tiny_data, name="half", arch=base_arch("resnet-small", tiny_data),
                          recipe=[], device="cpu")
    assert v.arch["edits"]["stem.0"]["out_channels"] == 8
    again = workspace.load_model(v.id)
    with torch.no_grad():
        assert torch.equal(again(x), out)


def test_channel_pruning_never_removes_class_scores_and_reports_global_skips():
    model = _lenet5()
    pruned, report = prune(model, PruneConfig(method="channel", amount=0.5, exclude=()), input_shape=(1, 28, 28))
    assert pruned.fc2.out_features == 10
    assert any(s["name"] == "fc2" and "class scores" in s["reason"] for s in report.skipped)
    assert pruned.conv1.out_channels == 10 and pruned.fc1.out_features == 250
    pruned, report = prune(model, PruneConfig(method="channel", amount=0.3, scope="global",
                                              layer_amounts={"conv1": 0.5}), input_shape=(1, 28, 28))
    assert pruned.conv1.out_channels == 10
    assert report.params_after < report.params_before


# ---------------------------------------------------------------- preview

def test_preview_masked_and_structured(tiny_data):
    val = tiny_data.val.subset(200)
    model = _lenet5()
    p = preview(model, PruneConfig(amount=0.9, scope="global"), val)
    assert p.sparsity == pytest.approx(0.9, abs=1e-4) and p.val_samples == 200
    assert "fixed 200-image validation subset" in p.accuracy_label
    from core.measure.metrics import accuracy

    assert p.accuracy == accuracy(p.model, val)       # exactly the pruned copy's accuracy on that subset
    assert p.size_format == "sparse" and p.size_bytes < 0.2 * p.dense_size_bytes
    assert p.latency is None and p.latency_ratio is None and "same speed" in p.speed_note
    assert [row["name"] for row in p.layers] == ["conv1", "conv2", "fc1", "fc2"] and p.layers[-1]["excluded"]
    s = preview(model, PruneConfig(method="channel", amount=0.5), val)
    # before and after are timed in the same call, alternately, the same number of runs each
    t = s.latency.timings
    assert t["before"][64].runs + t["before"][64].dropped == t["after"][64].runs + t["after"][64].dropped >= 3
    assert "timed now on cpu" in s.speed_note and "alternately" in s.speed_note
    # a speed-up is stated with its interval, or withheld with the reason: never a bare number
    assert ("95% interval" in s.speed_note) == s.speedup.shown
    assert s.speedup.shown or "not measurable now" in s.speed_note
    assert s.latency_ratio == pytest.approx(t["before"][64].median_ms / t["after"][64].median_ms)
    assert s.size_format == "dense" and s.params < 0.5 * p.params


# ---------------------------------------------------------------- sensitivity and allocation

def test_sensitivity_scan_on_a_trained_model(trained_small, tiny_data):
    val = tiny_data.val.subset(300)
    seen = []
    res = sensitivity_scan(trained_small, val, (0.5, 0.95), on_point=seen.append)
    names = [r["name"] for r in res["layers"]]
    assert names == ["conv1", "conv2", "fc1"] and "fc2" in res["excluded"]
    assert len(seen) == 6 and seen[-1]["done"] == seen[-1]["total"] == 6
    assert all(len(r["accuracy"]) == 2 for r in res["layers"])
    # pruning 95% of a layer hurts more than 50% somewhere, and the model was restored each time
    assert any(r["accuracy"][1] < r["accuracy"][0] for r in res["layers"])
    assert weight_sparsity(trained_small) == 0
    with pytest.raises(ValueError, match="sensitivity supports the unstructured methods"):
        sensitivity_scan(trained_small, val, method="channel")


def _fake_sensitivity():
    # layer "big" barely cares; "small" collapses early; "mid" in between
    return {"amounts": [0.25, 0.5, 0.75, 0.9], "baseline_accuracy": 0.9, "val_samples": 100, "layers": [
        {"name": "small", "weights": 1_000, "accuracy": [0.6, 0.3, 0.1, 0.1]},
        {"name": "mid", "weights": 10_000, "accuracy": [0.89, 0.85, 0.7, 0.5]},
        {"name": "big", "weights": 100_000, "accuracy": [0.9, 0.9, 0.895, 0.88]}]}


def test_suggest_allocation_meets_the_target_with_the_cheap_layers():
    sens = _fake_sensitivity()
    alloc = suggest_allocation(sens, 0.8)       # the big, insensitive layer alone can carry 80%
    assert predicted_sparsity(sens, alloc) == pytest.approx(0.8, abs=1e-3)
    assert alloc["big"] == pytest.approx(0.888, abs=1e-3) and alloc["mid"] == alloc["small"] == 0
    alloc = suggest_allocation(sens, 0.85)      # beyond the big layer's 90%: the next cheapest is mid
    assert predicted_sparsity(sens, alloc) == pytest.approx(0.85, abs=1e-3)
    assert alloc["big"] == pytest.approx(0.9) and 0.3 < alloc["mid"] < 0.5 and alloc["small"] == 0
    with pytest.raises(ValueError, match="above the largest measured amount"):
        suggest_allocation(sens, 0.95)


# ---------------------------------------------------------------- schedules

def test_agp_schedule_is_cubic_and_ends_on_target():
    s = agp_schedule(0.0, 0.9, 5)
    assert len(s) == 5 and s[-1] == pytest.approx(0.9)
    assert all(b > a for a, b in zip(s, s[1:], strict=False))
    assert s[0] == pytest.approx(0.9 * (1 - 0.8 ** 3))   # big first step, small last ones
    assert s[0] - 0 > s[-1] - s[-2]
    assert agp_schedule(0.5, 0.9, 1) == [pytest.approx(0.9)]
    with pytest.raises(ValueError, match="steps must be at least 1"):
        agp_schedule(0, 0.5, 0)
    assert relative_channel_amount(0.5, 0.75) == pytest.approx(0.5)


def test_prunable_layers_cover_conv_and_linear():
    names = [n for n, _ in prunable_layers(create_model("resnet-small"))]
    assert "stem.0" in names and "layers.1.shortcut.0" in names and "fc" in names
    assert not any(isinstance(m, nn.BatchNorm2d) for _, m in prunable_layers(create_model("resnet-small")))


# ---------------------------------------------------------------- tasks and CLI

@pytest.fixture(scope="module")
def small_variant(tmp_path_factory, trained_small, tiny_data):
    """A workspace holding the trained lenet5-small as a root variant (dataset: fashion-mnist)."""
    from core.store.variants import base_arch, measure_and_store
    from core.store.workspace import Workspace

    ws = Workspace(tmp_path_factory.mktemp("prune_ws"), seed_baselines=False)
    v = measure_and_store(ws, trained_small, data=tiny_data, name="small", arch=base_arch("lenet5-small", tiny_data),
                          recipe=[{"step": "train"}], device="cpu")
    return ws, v


def _ctx(ws, events):
    from core.tasks import TaskContext

    return TaskContext(ws, on_event=events.append)


def test_prune_task_stores_a_masked_child(small_variant):
    from core.tasks import run_task

    ws, parent = small_variant
    events = []
    cfg = {"variant": parent.id, "prune": {"amount": 0.7, "scope": "global"}, "device": "cpu"}
    vid = run_task("prune", cfg, _ctx(ws, events)).variant_id
    child = ws.get_variant(vid)
    assert child.parent_id == parent.id and child.kind["masked"] and not child.kind["shrunk"]
    assert child.recipe[-1]["step"] == "prune" and child.recipe[-1]["amount"] == 0.7
    assert child.metrics["sparsity"] == pytest.approx(0.7, abs=1e-4)
    assert child.metrics["nonzero_params"] < 0.4 * child.metrics["params"]
    assert child.format == "sparse" and child.metrics["size_bytes"] < child.metrics["dense_size_bytes"]
    assert events[-1]["kind"] == "report" and events[-1]["report"]["skipped"][0]["name"] == "fc2"
    # the stored file reloads to the very weights
    assert weight_sparsity(ws.load_model(vid), ["conv1", "conv2", "fc1"]) == pytest.approx(0.7, abs=1e-4)


def test_sensitivity_task_produces_no_variant_but_a_result(small_variant):
    from core.tasks import TaskContext, run_task, sensitivity_from_events, sensitivity_result, validate_config

    ws, parent = small_variant
    n_variants = len(ws.list_variants())
    events = []
    ctx = TaskContext(ws, on_event=events.append)
    cfg = validate_config("sensitivity", {"variant": parent.id, "amounts": [0.9, 0.5], "val_subset": 200})
    out = run_task("sensitivity", cfg, ctx)
    assert out.variant_id is None and out.result == events[-1]["result"]
    assert len(ws.list_variants()) == n_variants
    points = [e for e in events if e["kind"] == "point"]
    assert len(points) == 3 * 2 and events[-1]["kind"] == "result"
    assert events[0]["kind"] == "start" and [r["name"] for r in events[0]["layers"]] == ["conv1", "conv2", "fc1"]
    partial = sensitivity_from_events(events[:4])  # start + 3 points: conv1 complete, conv2 half done
    assert partial["partial"] and [r["name"] for r in partial["layers"]] == ["conv1"]
    assert sensitivity_from_events(events)["layers"] == events[-1]["result"]["layers"]
    res = sensitivity_result(SimpleNamespace(result=None), events)    # a job without a stored result: its events
    assert res == out.result and sensitivity_result(SimpleNamespace(result=out.result)) == out.result
    assert res["amounts"] == [0.5, 0.9] and res["variant"] == parent.id
    alloc = suggest_allocation(res, 0.6)
    assert predicted_sparsity(res, alloc) == pytest.approx(0.6, abs=1e-3)
    with pytest.raises(ValueError, match="amounts must be numbers in"):
        validate_config("sensitivity", {"variant": parent.id, "amounts": [1.5]})


def test_prune_recover_task_gradually_prunes_and_fine_tunes(small_variant):
    from core.tasks import run_task, validate_config

    ws, parent = small_variant
    events = []
    cfg = validate_config("prune_recover", {
        "variant": parent.id, "prune": {"amount": 0.8, "scope": "global"}, "steps": 2, "subset": 500,
        "finetune": {"epochs": 1, "lr": 0.01, "device": "cpu"}, "device": "cpu"})
    vid = run_task("prune_recover", cfg, _ctx(ws, events)).variant_id
    child = ws.get_variant(vid)
    points = [e for e in events if e.get("stage") == "prune_recover"]
    assert [(p["step"], p["phase"]) for p in points] == [(0, "start"), (1, "pruned"), (1, "recovered"),
                                                        (2, "pruned"), (2, "recovered")]
    assert points[1]["sparsity"] == pytest.approx(agp_schedule(0, 0.8, 2)[0], abs=1e-3)
    assert points[-1]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert any(e.get("stage", "").startswith("fine-tune") for e in events)
    assert child.kind["masked"] and child.recipe[-1]["step"] == "prune_recover"
    assert child.metrics["sparsity"] == pytest.approx(0.8, abs=1e-3)
    with pytest.raises(ValueError, match="steps must be a whole number"):
        validate_config("prune_recover", {"variant": parent.id, "steps": 0})


def test_cli_prune_json_and_errors(small_variant, capsys):
    from core.cli.main import main

    ws, parent = small_variant
    assert main(["--workspace", str(ws.root), "--json", "prune", parent.id, "--amount", "0.5",
                 "--method", "channel", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["parent_id"] == parent.id and out["kind"]["shrunk"] and out["params"] < parent.metrics["params"]
    assert {"accuracy", "size_bytes", "latency_ms_b64"} <= set(out)
    for args, message in ((["--amount", "1.2"], "expected a number in [0, 1)"),
                          (["--amount", "0.5", "--layer-amount", "nope=0.5"], "unknown layer(s) in layer_amounts"),
                          (["--amount", "0.5", "--method", "prune-harder"], "invalid choice")):
        assert main(["--workspace", str(ws.root), "prune", parent.id, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


# ---------------------------------------------------------------- no shared object is mutated

def _fingerprint(model: nn.Module) -> dict:
    """Everything a verb could change on a model it was handed."""
    return {"state": {k: (v.clone(), v.stride(), v.device) for k, v in model.state_dict().items()},
            "training": [m.training for m in model.modules()],
            "hooks": sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()),
            "shapes": {n: tuple(p.shape) for n, p in model.named_parameters()}}


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _fingerprint(model)
    assert after["training"] == before["training"] and after["hooks"] == before["hooks"]
    assert after["shapes"] == before["shapes"]
    for k, (t, stride, device) in before["state"].items():
        now = model.state_dict()[k]
        assert torch.equal(now, t) and now.stride() == stride and now.device == device, k


@pytest.mark.parametrize("verb", ["prune-l1", "prune-random", "prune-channel", "preview-l1", "preview-channel",
                                  "evaluate", "accuracy", "sensitivity"])
def test_public_verbs_leave_their_input_model_unchanged(verb, tiny_data):
    from core.measure.metrics import accuracy, evaluate

    model = create_model("resnet-small").eval()
    model.layers[0].train()          # a mixed-mode model: modes must come back as they were
    before = _fingerprint(model)
    val = tiny_data.val.subset(100)
    if verb.startswith("prune"):
        prune(model, PruneConfig(method=verb.split("-")[1], amount=0.5, scope="global"), input_shape=(1, 28, 28))
    elif verb.startswith("preview"):
        preview(model, PruneConfig(method=verb.split("-")[1], amount=0.5), val)
    elif verb == "evaluate":
        evaluate(model, tiny_data.test.subset(100), (1, 28, 28), device="cpu")
    elif verb == "accuracy":
        accuracy(model, val)
    else:
        sensitivity_scan(model, val, (0.5,))
    _assert_unchanged(model, before)


# ---------------------------------------------------------------- every registered model

@pytest.mark.parametrize("model_name", [s.name for s in list_models()])
@pytest.mark.parametrize("method", ["l1", "channel"])
def test_prune_then_rebuild_every_registered_model(model_name, method, workspace, tiny_data):
    """Each registry model prunes, stores, and rebuilds from its file to the very same logits."""
    from core.store.variants import base_arch, measure_variant

    torch.manual_seed(0)
    model = create_model(model_name).eval()
    pruned, report = prune(model, PruneConfig(method=method, amount=0.5, scope="layer"), input_shape=(1, 28, 28))
    assert report.sparsity > 0.3, report.summary()
    if method == "channel":
        assert report.kind["shrunk"] and report.params_after < report.params_before
    else:
        assert report.kind["masked"] and report.params_after == report.params_before
    small = dataclasses.replace(tiny_data, test=tiny_data.test.subset(64))
    draft = measure_variant(pruned, data=small, name=f"{model_name}-{method}", arch=base_arch(model_name, small),
                            recipe=[], device="cpu")
    v = draft.store(workspace)
    again = workspace.load_model(v)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(again(x), pruned.eval()(x))
    assert v.kind == report.kind


# ---------------------------------------------------------------- what a new user tripped over

def test_a_skipped_layer_reports_its_own_sparsity_not_the_pools():
    # a child pruned globally to 90% has conv1 at about 14%: re-pruning globally at 90% adds nothing,
    # and the reason must not say "conv1 already at 90.0%"
    first, r1 = prune(_lenet5(), PruneConfig(amount=0.9, scope="global"))
    conv1 = r1.layer("conv1").sparsity_after
    assert conv1 < 0.5
    _, report = prune(first, PruneConfig(amount=0.9, scope="global"))
    reason = next(s["reason"] for s in report.skipped if s["name"] == "conv1")
    assert f"(this layer {conv1:.1%})" in reason and "globally ranked layers are already at 90.0%" in reason
    _, report = prune(first, PruneConfig(amount=0.05, scope="layer"))
    reason = next(s["reason"] for s in report.skipped if s["name"] == "fc1")
    assert reason.startswith(f"already at {r1.layer('fc1').sparsity_after:.1%} sparsity")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_channel_pruning_keeps_a_minimum_of_channels_in_every_layer(seed):
    from core.compress.pruning.structural import min_kept

    model = _lenet5(seed)
    pruned, report = prune(model, PruneConfig(method="channel", amount=0.9, scope="global"), input_shape=(1, 28, 28))
    for r in report.layers:
        if r.name != "fc2":
            assert r.shape_after[0] >= min_kept(r.shape_before[0]), r
    assert pruned.conv1.out_channels >= 2 and pruned.fc1.out_features >= 50
    x = torch.randn(2, 1, 28, 28)
    assert pruned(x).shape == (2, 10)
    # the preview says what the amount means for this method and scope
    from core.compress.pruning.preview import amount_meaning

    text = amount_meaning(PruneConfig(method="channel", amount=0.9, scope="global"))
    assert "90% of all output channels" in text and "keeps at least 10%" in text and "input columns" in text


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_more_channel_amount_never_removes_less(scope):
    # Torch-Pruning's own global step skipped a layer whose every channel fell under the threshold,
    # so global 90% removed fewer weights than global 70% on the shipped LeNet-5
    model = _lenet5(1)
    params = [prune(model, PruneConfig(method="channel", amount=a, scope=scope), input_shape=(1, 28, 28))[1].params_after
              for a in (0.3, 0.5, 0.7, 0.9)]
    assert params == sorted(params, reverse=True) and len(set(params)) == 4
