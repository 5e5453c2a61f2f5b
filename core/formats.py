"""Weight file formats. Every format is data, never code: safetensors files only.

- `dense`: a plain safetensors state_dict, loadable by anyone with `safetensors.torch.load_file`.
- `sparse`: for tensors with many zeros, a zlib-compressed bitmask of the non-zeros plus the packed
  non-zero values in their original dtype (still a safetensors file); decoding restores the exact
  dense tensors. It is what a pruned variant's `size_bytes` is measured on.

`encode_best` picks the smaller of the two, so a variant's file is its best honest download.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

FORMAT_KEY = "workbench_format"
MASK_SUFFIX = ".__mask__"
VALUES_SUFFIX = ".__values__"
# A tensor is stored sparse only when that saves bytes: bitmask (1 bit) + value per non-zero.
MIN_SPARSE_NUMEL = 64


def _clean(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage and non-contiguous tensors
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def encode_dense(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    meta = {FORMAT_KEY: "dense", **(metadata or {})}
    return st_save(_clean(state), metadata=meta)


def _sparse_worth_it(t: torch.Tensor) -> bool:
    if not t.is_floating_point() or t.numel() < MIN_SPARSE_NUMEL:
        return False
    nnz = int(torch.count_nonzero(t))
    dense = t.numel() * t.element_size()
    return t.numel() / 8 + nnz * t.element_size() < 0.9 * dense


def encode_sparse(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Bitmask + packed values for tensors where that is smaller; the rest stay dense."""
    out: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, t in _clean(state).items():
        if not _sparse_worth_it(t):
            out[name] = t
            continue
        flat = t.flatten()
        nz = flat != 0
        bits = np.packbits(nz.numpy().astype(np.uint8))
        packed = zlib.compress(bits.tobytes(), 9)
        out[name + MASK_SUFFIX] = torch.frombuffer(bytearray(packed), dtype=torch.uint8)
        out[name + VALUES_SUFFIX] = flat[nz].clone()
        shapes[name] = list(t.shape)
    meta = {FORMAT_KEY: "sparse", "sparse_shapes": json.dumps(shapes), **(metadata or {})}
    return st_save(out, metadata=meta)


def decode(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Bytes of any workbench format (or a plain safetensors file) -> (dense state_dict, metadata)."""
    meta = read_metadata(data)
    try:
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error type for a corrupt body
        raise ValueError(f"not a safetensors file: {e}") from e
    if meta.get(FORMAT_KEY) != "sparse":
        return tensors, meta
    shapes = json.loads(meta.get("sparse_shapes", "{}"))
    state = {k: v for k, v in tensors.items() if not k.endswith((MASK_SUFFIX, VALUES_SUFFIX))}
    for name, shape in shapes.items():
        values = tensors[name + VALUES_SUFFIX]
        numel = int(np.prod(shape)) if shape else 1
        bits = np.frombuffer(zlib.decompress(tensors[name + MASK_SUFFIX].numpy().tobytes()), dtype=np.uint8)
        mask = torch.from_numpy(np.unpackbits(bits)[:numel].astype(bool))
        dense = torch.zeros(numel, dtype=values.dtype)
        dense[mask] = values
        state[name] = dense.view(shape)
    return state, meta


def read_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's __metadata__ without decoding the tensors."""
    if len(data) < 8:
        raise ValueError("not a safetensors file: too short")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("not a safetensors file: bad header length")
    try:
        header = json.loads(data[8:8 + n])
    except ValueError as e:
        raise ValueError("not a safetensors file: header is not JSON") from e
    return dict(header.get("__metadata__") or {})


def encode_best(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> tuple[bytes, str]:
    """The smallest honest encoding of `state`: (bytes, "dense" | "sparse")."""
    dense = encode_dense(state, metadata)
    if not any(_sparse_worth_it(t.detach().cpu()) for t in state.values()):
        return dense, "dense"
    sparse = encode_sparse(state, metadata)
    return (sparse, "sparse") if len(sparse) < len(dense) else (dense, "dense")


def load_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return decode(Path(path).read_bytes())
