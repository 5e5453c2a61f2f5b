"""Download formats of a variant, each reload-verified in a fresh process before it is offered.

Formats (`FORMATS`; `formats_for` says which apply to a variant and why not):

- `safetensors`: the plain dense state_dict (no sparse or quantized encoding), loadable with
  `safetensors.torch.load_file` alone; the header metadata holds the arch and the model card,
  and the card is written beside it as JSON too. Rebuilding the module needs its class: this
  repository's `core.models.build_from_arch(arch, state)` (shrunk layers included).
- `compact`: the variant's own stored file (sparse bitmask + values, int8 values with scales,
  bit-packed k-bit codes) with `load_compact.py`, a short loader that needs torch, safetensors,
  numpy and this repository's `core` package on the path.
- `onnx`: `torch.onnx.export` (TorchScript exporter, opset 17, dynamic batch axis), checked in
  onnxruntime against the PyTorch outputs; refused with the exporter's reason when a kind has no
  ONNX mapping (dynamic int8 Linear, for one).
- `recipe`: the ordered steps that made the variant, as JSON (`python -m core replay` reads it).
- `bundle`: a zip of every format that applies, the model card and a README.txt.

Every produced file is loaded again in a fresh `python` process (`python -m core.export verify`)
that runs it on real test images; its logits are compared with the workspace variant's own
(max abs difference and top-1 agreement, within a tolerance that depends on the arithmetic: exact
for a re-encoding, looser for onnxruntime's own int8 or fp16 kernels). Results are cached per
(variant, format) under `<workspace>/exports/<variant id>/<format>/`, so a second visit is instant.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

EXPORT_VERSION = 2
REPO_ROOT = Path(__file__).resolve().parent.parent
FORMATS = ("safetensors", "compact", "onnx", "recipe", "bundle")
CARD_FILE = "model_card.json"
LOADER_FILE = "load_compact.py"
RESULT_FILE = "result.json"
N_IMAGES = 256                 # test images every reload is compared on
VERIFY_TIMEOUT_S = 300
ONNX_OPSET = 17


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
        "this repository's `core.models.build_from_arch(arch, state)` (the arch is in the file's metadata and "
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
    from .formats import read_metadata

    with open(ws.weights_path(v), "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little")
        return read_metadata(head + f.read(min(n, 100_000_000)))


def quant_mode(ws, v) -> str | None:
    """The quantization mode of the variant's file (None: a float file)."""
    from .quant_files import QUANT_CONFIG_KEY, config_of

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

def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    return (s or "model")[:40].rstrip("-._")


def base_name(v) -> str:
    return f"{slug(v.name)}-{v.id}"


def file_name(v, fmt: str) -> str:
    return {"safetensors": f"{base_name(v)}.safetensors", "compact": f"{base_name(v)}.compact.safetensors",
            "onnx": f"{base_name(v)}.onnx", "recipe": f"{base_name(v)}.recipe.json",
            "bundle": f"{base_name(v)}.zip"}[fmt]


def cache_dir(ws, variant_id: str, fmt: str) -> Path:
    return Path(ws.root) / "exports" / variant_id / fmt


def cached_result(ws, v, fmt: str) -> ExportResult | None:
    """The cached result of (variant, format) if it is for this very variant and still on disk."""
    path = cache_dir(ws, v.id, fmt) / RESULT_FILE
    try:
        r = ExportResult.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if r.version != EXPORT_VERSION or r.variant_created_at != v.created_at:
        return None
    if r.path and not Path(r.path).is_file():
        return None
    return r


def _store(ws, v, fmt: str, work: Path, result: ExportResult) -> ExportResult:
    """Move `work` (the produced files) into the cache as one rename; paths point there."""
    final = cache_dir(ws, v.id, fmt)
    final.parent.mkdir(parents=True, exist_ok=True)
    result.variant_created_at = v.created_at
    result.created_at = time.time()

    def moved(p: str | None) -> str | None:
        return str(final / Path(p).relative_to(work)) if p else None

    result.path = moved(result.path)
    result.extras = [moved(p) for p in result.extras]
    (work / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=1))
    old = final.with_name(f".{fmt}.{uuid.uuid4().hex[:8]}.old")
    with contextlib.suppress(FileNotFoundError):
        os.replace(final, old)
    try:
        os.replace(work, final)
    except OSError:   # another process stored it at the same moment: theirs is as good
        shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return cached_result(ws, v, fmt) or result


