"""Checkpoints uploaded by a user: read as data only, checked against an architecture, stored
as a new root variant.

A checkpoint is either safetensors (any plain file, or a workbench download in its sparse
format) or a PyTorch `.pt`/`.pth` state_dict read with `torch.load(weights_only=True)`, which
refuses anything but tensors and plain containers, so a pickle built to run code on load is
rejected before any of it runs. Nothing here ever calls `torch.load` without `weights_only=True`,
`torch.jit.load`, or `pickle`.

Uploaded bytes are data with bounds (`core.base.limits`): the architecture is built first (its
structural edits validated), and the file's declared shapes are checked against it before any
tensor is decoded. Every refusal, and any failure while building or first running the imported
model, is one `CheckpointError` with a one-line reason.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import pickletools
import re
import zipfile
from pathlib import Path

import torch
import torch.nn as nn

from core.compress.quant.files import QUANT_CONFIG_KEY
from core.data.datasets import cached_dataset, get_info
from core.data.types import DATASETS, DEFAULT_DATASET, DatasetInfo
from core.formats import encoding as formats
from core.models.registry import ArchError, build_from_arch, get_spec
from core.store.variants import measure_variant
from core.store.workspace import Variant, Workspace

MAX_CHECKPOINT_BYTES = 200 * 1000 * 1000
SUFFIXES = ("safetensors", "pt", "pth")
# where training scripts commonly nest the state_dict inside a checkpoint dict
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


class CheckpointError(ValueError):
    """The file is not a usable checkpoint for the chosen architecture; the message says why."""


def _is_safetensors(data: bytes, filename: str) -> bool:
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix in ("pt", "pth"):
        return False
    if suffix == "safetensors":
        return True
    try:
        formats.read_metadata(data)
        return True
    except ValueError:
        return False


def _check_size(data: bytes) -> None:
    if not data:
        raise CheckpointError("the file is empty")
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"the file is {len(data) / 1e6:.0f} MB; the limit is {MAX_CHECKPOINT_BYTES / 1e6:.0f} MB")


# ---------------------------------------------------------------- reading the file

def read_state_dict(data: bytes, filename: str = "", expected: dict[str, torch.Tensor] | None = None,
                    what: str = "the model") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Decode checkpoint bytes into (state_dict, safetensors metadata). Raises CheckpointError.

    With `expected` (a freshly built model's state_dict), a safetensors file whose declared
    tensors do not fit `what` is refused from its header alone, before anything is decoded."""
    _check_size(data)
    if _is_safetensors(data, filename):
        try:  # from the header alone; with `expected`, compared with the model before any cap
            shapes = formats.declared_shapes(data, formats.MAX_DECODED_NUMEL if expected is None else formats.UNCAPPED)
        except ValueError as e:
            raise _unreadable(e) from None
        if expected is not None:
            _check_shapes(shapes, {k: tuple(v.shape) for k, v in expected.items()}, what)
        try:
            return formats.decode(data, expected=None if expected is None else
                                  {k: tuple(v.shape) for k, v in expected.items()})
        except ValueError as e:
            raise _unreadable(e) from None
    _check_zip(data)
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        called = _refused_global(str(e)) or _first_global(data)
        if called:  # weights_only refused a class or function: a payload, or a whole pickled module
            raise CheckpointError(f"rejected: the file holds Python objects other than tensors ({called}), "
                                  "which would run code when unpickled; only plain state_dicts are accepted") from None
        raise CheckpointError("not a PyTorch state_dict file: the safe (weights-only) loader refused it "
                              f"({_torch_reason(str(e)) or type(e).__name__})") from None
    except Exception as e:
        raise CheckpointError(f"not a PyTorch state_dict file ({type(e).__name__}: {_torch_reason(str(e))})") from None
    state = _as_state_dict(obj)
    if expected is not None:
        check_fits(state, expected, what)
    return state, {}


