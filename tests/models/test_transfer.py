"""Transfer learning: a new head for the new classes, a frozen backbone that really stays frozen,
refusals that say why, and the shipped lenet5 reused for scikit-learn's digits given as a zip."""
from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from core.cli.main import main
from core.data.datasets import get_info, list_datasets
from core.measure.training import TrainConfig
from core.models.registry import create_model, imagenet_weights_file
from core.models.transfer import (
    TRANSFER_MODELS,
    frozen_backbone,
    imagenet_weights_status,
    param_counts,
    replace_head_,
    transfer_refusal,
)
from core.store.workspace import Workspace
from core.tasks import TaskContext, run_task
from core.tasks.transfer import TransferJobConfig

PER_CLASS = 60   # 600 digits: 420 train / 90 val / 90 test after the stored 70/15/15 split


def digits_zip(per_class: int = PER_CLASS, classes: range = range(10)) -> bytes:
    """scikit-learn's digits as a zip of class folders of 8x8 PNGs (dark ink on white, as scanned)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    buf = io.BytesIO()
    counts: dict[int, int] = {}
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for img, t in zip(d.images, d.target, strict=True):
            if t in classes and counts.get(t, 0) < per_class:
                png = io.BytesIO()
                Image.fromarray((255 - img * 15).astype(np.uint8)).save(png, format="PNG")
                zf.writestr(f"digits/{t}/{counts.get(t, 0):03d}.png", png.getvalue())
                counts[t] = counts.get(t, 0) + 1
    return buf.getvalue()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A workspace holding the shipped, trained baselines (Fashion-MNIST) and the digits zip on disk."""
    root = tmp_path_factory.mktemp("transfer")
    ws = Workspace(root / "ws")            # seeds base-lenet5 etc. from baselines/
    zip_path = root / "my digits.zip"
    zip_path.write_bytes(digits_zip())
    return ws, zip_path


# ---------------------------------------------------------------- the pieces

@pytest.mark.parametrize("name, head", [("lenet5", "fc2"), ("resnet-small", "fc"),
                                        ("mobilenet_v3_small", "classifier.3")])
def test_the_head_is_replaced_for_the_new_classes_and_nothing_else(name, head):
    model = create_model(name, num_classes=10, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert replace_head_(model, 4) == head
    assert model.eval()(torch.zeros(2, 1, 28, 28)).shape == (2, 4)
    after = model.state_dict()
    changed = {k for k in after if k not in before or after[k].shape != before[k].shape
               or not torch.equal(after[k], before[k])}
    assert changed == {f"{head}.weight", f"{head}.bias"}


def test_a_frozen_backbone_keeps_every_weight_and_batchnorm_statistic():
    torch.manual_seed(0)
    model = create_model("resnet-small", num_classes=3, in_channels=1)
    head = replace_head_(model, 3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with frozen_backbone(model, head):
        trainable, frozen = param_counts(model)
        assert trainable == 3 * model.fc.in_features + 3 and frozen > 10 * trainable
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
        model.train()                                      # what train_ calls every epoch
        assert model.fc.training and not model.stem[1].training
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.randint(0, 3, (8,))).backward()
            opt.step()
    after = model.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved == {"fc.weight", "fc.bias"}               # running_mean/var and num_batches_tracked too
    assert all(p.requires_grad for p in model.parameters()) and "train" not in vars(model)
    model.train()
    assert model.stem[1].training                              # the ordinary train() is back


def test_refusals_name_the_mismatch(shipped):
    ws, _ = shipped
    v = ws.get_variant("base-lenet5")
    cifar = get_info("cifar10")
    assert "greyscale" in transfer_refusal(v, cifar) and "colour" in transfer_refusal(v, cifar)
    wide = dataclasses.replace(cifar, in_channels=1, title="Big")   # 1 channel, 32x32
    msg = transfer_refusal(v, wide, ws.load_model(v))
    assert "28x28" in msg and "32x32" in msg
    assert transfer_refusal(v, get_info("digits"), ws.load_model(v)) is None


def test_the_imagenet_weights_status_says_what_will_happen(tmp_path, monkeypatch):
    assert TRANSFER_MODELS == ("resnet18", "mobilenet_v3_small")
    assert "untrained" in imagenet_weights_status("lenet5")
    # the torch cache is a folder this test owns, so both outcomes are checked on every machine
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    for name in TRANSFER_MODELS:
        status = imagenet_weights_status(name)            # not in the (empty) cache: says what starting does
        assert status is not None and "not in the torch cache" in status and str(tmp_path) in status, status
        assert "download" in status and "random weights" in status
        cached = Path(imagenet_weights_file(name))
        assert cached.parent == tmp_path / "checkpoints" and f"({cached})" in status
        cached.parent.mkdir(exist_ok=True)
        cached.write_bytes(b"")
        assert imagenet_weights_status(name) is None      # None once the cache holds them


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="dataset is required"):
        TransferJobConfig(source="base-lenet5", dataset="")
    with pytest.raises(ValueError, match="freeze_backbone must be true or false"):
        TransferJobConfig(source="base-lenet5", dataset="digits", freeze_backbone="yes")
    cfg = TransferJobConfig.coerce({"source": "base-lenet5", "dataset": "digits", "train": {"epochs": 2}})
    assert cfg.train.epochs == 2 and cfg.train.early_stop == 2 and cfg.train.restore_best  # defaults kept


