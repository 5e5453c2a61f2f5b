import pytest
import torch

from core.formats import decode, encode_best, encode_dense, encode_sparse, read_metadata


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
