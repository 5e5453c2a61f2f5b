"""Uploaded checkpoints are data with bounds: hostile files are refused quickly, without
allocating what they declare, through the same import the Model page and `python -m core import` use."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from hostile_helpers import MB, zeros_zlib  # noqa: E402
from safetensors.torch import save as st_save

from core.base.paths import REPO_ROOT
from core.models.registry import create_model
from core.store.checkpoints import CheckpointError, import_checkpoint

ROOT = REPO_ROOT


def lenet5_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model("lenet5").state_dict()


def sparse_upload(sparse: dict[str, tuple[list[int], bytes, torch.Tensor]], *, arch: dict | None = None,
                  state: dict[str, torch.Tensor] | None = None) -> bytes:
    """A LeNet-5 file in the workbench's sparse format: every tensor dense except those in `sparse`
    ({name: (declared shape, zlib mask, packed values)}), as a hostile user would write it."""
    out = {k: v for k, v in (state or lenet5_state()).items() if k not in sparse}
    shapes = {}
    for name, (shape, mask, values) in sparse.items():
        out[name + ".__mask__"] = torch.frombuffer(bytearray(mask), dtype=torch.uint8)
        out[name + ".__values__"] = values
        shapes[name] = shape
    meta = {"workbench_format": "sparse", "sparse_shapes": json.dumps(shapes), "name": "x", "dataset": "fashion-mnist",
            "arch": json.dumps(arch or {"name": "lenet5", "kwargs": {}, "edits": {}})}
    return st_save(out, metadata=meta)


def real_mask(w: torch.Tensor) -> tuple[bytes, torch.Tensor]:
    flat = w.flatten()
    return zlib.compress(np.packbits((flat != 0).numpy()).tobytes()), flat[flat != 0].clone()


def hostile_uploads() -> dict[str, tuple[bytes, str]]:
    """{case: (file bytes, what the refusal must say)}; each file is at most about 1 MB."""
    w = lenet5_state()["fc1.weight"].clone()
    w[w.abs() < 0.03] = 0
    mask, values = real_mask(w)
    wide = torch.randn(500, 801)
    wide[wide.abs() < 1] = 0
    wide_mask, wide_values = real_mask(wide)
    header = json.dumps({"fc1.weight": {"dtype": "F32", "shape": [3_000_000_000], "data_offsets": [0, 12_000_000_000]},
                         "__metadata__": {"workbench_format": "dense"}}).encode()
    return {
        # the 1.17 MB file: a correct shape, but a mask that inflates to 1 GiB (9.9 GB peak before)
        "mask inflates to 1 GiB": (sparse_upload({"fc1.weight": ([500, 800], zeros_zlib(1 << 30), torch.zeros(0))}),
                                   "fc1.weight mask: decompresses to more than the 50,000 bytes its shape allows"),
        # the 386 KB file: a 3-billion-element tensor whose mask inflates to 375 MB
        "declares 3 billion elements": (
            sparse_upload({"fc1.weight": ([3000, 1000, 1000], zeros_zlib(375_000_000), torch.zeros(0))}),
            r"does not fit lenet5 .*with the wrong shape: fc1.weight \(file 3000x1000x1000, model 500x800\)"),
        "edits declare a huge layer": (
            sparse_upload({"fc1.weight": ([10**9, 800], zeros_zlib(10**8), torch.zeros(0))},
                          arch={"name": "lenet5", "kwargs": {}, "edits": {"fc1": {"out_features": 10**9}}}),
            r"refused: structural edit fc1.out_features=1000000000: must be a whole number from 1 to 500"),
        "plain header declares 12 GB": (len(header).to_bytes(8, "little") + header + bytes(1000),
                                        "not a readable safetensors file"),
        "shape differs from the architecture": (
            sparse_upload({"fc1.weight": ([500, 801], wide_mask, wide_values)}),
            r"with the wrong shape: fc1.weight \(file 500x801, model 500x800\)"),
        "one value for every non-zero": (sparse_upload({"fc1.weight": ([500, 800], mask, values[:1].clone())}),
                                         f"fc1.weight: 1 values for a mask with {values.numel():,} non-zeros"),
        "more values than non-zeros": (
            sparse_upload({"fc1.weight": ([500, 800], mask, torch.ones(values.numel() + 7))}),
            f"fc1.weight: {values.numel() + 7:,} values for a mask with {values.numel():,} non-zeros"),
    }


HOSTILE = list(hostile_uploads())


@pytest.fixture(scope="module")
def hostile():
    return hostile_uploads()


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_sparse_uploads_are_refused_fast_and_small(workspace, hostile, case):
    data, match = hostile[case]
    assert len(data) < 1.2 * MB
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(CheckpointError, match=match):
            import_checkpoint(workspace, data, "upload.safetensors", model_name="lenet5", dataset="fashion-mnist")
        elapsed = time.perf_counter() - t
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0, elapsed
    assert peak < 200 * MB, peak / MB
    assert workspace.list_variants() == []


MEASURE = r"""
import json, sys, time
from pathlib import Path
from core.store.checkpoints import CheckpointError, import_checkpoint
from core.store.workspace import Workspace

