"""Long work as task handlers: `TASKS[kind](ctx, config) -> variant id or None`.

The same handler runs inline from the CLI and inside a job's worker process; only the context
differs (where events go, how cancellation is asked for).
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from .config import DictConfig
from .data import cached_dataset, get_info
from .models import create_model, get_spec
from .pruning import DEFAULT_SENSITIVITY_AMOUNTS, UNSTRUCTURED, PruneConfig
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
    job_id: str | None = None   # set by the job runner; tasks may keep result files in job_dir()

    def job_dir(self):
        """The job's directory in the workspace (created), or None outside a job."""
        if self.job_id is None:
            return None
        d = self.workspace.jobs_dir / self.job_id
        d.mkdir(parents=True, exist_ok=True)
        return d

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
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be a positive number of samples, got {self.subset}")
        if isinstance(self.train, dict):
            object.__setattr__(self, "train", TrainConfig.from_dict(self.train))


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


# ---------------------------------------------------------------- pruning (issue 4)

def _prune_config(v) -> PruneConfig:
    if isinstance(v, PruneConfig):
        return v
    if isinstance(v, dict):
        return PruneConfig.from_dict(v)
    raise ValueError(f"prune must be a pruning config (dict), got {type(v).__name__}")


@dataclass(frozen=True)
class PruneJobConfig(DictConfig):
    """One-shot pruning of a variant into a child variant (no fine-tuning)."""

    variant: str
    prune: PruneConfig = field(default_factory=PruneConfig)
    name: str | None = None
    device: str = "auto"          # where the child's metrics are measured

    def __post_init__(self):
        if not self.variant:
            raise ValueError("variant is required: the id or name of the variant to prune")
        object.__setattr__(self, "prune", _prune_config(self.prune))

    def to_dict(self) -> dict:
        return {"variant": self.variant, "prune": self.prune.to_dict(), "name": self.name, "device": self.device}


def run_prune(ctx: TaskContext, config: dict) -> str:
    from .pruning import prune_variant

    cfg = PruneJobConfig.from_dict(config)
    ctx.on_progress(0.05, f"pruning {cfg.variant}: {cfg.prune.label()}")
    v, report = prune_variant(ctx.workspace, cfg.variant, cfg.prune, name=cfg.name, device=cfg.device,
                              on_progress=ctx.on_progress)
    ctx.on_event({"stage": "prune", "kind": "report", "report": report.to_dict()})
    ctx.log(f"{report.summary()}")
    ctx.log(f"saved variant {v.id}: test accuracy {v.metrics['accuracy']:.4f}, {v.metrics['size_bytes']} bytes")
    return v.id


@dataclass(frozen=True)
class SensitivityJobConfig(DictConfig):
    """Per-layer sensitivity: accuracy on a fixed validation subset when only one layer is pruned."""

    variant: str
    amounts: tuple[float, ...] = DEFAULT_SENSITIVITY_AMOUNTS
    method: str = "l1"
    val_subset: int = 1000
    exclude: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.variant:
            raise ValueError("variant is required: the id or name of the variant to scan")
        if self.method not in UNSTRUCTURED:
            raise ValueError(f"sensitivity method must be one of {', '.join(UNSTRUCTURED)}, got {self.method!r}")
        amounts = tuple(sorted({float(a) for a in self.amounts}))
        if not amounts or any(not 0 < a < 1 for a in amounts):
            raise ValueError(f"amounts must be numbers in (0, 1), got {list(self.amounts)}")
        object.__setattr__(self, "amounts", amounts)
        if self.val_subset < 10:
            raise ValueError(f"val_subset must be at least 10 samples, got {self.val_subset}")
        if self.exclude is not None:
            object.__setattr__(self, "exclude", tuple(self.exclude))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["amounts"] = list(self.amounts)
        d["exclude"] = list(self.exclude) if self.exclude is not None else None
        return d


SENSITIVITY_FILE = "sensitivity.json"


def run_sensitivity(ctx: TaskContext, config: dict) -> None:
    """Produces no variant: the result goes out as the last event ({"kind": "result"}) and, inside
    a job, as sensitivity.json in the job's directory."""
    from .pruning import preview_subset, sensitivity_scan

    cfg = SensitivityJobConfig.from_dict(config)
    ws = ctx.workspace
    v = ws.get_variant(cfg.variant)
    ctx.on_progress(0.0, "loading data and model")
    data = cached_dataset(v.dataset)
    model = ws.load_model(v)
    val = preview_subset(data.val, cfg.val_subset)

    def on_point(p: dict) -> None:
        ctx.on_event({"stage": "sensitivity", "kind": "point", **p})
        ctx.on_progress(0.02 + 0.96 * p["done"] / p["total"],
                        f"{p['layer']} at {p['amount']:.0%}: val acc {p['accuracy']:.2%}")

    def on_start(info: dict) -> None:
        ctx.on_event({"stage": "sensitivity", "kind": "start", **info})

    result = sensitivity_scan(model, val, cfg.amounts, method=cfg.method, exclude=cfg.exclude, seed=cfg.seed,
                              on_point=on_point, on_start=on_start, should_stop=ctx.should_stop)
    result = {**result, "variant": v.id, "variant_name": v.name, "config": cfg.to_dict()}
    d = ctx.job_dir()
    if d is not None:
        (d / SENSITIVITY_FILE).write_text(json.dumps(result, indent=1))
    ctx.on_event({"stage": "sensitivity", "kind": "result", "result": result})
    worst = min(result["layers"], key=lambda r: r["accuracy"][-1])
    ctx.log(f"sensitivity of {len(result['layers'])} layers x {len(cfg.amounts)} amounts on {len(val)} val images; "
            f"baseline {result['baseline_accuracy']:.4f}; most sensitive at {cfg.amounts[-1]:.0%}: {worst['name']}")
    return None


