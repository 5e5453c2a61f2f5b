"""Uploaded checkpoints are data: decoded without running code, checked against the architecture."""
from __future__ import annotations

import io

import pytest
import torch
from safetensors.torch import save as st_save

from core.formats import encoding as formats
from core.models.registry import create_model
from core.store.checkpoints import CheckpointError, build_for, read_state_dict


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
    """Unpickling this calls `fn(*args)`: a real payload."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return (self.fn, self.args)


class Backdoor(torch.nn.Module):
    """A whole pickled module whose class runs code as it is rebuilt."""

    def __init__(self, marker):
        super().__init__()
        self.fc = torch.nn.Linear(2, 2)
        self.marker = marker

    def __setstate__(self, state):
        open(state["marker"], "w").close()
        super().__setstate__(state)


def _payloads(marker: str):
    import builtins
    import os
    import pickle

    def raw(obj, protocol):
        return pickle.dumps(obj, protocol=protocol)

    return {
        "os.system": (pt_bytes({"fc1.weight": torch.zeros(2), "x": RunsCode(os.system, f"touch {marker}")}), "posix.system"),
        "builtins.exec": (pt_bytes(RunsCode(builtins.exec, f"open({marker!r}, 'w').close()")), "builtins.exec"),
        "builtins.eval": (pt_bytes([RunsCode(builtins.eval, f"open({marker!r}, 'w')")]), "builtins.eval"),
        "io.open": (pt_bytes({"x": RunsCode(open, marker, "w")}), "io.open"),
        "module subclass": (pt_bytes(Backdoor(marker)), f"{Backdoor.__module__}.Backdoor"),
        "whole Linear": (pt_bytes(torch.nn.Linear(2, 2)), "torch.nn.modules.linear.Linear"),
        "legacy format": (_legacy(RunsCode(os.system, f"touch {marker}")), "posix.system"),
        "raw pickle p0": (raw(RunsCode(os.system, f"touch {marker}"), 0), "posix.system"),
        "raw pickle p4": (raw(RunsCode(builtins.exec, f"open({marker!r}, 'w').close()"), 4), "builtins.exec"),
    }


def _legacy(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


PAYLOADS = list(_payloads("m"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", PAYLOADS)
def test_pickles_that_run_code_are_refused_naming_what_they_call(tmp_path, case):
    import pickle

    marker = tmp_path / "ran"
    data, called = _payloads(str(marker))[case]
    with pytest.raises(CheckpointError) as e:
        read_state_dict(data, "model.pt")
    msg = str(e.value)
    assert f"rejected: the file holds Python objects other than tensors ({called})" in msg
    assert "weights_only" not in msg and "Re-running" not in msg and "\n" not in msg
    assert not marker.exists()
    if case in ("os.system", "builtins.exec", "io.open", "module subclass", "raw pickle p0"):
        # the payload is live: an unsafe load (never done by the workbench) would have run it
        try:
            pickle.loads(data) if case.startswith("raw") else torch.load(io.BytesIO(data), weights_only=False)
        except Exception:
            pass
        assert marker.exists()


@pytest.mark.parametrize("data", [b"garbage" * 10, b"PK\x03\x04 not a zip", pt_bytes([1])[:-30], b"\x80\x02" + b"x" * 50])
def test_refusals_never_repeat_torchs_advice_to_load_unsafely(data):
    with pytest.raises(CheckpointError) as e:
        read_state_dict(data, "x.pt")
    msg = str(e.value)
    assert "weights_only" not in msg and "Re-running" not in msg and "trusted source" not in msg
    assert "\n" not in msg and len(msg) < 300


def test_a_pt_zip_whose_records_inflate_is_refused_before_torch_reads_it():
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pt_bytes({"w": torch.zeros(1)})[:10])
        z.writestr("archive/data/0", bytes(50_000_000))
    with pytest.raises(CheckpointError, match="the archive's records declare 50,000,"):
        read_state_dict(buf.getvalue(), "x.pt")


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