def _unreadable(e: ValueError) -> CheckpointError:
    msg = re.sub(r"^not a (?:readable )?safetensors file:?\s*", "", str(e))  # said once, not twice
    return CheckpointError(f"not a readable safetensors file ({msg})")


def _check_zip(data: bytes) -> None:
    """A .pt zip may hold compressed records (torch.save never writes them): refuse one whose
    records would inflate past twice the file's size, before torch reads it."""
    if not data.startswith(b"PK"):
        return
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            total = sum(i.file_size for i in z.infolist())
    except (zipfile.BadZipFile, ValueError, OSError):
        return  # not a readable zip: torch.load says so
    if total > 2 * len(data) + 1_000_000:
        raise CheckpointError(f"the archive's records declare {total:,} bytes in a {len(data):,}-byte file "
                              "(a compressed archive; torch.save never writes one)")


# torch names what its safe unpickler refused in two wordings: "Unsupported global: GLOBAL io.open
# was not an allowed global" and "unsupported GLOBAL posix.system whose module posix is blocked".
_REFUSED = re.compile(r"unsupported (?:global|class):?\s*(?:GLOBAL\s+)?([\w.]+)", re.IGNORECASE)
# torch's advice to re-run with weights_only=False: never shown to a user of a shared server
_ADVICE = re.compile(r"weights_only|re-running|trusted source|file an issue|documentation", re.IGNORECASE)


def _refused_global(msg: str) -> str | None:
    found = _REFUSED.search(msg)
    if not found:
        return None
    name = found.group(1).rstrip(".")
    return name if "." in name else f"builtins.{name}"  # torch drops the module of builtins


def _first_global(data: bytes) -> str | None:
    """The first class or function a pickle names, read from its opcodes without running any
    (a raw pickle, or a torch zip's data.pkl): torch only says "Unsupported operand" for these."""
    pkl = data
    if data.startswith(b"PK"):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                names = [n for n in z.namelist() if n.endswith("data.pkl")]
                pkl = z.read(names[0]) if names else b""
        except (zipfile.BadZipFile, ValueError, OSError, KeyError):
            return None
    strings: list[str] = []   # strings pushed so far (STACK_GLOBAL takes the last two)
    memo: dict[int, str] = {}
    try:
        for i, (op, arg, _) in enumerate(pickletools.genops(io.BytesIO(pkl))):
            called = None
            if op.name in ("GLOBAL", "INST") and isinstance(arg, str):
                called = _plain_global(arg.replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                called = _plain_global(f"{strings[-2]}.{strings[-1]}")
            if called and called not in _allowed_globals():
                return called
            if isinstance(arg, str) and ("UNICODE" in op.name or "STRING" in op.name):
                strings.append(arg)
            elif op.name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT") and strings:
                memo[arg] = strings[-1]
            elif op.name in ("GET", "BINGET", "LONG_BINGET") and arg in memo:
                strings.append(memo[arg])
            if i > 100_000:
                break
    except Exception:  # noqa: BLE001 - a malformed pickle: nothing to name
        return None
    return None


def _allowed_globals() -> set[str]:
    """What torch's weights-only unpickler accepts (tensor rebuild helpers, OrderedDict, ...)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals  # private: may move

        return set(_get_allowed_globals())
    except Exception:  # noqa: BLE001 - then every global is named, which is still true
        return set()


def _plain_global(name: str) -> str:
    return name.replace("__builtin__.", "builtins.")[:120]


def _torch_reason(msg: str) -> str:
    """The useful part of torch's error message, without its advice to load unsafely."""
    msg = msg.split("WeightsUnpickler error:", 1)[-1]
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip() and not _ADVICE.search(ln)]
    return (lines[0].split(". ")[0] if lines else "")[:150]