# ---------------------------------------------------------------- the acceptance: lenet5 -> digits zip, frozen

def test_shipped_lenet5_transfers_to_a_digits_zip_with_its_backbone_frozen(shipped, capsys):
    """Through the CLI, as a user would: the zip is imported into the workspace, the head replaced,
    only the head trained; test accuracy on the held-out digits far above chance (10%)."""
    ws, zip_path = shipped
    source = ws.get_variant("base-lenet5")
    code = main(["--workspace", str(ws.root), "--json", "finetune", "base-lenet5", "--dataset", str(zip_path),
                 "--freeze-backbone", "--epochs", "6", "--lr", "0.05", "--early-stop", "0"])
    out = capsys.readouterr().out
    assert code == 0, out
    res = json.loads(out.strip().splitlines()[-1])
    assert "imported my digits.zip as dataset 'my-digits'" in out
    v = ws.get_variant(res["id"])
    assert v.dataset == "my-digits" and v.parent_id is None and v.arch["kwargs"]["num_classes"] == 10
    step = v.recipe[-1]
    assert step["step"] == "transfer" and step["source"]["variant"] == source.id and step["freeze_backbone"]
    assert step["source_recipe"] == source.recipe
    assert res["frozen_params"] > 50 * res["trainable_params"]      # lenet5: only fc2 (500 x 10 + 10) trains
    assert v.metrics["accuracy"] >= 0.6, v.metrics["accuracy"]       # chance is 0.10
    # the backbone is bit-for-bit the shipped one; only the classifier is new
    new, old = ws.load_model(v).state_dict(), ws.load_model(source).state_dict()
    assert {k for k in new if not torch.equal(new[k], old[k]) or new[k].shape != old[k].shape} == {"fc2.weight",
                                                                                                    "fc2.bias"}
    assert "my-digits" in [d.name for d in list_datasets(ws.root)]


def test_an_unfrozen_transfer_of_a_masked_variant_keeps_its_zeros(shipped):
    ws, _ = shipped
    parent = ws.get_variant("base-lenet5")
    pruned = run_task("prune", {"variant": parent.id, "prune": {"amount": 0.8, "scope": "global"}}, TaskContext(ws))
    pv = ws.get_variant(pruned.variant_id)
    if "my-digits" not in [d.name for d in list_datasets(ws.root)]:
        from core.data.uploaded import import_image_zip
        import_image_zip(ws.root, digits_zip(), "my-digits")
    out = run_task("transfer", TransferJobConfig(source=pv.id, dataset="my-digits", freeze_backbone=False,
                                                 train=TrainConfig(epochs=1, lr=0.02)), TaskContext(ws))
    child = ws.get_variant(out.variant_id)
    new, old = ws.load_model(child).state_dict(), ws.load_model(pv).state_dict()
    for k in ("conv1.weight", "conv2.weight", "fc1.weight"):
        assert torch.equal(new[k] == 0, old[k] == 0), k                # the same zeros, and only those
        assert not torch.equal(new[k], old[k]), k                      # yet trained
    assert out.result["frozen_params"] == 0


def test_a_torchvision_model_without_cached_weights_says_so_and_trains_untrained(shipped, monkeypatch):
    ws, _ = shipped
    import core.models.registry as models

    monkeypatch.setattr(models, "_load_imagenet_weights",
                        lambda m, w, allow: "ImageNet weights for X are not in the torch cache; the model is untrained.")
    data_name = "digits"
    out = run_task("transfer", TransferJobConfig(source="mobilenet_v3_small", dataset=data_name, subset=200,
                                                 freeze_backbone=False, train=TrainConfig(epochs=1, lr=0.01)),
                   TaskContext(ws))
    assert any("not in the torch cache" in n for n in out.result["notices"])
    v = ws.get_variant(out.variant_id)
    assert v.arch["name"] == "mobilenet_v3_small" and v.recipe[0]["source"] == {"name": "mobilenet_v3_small",
                                                                                 "pretrained": True}
    assert "not in the torch cache" in v.notes


def test_cli_transfer_refusals_are_one_line(shipped, capsys):
    ws, _ = shipped
    for args, msg in ((["--dataset", "nope"], "unknown dataset 'nope'"),
                      (["--dataset", "missing.zip"], "no such zip file"),
                      (["--freeze-backbone"], "go with --dataset"),
                      (["--dataset", "cifar10"], "import the dataset as greyscale")):
        assert main(["--workspace", str(ws.root), "finetune", "base-lenet5", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], (args, err)



def test_a_transfer_job_names_its_source_variant_by_id_and_a_model_by_name(shipped):
    from core.run.jobs import _with_variant_ids
    from core.store.jobstore import variant_keys

    ws, _ = shipped
    v = ws.get_variant("base-lenet5")
    cfg = _with_variant_ids(ws, {"source": v.name, "dataset": "digits"})
    assert cfg["source"] == v.id and variant_keys(cfg) == ["source"]     # resolved: delete-protection finds it
    assert _with_variant_ids(ws, {"source": "resnet18", "dataset": "digits"})["source"] == "resnet18"
