"""What every step that makes a child variant needs: its parent (model and the parent's OWN
dataset, never a stand-in), a name that tells it apart, and the measured draft."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass

import torch
import torch.nn as nn

from core.data.datasets import cached_dataset
from core.data.types import DATASETS, Dataset
from core.measure.training import TrainConfig
from core.models.registry import get_spec
from core.store.variants import VariantDraft, child_recipe, measure_variant


class DatasetMismatch(ValueError):
    """A variant's dataset is not available here; measuring on a stand-in would be a lie."""


@dataclass
class Parent:
    variant: object           # core.store.workspace.Variant
    model: nn.Module          # a private copy, safe to change
    data: Dataset


def is_model_name(ref: str) -> bool:
    """True when `ref` names a registered model (built fresh) rather than a variant."""
    try:
        get_spec(ref)
        return True
    except ValueError:
        return False


STEP_SKIPS = ("device", "log_every")    # where a training step ran and how often it spoke are not its recipe


def train_on_device(cfg) -> TrainConfig:
    """A training job config's loop settings: its `train` run on the job's own `device`."""
    return TrainConfig.coerce({**cfg.train.to_dict(), "device": cfg.device})


def coerce_train(cfg, default) -> None:
    """Set a training job config's `train` field to a TrainConfig: a partial dict (run finetune
    train.lr=0.1) keeps the task's own `default()` settings for the keys it leaves out."""
    if isinstance(cfg.train, dict):
        object.__setattr__(cfg, "train", TrainConfig.from_dict({**default().to_dict(), **cfg.train}))
    object.__setattr__(cfg, "train", TrainConfig.coerce(cfg.train))


def check_subset_name_device(cfg) -> None:
    """The checks every training job config shares: `subset`, `name` and `device`."""
    if cfg.subset is not None and (type(cfg.subset) is not int or cfg.subset < 1):
        raise ValueError(f"subset must be a positive number of samples, got {cfg.subset!r}")
    if cfg.name is not None and not isinstance(cfg.name, str):
        raise ValueError(f"name must be text, got {cfg.name!r}")
    if not isinstance(cfg.device, str) or (cfg.device not in ("auto", "cpu", "cuda")
                                           and not cfg.device.startswith("cuda:")):
        raise ValueError(f"device must be auto, cpu or cuda, got {cfg.device!r}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def dataset_of(variant, subset: int | None = None, workspace_root=None) -> Dataset:
    """The dataset `variant` was measured on, or DatasetMismatch: never the digits fallback in its
    place (today's fallback would silently measure a Fashion-MNIST model's child on digits)."""
    data = cached_dataset(variant.dataset, subset, workspace_root)   # an uploaded dataset lives in the workspace
    if data.info.name != variant.dataset:
        title = DATASETS[variant.dataset].title if variant.dataset in DATASETS else variant.dataset
        raise DatasetMismatch(f"{variant.name} ({variant.id}) was measured on {title}, which is not available on this "
                              f"machine, so its child cannot be measured. {data.notice}".strip())
    return data


def open_parent(ctx, ref: str, *, subset: int | None = None, float_only: bool = True) -> Parent:
    """The parent variant `ref`, a private copy of its model and its own dataset."""
    v = ctx.workspace.get_variant(ref)
    if float_only and not v.is_float:
        raise ValueError(f"variant {v.id} ({v.name}) is quantized; start from its float parent instead")
    data = dataset_of(v, subset, getattr(ctx.workspace, "root", None))
    return Parent(v, ctx.workspace.load_model(v), data)


def unique_name(ws, name: str) -> str:
    """`name`, or `name (2)`, `name (3)`, ... when a variant already has it."""
    taken = {v.name for v in ws.list_variants()}
    if name not in taken:
        return name
    n = 2
    while f"{name} ({n})" in taken:
        n += 1
    return f"{name} ({n})"


def _canonical(step: dict) -> str:
    return json.dumps(step, sort_keys=True, default=str)


def existing_child(ws, parent_id: str, step: dict):
    """A child of `parent_id` made by exactly this step, or None (so Apply twice offers it)."""
    want = _canonical(step)
    for child in ws.children(parent_id):
        if child.recipe and _canonical(child.recipe[-1]) == want:
            return child
    return None


def child_draft(parent: Parent, model: nn.Module, *, name: str, step: dict, device: str = "auto", notes: str = "",
                extra_metrics: dict | None = None, declared_kind: dict | None = None, **measure_kwargs) -> VariantDraft:
    """Measure `model` as a child of `parent`: its latency is timed together with the parent's, in
    the same call, so the ratio between them is fair."""
    return measure_variant(model, data=parent.data, name=name, arch=parent.variant.arch,
                           recipe=child_recipe(parent.variant, step), parent=parent.variant,
                           reference=parent.model, declared_kind=declared_kind, device=device, notes=notes,
                           extra_metrics=extra_metrics, **measure_kwargs)