def drop_orphans(ws) -> list[str]:
    """Remove the cached exports of variants that were deleted (or re-created under the same id:
    their results are refused by `cached_result` anyway). Returns the ids removed."""
    root = Path(ws.root) / "exports"
    if not root.is_dir():
        return []
    known = {v.id for v in ws.list_variants()}
    gone = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in known]
    for name in gone:
        shutil.rmtree(root / name, ignore_errors=True)
    return gone


def clear_cache(ws, variant_id: str | None = None) -> None:
    shutil.rmtree(Path(ws.root) / "exports" / variant_id if variant_id else Path(ws.root) / "exports",
                  ignore_errors=True)


# ---------------------------------------------------------------- producing files

def _card_bytes(ws, v) -> bytes:
    from .model_card import model_card

    return json.dumps(model_card(ws, v), indent=1, allow_nan=False).encode()


def dense_state(ws, v) -> tuple[dict, str]:
    """(plain state_dict, compute dtype) of a float, weight-shared, fp16/bf16 or weight-only variant."""
    import torch

    from . import formats
    from .quantization import LowPrecision

    mode = quant_mode(ws, v)
    if mode is None and v.format.startswith("shared+"):   # codebooks + codes: the decoded weights
        return ws.load_model(v).state_dict(), "float32"
    if mode is None:
        return formats.load_file(ws.weights_path(v))[0], "float32"
    if mode in INT8:
        raise ExportUnavailable(unavailable_reason(ws, v, "safetensors"))
    model = ws.load_model(v)
    if isinstance(model, LowPrecision):   # fp16/bf16: the half tensors as they are, computed in that dtype
        return ({k: t for k, t in model.model.state_dict().items()},
                {torch.float16: "float16", torch.bfloat16: "bfloat16"}[model.dtype])
    return model.state_dict(), "float32"   # weight-only: the dequantized weights the model computes with


def write_safetensors(ws, v, out: Path) -> list[Path]:
    """The plain dense safetensors file at `out` and the model card beside it; returns both paths."""
    from safetensors.torch import save_file

    state, dtype = dense_state(ws, v)
    card = _card_bytes(ws, v)
    meta = {"format": "pt", "workbench_export": "safetensors", "variant_id": v.id, "name": v.name,
            "dataset": v.dataset, "arch": json.dumps(v.arch), "compute_dtype": dtype, "model_card": card.decode()}
    save_file({k: t.detach().cpu().contiguous().clone() for k, t in state.items()}, str(out), metadata=meta)
    card_path = out.with_name(CARD_FILE)
    card_path.write_bytes(card)
    return [out, card_path]


LOADER_SOURCE = '''"""Load a Compression Workbench compact file (sparse, int8 or k-bit weights) into a PyTorch module.

Needs: torch, safetensors, numpy, and the Compression Workbench repository's `core` package on the
Python path (run from the repository root, or set PYTHONPATH=/path/to/the/repository). The file is
data only (safetensors: tensors and JSON metadata, no code); the architecture is in its metadata.

    import load_compact
    model = load_compact.load("{filename}")          # eval mode, CPU
    logits = model(x)                                   # x: (N, C, H, W) float32, normalised as in model_card.json

Run it as a script to print the model and check one forward pass: python load_compact.py FILE
"""
import json
import sys
from pathlib import Path


def load(path):
    try:
        from core.formats import read_metadata
        from core.quant_files import model_from_bytes
    except ImportError as e:
        raise SystemExit("load_compact.py needs the Compression Workbench `core` package: run it from the "
                         "repository root or set PYTHONPATH to it (" + str(e) + ")")
    data = Path(path).read_bytes()
    arch = json.loads(read_metadata(data)["arch"])
    return model_from_bytes(arch, data).eval()


if __name__ == "__main__":
    import torch

    from core.formats import read_metadata

    file = sys.argv[1] if len(sys.argv) > 1 else "{filename}"
    model = load(file)
    kw = json.loads(read_metadata(Path(file).read_bytes())["arch"]).get("kwargs", {})
    x = torch.zeros(1, kw.get("in_channels", 1), kw.get("image_size", 28), kw.get("image_size", 28))
    print(model)
    with torch.no_grad():
        print("logits of a blank image:", [round(float(t), 3) for t in model(x)[0]])
'''


