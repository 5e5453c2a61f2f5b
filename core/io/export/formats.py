"""What can be exported and how it is called: the formats and what each is for, why a format does
not apply to a variant, the file names, the tolerances of the reload check and its result record.
Part of `core.io.export.pipeline` (which re-exports these names)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from core.base import paths
from core.compress.quant.files import QUANT_CONFIG_KEY, config_of
from core.formats.encoding import read_metadata

EXPORT_VERSION = 2
REPO_ROOT = paths.REPO_ROOT
FORMATS = ("safetensors", "compact", "onnx", "recipe", "bundle")
CARD_FILE = "model_card.json"
LOADER_FILE = "load_compact.py"
RESULT_FILE = "result.json"
N_IMAGES = 256                 # test images every reload is compared on
VERIFY_TIMEOUT_S = 300


@dataclass(frozen=True)
class FormatInfo:
    key: str
    title: str
    purpose: str
    needs: str


FORMAT_INFO = {
    "safetensors": FormatInfo(
        "safetensors", "safetensors weights + model card",
        "The plain dense weights (every tensor full size, zeros included), for use in any PyTorch code, "
        "fine-tuning elsewhere, or as the reference copy.",
        "`safetensors` and `torch` to read the tensors (`safetensors.torch.load_file`); to rebuild the module, "
        "this repository's `core.models.registry.build_from_arch(arch, state)` (the arch is in the file's metadata and "
        "in model_card.json)."),
    "compact": FormatInfo(
        "compact", "compact encoding + loader",
        "The variant's own stored file, the smallest honest download: sparse weights as bitmask + non-zero "
        "values, int8 weights with their scales, k-bit codes bit-packed. Its size is the variant's size_bytes.",
        "torch, safetensors, numpy and this repository's `core` package on PYTHONPATH; `load_compact.py` "
        "(downloaded with it) does the rest: `model = load_compact.load('FILE')`."),
    "onnx": FormatInfo(
        "onnx", "ONNX",
        "A self-contained graph for onnxruntime, TensorRT, OpenVINO, browsers or phones: no Python model code "
        "needed. Input `input` (N, C, H, W) float32, normalised; output `logits` (N, classes); dynamic batch size.",
        "`onnxruntime` (or any ONNX runtime): `onnxruntime.InferenceSession('FILE').run(None, {'input': x})`."),
    "recipe": FormatInfo(
        "recipe", "recipe (JSON)",
        "The ordered steps that made this variant from its root (training, pruning, quantization settings and "
        "seeds): to reproduce it, or to apply the same recipe elsewhere.",
        "A text editor; `python -m core replay FILE` runs it again in a workspace."),
    "bundle": FormatInfo(
        "bundle", "bundle (zip of everything)",
        "Every format that applies, the model card and a README.txt in one zip: what to hand to someone else.",
        "unzip; then what each file's section of README.txt says."),
}

# tolerances on the logits: max abs diff <= rel * max(1, max |reference logit|), and top-1 agreement
EXACT = {"rel": 1e-4, "agreement": 1.0}           # the same arithmetic in a new process
ONNX_FLOAT = {"rel": 1e-3, "agreement": 0.99}     # onnxruntime's float kernels
ONNX_HALF = {"rel": 3e-2, "agreement": 0.98}      # fp16/bf16 kernels of another library
ONNX_INT8 = {"rel": 5e-2, "agreement": 0.98}      # onnxruntime's int8 kernels round differently from fbgemm's


class ExportUnavailable(ValueError):
    """The format does not apply to this variant; the message says why and what to do instead."""


@dataclass
class ExportResult:
    variant_id: str
    format: str
    status: str                          # "ok" | "failed" | "unavailable"
    message: str = ""
    filename: str | None = None          # what a download saves as
    path: str | None = None              # the verified main file in the cache
    extras: list[str] = field(default_factory=list)   # files that go with it (model card, loader)
    size_bytes: int | None = None
    max_abs_diff: float | None = None
    agreement: float | None = None
    n_images: int | None = None
    inputs: str = "test images"          # what the check ran on
    tolerance: dict | None = None
    members: list[dict] = field(default_factory=list)   # bundle: each member's own check
    seconds: float | None = None
    created_at: float | None = None
    variant_created_at: float | None = None
    version: int = EXPORT_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ExportResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


# ---------------------------------------------------------------- what applies

def _file_meta(ws, v) -> dict[str, str]:
    with open(ws.weights_path(v), "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little")
        return read_metadata(head + f.read(min(n, 100_000_000)))


def quant_mode(ws, v) -> str | None:
    """The quantization mode of the variant's file (None: a float file)."""
    meta = _file_meta(ws, v)
    return config_of(meta).mode if QUANT_CONFIG_KEY in meta else None


INT8 = ("static-int8", "dynamic-int8", "qat")


def unavailable_reason(ws, v, fmt: str) -> str | None:
    """Why `fmt` does not apply to variant `v` (None: it applies; ONNX is tried, not predicted)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    mode = quant_mode(ws, v)
    if fmt == "safetensors" and mode in INT8:
        how = ("int8 weights with activations quantized on the fly" if mode == "dynamic-int8"
               else "quantized activations and fused layers")
        other = "the compact int8 file (with its loader)" + ("" if mode == "dynamic-int8" else " or ONNX")
        return (f"an int8 model ({mode}) computes with {how}: no plain float state_dict computes what it "
                f"computes. Download {other}, or export {parent_words(ws, v)} for float weights.")
    if fmt == "compact" and v.format == "dense":
        return ("the stored file is already the plain dense safetensors file (nothing is sparse or quantized): "
                "download the safetensors format.")
    return None


def parent_words(ws, v) -> str:
    """'the float parent NAME (id)' for messages; 'the float model it was made from' without one."""
    if not v.parent_id:
        return "the float model it was made from"
    try:
        p = ws.get_variant(v.parent_id)
    except KeyError:
        return f"the float parent ({v.parent_id})"
    return f"the float parent {p.name} ({p.id})"


def formats_for(ws, v) -> list[tuple[str, str | None]]:
    """[(format, reason it does not apply or None)] for every format, in FORMATS order."""
    return [(f, unavailable_reason(ws, v, f)) for f in FORMATS]


# ---------------------------------------------------------------- names and cache

def base_name(v) -> str:
    return f"{paths.slug(v.name, 'model', keep_case=True)}-{v.id}"


def file_name(v, fmt: str) -> str:
    return {"safetensors": f"{base_name(v)}.safetensors", "compact": f"{base_name(v)}.compact.safetensors",
            "onnx": f"{base_name(v)}.onnx", "recipe": f"{base_name(v)}.recipe.json",
            "bundle": f"{base_name(v)}.zip"}[fmt]
