"""Train a registered model from scratch (or from ImageNet weights) into a new root variant."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.base.config import DictConfig
from core.data.datasets import cached_dataset, get_info
from core.measure.training import TrainConfig, train_
from core.models.registry import create_model, get_spec
from core.store.variants import base_arch, measure_variant
from core.tasks.common import seed_everything, unique_name
from core.tasks.registry import TaskContext, TaskOutcome, register_task


@dataclass(frozen=True)
class TrainJobConfig(DictConfig):
    """Train a registered model from scratch (or from ImageNet weights) into a new root variant."""

    model: str
    dataset: str = "fashion-mnist"
    subset: int | None = None
    name: str | None = None
    pretrained: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        get_spec(self.model)       # raises ValueError for an unknown model
        get_info(self.dataset)     # ... and for an unknown dataset
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < 1):
            raise ValueError(f"subset must be a positive number of samples, got {self.subset}")
        object.__setattr__(self, "train", TrainConfig.coerce(self.train))

    def describe(self, name_of) -> str:
        t = f"Train {self.model} on {get_info(self.dataset).title}, {self.train.epochs} epoch"
        t += "s" if self.train.epochs != 1 else ""
        if self.subset:
            t += f" ({self.subset:,} samples)"
        return t + (f" → {self.name}" if self.name else "")


@register_task("train", TrainJobConfig, title="Train")
def run_train(ctx: TaskContext, cfg: TrainJobConfig) -> TaskOutcome:
    """Train a registered model into a new root variant measured on the full test split."""
    ctx.on_progress(0.0, "loading data")
    data = cached_dataset(cfg.dataset, cfg.subset, getattr(ctx.workspace, "root", None))
    if data.notice:
        ctx.log(data.notice)
    seed_everything(cfg.train.seed)
    info = data.info
    kwargs = {"pretrained": True} if cfg.pretrained else {}
    model = create_model(cfg.model, num_classes=info.num_classes, in_channels=info.in_channels,
                         image_size=info.image_size, **kwargs)
    for notice in getattr(model, "notices", []):
        ctx.log(notice)
    ctx.log(f"training {cfg.model} on {info.title} ({len(data.train)} train samples), config {cfg.train.to_dict()}")
    result = train_(model, data, cfg.train, on_event=ctx.train_listener(), should_stop=ctx.should_stop)
    ctx.on_progress(0.96, "measuring on the full test split")
    step = {"step": "train", **cfg.to_dict()}
    name = unique_name(ctx.workspace, cfg.name or f"{cfg.model} ({info.name}, {cfg.train.epochs} ep)")
    draft = measure_variant(model, data=data, name=name,
                            arch=base_arch(cfg.model, data), recipe=[step], device=cfg.train.device,
                            notes="; ".join(getattr(model, "notices", [])),
                            extra_metrics={"train_seconds": round(result.seconds, 2), **ctx.load_context()})
    v = ctx.save(draft)
    ctx.log(f"saved variant {v.id}: test accuracy {v.metrics['accuracy']:.4f}")
    return TaskOutcome(variant_id=v.id)