def write_compact(ws, v, out: Path) -> list[Path]:
    reason = unavailable_reason(ws, v, "compact")
    if reason:
        raise ExportUnavailable(reason)
    shutil.copyfile(ws.weights_path(v), out)
    loader = out.with_name(LOADER_FILE)
    loader.write_text(LOADER_SOURCE.replace("{filename}", out.name))
    return [out, loader]


def _onnx_model(ws, v):
    """The module torch.onnx.export traces (eval, CPU) and an example input of batch 2."""
    import torch

    from .data import get_info

    info = get_info(v.dataset, ws.root)
    return ws.load_model(v).eval(), torch.zeros(2, *info.input_shape)


def write_onnx(ws, v, out: Path) -> list[Path]:
    """ONNX file at `out` (model card in its metadata). ExportUnavailable says why when the
    exporter has no mapping for the variant's modules."""
    import warnings

    import torch

    model, example = _onnx_model(ws, v)
    mode = quant_mode(ws, v)
    import io

    chatter = io.StringIO()   # the exporter prints its whole graph on failure: the reason below is enough
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(chatter), \
                contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(out), dynamo=False, input_names=["input"],
                              output_names=["logits"], opset_version=ONNX_OPSET,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    except Exception as e:  # noqa: BLE001 - the exporter's many error types: said plainly below
        first = " ".join(str(e).split("\n")[0].split())[:240]
        advice = (f" Export {parent_words(ws, v)} to ONNX instead"
                  + (", then quantize it with onnxruntime.quantization.quantize_dynamic." if mode == "dynamic-int8"
                     else "."))
        what = f"a {mode} model" if mode else "this model"
        raise ExportUnavailable(f"PyTorch's ONNX exporter cannot export {what}: {type(e).__name__}: {first}."
                                + advice) from None
    import onnx

    m = onnx.load(str(out))
    card = _card_bytes(ws, v).decode()
    for k, val in (("model_card", card), ("variant_id", v.id), ("name", v.name)):
        p = m.metadata_props.add()
        p.key, p.value = k, val
    m.producer_name = "compression-workbench"
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return [out]


def recipe_document(ws, v) -> dict:
    """The recipe JSON: the steps (what `core.replay.parse_recipe` reads) and what they should give."""
    chain = ws.lineage(v.id)
    return {"workbench_recipe": 1, "variant_id": v.id, "name": v.name, "dataset": v.dataset,
            "root": {"id": chain[0].id, "name": chain[0].name, "origin": chain[0].origin},
            "arch": v.arch, "kind": v.kind,
            "expected_metrics": {k: v.metrics.get(k) for k in ("accuracy", "params", "nonzero_params", "size_bytes",
                                                                "device")},
            "recipe": v.recipe}


def write_recipe(ws, v, out: Path) -> list[Path]:
    out.write_text(json.dumps(recipe_document(ws, v), indent=1, allow_nan=False, default=str))
    return [out]


WRITERS = {"safetensors": write_safetensors, "compact": write_compact, "onnx": write_onnx, "recipe": write_recipe}


# ---------------------------------------------------------------- reference outputs and tolerances

def test_inputs(ws, v, n: int = N_IMAGES):
    """(x, labels): `n` real test images of the variant's dataset (a fixed seeded subset),
    normalised. When that dataset is not on this machine (a fallback would be another dataset),
    `n` seeded random inputs of its shape instead, and labels None."""
    import torch

    from .data import DatasetUnavailable, cached_dataset, get_info

    try:
        ds = cached_dataset(v.dataset, workspace_root=ws.root)
        if ds.info.name == v.dataset and len(ds.test):
            test = ds.test.subset(n, seed=7)
            return test.normalize(test.images), test.labels
    except (DatasetUnavailable, OSError, ValueError):
        pass
    g = torch.Generator().manual_seed(7)
    return torch.randn(n, *get_info(v.dataset, ws.root).input_shape, generator=g), None


def input_words(labels) -> str:
    return "test images" if labels is not None else "random inputs (its dataset is not on this machine)"


def reference_logits(ws, v, x):
    import torch

    with torch.no_grad():
        return ws.load_model(v)(x).float()