def sensitivity_result(ws: Workspace, job_id: str) -> dict | None:
    """The finished result of a sensitivity job: its JSON file, else its last result event."""
    path = ws.jobs_dir / job_id / SENSITIVITY_FILE
    if path.is_file():
        return json.loads(path.read_text())
    for e in reversed(ws.job_events(job_id)):
        if e.get("stage") == "sensitivity" and e.get("kind") == "result":
            return e["result"]
    return None


def sensitivity_from_events(events: list[dict]) -> dict | None:
    """A result-shaped dict from a (possibly still running) sensitivity job's events: the finished
    result when there is one, else the layers measured so far (for a live chart)."""
    start = None
    points: dict[str, list[float]] = {}
    for e in events:
        if e.get("stage") != "sensitivity":
            continue
        if e.get("kind") == "result":
            return e["result"]
        if e.get("kind") == "start":
            start = e
        elif e.get("kind") == "point":
            points.setdefault(e["layer"], []).append(e["accuracy"])
    if start is None:
        return None
    n = len(start["amounts"])
    layers = [{**r, "accuracy": points[r["name"]]} for r in start["layers"] if len(points.get(r["name"], [])) == n]
    return {k: start[k] for k in ("method", "amounts", "baseline_accuracy", "val_samples", "excluded")} | {
        "layers": layers, "partial": True, "layers_total": len(start["layers"])}


def _recover_train_default() -> TrainConfig:
    return TrainConfig(epochs=1, lr=0.01, optimizer="sgd", schedule="cosine")


@dataclass(frozen=True)
class PruneRecoverJobConfig(PruneJobConfig):
    """Gradual pruning (AGP cubic schedule) to `prune.amount` over `steps` steps, fine-tuning
    `finetune.epochs` epochs after each step with the masks held fixed."""

    prune: PruneConfig = field(default_factory=lambda: PruneConfig(amount=0.9, scope="global"))
    steps: int = 5
    finetune: TrainConfig = field(default_factory=_recover_train_default)
    subset: int | None = None     # fine-tune on this many training samples (None: all)

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.finetune, dict):
            object.__setattr__(self, "finetune", TrainConfig.from_dict(self.finetune))
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a whole number of at least 1, got {self.steps!r}")
        if self.subset is not None and self.subset < 1:
            raise ValueError(f"subset must be a positive number of samples, got {self.subset}")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "steps": self.steps, "finetune": self.finetune.to_dict(), "subset": self.subset}


def run_prune_recover(ctx: TaskContext, config: dict) -> str:
    """Events: {"stage": "prune_recover", "kind": "point", "step", "steps", "phase": "start" |
    "pruned" | "recovered", "sparsity", "val_accuracy"} for the live accuracy-vs-sparsity curve."""
    from .pruning import prune_recover

    cfg = PruneRecoverJobConfig.from_dict(config)
    v, history = prune_recover(ctx.workspace, cfg, ctx)
    last = history[-1]
    ctx.log(f"saved variant {v.id}: sparsity {last['sparsity']:.1%}, val acc {last['val_accuracy']:.4f}, "
            f"test acc {v.metrics['accuracy']:.4f}")
    return v.id


TASKS: dict[str, Callable[[TaskContext, dict], str | None]] = {
    "train": run_train,
    "prune": run_prune,
    "sensitivity": run_sensitivity,
    "prune_recover": run_prune_recover,
}

# Each task kind's config class, so a config can be validated before a job is queued.
TASK_CONFIGS: dict[str, type] = {
    "train": TrainJobConfig,
    "prune": PruneJobConfig,
    "sensitivity": SensitivityJobConfig,
    "prune_recover": PruneRecoverJobConfig,
}


def validate_config(kind: str, config: dict) -> dict:
    """Check a task config up front; returns its normalised dict or raises ValueError."""
    if kind not in TASKS:
        raise ValueError(f"unknown job kind {kind!r}; choose one of: {', '.join(TASKS)}")
    cls = TASK_CONFIGS.get(kind)
    return cls.from_dict(config).to_dict() if cls else dict(config)


@dataclass
class TaskOutcome:
    """What a finished task hands back to whoever ran it: the variant it stored (if any) and a
    JSON-able result (e.g. a sensitivity scan), which the job store keeps with the job."""

    variant_id: str | None = None
    result: dict | None = None


def run_task(kind: str, config: dict, ctx: TaskContext) -> TaskOutcome:
    """Validate `config` for task `kind` and run it in this process with `ctx`."""
    config = validate_config(kind, config)
    out = TASKS[kind](ctx, config)
    if isinstance(out, dict):
        return TaskOutcome(result=out)
    return TaskOutcome(variant_id=out)
