"""Deep Compression: trained weight sharing, relative indices, Huffman coding, the loader."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from core.base.limits import FormatError
from core.base.paths import REPO_ROOT
from core.compress.quant.files import model_from_bytes
from core.compress.sharing.weight_sharing import apply_shared_, shared_layers
from core.formats import encoding as formats
from core.formats.shared import (
    CODES,
    CODES_LEN,
    SHARED_LAYOUT_KEY,
    decode_shared,
    encode_shared,
    huffman_decode,
    huffman_encode,
    huffman_lengths,
    relative_slots,
)
from core.models.registry import create_model

ROOT = REPO_ROOT
ARCH = {"name": "lenet5-small", "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 28}, "edits": {}}


def pruned_small(amount: float = 0.9, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = create_model("lenet5-small")
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("weight"):   # trained weights are about normal: their codes are not uniform
                p.copy_(torch.randn_like(p) * 0.05 * (torch.rand_like(p) > amount))
    return m.eval()


def shared_file(model, coding="packed", bits_conv=8, bits_fc=5):
    layers = shared_layers(model, bits_conv, bits_fc)
    apply_shared_(layers)
    parts = {s.name: {"codebook": s.codebook, "codes": s.codes, "bits": s.bits} for s in layers}
    meta = {"name": "t", "dataset": "fashion-mnist", "arch": json.dumps(ARCH)}
    return encode_shared(model.state_dict(), parts, meta, coding=coding), layers


def test_codebook_sizes_and_zeros_stay_zero():
    model = pruned_small()
    zeros = {n: (p == 0) for n, p in model.named_parameters() if n.endswith("weight")}
    layers = shared_layers(model, 8, 5)
    apply_shared_(layers)
    for s in layers:
        assert s.codebook.shape == (2 ** (5 if isinstance(s.module, torch.nn.Linear) else 8),)
        assert s.codebook[0] == 0
        w = dict(model.named_parameters())[s.name]
        assert torch.equal(w == 0, zeros[s.name])                # zeros stay zero, non-zeros stay non-zero
        assert len(torch.unique(w[w != 0])) <= 2 ** s.bits - 1


def test_relative_indices_with_fillers_round_trip():
    positions = np.array([0, 3, 40, 41, 300])
    gaps, codes = relative_slots(positions, np.array([1, 2, 3, 4, 5], dtype=np.uint8), 3)
    assert gaps.max() <= 7 and (codes == 0).sum() > 0            # fillers bridge the long gaps
    assert np.array_equal(np.flatnonzero(np.isin(np.cumsum(gaps.astype(int) + 1) - 1, positions)
                                         & (codes > 0)).size, 5)
    rebuilt = (np.cumsum(gaps.astype(int) + 1) - 1)[codes > 0]
    assert np.array_equal(rebuilt, positions)


@pytest.mark.parametrize("coding", ["packed", "huffman"])
def test_file_reloads_bit_identically(coding):
    model = pruned_small()
    data, _ = shared_file(model, coding)
    back = model_from_bytes(ARCH, data)
    for (k, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), k


def test_huffman_file_is_smaller_and_identical():
    from core.tasks.share_weights import reencode
    model = pruned_small(0.8)
    packed, _ = shared_file(model, "packed")
    meta = formats.read_metadata(packed)
    huff = reencode(packed, {k: v for k, v in meta.items() if k != SHARED_LAYOUT_KEY})
    assert len(huff) < len(packed)
    a, b = model_from_bytes(ARCH, packed), model_from_bytes(ARCH, huff)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_huffman_round_trip_and_refusals():
    rng = np.random.default_rng(0)
    sym = rng.geometric(0.3, 5000).clip(max=31).astype(np.uint8)
    lengths = huffman_lengths(np.bincount(sym, minlength=32))
    stream = huffman_encode(sym, lengths)
    assert np.array_equal(huffman_decode(stream, lengths, len(sym), "t"), sym)
    with pytest.raises(FormatError, match="truncated|cannot fit"):
        huffman_decode(stream[: len(stream) // 2], lengths, len(sym), "t")
    with pytest.raises(FormatError, match="prefix code"):
        huffman_decode(stream, np.ones(32, dtype=np.uint8), len(sym), "t")
    with pytest.raises(FormatError, match="cannot fit"):
        huffman_decode(b"\x00", lengths, 10**9, "t")


def _tamper(data: bytes, fn) -> bytes:
    tensors, meta = formats.decode(data)
    tensors, meta = fn(dict(tensors), dict(meta))
    return formats.encode_dense(tensors, meta)


def _edit_layout(key, value):
    def fn(tensors, meta):
        layout = json.loads(meta[SHARED_LAYOUT_KEY])
        layout["layers"]["fc1.weight"][key] = value
        return tensors, {**meta, SHARED_LAYOUT_KEY: json.dumps(layout)}
    return fn


@pytest.mark.parametrize("coding", ["packed", "huffman"])
def test_decoder_refuses_hostile_files(coding):
    model = pruned_small()
    data, _ = shared_file(model, coding)
    hostile = [
        _tamper(data, _edit_layout("shape", [10**6, 10**6])),           # over the element cap
        _tamper(data, _edit_layout("shape", [128, 257])),               # not the model's shape
        _tamper(data, _edit_layout("slots", 10**9)),                    # more slots than elements
        _tamper(data, _edit_layout("bits", 12)),
        _tamper(data, lambda t, m: ({**t, "fc1.weight" + CODES: t["fc1.weight" + CODES][:-3]}, m)),  # truncated
        _tamper(data, lambda t, m: ({k: v for k, v in t.items() if not k.startswith("fc1.weight.__codebook")}, m)),
    ]
    if coding == "huffman":
        hostile.append(_tamper(data, lambda t, m: ({**t, "fc1.weight" + CODES_LEN: torch.ones(32, dtype=torch.uint8)},
                                                   m)))
    for bad in hostile:
        with pytest.raises(FormatError):
            model_from_bytes(ARCH, bad)
    with pytest.raises(FormatError):
        formats.decode(data[: len(data) - 100])                         # a truncated file


def test_decoder_checks_before_allocating():
    tensors, meta = formats.decode(shared_file(pruned_small())[0])
    layout = json.loads(meta[SHARED_LAYOUT_KEY])
    layout["layers"]["fc1.weight"]["shape"] = [2**40]
    with pytest.raises(FormatError, match="limit"):
        decode_shared(tensors, {SHARED_LAYOUT_KEY: json.dumps(layout)})


def test_steps_and_loader_in_a_fresh_process(workspace, tiny_data, tmp_path):
    from core.store.variants import base_arch, measure_and_store
    from core.tasks import TaskContext, run_task
    from core.tasks.share_weights import EntropyCodeJobConfig, ShareWeightsJobConfig

    model = pruned_small(0.8)
    parent = measure_and_store(workspace, model, data=tiny_data, name="small", arch=base_arch("lenet5-small", tiny_data),
                               recipe=[{"step": "test"}], device="cpu")
    sid = run_task("share_weights", ShareWeightsJobConfig(variant=parent.id, bits_conv=6, bits_fc=4, epochs=1,
                                                          subset=300, device="cpu"), TaskContext(workspace)).variant_id
    shared = workspace.get_variant(sid)
    assert shared.recipe[-1]["step"] == "share_weights" and shared.kind["simulated"] and shared.kind["masked"]
    hid = run_task("entropy_code", EntropyCodeJobConfig(variant=sid, device="cpu"), TaskContext(workspace)).variant_id
    huff = workspace.get_variant(hid)
    assert huff.metrics["size_bytes"] < shared.metrics["size_bytes"]
    assert huff.metrics["accuracy"] == shared.metrics["accuracy"]
    a, b = workspace.load_model(shared), workspace.load_model(huff)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    path = workspace.weights_path(huff)
    x, _ = next(tiny_data.test.batches(1000))
    from core.data.datasets import cached_dataset
    x, _ = next(cached_dataset("fashion-mnist").test.batches(1000))
    with torch.no_grad():
        want = b(x[:50]).argmax(1).tolist()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "core.io.deep_compression_loader", str(path), "--predict", "50"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["predictions"] == want
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:-50])
    out = subprocess.run([sys.executable, "-m", "core.io.deep_compression_loader", str(bad)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error:")


def test_cli_share_weights_then_entropy_code(workspace, tiny_data, capsys):
    from core.cli.main import main
    from core.store.variants import base_arch, measure_and_store

    parent = measure_and_store(workspace, pruned_small(0.8), data=tiny_data, name="small pruned",
                               arch=base_arch("lenet5-small", tiny_data), recipe=[{"step": "test"}], device="cpu")
    ws = ["--workspace", str(workspace.root)]
    # a dense-file parent cannot be entropy-coded: one line, exit 2, nothing stored
    assert main([*ws, "entropy-code", parent.id, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "run share_weights first" in err and len(err.splitlines()) == 1
    assert main([*ws, "share-weights", parent.id, "--bits-conv", "9"]) == 2
    assert "expected a whole number from 1 to 8" in capsys.readouterr().err
    assert workspace.children(parent.id) == []

    assert main([*ws, "--json", "share-weights", parent.id, "--bits-fc", "4", "--epochs", "0", "--subset", "300",
                 "--device", "cpu"]) == 0
    shared = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    v = workspace.get_variant(shared["id"])
    assert v.parent_id == parent.id and v.recipe[-1]["bits_fc"] == 4 and v.format == "shared+packed"
    assert main([*ws, "entropy-code", v.id, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "compression" in out and "against small pruned's float32 file" in out
    huff = workspace.children(v.id)[0]
    assert huff.format == "shared+huffman" and huff.metrics["size_bytes"] < v.metrics["size_bytes"]
    # every export format of a weight-shared file: the plain safetensors holds the decoded weights
    from core.formats.encoding import load_file
    from core.io.export.pipeline import export_many

    results = export_many(workspace, huff, ["safetensors", "compact", "onnx"], n_images=64)
    assert {f: r.status for f, r in results.items()} == {"safetensors": "ok", "compact": "ok", "onnx": "ok"}, \
        {f: r.message for f, r in results.items()}
    plain = load_file(results["safetensors"].path)[0]
    decoded = workspace.load_model(huff).state_dict()
    assert set(plain) == set(decoded) and all(torch.equal(plain[k], decoded[k]) for k in plain)
    assert results["compact"].size_bytes == huff.metrics["size_bytes"]
