"""Uploaded checkpoints are data: decoded without running code, checked against the architecture."""
from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import save as st_save

from core import formats
from core.checkpoints import CheckpointError, build_for, read_state_dict
from core.models import create_model


def lenet5_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model("lenet5", num_classes=10, in_channels=1).state_dict()


def pt_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_safetensors_plain_and_workbench_sparse_files_decode_to_the_same_tensors():
    state = lenet5_state()
    state["fc1.weight"][state["fc1.weight"].abs() < 0.03] = 0  # sparse enough for the sparse format
    sparse, fmt = formats.encode_best(state)
    assert fmt == "sparse"
    for data in (st_save(state), sparse):
        got, _ = read_state_dict(data, "w.safetensors")
        assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


def test_a_pt_checkpoint_nested_and_saved_from_dataparallel_is_unwrapped():
    state = lenet5_state()
    wrapped = {"epoch": 7, "optimizer": {"lr": 0.1}, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    got, _ = read_state_dict(pt_bytes(wrapped), "ckpt.pth")
    model, arch = build_for(got, {}, "lenet5", "fashion-mnist")
    assert arch == {"name": "lenet5", "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 28}, "edits": {}}
    assert torch.equal(model.fc2.weight, state["fc2.weight"])


def test_a_mismatched_checkpoint_names_what_does_not_fit():
    state = lenet5_state()
    state.pop("fc2.bias")
    state["extra.weight"] = torch.zeros(3)
    state["conv1.weight"] = torch.zeros(20, 3, 5, 5)
    expected = (r"does not fit lenet5 for Fashion-MNIST .*1 tensor\(s\) missing: fc2.bias; 1 tensor\(s\) unexpected: "
                r"extra.weight; 1 tensor\(s\) with the wrong shape: conv1.weight \(file 20x3x5x5, model 20x1x5x5\)")
    with pytest.raises(CheckpointError, match=expected):
        build_for(state, {}, "lenet5", "fashion-mnist")


def test_non_finite_weights_are_refused():
    state = lenet5_state()
    state["fc1.bias"][0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN or infinite values in fc1.bias"):
        build_for(state, {}, "lenet5", "fashion-mnist")


class RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("obj", [
    lambda m: {"fc1.weight": torch.zeros(2), "x": RunsCode(m)},   # a state_dict with a payload inside
    lambda m: RunsCode(m),                                          # nothing but a payload
    lambda m: torch.nn.Linear(2, 2),                                # a whole pickled module
])
def test_pickles_that_hold_objects_are_rejected_without_running_them(tmp_path, obj):
    marker = tmp_path / "ran"
    with pytest.raises(CheckpointError, match=r"rejected: the file holds Python objects other than tensors \(\w"):
        read_state_dict(pt_bytes(obj(str(marker))), "model.pt")
    assert not marker.exists()


@pytest.mark.parametrize("data, name, match", [
    (b"", "x.pt", "the file is empty"),
    (b"\x00" * 100, "x.safetensors", "not a readable safetensors file"),
    (b"garbage" * 10, "x.pth", "not a PyTorch state_dict file"),
    (pt_bytes([1, 2, 3]), "x.pt", "expected a state_dict"),
    (pt_bytes({"epoch": 3}), "x.pt", "holds no tensors"),
])
def test_garbage_gets_a_clear_message(data, name, match):
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(data, name)
