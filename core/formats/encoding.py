"""Weight file formats. Every format is data, never code: safetensors files only.

- `dense`: a plain safetensors state_dict, loadable by anyone with `safetensors.torch.load_file`.
- `sparse`: for tensors with many zeros, a zlib-compressed bitmask of the non-zeros plus the packed
  non-zero values in their original dtype (still a safetensors file); decoding restores the exact
  dense tensors. It is what a pruned variant's `size_bytes` is measured on.

`encode_best` picks the smaller of the two, so a variant's file is its best honest download.

Decoding follows the rule in `core.base.limits` (every encoding added later follows it too): the
header, every declared shape and every length are validated, and compared with the
architecture's shapes when the caller passes `expected`, before any tensor is allocated or any
mask decompressed; masks are inflated with `bounded_inflate`. `declared_shapes` gives the shapes
a file would decode to without decoding it, so a caller can check them against a model first.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from core.base.limits import MAX_DECODED_NUMEL, MAX_HEADER_BYTES, FormatError, bounded_inflate, check_declared

__all__ = ["FormatError", "bounded_inflate", "check_declared", "decode", "declared_shapes", "encode_best",
           "encode_dense", "encode_sparse", "load_file", "read_header", "read_metadata"]

FORMAT_KEY = "workbench_format"
MASK_SUFFIX = ".__mask__"
VALUES_SUFFIX = ".__values__"
# A tensor is stored sparse only when that saves bytes: bitmask (1 bit) + value per non-zero.
MIN_SPARSE_NUMEL = 64
# for comparing declared shapes with a model's: nothing is allocated from them, they are only compared
UNCAPPED = 2**63 - 1
# the safetensors dtypes torch reads, with their torch types
DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I64": torch.int64, "I32": torch.int32,
          "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool}


def _clean(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage and non-contiguous tensors
    return {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}


def encode_dense(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    meta = {FORMAT_KEY: "dense", **(metadata or {})}
    return st_save(_clean(state), metadata=meta)


def _sparse_worth_it(t: torch.Tensor) -> bool:
    # floats, and int8 values of quantized weights (their zero point is 0: pruned zeros stay 0)
    if not (t.is_floating_point() or t.dtype == torch.int8) or t.numel() < MIN_SPARSE_NUMEL:
        return False
    nnz = int(torch.count_nonzero(t))
    dense = t.numel() * t.element_size()
    return t.numel() / 8 + nnz * t.element_size() < 0.9 * dense


def encode_sparse(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """Bitmask + packed values for tensors where that is smaller; the rest stay dense."""
    import zlib

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


# ---------------------------------------------------------------- reading, within bounds

def _header_json(data: bytes) -> dict:
    if len(data) < 8:
        raise FormatError("not a safetensors file: too short")
    n = int.from_bytes(data[:8], "little")
    if n < 2 or 8 + n > len(data):
        raise FormatError("not a safetensors file: bad header length")
    if n > MAX_HEADER_BYTES:
        raise FormatError(f"not a safetensors file: a {n:,}-byte header (the limit is {MAX_HEADER_BYTES:,})")
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        raise FormatError("not a safetensors file: header is not JSON") from None
    if not isinstance(header, dict):
        raise FormatError("not a safetensors file: header is not a JSON object")
    return header


def _metadata(header: dict) -> dict[str, str]:
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise FormatError("not a safetensors file: __metadata__ is not a map of strings")
    return dict(meta)


def read_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's __metadata__ without decoding the tensors (`data` may be just
    the file's first bytes, as long as they hold the whole header)."""
    return _metadata(_header_json(data))


def read_header(data: bytes, max_numel: int = MAX_DECODED_NUMEL) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict]:
    """The whole file's header, validated against the file's size: ({name: (dtype, shape)}, metadata).

    Every entry must have a known dtype, a bounded shape and offsets inside the body whose length
    is exactly what dtype and shape need; the declared bytes cannot add up to more than the body."""
    header = _header_json(data)
    meta = _metadata(header)
    body = len(data) - 8 - int.from_bytes(data[:8], "little")
    entries: dict[str, tuple[str, tuple[int, ...]]] = {}
    total_bytes = total_numel = 0
    for name, e in header.items():
        if name == "__metadata__":
            continue
        dtype = e.get("dtype") if isinstance(e, dict) else None
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise FormatError(f"not a readable safetensors file: {name[:100]} has an unsupported dtype {dtype!r:.40}")
        numel = check_declared(e.get("shape"), max_numel, what=name[:100])
        offsets = e.get("data_offsets")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= body):
            raise FormatError(f"not a readable safetensors file: {name[:100]} has data offsets outside the file")
        need = numel * DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != need:
            raise FormatError(f"not a readable safetensors file: {name[:100]} declares {need:,} bytes "
                              f"but holds {offsets[1] - offsets[0]:,}")
        total_bytes += need
        total_numel += numel
        entries[name] = (dtype, tuple(e["shape"]))
    if total_bytes > body:
        raise FormatError(f"not a readable safetensors file: declares {total_bytes:,} bytes of tensors in a "
                          f"{body:,}-byte body")
    if total_numel > max_numel:
        raise FormatError(f"declares {total_numel:,} elements in all, more than the limit of {max_numel:,}")
    return entries, meta


