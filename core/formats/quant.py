"""Quantized weights as data: integer tensors, scales and zero points in a safetensors file.

Two encodings, both described by one JSON entry of the file's metadata (`QUANT_LAYOUT_KEY`), and
both decoded under the rule of `core.base.limits` (declared shapes checked, and compared with the
model's own shapes when the caller has them, before anything is unpacked or allocated):

- **int8 modules** (static, dynamic, QAT): a quantized module's state_dict holds quantized tensors,
  tuples (packed linear params) and dtypes, none of which safetensors can store. `flatten_state`
  turns each quantized tensor into its int8 values (`.__qint__`), per-channel scales (float64, so
  the reload is bit-exact) and zero points, tuples into numbered entries, dtypes into the layout;
  `unflatten_state` rebuilds exactly what `load_state_dict` of the same module structure expects.
  int8 values of a pruned model are mostly zero: `formats.encode_best` stores them sparse.
- **k-bit weights** (weight-only, 2..8 bits): per output channel, symmetric or affine; the codes
  are bit-packed (`.__packed__`, k bits each), with float32 scales and (affine) zero points. For a
  pruned weight only the non-zero codes are packed, after a bitmask (`.__qmask__`).
"""
from __future__ import annotations

import json
import math
import zlib

import numpy as np
import torch

from core.base.limits import MAX_DECODED_NUMEL, FormatError, bounded_inflate, check_declared

QUANT_LAYOUT_KEY = "workbench_quant_layout"
QINT, QSCALE, QZP = ".__qint__", ".__qscale__", ".__qzp__"
PACKED, QMASK = ".__packed__", ".__qmask__"
QDTYPES = {"qint8": torch.qint8, "quint8": torch.quint8, "qint32": torch.qint32}
QINT_REPR = {"qint8": torch.int8, "quint8": torch.uint8, "qint32": torch.int32}
PLAIN_DTYPES = {"torch.qint8": torch.qint8, "torch.quint8": torch.quint8, "torch.float16": torch.float16,
                "torch.float32": torch.float32, "torch.bfloat16": torch.bfloat16}


def _item(name: str, i: int) -> str:
    return f"{name}.__item{i}__"


# ---------------------------------------------------------------- int8 module state

def flatten_state(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """A quantized module's state_dict -> (plain tensors, layout), both storable in safetensors."""
    tensors: dict[str, torch.Tensor] = {}
    layout: dict = {"q": {}, "tuples": {}, "dtypes": {}, "scalars": {}}

    def put(name: str, t: torch.Tensor) -> None:
        if not t.is_quantized and t.ndim == 0 and t.dtype in (torch.float32, torch.int64):
            # activation scales (float32) and zero points (int64): JSON numbers in the layout, not a
            # header entry each (a float32 is exact as a JSON double)
            layout["scalars"][name] = t.item()
            return
        if not t.is_quantized:
            tensors[name] = t.detach()
            return
        tensors[name + QINT] = t.int_repr()
        entry: dict = {"dtype": str(t.dtype).removeprefix("torch.")}
        if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric,
                           torch.per_channel_affine_float_qparams):
            scales, zps = t.q_per_channel_scales(), t.q_per_channel_zero_points()
            # observers compute float32 scales: stored as float32 when that is exact (it is bit-exact either way)
            exact32 = bool((scales.float().double() == scales).all())
            tensors[name + QSCALE] = scales.float() if exact32 else scales.double()
            if bool((zps != 0).any()):
                tensors[name + QZP] = zps.to(torch.int32)
            entry |= {"scheme": "per_channel", "axis": int(t.q_per_channel_axis())}
        else:
            entry |= {"scheme": "per_tensor", "scale": float(t.q_scale()), "zero_point": int(t.q_zero_point())}
        layout["q"][name] = entry

    for name, value in state.items():
        if isinstance(value, torch.dtype):
            layout["dtypes"][name] = str(value)
        elif isinstance(value, tuple):
            layout["tuples"][name] = [v is not None for v in value]
            for i, v in enumerate(value):
                if v is not None:
                    put(_item(name, i), v)
        elif isinstance(value, torch.Tensor):
            put(name, value)
        else:
            raise TypeError(f"{name}: cannot store a {type(value).__name__} in a weights file")
    return tensors, layout


def _restore_q(name: str, tensors: dict[str, torch.Tensor], entry: dict) -> torch.Tensor:
    ints = tensors.pop(name + QINT, None)
    if ints is None or not isinstance(entry, dict) or entry.get("dtype") not in QDTYPES:
        raise FormatError(f"{name[:100]}: quantized tensor missing or described wrongly")
    if ints.dtype != QINT_REPR[entry["dtype"]]:
        raise FormatError(f"{name[:100]}: {ints.dtype} values for a {entry['dtype']} tensor")
    if entry.get("scheme") == "per_channel":
        axis = entry.get("axis")
        scales = tensors.pop(name + QSCALE, None)
        zps = tensors.pop(name + QZP, None) if name + QZP in tensors else (
            None if scales is None or type(axis) is not int or not 0 <= axis < ints.ndim
            else torch.zeros(ints.shape[axis], dtype=torch.int64))
        if type(axis) is not int or not 0 <= axis < ints.ndim or scales is None or zps is None \
                or scales.shape != (ints.shape[axis],) or zps.shape != (ints.shape[axis],):
            raise FormatError(f"{name[:100]}: per-channel scales do not match its shape")
        return torch._make_per_channel_quantized_tensor(ints, scales.double(), zps.long(), axis)
    scale, zp = entry.get("scale"), entry.get("zero_point")
    if not isinstance(scale, (int, float)) or type(zp) is not int or not math.isfinite(scale) or scale <= 0:
        raise FormatError(f"{name[:100]}: bad per-tensor scale or zero point")
    return torch._make_per_tensor_quantized_tensor(ints, float(scale), zp)


