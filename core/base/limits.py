"""Bounds on what uploaded bytes may make the workbench allocate, in one place.

The rule for every decoder of untrusted bytes (the dense and sparse weight formats today; any
quantized, codebook or entropy-coded encoding added later follows it too):

1. Every size the file declares (tensor shapes, element counts, lengths) is checked with
   `check_declared` against a cap, and against the architecture's own shapes when the caller
   knows them, BEFORE anything is allocated or decompressed.
2. Compressed data is inflated with `bounded_inflate`: streamed in chunks with a maximum output
   length, refused as soon as it would produce more than the declared shapes need (or ends short).
3. Lengths that must agree (packed values vs a mask's popcount, offsets vs the file size) are
   compared before the dense tensor is built.

So a small file can never expand into more memory than the tensors it is allowed to hold. A
refusal is a `FormatError` (a ValueError) with one line naming the tensor and the reason.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

# resnet18, the largest registered model, has 11.2M parameters; 200M elements (800 MB float32)
# leaves room for bigger architectures while a single hostile shape cannot ask for more.
MAX_DECODED_NUMEL = 200_000_000
MAX_HEADER_BYTES = 10_000_000  # a safetensors JSON header; workbench headers are a few KB
MAX_NDIM = 8
INFLATE_CHUNK = 1 << 16        # bytes produced per zlib call: the most held beyond the output

MAX_IMAGE_BYTES = 20_000_000   # an uploaded image file
MAX_IMAGE_PIXELS = 25_000_000  # width x height, checked from the header before decoding

# An uploaded zip of class folders (an image dataset). The archive is checked whole before any
# member is read, and every member is inflated in bounded chunks: its declared size is not trusted.
MAX_ZIP_BYTES = 200_000_000         # the upload itself (Streamlit's default upload cap is 200 MB)
MAX_ZIP_MEMBERS = 20_000            # entries, directories included: the central directory stays small
MAX_ZIP_CENTRAL_DIR_BYTES = 20_000_000  # ~1 KB per entry: bounds what zipfile parses before we count
MAX_ZIP_UNCOMPRESSED = 1_000_000_000    # all members inflated together (each is read, decoded, dropped)
MAX_DATASET_IMAGE_BYTES = 10_000_000    # one member of the zip, inflated
MAX_DATASET_IMAGE_PIXELS = 16_777_216   # 4096 x 4096: a phone photo fits; each is shrunk to a few dozen px
MAX_DATASET_ARRAY_BYTES = 1_000_000_000  # the stored uint8 tensor (N x C x S x S), checked before decoding
MAX_DATASET_IMAGE_SIZE = 128        # side of the stored square images (the registered models take 28/32)
MAX_RECIPE_BYTES = 1_000_000       # a recipe file (JSON steps): a few kB; anything near this is not one
MIN_IMAGES_PER_CLASS = 5            # 70/15/15 split: at least one image per class in val and in test


class FormatError(ValueError):
    """Bytes that do not decode within their declared bounds; the message says which and why."""


def check_declared(shape: object, max_numel: int = MAX_DECODED_NUMEL, *, what: str = "tensor") -> int:
    """The element count of a declared `shape` (a list of non-negative ints), refused when it is
    malformed or holds more than `max_numel` elements. Computed with Python ints: no overflow."""
    if not isinstance(shape, Sequence) or isinstance(shape, (str, bytes)):
        raise FormatError(f"{what}: its shape is not a list of sizes ({type(shape).__name__})")
    if len(shape) > MAX_NDIM:
        raise FormatError(f"{what}: {len(shape)} dimensions (at most {MAX_NDIM})")
    if not all(type(d) is int and d >= 0 for d in shape):  # bool is an int subclass: refused too
        raise FormatError(f"{what}: its shape {list(shape)!r} is not a list of non-negative integers"[:300])
    numel = math.prod(shape)
    if numel > max_numel:
        raise FormatError(f"{what}: declares {numel:,} elements, more than the limit of {max_numel:,}")
    return numel


def bounded_inflate(data: bytes, max_out: int, *, exact: bool = True, what: str = "data") -> bytes:
    """zlib-decompress `data` producing at most `max_out` bytes (exactly that many when `exact`).

    Streamed: each call to zlib yields at most INFLATE_CHUNK bytes, so a stream that would expand
    past `max_out` is refused after producing max_out + 1 bytes, never inflated to its end."""
    d = zlib.decompressobj()
    out = bytearray()
    tail = data
    try:
        while not d.eof:
            piece = d.decompress(tail, min(INFLATE_CHUNK, max_out + 1 - len(out)))
            out += piece
            if len(out) > max_out:
                raise FormatError(f"{what}: decompresses to more than the {max_out:,} bytes its shape allows")
            tail = d.unconsumed_tail
            if not piece and not tail and not d.eof:  # input used up, nothing pending, no end marker
                raise FormatError(f"{what}: the compressed stream is truncated")
    except zlib.error as e:
        raise FormatError(f"{what}: not valid zlib data ({e})") from None
    if d.unused_data:
        raise FormatError(f"{what}: {len(d.unused_data)} stray bytes after the compressed stream")
    if exact and len(out) != max_out:
        raise FormatError(f"{what}: decompresses to {len(out):,} bytes; its shape needs {max_out:,}")
    return bytes(out)
