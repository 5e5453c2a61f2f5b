import pytest
import torch

from core.formats.encoding import decode, encode_best, encode_dense, encode_sparse, read_metadata


def _sparse_state(sparsity=0.9):
    torch.manual_seed(0)
    w = torch.randn(200, 300)
    w[torch.rand_like(w) < sparsity] = 0
    return {"fc.weight": w, "fc.bias": torch.randn(200), "bn.num_batches_tracked": torch.tensor(3)}


def test_sparse_round_trip_is_exact_and_small():
    state = _sparse_state()
    dense = encode_dense(state)
    sparse = encode_sparse(state, {"name": "x"})
    restored, meta = decode(sparse)
    assert meta["name"] == "x" and meta["workbench_format"] == "sparse"
    for k, v in state.items():
        assert torch.equal(restored[k], v) and restored[k].dtype == v.dtype
    assert len(sparse) < 0.2 * len(dense)


def test_best_picks_dense_for_dense_weights():
    state = {"w": torch.randn(100, 100)}
    data, fmt = encode_best(state)
    assert fmt == "dense"
    assert torch.equal(decode(data)[0]["w"], state["w"])
    data, fmt = encode_best(_sparse_state())
    assert fmt == "sparse"


def test_garbage_is_rejected_with_a_clear_error():
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_metadata(b"\x00\x01")
    with pytest.raises(ValueError, match="not a safetensors file"):
        decode(b"hello world, definitely not tensors")


# ---------------------------------------------------------------- bounds on untrusted bytes

import json  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
import zlib  # noqa: E402

import numpy as np  # noqa: E402
from hostile_helpers import MB, zeros_zlib  # noqa: E402
from safetensors.torch import save as st_save  # noqa: E402


def sparse_file(shapes: dict, masks: dict[str, bytes], values: dict[str, torch.Tensor],
                dense: dict[str, torch.Tensor] | None = None) -> bytes:
    """A file in the workbench's sparse format with whatever the test declares."""
    out = dict(dense or {})
    out.update({k + ".__mask__": torch.frombuffer(bytearray(m), dtype=torch.uint8) for k, m in masks.items()})
    out.update({k + ".__values__": v for k, v in values.items()})
    return st_save(out, metadata={"workbench_format": "sparse", "sparse_shapes": json.dumps(shapes)})


def peak_python_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    except ValueError:
        pass
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def test_zeros_zlib_is_a_real_stream():
    assert zlib.decompress(zeros_zlib(3 * MB + 5)) == bytes(3 * MB + 5)


def test_bounded_inflate_returns_exactly_what_the_shape_needs():
    from core.formats.encoding import FormatError, bounded_inflate

    data = bytes(range(256)) * 1000
    assert bounded_inflate(zlib.compress(data), len(data)) == data
    with pytest.raises(FormatError, match="more than the 255,999 bytes"):
        bounded_inflate(zlib.compress(data), len(data) - 1)
    with pytest.raises(FormatError, match="decompresses to 256,000 bytes; its shape needs 256,001"):
        bounded_inflate(zlib.compress(data), len(data) + 1)
    assert bounded_inflate(zlib.compress(data), len(data) + 1, exact=False) == data
    with pytest.raises(FormatError, match="truncated"):
        bounded_inflate(zlib.compress(data)[:-10], len(data))
    with pytest.raises(FormatError, match="stray bytes"):
        bounded_inflate(zlib.compress(data) + b"junk", len(data))
    with pytest.raises(FormatError, match="not valid zlib data"):
        bounded_inflate(b"not zlib at all", 100)
    assert bounded_inflate(zlib.compress(b""), 0) == b""


def test_bounded_inflate_stops_a_gigabyte_stream_early():
    from core.formats.encoding import FormatError, bounded_inflate

    bomb = zeros_zlib(1 << 30)   # 1 GiB of zeros in about 1 MB
    assert len(bomb) < 1.1 * MB
    t = time.perf_counter()
    peak = peak_python_bytes(lambda: bounded_inflate(bomb, 50_000))
    assert time.perf_counter() - t < 0.5 and peak < 5 * MB
    with pytest.raises(FormatError, match="more than the 50,000 bytes its shape allows"):
        bounded_inflate(bomb, 50_000)


@pytest.mark.parametrize("shape, match", [
    ([3, -1], "not a list of non-negative integers"),
    ([2.0, 3], "not a list of non-negative integers"),
    ([True, 3], "not a list of non-negative integers"),
    ([[2], 3], "not a list of non-negative integers"),
    ("12", "not a list of sizes"),
    (12, "not a list of sizes"),
    ([1] * 9, "9 dimensions"),
    ([3000, 1000, 1000], "declares 3,000,000,000 elements, more than the limit"),
    ([2**40, 2**40, 2**40, 2**40], "more than the limit"),   # would overflow an int64 product
])
def test_check_declared_refuses_malformed_and_huge_shapes(shape, match):
    from core.formats.encoding import FormatError, check_declared

    with pytest.raises(FormatError, match=match):
        check_declared(shape, 1_000_000, what="w")
    assert check_declared([0, 5]) == 0 and check_declared([]) == 1 and check_declared((4, 5)) == 20