def _as_state_dict(obj) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for k in NESTED_KEYS:  # {"epoch": 3, "state_dict": {...}} as saved by many training scripts
            if isinstance(obj.get(k), dict) and any(isinstance(v, torch.Tensor) for v in obj[k].values()):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not obj:
        raise CheckpointError(f"expected a state_dict (a dict of tensor names to tensors), found {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError("the file holds no tensors")
    # checkpoints saved from nn.DataParallel / DistributedDataParallel prefix every key with "module."
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# ---------------------------------------------------------------- fitting it to an architecture

def _shape(t: torch.Tensor | torch.Size | tuple) -> str:
    return "x".join(map(str, t.shape if isinstance(t, torch.Tensor) else t)) or "scalar"


def _check_shapes(state: dict[str, tuple], expected: dict[str, tuple], what: str) -> None:
    missing = [k for k in expected if k not in state]
    unexpected = [k[:100] for k in state if k not in expected]
    shapes = [f"{k} (file {_shape(state[k])}, model {_shape(expected[k])})"
              for k in expected if k in state and tuple(state[k]) != tuple(expected[k])]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("with the wrong shape", shapes)):
        if items:
            more = f" and {len(items) - 4} more" if len(items) > 4 else ""
            problems.append(f"{len(items)} tensor(s) {label}: {', '.join(items[:4])}{more}")
    if problems:
        raise CheckpointError(f"this checkpoint does not fit {what}: " + "; ".join(problems))


def check_fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError naming missing, unexpected and mis-shaped tensors, or non-finite values."""
    _check_shapes({k: tuple(v.shape) for k, v in state.items()}, {k: tuple(v.shape) for k, v in expected.items()},
                  what)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"the checkpoint has NaN or infinite values in {', '.join(bad[:4])}")


def _describe(model_name: str, info: DatasetInfo) -> str:
    return f"{model_name} for {info.title} ({info.num_classes} classes, {_shape(info.input_shape)} input)"


def arch_for(meta: dict[str, str], model_name: str, dataset: str) -> dict:
    """The arch of `model_name` for `dataset`, with the structural edits a workbench download
    carries in its metadata when it names the same architecture. The rest of the metadata is
    ignored: the dataset, not the file, decides the model's input and output sizes."""
    get_spec(model_name)
    info = get_info(dataset)
    kwargs = {"num_classes": info.num_classes, "in_channels": info.in_channels, "image_size": info.image_size}
    edits = {}
    file_arch = _file_arch(meta)
    if file_arch.get("name") == model_name:
        edits = file_arch.get("edits") or {}
    return {"name": model_name, "kwargs": kwargs, "edits": edits}


def _file_arch(meta: dict[str, str]) -> dict:
    try:
        arch = json.loads(meta.get("arch", "null"))
    except (ValueError, RecursionError):
        return {}
    return arch if isinstance(arch, dict) else {}


def _fresh_model(arch: dict, what: str) -> nn.Module:
    """The registry model with the file's structural edits validated and applied (no weights yet)."""
    try:
        return build_from_arch(arch)
    except ArchError as e:
        raise CheckpointError(f"refused: {e}") from None
    except Exception as e:  # noqa: BLE001 - edits that pass validation but break the module
        raise CheckpointError(f"{what} cannot be built with this file's structural edits "
                              f"({type(e).__name__}: {str(e)[:200]})") from None


