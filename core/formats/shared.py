"""Trained weight sharing as data (Deep Compression, Han et al. 2016): per layer a float32
codebook, the codes of the non-zero positions and those positions as relative sparse indices.

A shared file is a safetensors file whose metadata holds `SHARED_LAYOUT_KEY` (JSON). Per shared
weight `W` it stores:

- `W.__codebook__`: float32 [2^bits]; entry 0 is 0.0, reserved for filler slots;
- `W.__codes__`: one code per slot, bit-packed at `bits` ("packed") or canonical-Huffman coded;
- `W.__gaps__`: per slot the number of zeros skipped before it, bit-packed at `index_bits`
  (Han's relative index: a gap larger than 2^index_bits - 1 is bridged by filler slots, each
  skipping the most it can and holding code 0, the value 0), or Huffman coded;
- with Huffman coding, `W.__codes_len__` / `W.__gaps_len__`: the code length of every symbol.

Every other tensor (biases) is stored as it is. Decoding follows `core.base.limits`: declared shapes
checked (and against the model's), slot counts bounded by the element count, packed lengths
exact, Huffman tables valid (lengths <= MAX_CODE_LEN, Kraft sum <= 1) before any table or dense
tensor is built; a stream that ends early or runs past its last position is refused.
"""
from __future__ import annotations

import heapq
import json

import numpy as np
import torch

from core.base.limits import MAX_DECODED_NUMEL, FormatError, check_declared
from core.formats import encoding as formats
from core.formats.quant import pack_bits, unpack_bits

SHARED_LAYOUT_KEY = "workbench_shared_layout"
CODEBOOK, CODES, GAPS, CODES_LEN, GAPS_LEN = ".__codebook__", ".__codes__", ".__gaps__", ".__codes_len__", ".__gaps_len__"
SUFFIXES = (CODEBOOK, CODES, GAPS, CODES_LEN, GAPS_LEN)
MAX_CODE_LEN = 16      # Huffman code lengths are limited to this (the decoder's table has 2^16 entries)
CODINGS = ("packed", "huffman")
HEADER_ENTRY_BYTES = 90  # what one more tensor costs in the safetensors JSON header (about)


# ---------------------------------------------------------------- relative indices