def unflatten_state(tensors: dict[str, torch.Tensor], layout: dict) -> dict:
    """The inverse of `flatten_state`: a state_dict that `load_state_dict` of the same quantized
    structure accepts. Everything the layout declares must be present and consistent."""
    tensors = dict(tensors)
    if not isinstance(layout, dict):
        raise FormatError("the quantization layout is not a JSON object")
    q, tuples, dtypes = layout.get("q", {}), layout.get("tuples", {}), layout.get("dtypes", {})
    state: dict = {}
    for name, present in tuples.items():
        if not isinstance(present, list) or len(present) > 8:
            raise FormatError(f"{name[:100]}: bad tuple layout")
        items = []
        for i, has in enumerate(present):
            key = _item(name, i)
            if not has:
                items.append(None)
            elif key in q:
                items.append(_restore_q(key, tensors, q[key]))
            elif key in tensors:
                items.append(tensors.pop(key))
            else:
                raise FormatError(f"{key[:100]}: missing from the file")
        state[name] = tuple(items)
    for name, entry in q.items():
        if ".__item" not in name:
            state[name] = _restore_q(name, tensors, entry)
    for name, value in (layout.get("scalars") or {}).items():
        if type(value) not in (int, float) or (type(value) is float and not math.isfinite(value)):
            raise FormatError(f"{name[:100]}: bad scalar")
        state[name] = torch.tensor(value, dtype=torch.int64 if type(value) is int else torch.float32)
    for name, dtype in dtypes.items():
        if dtype not in PLAIN_DTYPES:
            raise FormatError(f"{name[:100]}: unknown dtype {str(dtype)[:40]}")
        state[name] = PLAIN_DTYPES[dtype]
    leftovers = [k for k in tensors if k.endswith((QINT, QSCALE, QZP))]
    if leftovers:
        raise FormatError(f"{leftovers[0][:100]}: quantized values with no layout")
    state.update(tensors)
    return state


def dequantized_state(state: dict) -> dict[str, torch.Tensor]:
    """Float32 tensors of a quantized module's state_dict (for the dense float32 size it replaces)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        items = value if isinstance(value, tuple) else (value,)
        for i, v in enumerate(items):
            if isinstance(v, torch.Tensor):
                key = name if len(items) == 1 else _item(name, i)
                out[key] = v.dequantize() if v.is_quantized else v.float() if v.is_floating_point() else v
    return out


# ---------------------------------------------------------------- k-bit weights

def kbit_quantize(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Per-output-channel k-bit quantization of `w`: (codes 0..2^k-1 as uint8, scale[C], zero point
    code[C], code of the value 0 when symmetric). Dequantized = (codes - zp) * scale."""
    if not 2 <= bits <= 8:
        raise ValueError(f"bits must be from 2 to 8, got {bits!r}")
    flat = w.detach().float().reshape(w.shape[0], -1)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = flat.abs().amax(1) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.full((w.shape[0],), qmax, dtype=torch.int32)
        q = torch.clamp(torch.round(flat / scale[:, None]), -qmax, qmax) + qmax
    else:
        qmax = 2 ** bits - 1
        lo = torch.clamp(flat.amin(1), max=0.0)
        hi = torch.clamp(flat.amax(1), min=0.0)
        scale = (hi - lo) / qmax
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.clamp(torch.round(-lo / scale), 0, qmax).to(torch.int32)
        q = torch.clamp(torch.round(flat / scale[:, None]) + zp[:, None], 0, qmax)
    return q.to(torch.uint8).reshape(w.shape), scale.float(), zp, qmax