def tolerance_for(ws, v, fmt: str) -> dict:
    mode = quant_mode(ws, v)
    if fmt != "onnx":
        return EXACT
    if mode in INT8:
        return ONNX_INT8
    if mode in ("fp16", "bf16"):
        return ONNX_HALF
    return ONNX_FLOAT


def compare(ref, out, tol: dict) -> dict:
    """max abs diff, top-1 agreement and whether both are within `tol`."""
    import torch

    out = torch.as_tensor(out).float()
    if out.shape != ref.shape:
        return {"ok": False, "max_abs_diff": None, "agreement": None,
                "why": f"outputs of shape {tuple(out.shape)}, expected {tuple(ref.shape)}"}
    diff = float((out - ref).abs().max()) if ref.numel() else 0.0
    agree = float((out.argmax(1) == ref.argmax(1)).float().mean())
    limit = tol["rel"] * max(1.0, float(ref.abs().max()))
    ok = diff <= limit and agree >= tol["agreement"] and bool(torch.isfinite(out).all())
    why = "" if ok else (f"max abs diff {diff:.3g} (limit {limit:.3g}), top-1 agreement {agree:.1%} "
                         f"(needs {tol['agreement']:.0%})")
    return {"ok": ok, "max_abs_diff": diff, "agreement": agree, "limit": limit, "why": why}


# ---------------------------------------------------------------- the fresh-process check