def _sparse_layout(entries: dict, meta: dict, max_numel: int) -> dict[str, tuple[int, ...]]:
    """The declared dense shape of every sparse-stored tensor, checked against its mask and values
    entries (no data read yet)."""
    if meta.get(FORMAT_KEY) != "sparse":
        return {}
    try:
        shapes = json.loads(meta.get("sparse_shapes", "{}"))
    except (ValueError, RecursionError):
        raise FormatError("sparse_shapes in the header is not JSON") from None
    if not isinstance(shapes, dict):
        raise FormatError("sparse_shapes in the header is not a map of tensor names to shapes")
    layout = {}
    for name, shape in shapes.items():
        numel = check_declared(shape, max_numel, what=name[:100])
        mask, values = entries.get(name + MASK_SUFFIX), entries.get(name + VALUES_SUFFIX)
        if mask is None or values is None:
            raise FormatError(f"{name[:100]}: its mask or values are missing from the file")
        if name in entries:
            raise FormatError(f"{name[:100]}: stored both dense and sparse")
        if mask[0] != "U8" or len(mask[1]) != 1:
            raise FormatError(f"{name[:100]}: its mask is not a 1-D uint8 tensor")
        if not (DTYPES[values[0]].is_floating_point or values[0] == "I8") or len(values[1]) != 1:
            raise FormatError(f"{name[:100]}: its values must be a 1-D float or int8 tensor (found {values[0]})")
        if values[1][0] > numel:
            raise FormatError(f"{name[:100]}: {values[1][0]:,} values for {numel:,} elements")
        layout[name] = tuple(shape)
    orphans = [k for k in entries if k.endswith((MASK_SUFFIX, VALUES_SUFFIX))
               and k.removesuffix(MASK_SUFFIX).removesuffix(VALUES_SUFFIX) not in layout]
    if orphans:
        raise FormatError(f"{orphans[0][:100]}: a mask or values tensor with no declared shape")
    return layout


def _shapes(entries: dict, meta: dict, max_numel: int) -> tuple[dict, dict]:
    """({name: shape} of the decoded state_dict, {name: shape} of its sparse-stored tensors)."""
    sparse = _sparse_layout(entries, meta, max_numel)
    shapes = {k: shape for k, (_, shape) in entries.items() if not k.endswith((MASK_SUFFIX, VALUES_SUFFIX))}
    shapes.update(sparse)
    total = sum(math.prod(s) for s in shapes.values())
    if total > max_numel:
        raise FormatError(f"declares {total:,} elements in all, more than the limit of {max_numel:,}")
    return shapes, sparse


def declared_shapes(data: bytes, max_numel: int = MAX_DECODED_NUMEL) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the state_dict this file decodes to, validated, without decoding anything."""
    return _shapes(*read_header(data, max_numel), max_numel)[0]


def _check_expected(shapes: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]]) -> None:
    unexpected = [k for k in shapes if k not in expected]
    wrong = [f"{k} (file {_fmt(shapes[k])}, model {_fmt(expected[k])})"
             for k in shapes if k in expected and tuple(shapes[k]) != tuple(expected[k])]
    problems = [f"{len(items)} tensor(s) {label}: {', '.join(items[:4])}" + (" ..." if len(items) > 4 else "")
                for label, items in (("unexpected", unexpected), ("with the wrong shape", wrong)) if items]
    if problems:
        raise FormatError("; ".join(problems)[:600])


def _fmt(shape) -> str:
    return "x".join(map(str, shape)) or "scalar"


def decode(data: bytes, *, expected: dict[str, tuple[int, ...]] | None = None,
           max_numel: int = MAX_DECODED_NUMEL) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Bytes of any workbench format (or a plain safetensors file) -> (dense state_dict, metadata).

    With `expected` ({name: shape}, e.g. a freshly built model's state_dict shapes), a file that
    declares a tensor the model lacks or a different shape is refused before anything is built."""
    # with `expected`, every declared shape must be the model's own: a tighter bound than the cap,
    # and a clearer refusal ("wrong shape") for a shape that is merely huge
    cap = max_numel if expected is None else UNCAPPED
    entries, meta = read_header(data, cap)
    shapes, sparse = _shapes(entries, meta, cap)
    if expected is not None:
        _check_expected(shapes, {k: tuple(v) for k, v in expected.items()})
    try:  # offsets were checked above: this allocates no more than the file holds
        tensors = st_load(data)
    except Exception as e:  # safetensors raises its own error type for a corrupt body
        raise FormatError(f"not a readable safetensors file: {e}") from None
    state = {k: v for k, v in tensors.items() if not k.endswith((MASK_SUFFIX, VALUES_SUFFIX))}
    for name, shape in sparse.items():
        state[name] = _unpack(name, shape, tensors.pop(name + MASK_SUFFIX), tensors.pop(name + VALUES_SUFFIX))
    return state, meta


def _unpack(name: str, shape: tuple[int, ...], mask_z: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """One sparse tensor: the inflated mask must be exactly ceil(numel / 8) bytes and hold exactly
    one set bit per packed value; only then is the dense tensor (numel elements) allocated."""
    numel = math.prod(shape)
    bits = bounded_inflate(mask_z.numpy().tobytes(), (numel + 7) // 8, what=f"{name[:100]} mask")
    mask = np.unpackbits(np.frombuffer(bits, dtype=np.uint8), count=numel).view(bool)
    nnz = int(np.count_nonzero(mask))
    if nnz != values.numel():
        raise FormatError(f"{name[:100]}: {values.numel():,} values for a mask with {nnz:,} non-zeros")
    dense = torch.zeros(numel, dtype=values.dtype)
    dense[torch.from_numpy(mask)] = values
    return dense.view(shape)


def encode_best(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> tuple[bytes, str]:
    """The smallest honest encoding of `state`: (bytes, "dense" | "sparse")."""
    dense = encode_dense(state, metadata)
    if not any(_sparse_worth_it(t.detach().cpu()) for t in state.values()):
        return dense, "dense"
    sparse = encode_sparse(state, metadata)
    return (sparse, "sparse") if len(sparse) < len(dense) else (dense, "dense")


def load_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return decode(Path(path).read_bytes())