def raw_safetensors(header: dict, body: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + body


@pytest.mark.parametrize("data, match", [
    (raw_safetensors({"w": {"dtype": "F32", "shape": [3_000_000_000], "data_offsets": [0, 12_000_000_000]}}),
     "more than the limit|offsets outside the file"),
    (raw_safetensors({"w": {"dtype": "F32", "shape": [100_000], "data_offsets": [0, 400_000]}}, bytes(400)),
     "offsets outside the file"),
    (raw_safetensors({"w": {"dtype": "F32", "shape": [100], "data_offsets": [0, 40]}}, bytes(400)),
     "declares 400 bytes but holds 40"),
    (raw_safetensors({"w": {"dtype": "F32", "shape": [10], "data_offsets": [0, 40]},
                      "v": {"dtype": "F32", "shape": [10], "data_offsets": [0, 40]}}, bytes(40)),
     "declares 80 bytes of tensors in a 40-byte body"),
    (raw_safetensors({"w": {"dtype": "X99", "shape": [1], "data_offsets": [0, 4]}}, bytes(4)), "unsupported dtype"),
    (raw_safetensors({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, bytes(4)), "unsupported dtype"),
    (raw_safetensors({"w": {"dtype": "F32", "shape": "1", "data_offsets": [0, 4]}}, bytes(4)), "not a list of sizes"),
    (raw_safetensors({"__metadata__": {"a": 1}}), "__metadata__ is not a map of strings"),
    ((2**40).to_bytes(8, "little") + b"{}", "bad header length"),
    (len(b"[" * 100_000).to_bytes(8, "little") + b"[" * 100_000, "header is not JSON"),
    (len(b"[1]").to_bytes(8, "little") + b"[1]", "not a JSON object"),
])
def test_plain_safetensors_headers_are_checked_against_the_file_before_loading(data, match):
    from core.formats.encoding import FormatError

    with pytest.raises(FormatError, match=match):
        decode(data)


def test_a_header_bigger_than_the_limit_is_refused(monkeypatch):
    from core.formats import encoding as formats

    monkeypatch.setattr(formats, "MAX_HEADER_BYTES", 1000)
    with pytest.raises(formats.FormatError, match="header .*the limit is 1,000"):
        decode(raw_safetensors({"__metadata__": {"x": "y" * 2000}}))


def _real_sparse(shape=(500, 800), keep=0.1, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g)
    w[torch.rand(*shape, generator=g) > keep] = 0
    flat = w.flatten()
    mask = zlib.compress(np.packbits((flat != 0).numpy()).tobytes())
    return w, mask, flat[flat != 0].clone()


@pytest.mark.parametrize("delta", [1, -1, None])
def test_values_must_match_the_masks_popcount(delta):
    from core.formats.encoding import FormatError

    w, mask, values = _real_sparse()
    nnz = values.numel()
    bad = torch.randn(nnz + delta) if delta else values[:1].clone()  # None: one value broadcast to every non-zero
    with pytest.raises(FormatError, match=f"fc.weight: {bad.numel():,} values for a mask with {nnz:,} non-zeros"):
        decode(sparse_file({"fc.weight": list(w.shape)}, {"fc.weight": mask}, {"fc.weight": bad}))
    state, _ = decode(sparse_file({"fc.weight": list(w.shape)}, {"fc.weight": mask}, {"fc.weight": values}))
    assert torch.equal(state["fc.weight"], w)


@pytest.mark.parametrize("extra, match", [
    (b"\x00", "more than the 50,000 bytes"),          # a mask one byte longer than the shape needs
    (None, "decompresses to 49,999 bytes; its shape needs 50,000"),   # one byte short
])
def test_a_mask_of_the_wrong_length_is_refused(extra, match):
    from core.formats.encoding import FormatError

    w, _, values = _real_sparse()
    bits = np.packbits((w.flatten() != 0).numpy()).tobytes()
    bits = bits + extra if extra else bits[:-1]
    with pytest.raises(FormatError, match=match):
        decode(sparse_file({"fc.weight": [500, 800]}, {"fc.weight": zlib.compress(bits)}, {"fc.weight": values}))


def test_a_mask_that_inflates_to_a_gigabyte_is_refused_without_inflating_it():
    from core.formats.encoding import FormatError

    data = sparse_file({"fc.weight": [500, 800]}, {"fc.weight": zeros_zlib(1 << 30)}, {"fc.weight": torch.zeros(0)})
    t = time.perf_counter()
    peak = peak_python_bytes(lambda: decode(data))
    assert time.perf_counter() - t < 1 and peak < 20 * MB, (time.perf_counter() - t, peak)
    with pytest.raises(FormatError, match="fc.weight mask: decompresses to more than the 50,000 bytes"):
        decode(data)


def test_a_declared_three_billion_element_tensor_is_refused_before_decompression():
    from core.formats.encoding import FormatError

    data = sparse_file({"fc.weight": [3000, 1000, 1000]}, {"fc.weight": zeros_zlib(375_000_000)},
                       {"fc.weight": torch.zeros(0)})
    assert len(data) < 400_000
    t = time.perf_counter()
    peak = peak_python_bytes(lambda: decode(data))
    assert time.perf_counter() - t < 1 and peak < 20 * MB, (time.perf_counter() - t, peak)
    with pytest.raises(FormatError, match="fc.weight: declares 3,000,000,000 elements, more than the limit"):
        decode(data)
    with pytest.raises(FormatError, match=r"with the wrong shape: fc.weight \(file 3000x1000x1000, model 500x800\)"):
        decode(data, expected={"fc.weight": (500, 800)}, max_numel=10**10)


def test_expected_shapes_are_checked_before_decoding():
    from core.formats.encoding import FormatError, declared_shapes

    w, mask, values = _real_sparse()
    data = sparse_file({"fc.weight": [500, 800]}, {"fc.weight": mask}, {"fc.weight": values}, {"fc.bias": torch.ones(3)})
    assert declared_shapes(data) == {"fc.weight": (500, 800), "fc.bias": (3,)}
    with pytest.raises(FormatError, match=r"1 tensor\(s\) unexpected: fc.bias"):
        decode(data, expected={"fc.weight": (500, 800)})
    with pytest.raises(FormatError, match=r"fc.weight \(file 500x800, model 500x801\)"):
        decode(data, expected={"fc.weight": (500, 801), "fc.bias": (3,)})
    assert torch.equal(decode(data, expected={"fc.weight": (500, 800), "fc.bias": (3,)})[0]["fc.weight"], w)


@pytest.mark.parametrize("case, match", [
    ("int values", "values must be a 1-D float or int8 tensor"),
    ("no mask", "its mask or values are missing"),
    ("orphan", "a mask or values tensor with no declared shape"),
    ("dense too", "stored both dense and sparse"),
    ("2-D mask", "its mask is not a 1-D uint8 tensor"),
    ("too many values", "400,001 values for 400,000 elements"),
    ("shapes not JSON", "sparse_shapes in the header is not JSON"),
    ("shapes a list", "not a map of tensor names to shapes"),
])
def test_inconsistent_sparse_files_are_refused(case, match):
    from core.formats.encoding import FormatError

    w, mask, values = _real_sparse()
    shapes, masks, vals, dense = {"fc.weight": [500, 800]}, {"fc.weight": mask}, {"fc.weight": values}, {}
    if case == "int values":
        vals = {"fc.weight": values.long()}
    elif case == "no mask":
        masks = {}
    elif case == "orphan":
        masks["other"] = mask
    elif case == "dense too":
        dense = {"fc.weight": w}
    elif case == "too many values":
        vals = {"fc.weight": torch.zeros(400_001)}
    data = sparse_file(shapes, masks, vals, dense)
    if case == "2-D mask":
        out = {"fc.weight.__mask__": torch.zeros(2, 2, dtype=torch.uint8), "fc.weight.__values__": values}
        data = st_save(out, metadata={"workbench_format": "sparse", "sparse_shapes": json.dumps(shapes)})
    elif case.startswith("shapes"):
        bad = "{not json" if case == "shapes not JSON" else "[1, 2]"
        data = st_save({"x": torch.zeros(1)}, metadata={"workbench_format": "sparse", "sparse_shapes": bad})
    with pytest.raises(FormatError, match=match):
        decode(data)


def test_every_stored_encoding_decodes_within_its_declared_shapes():
    """The rule for every encoding (dense, sparse, and any added later): a round trip is exact and
    `declared_shapes` (read from the header alone) is what decoding gives."""
    from core.formats.encoding import declared_shapes

    state = _sparse_state()
    for data in (encode_dense(state), encode_sparse(state)):
        shapes = declared_shapes(data)
        restored, _ = decode(data, expected=shapes)
        assert {k: tuple(v.shape) for k, v in restored.items()} == shapes == {k: tuple(v.shape) for k, v in state.items()}
        assert math.prod(shapes["fc.weight"]) == 60_000