def _run_fresh(checks: list[dict], inputs: Path, work: Path, timeout: float = VERIFY_TIMEOUT_S) -> dict:
    """Run `python -m core.export verify` in a new process on `checks`; returns its report."""
    import torch  # noqa: F401  (torch is imported by the caller anyway)

    spec = work / "verify.json"
    report = work / "report.json"
    spec.write_text(json.dumps({"inputs": str(inputs), "checks": checks, "report": str(report)}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep), "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run([sys.executable, "-m", "core.export", "verify", str(spec)], cwd=str(work), env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"the reload check did not finish in {timeout:.0f} s"}
    if proc.returncode != 0 or not report.exists():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        return {"error": f"the reload check failed (exit {proc.returncode}): {tail[0][:300]}"}
    return json.loads(report.read_text())


def _judge(ws, v, fmt: str, check: dict, ref) -> dict:
    """One check's report -> {ok, max_abs_diff, agreement, why} against the reference logits."""
    import torch

    if check.get("error"):
        return {"ok": False, "why": check["error"]}
    if fmt == "recipe":
        ok = check.get("recipe") == json.loads(json.dumps(v.recipe, default=str))
        return {"ok": ok, "why": "" if ok else "the reloaded recipe differs from the variant's",
                "note": check.get("replay_note", "")}
    logits = check.get("logits")
    if logits is None:
        return {"ok": False, "why": "no outputs came back"}
    return compare(ref, torch.tensor(logits), tolerance_for(ws, v, fmt))


def export(ws, variant, fmt: str, *, force: bool = False, n_images: int = N_IMAGES) -> ExportResult:
    """Produce `fmt` for `variant`, reload it in a fresh process and compare; cached per (variant,
    format). A format that does not apply comes back with status "unavailable" and the reason."""
    return export_many(ws, variant, [fmt], force=force, n_images=n_images)[fmt]


def export_all(ws, variant, *, force: bool = False, n_images: int = N_IMAGES) -> dict[str, ExportResult]:
    """Every format (one fresh process checks all the new files at once)."""
    return export_many(ws, variant, FORMATS, force=force, n_images=n_images)


@dataclass
class _Pending:
    fmt: str
    work: Path
    result: ExportResult
    files: list[Path] = field(default_factory=list)
    parts: list[tuple[str, list[Path]]] = field(default_factory=list)     # bundle: (format, files)
    skipped: list[tuple[str, str]] = field(default_factory=list)          # bundle: (format, why left out)


def export_many(ws, variant, fmts, *, force: bool = False, n_images: int = N_IMAGES) -> dict[str, ExportResult]:
    """Export several formats of one variant: every new file (the bundle's zip included) is checked
    by ONE fresh process, since starting Python with torch is most of a check's time."""
    for fmt in fmts:
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    v = variant if not isinstance(variant, str) else ws.get_variant(variant)
    out: dict[str, ExportResult] = {}
    todo = [f for f in FORMATS if f in fmts]           # bundle last: it reuses the others' files
    if not force:
        for fmt in list(todo):
            hit = cached_result(ws, v, fmt)
            if hit is not None:
                out[fmt] = hit
                todo.remove(fmt)
    if not todo:
        return out
    t0 = time.time()
    drop_orphans(ws)
    root = Path(ws.root) / "exports"
    root.mkdir(parents=True, exist_ok=True)
    pending: dict[str, _Pending] = {}
    scratch = Path(tempfile.mkdtemp(prefix=f".{v.id}-check-", dir=root))
    try:
        for fmt in todo:
            work = Path(tempfile.mkdtemp(prefix=f".{v.id}-{fmt}-", dir=root))
            result = ExportResult(v.id, fmt, "failed", filename=file_name(v, fmt))
            reason = unavailable_reason(ws, v, fmt)
            if not reason:
                try:
                    pend = _Pending(fmt, work, result)
                    if fmt == "bundle":
                        _build_bundle(ws, v, pend, pending)
                    else:
                        (work / "files").mkdir()
                        pend.files = WRITERS[fmt](ws, v, work / "files" / file_name(v, fmt))
                    pending[fmt] = pend
                    continue
                except ExportUnavailable as e:
                    reason = str(e)
                    shutil.rmtree(work / "files", ignore_errors=True)
            result.status, result.message, result.filename = "unavailable", reason, None
            result.seconds = time.time() - t0
            out[fmt] = _store(ws, v, fmt, work, result)
        if pending:
            x, labels = test_inputs(ws, v, n_images)
            for p in pending.values():
                p.result.inputs = input_words(labels)
            ref = reference_logits(ws, v, x)
            from safetensors.torch import save_file
            inputs = scratch / "inputs.safetensors"
            save_file({"x": x.contiguous()}, str(inputs))
            checks = [_check_spec(p) for p in pending.values()]
            report = _run_fresh(checks, inputs, scratch)
            for i, p in enumerate(pending.values()):
                check = report["checks"][i] if "error" not in report else {"error": report["error"]}
                _finish(ws, v, p, check, ref, t0)
                out[p.fmt] = _store(ws, v, p.fmt, p.work, p.result)
    except BaseException:
        for p in pending.values():
            shutil.rmtree(p.work, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {f: out[f] for f in FORMATS if f in out}


def _check_spec(p: _Pending) -> dict:
    if p.fmt == "bundle":
        return {"format": "bundle", "path": str(p.files[0]),
                "members": [{"format": f, "names": [q.name for q in files]} for f, files in p.parts]}
    d = {"format": p.fmt, "path": str(p.files[0])}
    if p.fmt == "compact":
        d["loader"] = str(next(q for q in p.files if q.name == LOADER_FILE))
    return d


def _finish(ws, v, p: _Pending, check: dict, ref, t0: float) -> None:
    """Judge a pending export's check; a file that failed is deleted, never offered."""
    r = p.result
    r.n_images = int(ref.shape[0])
    if p.fmt == "bundle":
        _judge_bundle(ws, v, p, check, ref)
    else:
        verdict = _judge(ws, v, p.fmt, check, ref)
        r.path, r.extras = str(p.files[0]), [str(q) for q in p.files[1:]]
        r.size_bytes = p.files[0].stat().st_size
        r.max_abs_diff, r.agreement = verdict.get("max_abs_diff"), verdict.get("agreement")
        if p.fmt == "recipe":
            r.n_images = None
        else:
            r.tolerance = tolerance_for(ws, v, p.fmt)
        r.status = "ok" if verdict["ok"] else "failed"
        r.message = _ok_message(p.fmt, r) if verdict["ok"] else f"reload check failed: {verdict['why']}"
        if verdict.get("note"):
            r.message += f" (note: {verdict['note']})"
    if r.status != "ok":
        shutil.rmtree(p.work / "files", ignore_errors=True)
        r.path, r.extras, r.size_bytes = None, [], None
    r.seconds = time.time() - t0


def _ok_message(fmt: str, r: ExportResult) -> str:
    if fmt == "recipe":
        return "reloaded in a fresh process: valid JSON, the same steps as the variant's recipe"
    same = "identical predictions" if r.agreement == 1.0 else f"top-1 agreement {r.agreement:.1%}"
    return (f"reloaded in a fresh process and run on {r.n_images} {r.inputs}: {same}, "
            f"max abs logit difference {r.max_abs_diff:.2g}")


README_HEAD = """{name} ({id}), exported by the Compression Workbench on {date}
Dataset: {dataset}; kind: {kind}; test accuracy {acc}; measured on {device}.

Every file below was loaded again from this zip in a fresh Python process and run on {n}
{inputs} before the zip was offered; the check's numbers are given with each file.
model_card.json says how an image becomes the input tensor (resize, greyscale/RGB,
normalisation) and names the classes.
"""


def _build_bundle(ws, v, p: _Pending, pending: dict[str, _Pending]) -> None:
    """The zip of every other format that applies: files made in this call, or verified cached ones."""
    for fmt in FORMATS[:-1]:
        if fmt in pending:
            p.parts.append((fmt, pending[fmt].files))
            continue
        reason = unavailable_reason(ws, v, fmt)
        hit = cached_result(ws, v, fmt)
        if reason is None and hit is not None and hit.status == "unavailable":
            reason = hit.message
        if reason:
            p.skipped.append((fmt, reason))
            continue
        if hit is not None and hit.ok:
            p.parts.append((fmt, [Path(hit.path), *map(Path, hit.extras)]))
            continue
        sub = p.work / "parts" / fmt
        sub.mkdir(parents=True)
        try:
            p.parts.append((fmt, WRITERS[fmt](ws, v, sub / file_name(v, fmt))))
        except ExportUnavailable as e:
            p.skipped.append((fmt, str(e)))
    if not p.parts:
        raise ExportUnavailable("no format applies to this variant")
    zpath = p.work / "files" / file_name(v, "bundle")
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(CARD_FILE, _card_bytes(ws, v))
        for _, files in p.parts:
            for q in files:
                if q.name != CARD_FILE:
                    z.write(q, q.name)
    p.files = [zpath]


def _judge_bundle(ws, v, p: _Pending, check: dict, ref) -> None:
    import datetime as dt

    r, members = p.result, []
    checks = check.get("members", [])
    all_ok = not check.get("error")
    m = v.metrics
    acc = f"{m['accuracy']:.2%}" if isinstance(m.get("accuracy"), (int, float)) else "not measured"
    readme = [README_HEAD.format(name=v.name, id=v.id, date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
                                 dataset=v.dataset, kind=v.kind_label, acc=acc, device=m.get("device", "?"),
                                 n=int(ref.shape[0]), inputs=r.inputs)]
    for i, (fmt, files) in enumerate(p.parts):
        c = checks[i] if i < len(checks) else {"error": check.get("error", "not checked")}
        verdict = _judge(ws, v, fmt, c, ref)
        all_ok &= verdict["ok"]
        members.append({"format": fmt, "files": [q.name for q in files], "ok": verdict["ok"],
                        "max_abs_diff": verdict.get("max_abs_diff"), "agreement": verdict.get("agreement"),
                        "why": verdict.get("why", "")})
        info = FORMAT_INFO[fmt]
        numbers = ("" if fmt == "recipe" or not verdict["ok"] else
                   f"\nCheck: max abs logit difference {verdict['max_abs_diff']:.2g}, top-1 agreement "
                   f"{verdict['agreement']:.1%} (tolerance {tolerance_for(ws, v, fmt)}).")
        readme.append(f"\n== {', '.join(q.name for q in files)}  ({info.title})\n{info.purpose}\n"
                      f"To load it: {info.needs}{numbers}\n")
    for fmt, why in p.skipped:
        readme.append(f"\n== not included: {FORMAT_INFO[fmt].title}\n{why}\n")
    r.members = members
    numeric = [mm for mm in members if mm["max_abs_diff"] is not None]
    r.max_abs_diff = max((mm["max_abs_diff"] for mm in numeric), default=None)
    r.agreement = min((mm["agreement"] for mm in numeric), default=None)
    shutil.rmtree(p.work / "parts", ignore_errors=True)
    if all_ok:   # the README goes in last: it reports the checks just run
        with zipfile.ZipFile(p.files[0], "a", zipfile.ZIP_DEFLATED) as z:
            z.writestr("README.txt", "".join(readme))
        r.status, r.path, r.size_bytes = "ok", str(p.files[0]), p.files[0].stat().st_size
        r.message = (f"{len(members)} formats ({', '.join(mm['format'] for mm in members)}) + model card + "
                     "README.txt; every member reloaded from the zip in a fresh process and matched"
                     + (f"; left out: {', '.join(f for f, _ in p.skipped)}" if p.skipped else ""))
    else:
        bad = [f"{mm['format']}: {mm['why']}" for mm in members if not mm["ok"]] or [check.get("error", "?")]
        r.status, r.message = "failed", "reload check failed: " + "; ".join(bad)


def save_to(result: ExportResult, out: str | os.PathLike) -> list[Path]:
    """Copy a verified export to `out` (a file path, or an existing directory); extras (model card,
    loader) go beside it. Returns the written paths."""
    if not result.ok or not result.path:
        raise ValueError(f"{result.format} export of {result.variant_id} is not available: {result.message}")
    out = Path(out)
    if out.is_dir():
        out = out / (result.filename or Path(result.path).name)
    if not out.parent.is_dir():
        raise ValueError(f"cannot write {out}: the folder {out.parent} does not exist")
    shutil.copyfile(result.path, out)
    written = [out]
    for extra in result.extras:
        dest = out.with_name(Path(extra).name)
        shutil.copyfile(extra, dest)
        written.append(dest)
    return written


# ---------------------------------------------------------------- the verifier (runs in the fresh process)

def _verify_safetensors(path: str, x):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    from core.models import build_from_arch

    state = load_file(path)
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[meta["compute_dtype"]]
    model = build_from_arch(json.loads(meta["arch"])).to(dtype)
    model.load_state_dict(state, strict=True)
    return model.eval()(x.to(dtype)).float()


def _verify_compact(path: str, loader: str, x):
    import importlib.util

    spec = importlib.util.spec_from_file_location("load_compact", loader)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.load(path)(x).float()


def _verify_onnx(path: str, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    import torch

    return torch.from_numpy(sess.run(["logits"], {"input": x.numpy()})[0]).float()


def _verify_recipe(path: str) -> dict:
    doc = json.loads(Path(path).read_text())
    out = {"recipe": doc.get("recipe")}
    try:
        from core.replay import parse_recipe
    except ImportError:
        return out
    try:
        parse_recipe(doc)
    except ValueError as e:
        out["replay_note"] = f"python -m core replay cannot replay it: {e}"
    return out


def _verify_one(fmt: str, path: str, x, loader: str | None = None) -> dict:
    import torch

    try:
        with torch.no_grad():
            if fmt == "recipe":
                return _verify_recipe(path)
            if fmt == "safetensors":
                y = _verify_safetensors(path, x)
            elif fmt == "compact":
                y = _verify_compact(path, loader, x)
            else:
                y = _verify_onnx(path, x)
        return {"logits": y.tolist()}
    except Exception as e:  # noqa: BLE001 - reported to the parent, which refuses the file
        return {"error": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}


def verify_main(spec_path: str) -> int:
    """Entry point of the fresh process: load every file named in the spec, run the inputs."""
    import torch
    from safetensors.torch import load_file

    spec = json.loads(Path(spec_path).read_text())
    x = load_file(spec["inputs"])["x"]
    checks = []
    for c in spec["checks"]:
        if c["format"] != "bundle":
            checks.append(_verify_one(c["format"], c["path"], x, c.get("loader")))
            continue
        with tempfile.TemporaryDirectory() as d:
            with zipfile.ZipFile(c["path"]) as z:
                z.extractall(d)
            json.loads((Path(d) / CARD_FILE).read_text())   # the card must parse
            members = []
            for m in c["members"]:
                paths = [str(Path(d) / n) for n in m["names"]]
                loader = next((p for p in paths if p.endswith(LOADER_FILE)), None)
                members.append(_verify_one(m["format"], paths[0], x, loader))
            checks.append({"members": members})
    Path(spec["report"]).write_text(json.dumps({"checks": checks, "torch": torch.__version__}))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "verify":
        sys.exit(verify_main(sys.argv[2]))
    print("usage: python -m core.export verify SPEC.json  (used by core.export; see python -m core export --help)",
          file=sys.stderr)
    sys.exit(2)