def relative_slots(positions: np.ndarray, codes: np.ndarray, index_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, codes) per slot for sorted flat `positions` with `codes`: each gap is the count of
    positions skipped since the previous slot, at most 2^index_bits - 1; longer gaps get filler slots
    (code 0) that each skip the maximum."""
    m = (1 << index_bits) - 1
    d = np.diff(np.concatenate([[-1], positions.astype(np.int64)])) - 1
    n_fill = d // (m + 1)
    ends = np.cumsum(n_fill + 1) - 1
    gaps = np.full(int(ends[-1]) + 1 if len(ends) else 0, m, dtype=np.int64)
    out_codes = np.zeros(len(gaps), dtype=np.uint8)
    gaps[ends] = d - n_fill * (m + 1)
    out_codes[ends] = codes
    return gaps.astype(np.uint8 if index_bits <= 8 else np.int64), out_codes


def best_index_bits(positions: np.ndarray, bits: int) -> int:
    """The index width (1..8) giving the fewest packed bits for these positions."""
    best, best_cost = 8, None
    d = np.diff(np.concatenate([[-1], positions.astype(np.int64)])) - 1
    for ib in range(1, 9):
        slots = len(d) + int((d // (1 << ib)).sum())
        cost = slots * (ib + bits)
        if best_cost is None or cost < best_cost:
            best, best_cost = ib, cost
    return best


# ---------------------------------------------------------------- canonical Huffman

def huffman_lengths(freqs: np.ndarray, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Code length per symbol (0 for unused), at most `max_len`: frequencies are halved until the
    tree fits. A single used symbol gets length 1."""
    freqs = np.asarray(freqs, dtype=np.int64).copy()
    while True:
        used = [(int(f), i) for i, f in enumerate(freqs) if f > 0]
        lengths = np.zeros(len(freqs), dtype=np.uint8)
        if len(used) == 1:
            lengths[used[0][1]] = 1
            return lengths
        if not used:
            return lengths
        heap = [(f, i, [s]) for i, (f, s) in enumerate(used)]
        heapq.heapify(heap)
        tie = len(heap)
        depth = {s: 0 for _, s in used}
        while len(heap) > 1:
            f1, _, s1 = heapq.heappop(heap)
            f2, _, s2 = heapq.heappop(heap)
            for s in s1 + s2:
                depth[s] += 1
            heapq.heappush(heap, (f1 + f2, tie, s1 + s2))
            tie += 1
        if max(depth.values()) <= max_len:
            for s, d in depth.items():
                lengths[s] = d
            return lengths
        freqs = np.where(freqs > 0, (freqs + 1) // 2, 0)


def canonical_codes(lengths: np.ndarray) -> dict[int, tuple[int, int]]:
    """symbol -> (code, length) of the canonical Huffman code with these lengths."""
    order = sorted((int(n), s) for s, n in enumerate(lengths) if n > 0)
    codes, code, prev = {}, 0, 0
    for n, s in order:
        code <<= n - prev
        codes[s] = (code, n)
        code += 1
        prev = n
    return codes


def check_lengths(lengths: np.ndarray, what: str) -> None:
    if lengths.dtype != np.uint8 or lengths.size > 256 or (lengths > MAX_CODE_LEN).any():
        raise FormatError(f"{what}: bad Huffman length table")
    kraft = sum(2.0 ** -int(n) for n in lengths if n > 0)
    if kraft > 1.0 + 1e-12 or not (lengths > 0).any():
        raise FormatError(f"{what}: the Huffman lengths do not form a prefix code")


def huffman_encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    codes = canonical_codes(lengths)
    table = [codes.get(s, (0, 0)) for s in range(len(lengths))]
    acc, nbits, out = 0, 0, bytearray()
    for s in symbols.tolist():
        c, n = table[s]
        acc = (acc << n) | c
        nbits += n
        while nbits >= 8:
            nbits -= 8
            out.append((acc >> nbits) & 0xFF)
        acc &= (1 << nbits) - 1
    if nbits:
        out.append((acc << (8 - nbits)) & 0xFF)
    return bytes(out)


def huffman_decode(data: bytes, lengths: np.ndarray, count: int, what: str) -> np.ndarray:
    """`count` symbols from `data`; refused when the stream ends early, holds an unassigned code,
    or leaves more than 7 padding bits."""
    check_lengths(lengths, what)
    codes = canonical_codes(lengths)
    L = int(lengths.max())
    lut_sym = np.full(1 << L, -1, dtype=np.int32)
    lut_len = np.zeros(1 << L, dtype=np.int32)
    for s, (c, n) in codes.items():
        lo = c << (L - n)
        lut_sym[lo:lo + (1 << (L - n))] = s
        lut_len[lo:lo + (1 << (L - n))] = n
    total_bits = len(data) * 8
    if count and lengths.size == 0:
        raise FormatError(f"{what}: an empty Huffman table")
    if count > total_bits:   # every code is at least 1 bit: checked before any output is allocated
        raise FormatError(f"{what}: {count:,} symbols cannot fit in {len(data):,} bytes")
    big = int.from_bytes(data + b"\x00" * 3, "big")
    width = total_bits + 24
    syms, lut_s, lut_l = [0] * count, lut_sym.tolist(), lut_len.tolist()
    mask = (1 << L) - 1
    pos = 0
    for i in range(count):
        w = (big >> (width - pos - L)) & mask
        s = lut_s[w]
        if s < 0:
            raise FormatError(f"{what}: an unassigned Huffman code at bit {pos}")
        syms[i] = s
        pos += lut_l[w]
        if pos > total_bits:
            raise FormatError(f"{what}: the Huffman stream is truncated")
    if total_bits - pos >= 8:
        raise FormatError(f"{what}: {(total_bits - pos) // 8} stray bytes after the Huffman stream")
    return np.asarray(syms, dtype=np.uint8)


# ---------------------------------------------------------------- encode / decode

def _u8(b: bytes | np.ndarray) -> torch.Tensor:
    arr = np.frombuffer(bytes(b), dtype=np.uint8) if not isinstance(b, np.ndarray) else b.astype(np.uint8)
    return torch.from_numpy(arr.copy())


def encode_shared(state: dict[str, torch.Tensor], shared: dict[str, dict], metadata: dict[str, str], *,
                  coding: str = "packed") -> bytes:
    """The file of `state` where every weight named in `shared` ({"codebook": float tensor [2^bits],
    "codes": uint8 tensor of the weight's shape (0 = a zero weight), "bits": int}) is stored by its
    codebook, codes and relative indices; the rest as they are."""
    if coding not in CODINGS:
        raise ValueError(f"coding must be one of {CODINGS}, got {coding!r}")
    tensors: dict[str, torch.Tensor] = {}
    layout: dict = {"version": 1, "coding": coding, "layers": {}}
    for name, t in state.items():
        if name not in shared:
            tensors[name] = t.detach().cpu().contiguous()
            continue
        s = shared[name]
        bits, codebook = int(s["bits"]), s["codebook"].detach().float().cpu()
        flat = s["codes"].reshape(-1).cpu().numpy().astype(np.uint8)
        positions = np.flatnonzero(flat)
        ib = best_index_bits(positions, bits)
        gaps, codes = relative_slots(positions, flat[positions], ib)
        tensors[name + CODEBOOK] = codebook.contiguous()
        entry = {"shape": list(t.shape), "bits": bits, "index_bits": ib, "slots": int(len(codes)),
                 "nonzero": int(len(positions))}
        if coding == "packed":
            tensors[name + CODES] = torch.from_numpy(pack_bits(codes, bits))
            tensors[name + GAPS] = torch.from_numpy(pack_bits(gaps, ib))
        else:   # per stream, Huffman where it is smaller than the packed bits with its table and header entry
            for sym, key, lkey, width, field in ((codes, CODES, CODES_LEN, bits, "codes"),
                                                 (gaps, GAPS, GAPS_LEN, ib, "gaps")):
                packed = pack_bits(sym, width)
                if len(sym):
                    lengths = huffman_lengths(np.bincount(sym, minlength=1 << width)[:1 << width])
                    lengths = lengths[:int(np.flatnonzero(lengths).max()) + 1]   # trailing unused symbols dropped
                    stream = huffman_encode(sym, lengths)
                    if len(stream) + len(lengths) + HEADER_ENTRY_BYTES < len(packed):
                        tensors[name + lkey] = _u8(lengths)
                        tensors[name + key] = _u8(stream)
                        entry[field] = "huffman"
                        continue
                tensors[name + key] = torch.from_numpy(packed)   # "packed": the default, not written
        layout["layers"][name] = entry
    meta = {**metadata, SHARED_LAYOUT_KEY: json.dumps(layout, separators=(",", ":"))}
    return formats.encode_dense(tensors, meta)


def is_shared_file(meta: dict[str, str]) -> bool:
    return SHARED_LAYOUT_KEY in meta


def read_shared_layout(meta: dict[str, str]) -> dict:
    try:
        layout = json.loads(meta[SHARED_LAYOUT_KEY])
    except (ValueError, RecursionError, KeyError):
        raise FormatError("the weight-sharing layout in the header is not JSON") from None
    if not isinstance(layout, dict) or layout.get("coding") not in CODINGS or not isinstance(layout.get("layers"), dict):
        raise FormatError("the weight-sharing layout is not a valid description")
    return layout


def decode_shared(tensors: dict[str, torch.Tensor], meta: dict[str, str], *, expected: dict | None = None,
                  max_numel: int = MAX_DECODED_NUMEL, with_codes: bool = False):
    """The dense float32 state of a shared file's decoded tensors (and, with `with_codes`, also the
    per-layer (codebook, codes) so a file can be re-encoded losslessly)."""
    layout = read_shared_layout(meta)
    tensors = dict(tensors)
    coding = layout["coding"]
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict] = {}
    for name, e in layout["layers"].items():
        what = str(name)[:100]
        if not isinstance(e, dict):
            raise FormatError(f"{what}: bad weight-sharing description")
        numel = check_declared(e.get("shape"), max_numel, what=what)
        shape = tuple(e["shape"])
        if expected is not None and tuple(expected.get(name, ())) != shape:
            raise FormatError(f"{what}: declared shape {shape} is not the model's")
        bits, ib, slots = e.get("bits"), e.get("index_bits"), e.get("slots")
        if type(bits) is not int or not 1 <= bits <= 8 or type(ib) is not int or not 1 <= ib <= 8:
            raise FormatError(f"{what}: bad code or index width")
        if type(slots) is not int or not 0 <= slots <= numel:
            raise FormatError(f"{what}: {slots!r} slots for {numel:,} elements")
        codebook = tensors.pop(name + CODEBOOK, None)
        if codebook is None or codebook.dtype != torch.float32 or codebook.shape != (1 << bits,) \
                or not torch.isfinite(codebook).all():
            raise FormatError(f"{what}: its codebook is missing or not {1 << bits} float32 values")
        cbytes, gbytes = tensors.pop(name + CODES, None), tensors.pop(name + GAPS, None)
        if cbytes is None or gbytes is None or cbytes.dtype != torch.uint8 or gbytes.dtype != torch.uint8:
            raise FormatError(f"{what}: codes or indices missing")
        streams = []
        for raw, lkey, width, field in ((cbytes, CODES_LEN, bits, "codes"), (gbytes, GAPS_LEN, ib, "gaps")):
            how = e.get(field, "packed")
            if how == "packed":
                if raw.numel() != (slots * width + 7) // 8:
                    raise FormatError(f"{what}: packed {field} of the wrong length")
                streams.append(unpack_bits(raw.numpy(), width, slots))
            elif how == "huffman" and coding == "huffman":
                lengths = tensors.pop(name + lkey, None)
                if lengths is None or lengths.dtype != torch.uint8 or lengths.numel() > (1 << width):
                    raise FormatError(f"{what}: its {field} Huffman table is missing or larger than the alphabet")
                streams.append(huffman_decode(raw.numpy().tobytes(), lengths.numpy(), slots, f"{what} {field}"))
            else:
                raise FormatError(f"{what}: unknown coding of its {field}")
        codes, gaps = streams
        if slots and int(codes.max()) >= (1 << bits):
            raise FormatError(f"{what}: a code beyond its codebook")
        positions = np.cumsum(gaps.astype(np.int64) + 1) - 1
        if slots and int(positions[-1]) >= numel:
            raise FormatError(f"{what}: its indices run past its {numel:,} elements")
        full = np.zeros(numel, dtype=np.uint8)
        full[positions] = codes
        code_t = torch.from_numpy(full).reshape(shape)
        cb = codebook.clone()
        cb[0] = 0.0            # code 0 is the zero weight and the filler
        out[name] = cb[code_t.long()]
        parts[name] = {"codebook": codebook, "codes": code_t, "bits": bits}
    leftovers = [k for k in tensors if k.endswith(SUFFIXES)]
    if leftovers:
        raise FormatError(f"{leftovers[0][:100]}: shared codes with no layout")
    out.update(tensors)
    return (out, parts) if with_codes else out


def file_breakdown(data: bytes) -> dict[str, dict[str, int]]:
    """Bytes per layer and part (codebook, codes, indices, tables; mask and values of a sparse file;
    other) and the header's, read from a variant file's own safetensors header: where the bytes went."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    rows: dict[str, dict[str, int]] = {"header": {"header": 8 + n}}
    suffixes = ((CODEBOOK, "codebook"), (CODES, "codes"), (GAPS, "indices"), (CODES_LEN, "tables"),
                (GAPS_LEN, "tables"), (formats.MASK_SUFFIX, "mask"), (formats.VALUES_SUFFIX, "values"))
    for key, e in header.items():
        if key == "__metadata__":
            continue
        size = e["data_offsets"][1] - e["data_offsets"][0]
        part = next((p for suffix, p in suffixes if key.endswith(suffix)), None)
        base = key[: -len(next(s for s, p in suffixes if key.endswith(s)))] if part else key
        layer = base.rsplit(".", 1)[0]
        part = part or "other"
        rows.setdefault(layer, {}).setdefault(part, 0)
        rows[layer][part] += size
    return rows