def _load(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> nn.Module:
    check_fits(state, model.state_dict(), what)
    try:
        model.load_state_dict(state, strict=True)
    except Exception as e:  # noqa: BLE001 - e.g. a dtype torch cannot copy
        raise CheckpointError(f"this checkpoint does not fit {what}: {str(e).splitlines()[0][:300]}") from None
    return model.eval()


def first_run(model: nn.Module, info: DatasetInfo, what: str) -> None:
    """One forward pass on a blank batch: a model that raises or gives NaN is refused here,
    before the test split is loaded."""
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *info.input_shape))
    except Exception as e:  # noqa: BLE001 - edits that load but do not chain (e.g. conv2 vs fc1)
        raise CheckpointError(f"{what} with these weights does not run: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, info.num_classes):
        raise CheckpointError(f"{what} with these weights gives outputs of shape "
                              f"{_shape(out) if isinstance(out, torch.Tensor) else type(out).__name__}, "
                              f"not {info.num_classes} class scores")
    if not bool(torch.isfinite(out).all()):
        raise CheckpointError(f"{what} with these weights gives NaN or infinite outputs")


def build_for(state: dict[str, torch.Tensor], meta: dict[str, str], model_name: str, dataset: str):
    """Build `model_name` for `dataset` and load `state` into it (strictly). Returns (model, arch)."""
    arch = arch_for(meta, model_name, dataset)
    what = _describe(model_name, get_info(dataset))
    return _load(_fresh_model(arch, what), state, what), arch


# ---------------------------------------------------------------- importing

def _resolve(meta: dict[str, str], model_name: str | None, dataset: str | None) -> tuple[str, str]:
    if not model_name:
        model_name = _file_arch(meta).get("name")
        if not isinstance(model_name, str):
            raise CheckpointError("the file does not name its architecture: choose one (--model NAME)")
    if not dataset:
        dataset = meta.get("dataset") if meta.get("dataset") in DATASETS else DEFAULT_DATASET
    try:
        get_spec(model_name)
        get_info(dataset)
    except ValueError as e:
        raise CheckpointError(str(e)) from None
    return model_name, dataset


def import_checkpoint(ws: Workspace, data: bytes, filename: str, *, model_name: str | None = None,
                      dataset: str | None = None, name: str | None = None, device: str = "auto") -> Variant:
    """Read, check, measure (full test split) and store an uploaded checkpoint as a root variant.

    `model_name` None: the architecture a workbench file names in its metadata; `dataset` None:
    the file's dataset, else the default. Any refusal is a CheckpointError."""
    _check_size(data)
    meta = {}
    if _is_safetensors(data, filename):
        try:
            meta = formats.read_metadata(data)
        except ValueError as e:
            raise _unreadable(e) from None
    if QUANT_CONFIG_KEY in meta:
        raise CheckpointError("this is a quantized workbench file: uploads take float weights only. Upload the "
                              "float variant it came from and quantize it here (its recipe gives the settings)")
    model_name, dataset = _resolve(meta, model_name, dataset)
    info = get_info(dataset)
    what = _describe(model_name, info)
    arch = arch_for(meta, model_name, dataset)
    model = _fresh_model(arch, what)
    state, _ = read_state_dict(data, filename, expected=model.state_dict(), what=what)
    model = _load(model, state, what)
    first_run(model, info, what)
    data_ = cached_dataset(dataset)
    if data_.info.name != dataset:
        raise CheckpointError(f"{info.title} is not available on this machine ({data_.notice})")
    digest = hashlib.sha256(data).hexdigest()
    step = {"step": "upload", "filename": filename, "sha256": digest, "model": model_name, "dataset": dataset}
    try:
        draft = measure_variant(model, data=data_, name=name or f"{filename} ({model_name})", arch=arch,
                                recipe=[step], device=device, notes=f"uploaded {filename}, sha256 {digest[:16]}")
    except Exception as e:  # noqa: BLE001 - a model that loads and runs once but not on the test split
        raise CheckpointError(f"{what} with these weights could not be measured: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None
    return draft.store(ws)


def import_file(ws: Workspace, path: str | Path, *, model_name: str | None = None, dataset: str | None = None,
                name: str | None = None, device: str = "auto") -> Variant:
    """`import_checkpoint` for a file on disk (the CLI's `import`): a missing, unreadable or too
    big file is a CheckpointError too, refused before it is read."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise CheckpointError(f"{path}: not a file")
        if size > MAX_CHECKPOINT_BYTES:
            raise CheckpointError(f"{path}: the file is {size / 1e6:.0f} MB; the limit is "
                                  f"{MAX_CHECKPOINT_BYTES / 1e6:.0f} MB")
        data = p.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        return import_checkpoint(ws, data, p.name, model_name=model_name, dataset=dataset, name=name, device=device)
    except CheckpointError as e:
        raise CheckpointError(f"{p.name}: {e}") from None
