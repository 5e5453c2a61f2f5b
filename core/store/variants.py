"""Turn a model into a stored variant: encode its file, decode it again, measure every metric on
the decoded model (what the user downloads is what was measured), store both.

`measure_variant` builds a `VariantDraft` (bytes + metadata + metrics) without touching a
workspace, so a worker that cannot write the workspace database can ship it back to the server;
`VariantDraft.store(ws)` writes it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import torch.nn as nn

from core.base.kinds import derive_kind
from core.compress.quant.files import encode_quantized, model_from_bytes
from core.data.types import Dataset
from core.formats import encoding as formats
from core.measure.metrics import evaluate
from core.models.registry import build_from_arch, create_model, structural_edits


def base_arch(model_name: str, data: Dataset, **kwargs) -> dict:
    """The arch dict of a freshly built registered model for this dataset."""
    info = data.info
    return {"name": model_name, "kwargs": {"num_classes": info.num_classes, "in_channels": info.in_channels,
                                           "image_size": info.image_size, **kwargs}, "edits": {}}


def arch_with_edits(arch: dict, model: nn.Module) -> dict:
    """`arch` with its structural edits recomputed against a fresh build of the registered model."""
    kwargs = {k: v for k, v in arch.get("kwargs", {}).items() if k not in ("pretrained", "allow_download")}
    reference = create_model(arch["name"], **kwargs)
    return {**arch, "kwargs": kwargs, "edits": structural_edits(model, reference)}


def file_metadata(name: str, dataset: str, arch: dict) -> dict[str, str]:
    """The safetensors header metadata of a variant's file (the preview counts these bytes too)."""
    return {"name": name, "dataset": dataset, "arch": json.dumps(arch)}


def encode_variant(model: nn.Module, *, name: str, dataset: str, arch: dict) -> tuple[bytes, str, dict]:
    """The bytes of a variant's file in its best honest format: (bytes, format, arch with edits)."""
    arch = arch_with_edits(arch, model)
    weights, fmt = formats.encode_best(model.state_dict(), file_metadata(name, dataset, arch))
    return weights, fmt, arch


def child_recipe(parent, step: dict) -> list[dict]:
    return [*parent.recipe, step]


@dataclass
class VariantDraft:
    """A measured variant not yet in a workspace: everything `Workspace.add_variant` stores."""

    name: str
    dataset: str
    arch: dict
    recipe: list[dict]
    metrics: dict
    kind: dict
    weights: bytes = field(repr=False)
    format: str
    parent_id: str | None = None
    notes: str = ""

    def store(self, ws):
        """Write it into workspace `ws`; returns the stored Variant."""
        return ws.add_variant({}, name=self.name, dataset=self.dataset, arch=self.arch, recipe=self.recipe,
                              metrics=self.metrics, kind=self.kind, parent_id=self.parent_id, notes=self.notes,
                              weights=self.weights, fmt=self.format)


def measure_variant(model: nn.Module, *, data: Dataset, name: str, arch: dict, recipe: list[dict],
                    parent=None, reference: nn.Module | None = None, declared_kind: dict | None = None,
                    device: str = "auto", notes: str = "", extra_metrics: dict | None = None,
                    quant=None, float_model: nn.Module | None = None) -> VariantDraft:
    """Encode `model`, decode the bytes back into a fresh module and measure THAT (accuracy on the
    full test split, size of those very bytes, latency timed alternately with `reference`, the
    parent's model, when given). Kind flags are derived from the decoded model and its arch
    (`core.base.kinds`); a step can only add `quantized`/`simulated` through `declared_kind`.

    A child is measured on its parent's dataset or not at all: `data` must be that dataset.
    A quantized `model` passes its `quant` (QuantConfig) and the `float_model` it came from: its file
    holds integer tensors (`core.compress.quant.files`) and the arch stays the float parent's."""
    if parent is not None and data.info.name != parent.dataset:
        raise ValueError(f"{parent.name} was measured on {parent.dataset}; its child cannot be measured on "
                         f"{data.info.name} (a different dataset would make every comparison meaningless)")
    if quant is not None:
        weights, fmt = encode_quantized(model.cpu().eval(), quant, file_metadata(name, data.info.name, arch),
                                        float_model=float_model)
        decoded = model_from_bytes(arch, weights)
    else:
        weights, fmt, arch = encode_variant(model.cpu().eval(), name=name, dataset=data.info.name, arch=arch)
        decoded = build_from_arch(arch, formats.decode(weights)[0]).eval()
    metrics = evaluate(decoded, data.test, data.info.input_shape, device=device, size_bytes=len(weights),
                       reference=reference).to_dict()
    metrics.update(extra_metrics or {})
    declared = declared_kind or {}
    # int8 rounding makes small weights exactly zero: "masked" is the float model's pruning, not that
    kind = derive_kind(float_model if quant is not None and float_model is not None else decoded,
                       shrunk=bool(arch.get("edits")), quantized=declared.get("quantized", False),
                       simulated=declared.get("simulated", False))
    return VariantDraft(name, data.info.name, arch, recipe, metrics, kind, weights, fmt,
                        parent.id if parent is not None else None, notes)


def measure_and_store(ws, model: nn.Module, **kwargs):
    """`measure_variant(model, **kwargs)` stored in workspace `ws`; returns the Variant."""
    return measure_variant(model, **kwargs).store(ws)
