"""The quantized encodings follow core.base.limits' rule (issue 9): declared sizes checked before
anything is unpacked, masks inflated within their bound, lengths compared; a hostile file is one
FormatError, fast, with no large allocation."""
from __future__ import annotations

import json
import time
import tracemalloc
import zlib

import pytest
import torch
from safetensors.torch import save as st_save

from core.base.limits import FormatError
from core.compress.quant.files import QUANT_CONFIG_KEY, model_from_bytes
from core.formats import encoding as formats
from core.formats.quant import QUANT_LAYOUT_KEY, decode_kbit, encode_kbit, flatten_state, unflatten_state

pytestmark = pytest.mark.filterwarnings("ignore")
ARCH = {"name": "lenet300", "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 28}, "edits": {}}


def kbit_file(bits=4, shape=(300, 784), sparse=False) -> tuple[dict, dict]:
    w = torch.randn(*shape)
    if sparse:
        w[:, : shape[1] * 9 // 10] = 0
    tensors, layout = {}, {}
    encode_kbit("fc1.weight", w, bits, True, tensors, layout)
    return tensors, layout


def test_kbit_round_trip_through_a_file_is_exact():
    for sparse in (False, True):
        tensors, layout = kbit_file(sparse=sparse)
        assert layout["kbit"]["fc1.weight"]["sparse"] is sparse
        data = formats.encode_dense(tensors, {QUANT_LAYOUT_KEY: json.dumps(layout)})
        flat, meta = formats.decode(data)
        a = decode_kbit(dict(tensors), layout)["fc1.weight"]
        b = decode_kbit(flat, json.loads(meta[QUANT_LAYOUT_KEY]))["fc1.weight"]
        assert torch.equal(a, b)


def _refused(tensors, layout, match, expected=None):
    tracemalloc.start()
    t = time.perf_counter()
    try:
        with pytest.raises(FormatError, match=match):
            decode_kbit(tensors, layout, expected=expected)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - t < 1.0
    assert peak < 50 * 2**20


def test_a_huge_declared_kbit_shape_is_refused_before_anything_is_unpacked():
    tensors, layout = kbit_file()
    layout["kbit"]["fc1.weight"]["shape"] = [300, 10**12]
    _refused(tensors, layout, "more than the limit")


def test_a_kbit_shape_that_is_not_the_models_is_refused():
    tensors, layout = kbit_file()
    layout["kbit"]["fc1.weight"]["shape"] = [300, 1000]
    layout["kbit"]["fc1.weight"]["count"] = 300_000
    _refused(tensors, layout, "not the model", expected={"fc1.weight": (300, 784)})


def test_packed_codes_of_the_wrong_length_are_refused():
    tensors, layout = kbit_file()
    tensors["fc1.weight.__packed__"] = tensors["fc1.weight.__packed__"][:-1]
    _refused(tensors, layout, "wrong length")


def test_a_count_that_disagrees_with_the_shape_is_refused():
    tensors, layout = kbit_file()
    layout["kbit"]["fc1.weight"]["count"] = 10
    _refused(tensors, layout, "codes for")


def test_scales_that_do_not_match_the_channels_are_refused():
    tensors, layout = kbit_file()
    tensors["fc1.weight.__qscale__"] = torch.ones(3)
    _refused(tensors, layout, "scales do not match")


def test_a_kbit_mask_bomb_is_stopped_at_its_bound():
    tensors, layout = kbit_file(sparse=True)
    tensors["fc1.weight.__qmask__"] = torch.frombuffer(bytearray(zlib.compress(b"\xff" * (1 << 30), 9)),
                                                      dtype=torch.uint8)
    _refused(tensors, layout, "decompresses to more")


def test_a_mask_whose_popcount_is_not_the_count_is_refused():
    tensors, layout = kbit_file(sparse=True)
    n = 300 * 784
    tensors["fc1.weight.__qmask__"] = torch.frombuffer(bytearray(zlib.compress(b"\xff" * ((n + 7) // 8))),
                                                      dtype=torch.uint8)
    _refused(tensors, layout, "mask with")


def int8_state():
    w = torch.quantize_per_channel(torch.randn(4, 3), torch.rand(4, dtype=torch.float64) + 0.1,
                                   torch.zeros(4, dtype=torch.int64), 0, torch.qint8)
    return {"fc._packed_params.dtype": torch.qint8, "fc._packed_params._packed_params": (w, torch.randn(4)),
            "fc.scale": torch.tensor(0.5), "fc.zero_point": torch.tensor(3)}


def test_int8_state_round_trips_exactly():
    state = int8_state()
    tensors, layout = flatten_state(state)
    back = unflatten_state(tensors, layout)
    w, b = back["fc._packed_params._packed_params"]
    w0, b0 = state["fc._packed_params._packed_params"]
    assert torch.equal(w.int_repr(), w0.int_repr()) and torch.equal(w.q_per_channel_scales(), w0.q_per_channel_scales())
    assert torch.equal(b, b0) and back["fc._packed_params.dtype"] == torch.qint8
    assert back["fc.scale"].item() == 0.5 and back["fc.zero_point"].item() == 3


@pytest.mark.parametrize("tamper, match", [
    (lambda t, lay: lay["q"]["fc._packed_params._packed_params.__item0__"].update(axis=5), "scales do not match"),
    (lambda t, lay: t.update({"fc._packed_params._packed_params.__item0__.__qscale__": torch.ones(9)}),
     "scales do not match"),
    (lambda t, lay: lay["q"]["fc._packed_params._packed_params.__item0__"].update(dtype="qint4"), "described wrongly"),
    (lambda t, lay: lay["scalars"].update({"fc.scale": "1e999"}), "bad scalar"),
    (lambda t, lay: lay["dtypes"].update({"fc._packed_params.dtype": "os.system"}), "unknown dtype"),
    (lambda t, lay: lay["tuples"].update({"fc._packed_params._packed_params": [True] * 100}), "bad tuple"),
    (lambda t, lay: lay.update(q={}), "no layout|missing"),
])
def test_a_tampered_int8_layout_is_one_clear_error(tamper, match):
    tensors, layout = flatten_state(int8_state())
    tamper(tensors, layout)
    with pytest.raises(FormatError, match=match):
        unflatten_state(tensors, layout)


def test_a_sparse_int8_values_tensor_must_match_its_mask():
    q = torch.zeros(1000, dtype=torch.int8)
    q[:50] = 7
    data = formats.encode_sparse({"w.__qint__": q})
    entries, meta = formats.read_header(data)
    assert entries["w.__qint__.__values__"][0] == "I8"
    assert torch.equal(formats.decode(data)[0]["w.__qint__"], q)
    bad = formats.encode_sparse({"w.__qint__": q})
    tensors = {k: v for k, v in __import__("safetensors.torch", fromlist=["load"]).load(bad).items()}
    tensors["w.__qint__.__values__"] = tensors["w.__qint__.__values__"][:-1]
    with pytest.raises(FormatError, match="values for a mask"):
        formats.decode(st_save(tensors, metadata=formats.read_metadata(bad)))


def test_a_file_with_a_bad_quant_config_is_refused_on_load():
    tensors, layout = kbit_file()
    data = formats.encode_dense(tensors, {QUANT_LAYOUT_KEY: json.dumps(layout),
                                          QUANT_CONFIG_KEY: json.dumps({"mode": "int3"})})
    with pytest.raises(FormatError, match="quantization config"):
        model_from_bytes(ARCH, data)


def test_an_uploaded_quantized_file_is_refused_with_what_to_do(tmp_path):
    from core.store.checkpoints import CheckpointError, import_checkpoint
    from core.store.workspace import Workspace

    tensors, layout = kbit_file()
    data = formats.encode_dense(tensors, {QUANT_LAYOUT_KEY: json.dumps(layout), "arch": json.dumps(ARCH),
                                          QUANT_CONFIG_KEY: json.dumps({"mode": "weight-only", "bits": 4})})
    with pytest.raises(CheckpointError, match="quantized workbench file.*float variant"):
        import_checkpoint(Workspace(tmp_path / "ws", seed_baselines=False), data, "q.safetensors")
