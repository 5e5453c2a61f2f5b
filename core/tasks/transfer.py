"""Transfer a variant (or a torchvision model, with ImageNet weights when available) to another
dataset: its classifier replaced for the new classes, the backbone optionally frozen, trained with
early stopping and the best epoch kept. The result is a new root variant on the new dataset (its
metrics are not comparable with the source's, measured on another dataset) whose recipe names the
source and carries the source's own recipe."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from core.base.config import DictConfig
from core.compress.pruning.masks import attach_masks_from_zeros_, prunable_layers, remove_masks_
from core.data.datasets import cached_dataset, get_info
from core.measure.training import TrainConfig, train_
from core.models.registry import PretrainedUnavailable, create_model, get_spec
from core.models.transfer import frozen_backbone, param_counts, replace_head_, transfer_refusal
from core.store.variants import base_arch, measure_variant
from core.tasks.common import (
    STEP_SKIPS,
    DatasetMismatch,
    check_subset_name_device,
    coerce_train,
    is_model_name,
    seed_everything,
    train_on_device,
    unique_name,
)
from core.tasks.registry import TaskContext, TaskOutcome, register_task


def _transfer_train_default() -> TrainConfig:
    return TrainConfig(epochs=5, lr=0.01, schedule="cosine", early_stop=2, restore_best=True)


@dataclass(frozen=True)
class TransferJobConfig(DictConfig):
    """Reuse `source` (a variant, or a registered model name: torchvision ones start from ImageNet
    weights when `pretrained` and available) for `dataset` (built-in or uploaded)."""

    source: str
    dataset: str
    freeze_backbone: bool = True
    pretrained: bool = True       # registry sources only: ImageNet weights when in the cache or downloadable
    train: TrainConfig = field(default_factory=_transfer_train_default)
    subset: int | None = None     # train on this many training samples (None: all)
    name: str | None = None
    device: str = "auto"

    def __post_init__(self):
        for role in ("source", "dataset"):
            v = getattr(self, role)
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{role} is required: " + ("a variant or a registered model name" if role == "source"
                                                            else "a built-in or uploaded dataset name"))
        for flag in ("freeze_backbone", "pretrained"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        coerce_train(self, _transfer_train_default)
        check_subset_name_device(self)

    def describe(self, name_of) -> str:
        source = self.source if is_model_name(self.source) else name_of(self.source)
        frozen = ", backbone frozen" if self.freeze_backbone else ""
        return f"Transfer {source} to {self.dataset}{frozen}: {self.train.epochs} ep at lr {self.train.lr:g}"


def _source_model(ctx: TaskContext, cfg: TransferJobConfig, info):
    """(model, source variant or None, arch, recipe prefix, notices) for the job's source."""
    if is_model_name(cfg.source):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PretrainedUnavailable)
            kwargs = {"pretrained": True} if cfg.pretrained and get_spec(cfg.source).has_pretrained else {}
            model = create_model(cfg.source, num_classes=info.num_classes, in_channels=info.in_channels,
                                 image_size=info.image_size, **kwargs)
        notices = list(getattr(model, "notices", [])) or [str(w.message) for w in caught]
        if not get_spec(cfg.source).has_pretrained:
            notices.append(f"{cfg.source} has no pretrained weights: it starts untrained, so freezing its backbone "
                           "trains a classifier on random features.")
        elif not kwargs:
            notices.append(f"{cfg.source} starts untrained (pretrained weights not asked for).")
        elif not notices:
            notices.append(f"{cfg.source} starts from its ImageNet weights.")
        return model, None, {"name": cfg.source, "pretrained": bool(kwargs)}, [], notices
    v = ctx.workspace.get_variant(cfg.source)
    model = ctx.workspace.load_model(v)
    refusal = transfer_refusal(v, info, model)
    if refusal:
        raise ValueError(refusal)
    return model, v, {"variant": v.id, "name": v.name, "dataset": v.dataset}, list(v.recipe), []