def status(key):  # bytes; VmHWM is this address space's peak resident size (torch and numpy included)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

def reset_peak():  # VmHWM := VmRSS (Linux >= 4.0); without it, VmHWM - VmRSS before is still an upper bound
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass

ws = Workspace(sys.argv[1], seed_baselines=False)
files = sorted(Path(sys.argv[2]).iterdir())
for f in files[:1]:   # warm up: lazy imports and first-use allocations are not the file's doing
    try:
        import_checkpoint(ws, f.read_bytes(), f.name, model_name="lenet5", dataset="fashion-mnist")
    except CheckpointError:
        pass
out = {}
for f in files:
    data = f.read_bytes()
    reset_peak()
    before = status("VmRSS")
    t = time.perf_counter()
    try:
        import_checkpoint(ws, data, f.name, model_name="lenet5", dataset="fashion-mnist")
        error = None
    except CheckpointError as e:
        error = str(e)
    out[f.name] = {"s": time.perf_counter() - t, "growth": status("VmHWM") - before, "bytes": len(data),
                   "error": error}
print(json.dumps(out))
"""


def test_hostile_uploads_keep_the_process_peak_memory_low(tmp_path, hostile):
    """The peak resident size of a fresh process sees every allocation (torch's and numpy's too,
    which tracemalloc misses): no hostile file raises it by 200 MB, each is refused in under a
    second. VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of this
    pytest process would start at pytest's own peak and hide anything below it."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    for i, (data, _) in enumerate(hostile.values()):
        (folder / f"{i}.safetensors").write_bytes(data)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path / "ws"), str(folder)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=1))
    assert all(r["error"] for r in results.values()), results
    assert max(r["s"] for r in results.values()) < 1.0, results
    assert max(r["growth"] for r in results.values()) < 200 * MB, results


# ---------------------------------------------------------------- architecture metadata from the file

def lenet5_file(edits: object, state: dict[str, torch.Tensor] | None = None, name: str = "lenet5") -> bytes:
    meta = {"workbench_format": "dense", "name": "x", "dataset": "fashion-mnist",
            "arch": json.dumps({"name": name, "kwargs": {"num_classes": 10}, "edits": edits})}
    return st_save(state or lenet5_state(), metadata=meta)


@pytest.mark.parametrize("edits, match", [
    ({"fc1": {"forward": 1}}, r"structural edit fc1.forward: not allowed on a Linear"),
    ({"conv1": {"stride": 2}}, r"structural edit conv1.stride: not allowed on a Conv2d"),
    ({"fc2": {"__class__": "torch.nn.Identity"}}, r"structural edit fc2.__class__: not allowed"),
    ({"conv1": {"padding": 100}}, r"structural edit conv1.padding: not allowed"),
    ({"evil": {"out_features": 3}}, r"structural edit of 'evil': the model has no such layer"),
    ({"fc1": {"out_features": -3}}, r"structural edit fc1.out_features=-3: must be a whole number from 1 to 500"),
    ({"fc1": {"out_features": 10**9}}, r"structural edit fc1.out_features=1000000000: must be a whole number from 1 to 500"),
    ("fc1", r"structural edits must be a map"),
])
def test_arch_metadata_is_validated_before_anything_is_set(workspace, edits, match):
    with pytest.raises(CheckpointError, match="^refused: " + match):
        import_checkpoint(workspace, lenet5_file(edits), "m.safetensors", model_name="lenet5", dataset="fashion-mnist")
    assert workspace.list_variants() == []


def shrunk_lenet5_state() -> dict[str, torch.Tensor]:
    """LeNet-5 with conv2 cut from 50 to 30 channels and fc1's inputs with it, as channel pruning does."""
    m = create_model("lenet5")
    keep = torch.arange(30)
    with torch.no_grad():
        sd = m.state_dict()
        sd["conv2.weight"], sd["conv2.bias"] = sd["conv2.weight"][keep].clone(), sd["conv2.bias"][keep].clone()
        sd["fc1.weight"] = sd["fc1.weight"].view(500, 50, 16)[:, keep].reshape(500, -1).clone()
    return sd


def test_a_model_that_loads_but_does_not_run_is_one_clear_error(workspace):
    sd = shrunk_lenet5_state()
    sd["fc1.weight"] = torch.zeros(500, 800)  # conv2 gives 30 x 4 x 4 = 480 features; fc1 still expects 800
    with pytest.raises(CheckpointError, match=r"lenet5 for Fashion-MNIST .* with these weights does not run: RuntimeError"):
        import_checkpoint(workspace, lenet5_file({"conv2": {"out_channels": 30}}, sd), "m.safetensors",
                          model_name="lenet5", dataset="fashion-mnist")


