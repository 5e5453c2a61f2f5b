"""Long work as task handlers: `TASKS[kind](ctx, config) -> variant id or None`.

The same handler runs inline from the CLI and inside a job's worker process; only the context
differs (where events go, how cancellation is asked for).
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import torch

from .data import cached_dataset, get_info
from .models import create_model, get_spec
from .training import TrainConfig, TrainEvent, train
from .variants import base_arch, measure_and_store
from .workspace import Workspace


@dataclass
class TaskContext:
    workspace: Workspace
    on_event: Callable[[dict], None] = lambda e: None   # progress events as plain dicts
    should_stop: Callable[[], bool] = lambda: False
    log: Callable[[str], None] = lambda s: None
    on_progress: Callable[[float, str], None] = lambda p, msg: None

    def train_listener(self, stage: str = "train", span: tuple[float, float] = (0.0, 0.95)):
        """Adapt TrainEvents to this context: events, progress within `span`, log lines."""
        lo, hi = span

        def listen(e: TrainEvent) -> None:
            self.on_event({"stage": stage, **e.to_dict()})
            if e.kind in ("batch_end", "epoch_end"):
                msg = f"{stage}: epoch {e.epoch}/{e.epochs}, step {e.step}/{e.total_steps}"
                if e.loss is not None:
                    msg += f", loss {e.loss:.4f}"
                if e.val_accuracy is not None:
                    msg += f", val acc {e.val_accuracy:.2%}"
                self.on_progress(lo + (hi - lo) * e.progress, msg)
            if e.kind == "epoch_end":
                self.log(f"[{stage}] epoch {e.epoch}/{e.epochs} loss={e.loss:.4f} acc={e.accuracy:.4f} "
                         f"val_acc={e.val_accuracy:.4f} {e.samples_per_s:.0f} samples/s on {e.device}")
        return listen


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class TrainJobConfig:
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
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be a positive number of samples, got {self.subset}")
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainJobConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def run_train(ctx: TaskContext, config: dict) -> str:
    cfg = TrainJobConfig.from_dict(config)
    ctx.on_progress(0.0, "loading data")
    data = cached_dataset(cfg.dataset, cfg.subset)
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
    result = train(model, data, cfg.train, on_event=ctx.train_listener(), should_stop=ctx.should_stop)
    ctx.on_progress(0.96, "measuring on the full test split")
    name = cfg.name or f"{cfg.model} ({info.name}, {cfg.train.epochs} ep)"
    step = {"step": "train", **cfg.to_dict()}
    v = measure_and_store(ctx.workspace, model, data=data, name=name, arch=base_arch(cfg.model, data), recipe=[step],
                          device=cfg.train.device, notes="; ".join(getattr(model, "notices", [])),
                          extra_metrics={"train_seconds": round(result.seconds, 2)})
    ctx.log(f"saved variant {v.id}: test accuracy {v.metrics['accuracy']:.4f}")
    return v.id


TASKS: dict[str, Callable[[TaskContext, dict], str | None]] = {
    "train": run_train,
}

# Each task kind's config class, so a config can be validated before a job is queued.
TASK_CONFIGS: dict[str, type] = {
    "train": TrainJobConfig,
}


def validate_config(kind: str, config: dict) -> dict:
    """Check a task config up front; returns its normalised dict or raises ValueError."""
    if kind not in TASKS:
        raise ValueError(f"unknown job kind {kind!r}; choose one of: {', '.join(TASKS)}")
    cls = TASK_CONFIGS.get(kind)
    return cls.from_dict(config).to_dict() if cls else dict(config)