@register_task("transfer", TransferJobConfig, title="Transfer learning")
def run_transfer(ctx: TaskContext, cfg: TransferJobConfig) -> TaskOutcome:
    """Replace the source's head for the dataset's classes, train (backbone frozen or not), store
    the result measured on the dataset's full test split. Events: the training loop's, stage "transfer"."""
    ctx.on_progress(0.0, "loading data and model")
    root = getattr(ctx.workspace, "root", None)
    info = get_info(cfg.dataset, root)
    tc = train_on_device(cfg)
    seed_everything(tc.seed)
    model, source_v, source, recipe, notices = _source_model(ctx, cfg, info)   # refused before data is read
    data = cached_dataset(cfg.dataset, cfg.subset, root)
    if data.info.name != info.name:
        raise DatasetMismatch(f"{info.title} is not available on this machine. {data.notice}".strip())
    seed_everything(tc.seed)   # the new head is the same whatever the source's loading drew
    for n in notices:
        ctx.log(n)
    head = replace_head_(model, info.num_classes)   # fresh and seeded, also for a registry model already sized
    masked = []
    if source_v is not None and source_v.kind.get("masked") and not cfg.freeze_backbone:
        # the source's pruned weights stay pruned while the backbone trains along
        masked = [n for n, m in prunable_layers(model) if n != head and int((m.weight == 0).sum())]
        attach_masks_from_zeros_(model, masked)
    with frozen_backbone(model, head, enabled=cfg.freeze_backbone):
        trainable, frozen = param_counts(model)
        ctx.log(f"{source['name']} -> {info.title} ({info.num_classes} classes, {len(data.train)} train samples): "
                f"new head {head}, {trainable:,} trainable and {frozen:,} frozen parameters")
        result = train_(model, data, tc, should_stop=ctx.should_stop,
                        on_event=ctx.train_listener("transfer", (0.02, 0.88)))
    remove_masks_(model)
    model = model.cpu()
    epochs_run = len(result.history)
    ctx.log(f"best epoch {result.best_epoch} of {epochs_run}, val acc {result.val_accuracy:.2%}"
            + (" (stopped early)" if result.stopped_early else ""))

    ctx.on_progress(0.9, "measuring on the full test split")
    settings = {k: v for k, v in tc.to_dict().items() if k not in STEP_SKIPS}
    step = {"step": "transfer", "source": source, "source_recipe": recipe, "dataset": info.name,
            "freeze_backbone": cfg.freeze_backbone, "head": head, **settings, "subset": cfg.subset,
            "epochs_run": epochs_run, "best_epoch": result.best_epoch, "stopped_early": result.stopped_early}
    arch_name = source_v.arch["name"] if source_v is not None else cfg.source
    extra_kwargs = {} if source_v is None else {k: v for k, v in source_v.arch.get("kwargs", {}).items()
                                                if k not in ("num_classes", "in_channels", "image_size",
                                                             "pretrained", "allow_download")}
    arch = base_arch(arch_name, data, **extra_kwargs)
    suffix = "frozen backbone" if cfg.freeze_backbone else "fine-tuned"
    name = unique_name(ctx.workspace, cfg.name or f"{source['name']} -> {info.name} ({suffix})")
    notes = (f"transferred from {source['name']}" + (f" ({source_v.id}, {source_v.dataset})" if source_v else "")
             + f" to {info.title}: head {head} replaced, backbone {'frozen' if cfg.freeze_backbone else 'trained'}; "
             + " ".join(notices)).strip()
    draft = measure_variant(model, data=data, name=name, arch=arch, recipe=[step], device=cfg.device, notes=notes,
                            extra_metrics={"val_accuracy": result.val_accuracy, **ctx.load_context()})
    v = ctx.save(draft)
    ctx.on_progress(1.0, f"saved {v.id}")
    ctx.log(f"saved variant {v.id}: test accuracy {v.metrics['accuracy']:.4f} on {info.title} "
            f"(chance {1 / info.num_classes:.4f})")
    return TaskOutcome(variant_id=v.id, result={
        "history": result.history, "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
        "epochs_run": epochs_run, "val_accuracy": result.val_accuracy, "start_val_accuracy": result.start_val_accuracy,
        "source_id": source_v.id if source_v else None, "source": source["name"], "dataset": info.name,
        "trainable_params": trainable, "frozen_params": frozen, "notices": notices, "head": head,
        "chance_accuracy": 1 / info.num_classes})

