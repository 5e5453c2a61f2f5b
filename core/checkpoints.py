"""Checkpoints uploaded by a user: read as data only, checked against an architecture, stored
as a new root variant.

A checkpoint is either safetensors (any plain file, or a workbench download in its sparse
format) or a PyTorch `.pt`/`.pth` state_dict read with `torch.load(weights_only=True)`, which
refuses anything but tensors and plain containers, so a pickle built to run code on load is
rejected before any of it runs. Nothing here ever calls `torch.load` without `weights_only=True`,
`torch.jit.load`, or `pickle`.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
import re

import torch

from . import formats
from .data import cached_dataset, get_info
from .models import build_from_arch, create_model, get_spec
from .variants import measure_and_store
from .workspace import Variant, Workspace

MAX_CHECKPOINT_BYTES = 200 * 1000 * 1000
SUFFIXES = ("safetensors", "pt", "pth")
# where training scripts commonly nest the state_dict inside a checkpoint dict
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")


class CheckpointError(ValueError):
    """The file is not a usable checkpoint for the chosen architecture; the message says why."""


def _is_safetensors(data: bytes) -> bool:
    try:
        formats.read_metadata(data)
        return True
    except ValueError:
        return False


def read_state_dict(data: bytes, filename: str = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Decode checkpoint bytes into (state_dict, safetensors metadata). Raises CheckpointError."""
    if not data:
        raise CheckpointError("the file is empty")
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"the file is {len(data) / 1e6:.0f} MB; the limit is {MAX_CHECKPOINT_BYTES / 1e6:.0f} MB")
    suffix = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if suffix == "safetensors" or (suffix not in ("pt", "pth") and _is_safetensors(data)):
        try:
            state, meta = formats.decode(data)
        except Exception as e:
            raise CheckpointError(f"not a readable safetensors file ({type(e).__name__}: {e})") from None
        return state, meta
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # weights_only refused it. A pickle naming a class or function (a payload, a whole module)
        # says "Unsupported global: GLOBAL os.system ..."; garbage says e.g. "Unsupported operand".
        msg = str(e)
        found = re.search(r"Unsupported (?:global|class):? (?:GLOBAL )?([\w.]+)", msg)
        if found:
            raise CheckpointError(f"rejected: the file holds Python objects other than tensors ({found.group(1)}), "
                                  "which would run code when unpickled; only plain state_dicts are accepted") from None
        detail = msg.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()[0] if msg.strip() else ""
        raise CheckpointError("not a PyTorch state_dict file: the safe (weights-only) loader refused it "
                              f"({detail[:150] or type(e).__name__})") from None
    except Exception as e:
        raise CheckpointError(f"not a PyTorch state_dict file ({type(e).__name__}: {str(e)[:200]})") from None
    return _as_state_dict(obj), {}


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


def _shape(t: torch.Tensor | torch.Size) -> str:
    return "x".join(map(str, t.shape if isinstance(t, torch.Tensor) else t)) or "scalar"


def check_fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], what: str) -> None:
    """Raise CheckpointError naming missing, unexpected and mis-shaped tensors."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} (file {_shape(state[k])}, model {_shape(expected[k])})"
              for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("with the wrong shape", shapes)):
        if items:
            more = f" and {len(items) - 4} more" if len(items) > 4 else ""
            problems.append(f"{len(items)} tensor(s) {label}: {', '.join(items[:4])}{more}")
    if problems:
        raise CheckpointError(f"this checkpoint does not fit {what}: " + "; ".join(problems))
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"the checkpoint has NaN or infinite values in {', '.join(bad[:4])}")


def build_for(state: dict[str, torch.Tensor], meta: dict[str, str], model_name: str, dataset: str):
    """Build `model_name` for `dataset` and load `state` into it (strictly). Returns (model, arch).

    A workbench download carries its `arch` in the metadata; its structural edits (channel counts
    after structured pruning) are used when it names the same architecture. The rest of the
    metadata is ignored: the dataset, not the file, decides the model's input and output sizes."""
    get_spec(model_name)
    info = get_info(dataset)
    kwargs = {"num_classes": info.num_classes, "in_channels": info.in_channels, "image_size": info.image_size}
    edits = {}
    try:
        file_arch = json.loads(meta.get("arch", "null"))
        if isinstance(file_arch, dict) and file_arch.get("name") == model_name:
            edits = file_arch.get("edits") if isinstance(file_arch.get("edits"), dict) else {}
    except ValueError:
        pass
    arch = {"name": model_name, "kwargs": kwargs, "edits": edits}
    what = f"{model_name} for {info.title} ({info.num_classes} classes, {_shape(torch.Size(info.input_shape))} input)"
    if edits:
        try:
            model = build_from_arch(arch, state)
        except Exception as e:
            raise CheckpointError(f"this checkpoint does not fit {what}: {str(e)[:300]}") from None
    else:
        model = create_model(model_name, **kwargs)
        check_fits(state, model.state_dict(), what)
        model.load_state_dict(state, strict=True)
    return model.eval(), arch


def import_checkpoint(ws: Workspace, data: bytes, filename: str, *, model_name: str, dataset: str,
                      name: str | None = None, device: str = "auto") -> Variant:
    """Read, check, measure (full test split) and store an uploaded checkpoint as a root variant."""
    state, meta = read_state_dict(data, filename)
    model, arch = build_for(state, meta, model_name, dataset)
    data_ = cached_dataset(dataset)
    if data_.info.name != dataset:
        raise CheckpointError(f"{get_info(dataset).title} is not available on this machine ({data_.notice})")
    digest = hashlib.sha256(data).hexdigest()
    step = {"step": "upload", "filename": filename, "sha256": digest, "model": model_name, "dataset": dataset}
    v = measure_and_store(ws, model, data=data_, name=name or f"{filename} ({model_name})", arch=arch, recipe=[step],
                          device=device, notes=f"uploaded {filename}, sha256 {digest[:16]}")
    return v
