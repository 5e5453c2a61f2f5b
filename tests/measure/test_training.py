import pytest
import torch

from core.measure.metrics import accuracy
from core.measure.training import Cancelled, TrainConfig, train_
from core.models.registry import create_model


def _model():
    torch.manual_seed(0)
    return create_model("lenet5-small")


def test_training_lowers_the_loss_and_beats_chance(tiny_data):
    model = _model()
    before = accuracy(model, tiny_data.val)
    events = []
    result = train_(model, tiny_data, TrainConfig(epochs=2, log_every=5, device="cpu"), on_event=events.append)
    losses = [e.loss for e in events if e.kind == "batch_end"]
    assert losses[-1] < losses[0] * 0.7
    assert result.history[1]["loss"] < result.history[0]["loss"]
    assert result.val_accuracy > max(0.5, before + 0.2)
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("epoch_end") == 2
    assert events[-1].step == events[-1].total_steps == 2 * tiny_data.train.num_batches(64)
    assert all(e.samples_per_s > 0 for e in events if e.kind == "batch_end")


def test_same_seed_same_weights(tiny_data):
    cfg = TrainConfig(epochs=1, seed=3, device="cpu")
    a, b = _model(), _model()
    train_(a, tiny_data, cfg)
    train_(b, tiny_data, cfg)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=False))


def test_cancel_stops_within_one_batch(tiny_data):
    calls = {"n": 0}

    def should_stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled, match="step 3"):
        train_(_model(), tiny_data, TrainConfig(epochs=5, device="cpu"), should_stop=should_stop)


@pytest.mark.parametrize("kw, match", [({"epochs": 0}, "epochs"), ({"lr": -1}, "lr"), ({"optimizer": "lion"}, "optimizer"),
                                       ({"schedule": "wavy"}, "schedule"), ({"device": "tpu"}, "device")])
def test_bad_configs_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_config_round_trips_through_a_dict():
    cfg = TrainConfig(epochs=4, lr=0.1, optimizer="adamw")
    assert TrainConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_with_mixed_precision(tiny_data):
    model = _model()
    result = train_(model, tiny_data, TrainConfig(epochs=1, device="cuda"))
    assert result.device.startswith("cuda") and result.val_accuracy > 0.4


# ---------------------------------------------------------------- early stopping and the best epoch

@pytest.fixture(scope="module")
def trained_tiny(tiny_data):
    """lenet5-small after one epoch: well above chance, so a destructive run can only lose."""
    model = _model()
    train_(model, tiny_data, TrainConfig(epochs=1, device="cpu"))
    return model


def _copy(model):
    import copy
    return copy.deepcopy(model)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_defaults_keep_the_last_epoch_and_never_stop_early(tiny_data):
    cfg = TrainConfig(epochs=2, device="cpu")
    assert cfg.early_stop is None and cfg.restore_best is False
    events = []
    result = train_(_model(), tiny_data, cfg, on_event=events.append)
    assert len(result.history) == 2 and not result.stopped_early and not result.restored
    assert result.val_accuracy == result.history[-1]["val_accuracy"] and result.start_val_accuracy is None
    assert result.best_epoch in (1, 2)
    assert "best_epoch" not in events[-1].to_dict() and "val_accuracy" not in events[0].to_dict()


def test_early_stop_ends_the_run_and_restores_the_starting_weights(trained_tiny, tiny_data):
    model = _copy(trained_tiny)
    before = _state(model)
    start = accuracy(model, tiny_data.val)
    events = []
    # lr 5 without momentum or decay schedule only destroys a trained model
    cfg = TrainConfig(epochs=6, lr=5.0, momentum=0.0, schedule="constant", early_stop=2, restore_best=True, device="cpu")
    result = train_(model, tiny_data, cfg, on_event=events.append)
    assert result.stopped_early and len(result.history) == 2
    assert all(r["val_accuracy"] < start for r in result.history)
    assert result.best_epoch == 0 and result.restored and result.start_val_accuracy == start
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert result.val_accuracy == start == accuracy(model, tiny_data.val)
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["early_stop", "end"] and kinds.count("epoch_end") == 2
    assert events[-2].epoch == 2 and events[-2].best_epoch == 0 and events[-1].best_epoch == 0


def test_restore_best_picks_the_best_epoch_by_val_accuracy(tiny_data):
    model = _model()
    result = train_(model, tiny_data, TrainConfig(epochs=3, lr=0.05, restore_best=True, device="cpu"))
    vals = [r["val_accuracy"] for r in result.history]
    assert not result.stopped_early and len(vals) == 3
    assert result.best_epoch == 1 + vals.index(max(vals)) and result.val_accuracy == max(vals)
    assert accuracy(model, tiny_data.val) == max(vals)


def test_early_stop_without_restore_keeps_the_last_weights(trained_tiny, tiny_data):
    model = _copy(trained_tiny)
    cfg = TrainConfig(epochs=5, lr=5.0, momentum=0.0, schedule="constant", early_stop=1, device="cpu")
    result = train_(model, tiny_data, cfg)
    assert result.stopped_early and len(result.history) == 1 and not result.restored
    assert result.val_accuracy == result.history[-1]["val_accuracy"] == accuracy(model, tiny_data.val)


def test_restoring_keeps_pruning_masks_and_their_zeros(trained_tiny, tiny_data):
    import torch.nn.utils.prune as tprune

    from core.compress.pruning.masks import attach_masks_from_zeros_, prunable_layers, remove_masks_

    model = _copy(trained_tiny)
    with torch.no_grad():
        for _, m in prunable_layers(model):   # zero the smaller half of every layer's weights
            w = m.weight
            w[w.abs() <= w.abs().median()] = 0
    zeros = {n: (m.weight == 0).clone() for n, m in prunable_layers(model)}
    attach_masks_from_zeros_(model)
    before = _state(model)
    assert any(k.endswith("weight_mask") for k in before)
    masked_weight = {n: m.weight.detach().clone() for n, m in prunable_layers(model)}
    cfg = TrainConfig(epochs=2, lr=5.0, momentum=0.0, schedule="constant", restore_best=True, device="cpu")
    result = train_(model, tiny_data, cfg)
    assert result.best_epoch == 0 and result.restored
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    for n, m in prunable_layers(model):      # `weight` itself is right before any forward pass
        assert tprune.is_pruned(m) and torch.equal(m.weight, masked_weight[n])
    remove_masks_(model)
    for n, m in prunable_layers(model):
        assert torch.equal(m.weight == 0, zeros[n]) and "weight" in dict(m.named_parameters())


@pytest.mark.parametrize("value", [0, -1, 1001, 1.5, True, "2"])
def test_bad_early_stop_is_refused(value):
    with pytest.raises(ValueError, match="early_stop must be a whole number"):
        TrainConfig(early_stop=value)
    with pytest.raises(ValueError, match="restore_best must be true or false"):
        TrainConfig(restore_best="yes")