def kbit_dequantize(codes: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
    flat = codes.reshape(codes.shape[0], -1).float()
    return ((flat - zp[:, None].float()) * scale[:, None]).reshape(codes.shape)


def pack_bits(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes < 2^bits -> the bits of each, concatenated and packed into bytes."""
    b = np.unpackbits(codes.astype(np.uint8).reshape(-1, 1), axis=1)[:, 8 - bits:]
    return np.packbits(b.reshape(-1))


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    b = np.unpackbits(packed, count=count * bits).reshape(count, bits)
    return np.packbits(np.pad(b, ((0, 0), (8 - bits, 0))), axis=1).reshape(-1)


def encode_kbit(name: str, w: torch.Tensor, bits: int, symmetric: bool, tensors: dict, layout: dict) -> torch.Tensor:
    """Store `w` as k-bit codes in `tensors`/`layout`; returns the dequantized weight the model uses."""
    codes, scale, zp, _ = kbit_quantize(w, bits, symmetric)
    zero_code = zp[:, None].expand(w.shape[0], codes[0].numel()).reshape(codes.shape).to(torch.uint8)
    keep = codes != zero_code           # positions that dequantize to something other than 0
    nnz = int(keep.sum())
    sparse = w.numel() / 8 + nnz * bits / 8 < 0.9 * w.numel() * bits / 8
    flat_codes = codes.reshape(-1).numpy()
    if sparse:
        mask_bits = np.packbits(keep.reshape(-1).numpy().astype(np.uint8))
        tensors[name + QMASK] = torch.frombuffer(bytearray(zlib.compress(mask_bits.tobytes(), 9)), dtype=torch.uint8)
        flat_codes = flat_codes[keep.reshape(-1).numpy()]
    tensors[name + PACKED] = torch.from_numpy(pack_bits(flat_codes, bits))
    tensors[name + QSCALE] = scale
    if not symmetric:
        tensors[name + QZP] = zp.to(torch.uint8)
    layout.setdefault("kbit", {})[name] = {"bits": bits, "symmetric": symmetric, "shape": list(w.shape),
                                          "sparse": sparse, "count": int(len(flat_codes))}
    return kbit_dequantize(codes, scale, zp).to(w.dtype)


def decode_kbit(tensors: dict[str, torch.Tensor], layout: dict, *, expected: dict | None = None,
                max_numel: int = MAX_DECODED_NUMEL) -> dict[str, torch.Tensor]:
    """Dequantized float weights of every k-bit entry, each checked before it is unpacked: declared
    shape within bounds (and the model's, with `expected`), packed length exactly what the code
    count needs, scales one per channel, mask inflated within its bound and its popcount the count."""
    out = {}
    for name, e in (layout.get("kbit") or {}).items():
        if not isinstance(e, dict) or type(e.get("bits")) is not int or not 2 <= e["bits"] <= 8:
            raise FormatError(f"{name[:100]}: bad k-bit description")
        numel = check_declared(e.get("shape"), max_numel, what=name[:100])
        shape = tuple(e["shape"])
        if expected is not None and tuple(expected.get(name, ())) != shape:
            raise FormatError(f"{name[:100]}: declared shape {shape} is not the model's")
        if len(shape) < 1 or shape[0] < 1:
            raise FormatError(f"{name[:100]}: a k-bit weight needs output channels")
        count, bits = e.get("count"), e["bits"]
        if type(count) is not int or not 0 <= count <= numel or (not e.get("sparse") and count != numel):
            raise FormatError(f"{name[:100]}: {count!r} codes for {numel:,} elements")
        packed, scale = tensors.pop(name + PACKED, None), tensors.pop(name + QSCALE, None)
        if packed is None or scale is None or packed.dtype != torch.uint8 or packed.numel() != (count * bits + 7) // 8:
            raise FormatError(f"{name[:100]}: packed codes missing or of the wrong length")
        if scale.shape != (shape[0],) or not torch.isfinite(scale).all():
            raise FormatError(f"{name[:100]}: scales do not match its {shape[0]} channels")
        qmax = 2 ** (bits - 1) - 1 if e.get("symmetric") else 2 ** bits - 1
        if e.get("symmetric"):
            zp = torch.full((shape[0],), qmax, dtype=torch.int32)
        else:
            zp = tensors.pop(name + QZP, None)
            if zp is None or zp.shape != (shape[0],):
                raise FormatError(f"{name[:100]}: zero points do not match its channels")
            zp = zp.to(torch.int32)
        codes = unpack_bits(packed.numpy(), bits, count)
        if e.get("sparse"):
            mask_z = tensors.pop(name + QMASK, None)
            if mask_z is None:
                raise FormatError(f"{name[:100]}: its mask is missing")
            mask_bytes = bounded_inflate(mask_z.numpy().tobytes(), (numel + 7) // 8, what=f"{name[:100]} mask")
            mask = np.unpackbits(np.frombuffer(mask_bytes, dtype=np.uint8), count=numel).view(bool)
            if int(mask.sum()) != count:
                raise FormatError(f"{name[:100]}: {count:,} codes for a mask with {int(mask.sum()):,} set")
            full = np.repeat(zp.numpy().astype(np.uint8), numel // shape[0])
            full[mask] = codes
            codes = full
        out[name] = kbit_dequantize(torch.from_numpy(codes.astype(np.uint8)).reshape(shape), scale.float(), zp)
    leftovers = [k for k in tensors if k.endswith((PACKED, QMASK))]
    if leftovers:
        raise FormatError(f"{leftovers[0][:100]}: packed codes with no layout")
    return out


def read_layout(meta: dict[str, str]) -> dict | None:
    raw = meta.get(QUANT_LAYOUT_KEY)
    if raw is None:
        return None
    try:
        layout = json.loads(raw)
    except (ValueError, RecursionError):
        raise FormatError("the quantization layout in the header is not JSON") from None
    if not isinstance(layout, dict):
        raise FormatError("the quantization layout is not a JSON object")
    return layout