def test_edits_that_disagree_with_the_tensors_are_refused_not_silently_resized(workspace):
    # the file says conv2 has 30 channels but holds 50: the arch would lie about the model
    with pytest.raises(CheckpointError, match=r"with the wrong shape: conv2.weight \(file 50x20x5x5, model 30x20x5x5\)"):
        import_checkpoint(workspace, lenet5_file({"conv2": {"out_channels": 30}}), "m.safetensors",
                          model_name="lenet5", dataset="fashion-mnist")


def test_a_model_that_gives_nan_is_refused(workspace):
    torch.manual_seed(0)
    sd = create_model("resnet-small").state_dict()
    sd["stem.1.running_var"].fill_(-1.0)  # finite, but the normalisation takes its square root
    with pytest.raises(CheckpointError, match="resnet-small for Fashion-MNIST .* gives NaN or infinite outputs"):
        import_checkpoint(workspace, st_save(sd), "r.safetensors", model_name="resnet-small", dataset="fashion-mnist")


def test_a_failure_while_measuring_is_one_clear_error(workspace, monkeypatch):
    import core.store.checkpoints as ck

    def broken(*a, **k):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(ck, "measure_variant", broken)
    with pytest.raises(CheckpointError, match="could not be measured: RuntimeError: CUDA error"):
        import_checkpoint(workspace, st_save(lenet5_state()), "m.safetensors", model_name="lenet5", dataset="fashion-mnist")


# ---------------------------------------------------------------- import_file: the CLI's import

def test_import_file_refuses_missing_unreadable_and_too_big_files(workspace, tmp_path, monkeypatch):
    from core.store import checkpoints
    from core.store.checkpoints import import_file

    with pytest.raises(CheckpointError, match="nope.safetensors: no such file"):
        import_file(workspace, tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="not a file"):
        import_file(workspace, tmp_path)
    big = tmp_path / "big.safetensors"
    big.write_bytes(st_save(lenet5_state()))
    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", 1000)
    with pytest.raises(CheckpointError, match=r"big.safetensors: the file is 2 MB; the limit is 0 MB"):
        import_file(workspace, big)
    pt = tmp_path / "plain.pt"
    torch.save(lenet5_state(), pt)
    monkeypatch.setattr(checkpoints, "MAX_CHECKPOINT_BYTES", 10**9)
    with pytest.raises(CheckpointError, match="plain.pt: the file does not name its architecture: choose one"):
        import_file(workspace, pt)
    hostile = tmp_path / "hostile.safetensors"
    hostile.write_bytes(hostile_uploads()["mask inflates to 1 GiB"][0])
    with pytest.raises(CheckpointError, match="hostile.safetensors: .*decompresses to more than"):
        import_file(workspace, hostile)   # the architecture comes from the file's metadata
    assert workspace.list_variants() == []


def test_import_file_of_a_workbench_download_uses_its_architecture_and_edits(workspace, tmp_path):
    from core.formats import encoding as formats
    from core.store.checkpoints import import_file
    from core.store.variants import file_metadata

    edits = {"conv2": {"out_channels": 30}, "fc1": {"in_features": 480}}
    arch = {"name": "lenet5", "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 28}, "edits": edits}
    sd = shrunk_lenet5_state()
    sd["fc1.weight"][sd["fc1.weight"].abs() < 0.03] = 0
    data, fmt = formats.encode_best(sd, file_metadata("pruned", "fashion-mnist", arch))
    assert fmt == "sparse"
    path = tmp_path / "pruned.safetensors"
    path.write_bytes(data)
    v = import_file(workspace, str(path), model_name=None, dataset="fashion-mnist", name="from the CLI", device="cpu")
    assert v.name == "from the CLI" and v.parent_id is None and v.arch["name"] == "lenet5"
    assert v.arch["edits"] == edits and v.kind.get("shrunk")
    assert torch.equal(workspace.load_model(v).fc1.weight, sd["fc1.weight"])
    assert 0 < v.metrics["accuracy"] <= 1 and v.metrics["params"] == sum(t.numel() for k, t in sd.items()
                                                                         if "num_batches" not in k)


def test_the_cli_import_refuses_a_hostile_file_in_one_line(tmp_path, capsys):
    from core.cli.main import main

    path = tmp_path / "x.safetensors"
    path.write_bytes(hostile_uploads()["declares 3 billion elements"][0])
    assert main(["--workspace", str(tmp_path / "ws"), "import", str(path), "--model", "lenet5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: x.safetensors: this checkpoint does not fit lenet5"), err
