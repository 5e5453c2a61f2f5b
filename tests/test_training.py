import pytest
import torch

from core.metrics import accuracy
from core.models import create_model
from core.training import Cancelled, TrainConfig, train_


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
