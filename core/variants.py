"""Turn a model into a stored variant: encode its file, measure every metric on it, store both."""
from __future__ import annotations

import json

import torch.nn as nn

from . import formats
from .data import Dataset
from .metrics import evaluate
from .models import create_model, structural_edits
from .workspace import Variant, Workspace


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


def child_recipe(parent: Variant, step: dict) -> list[dict]:
    return [*parent.recipe, step]


def measure_and_store(ws: Workspace, model: nn.Module, *, data: Dataset, name: str, arch: dict, recipe: list[dict],
                      kind: dict | None = None, parent_id: str | None = None, device: str = "auto",
                      notes: str = "", extra_metrics: dict | None = None) -> Variant:
    """Encode the model in its best honest format, measure all metrics (size on those very bytes,
    accuracy on the full test split) and store the variant."""
    model = model.cpu().eval()
    arch = arch_with_edits(arch, model)
    meta = {"name": name, "dataset": data.info.name, "arch": json.dumps(arch)}
    weights, fmt = formats.encode_best(model.state_dict(), meta)
    metrics = evaluate(model, data.test, data.info.input_shape, device=device, size_bytes=len(weights)).to_dict()
    metrics.update(extra_metrics or {})
    return ws.add_variant({}, name=name, dataset=data.info.name, arch=arch, recipe=recipe, metrics=metrics,
                          kind=kind, parent_id=parent_id, notes=notes, weights=weights, fmt=fmt)
