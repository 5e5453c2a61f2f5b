"""The one task registry: every step kind is a config dataclass plus a handler registered with it.

    @register_task("prune", PruneJobConfig, title="Prune")
    def run_prune(ctx: TaskContext, cfg: PruneJobConfig) -> TaskOutcome: ...

The CLI (`python -m core run KIND ...`), the pages and every job runner look tasks up here, so a
new step kind needs nothing else edited. A handler runs the same way inline (CLI, a page's quick
Apply) and inside a job's worker process; only its TaskContext differs: where events, progress and
log lines go, how cancellation is asked for, and where a finished variant is stored.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, Protocol

from core.base.config import DictConfig
from core.measure.training import TrainEvent

PLUGINS_ENV = "WORKBENCH_TASK_MODULES"   # comma-separated modules that register more tasks
REQUIRED = "(required)"


@dataclass
class TaskOutcome:
    """What a finished task hands back to whoever ran it: the variant it stored (if any) and a
    JSON-able result (e.g. a sensitivity scan), which the job store keeps with the job."""

    variant_id: str | None = None
    result: dict | None = None


class Fanout(Protocol):
    """Work a task may spread over a cluster instead of its own process. A runner that has one (the
    Ray actor) puts it in `TaskContext.fanout`; tasks only ask this interface, never the runners.
    Both methods give what the local loop gives, by construction (same rows, same trials)."""

    def sensitivity_scan(self, model, val_subset, amounts, **kwargs) -> dict:
        """`compress.pruning.schedule.sensitivity_scan`, one cluster task per layer."""

    def sweep_trials(self, parcel: dict, kind: str, configs: list[dict], *, device: str, gpus_per_trial: float,
                     cpus_per_trial: int, max_concurrent: int | None, on_progress, on_done, should_stop) -> None:
        """Run trial i = task `kind` with `configs[i]` in parallel; `on_done(TrialResult)` per trial."""


@dataclass
class TaskContext:
    workspace: Any                                       # a core.store.workspace.Workspace: variants are read from it
    on_event: Callable[[dict], None] = lambda e: None    # progress events as plain dicts
    should_stop: Callable[[], bool] = lambda: False
    log: Callable[[str], None] = lambda s: None
    on_progress: Callable[[float, str], None] = lambda p, msg: None
    job_id: str | None = None
    save_variant: Callable[[Any], Any] | None = None     # VariantDraft -> Variant; default: store in `workspace`
    fanout: Fanout | None = None                         # set inside a Ray job: scans and sweeps spread over the cluster

    def save(self, draft):
        """Store a measured VariantDraft where this context's runner wants it; returns the Variant.
        A runner whose workers cannot write the workspace passes its own `save_variant`."""
        return self.save_variant(draft) if self.save_variant else draft.store(self.workspace)

    def load_context(self) -> dict:
        """What else ran while this task measures: other running jobs (besides this one), stored
        with the metrics for information (`other_jobs_while_measured`). The latency figures do not
        depend on it: the measurement lane keeps only undisturbed passes or withholds the figure."""
        try:
            running = self.workspace.jobs.list(states=("running",))
        except AttributeError:   # a stand-in workspace without a job store (a remote worker)
            return {}
        return {"other_jobs_while_measured": sum(1 for j in running if j.id != self.job_id)}

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


Handler = Callable[[TaskContext, Any], "TaskOutcome | str | dict | None"]


@dataclass(frozen=True)
class TaskSpec:
    kind: str
    config_cls: type
    handler: Handler
    title: str            # for people: "Prune and recover"
    summary: str          # one line: what it does


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(kind: str, config_cls: type, *, title: str | None = None, summary: str = ""):
    """Register `handler(ctx, config)` as the task `kind`, taking a `config_cls` instance."""
    if not (isinstance(config_cls, type) and issubclass(config_cls, DictConfig)):
        raise TypeError(f"task {kind!r}: its config must be a DictConfig dataclass, got {config_cls!r}")

    def deco(handler: Handler) -> Handler:
        old = _REGISTRY.get(kind)
        if old is not None and (old.handler.__module__, old.handler.__qualname__) != (
                handler.__module__, handler.__qualname__):
            raise ValueError(f"task kind {kind!r} is already registered by {old.handler.__module__}")
        doc = " ".join((handler.__doc__ or "").split())
        first = doc.split(". ")[0].rstrip(".") + "." if doc else ""   # the docstring's first sentence
        _REGISTRY[kind] = TaskSpec(kind, config_cls, handler, title or kind.replace("_", " ").capitalize(),
                                   summary or first)
        return handler
    return deco


def load_plugins() -> None:
    """Import the modules named in $WORKBENCH_TASK_MODULES, so the tasks they register exist in
    this process (and in every worker, which inherits the environment)."""
    for name in filter(None, (s.strip() for s in os.environ.get(PLUGINS_ENV, "").split(","))):
        importlib.import_module(name)


def list_tasks() -> list[TaskSpec]:
    return list(_REGISTRY.values())


def get_task(kind: str) -> TaskSpec:
    spec = _REGISTRY.get(kind)
    if spec is None:
        load_plugins()
        spec = _REGISTRY.get(kind)
    if spec is None:
        raise ValueError(f"unknown job kind {kind!r}; choose one of: {', '.join(_REGISTRY)}")
    return spec


def parse_config(kind: str, config: Any):
    """`config` (a dict or the task's config object) as the task's validated config object."""
    spec = get_task(kind)
    if isinstance(config, spec.config_cls):
        return config
    if isinstance(config, DictConfig):
        raise ValueError(f"task {kind!r} takes a {spec.config_cls.__name__}, got a {type(config).__name__}")
    return spec.config_cls.from_dict(config)


def validate_config(kind: str, config: Any) -> dict:
    """Check a task config up front; returns its normalised dict or raises ValueError."""
    return parse_config(kind, config).to_dict()


def config_fields(kind: str) -> list[tuple[str, str, Any]]:
    """(name, type, default) of a task's config fields, for help texts; REQUIRED has no default."""
    out = []
    for f in fields(get_task(kind).config_cls):
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        out.append((f.name, str(f.type), default))
    return out


def run_task(kind: str, config: Any, ctx: TaskContext) -> TaskOutcome:
    """Validate `config` for task `kind` and run its handler in this process with `ctx`."""
    spec = get_task(kind)
    out = spec.handler(ctx, parse_config(kind, config))
    if isinstance(out, TaskOutcome):
        return out
    if isinstance(out, dict):
        return TaskOutcome(result=out)
    if out is None or isinstance(out, str):
        return TaskOutcome(variant_id=out)
    return TaskOutcome(variant_id=out.id)   # a Variant


def job_title(kind: str, config: Any, workspace=None) -> str:
    """A title for people, e.g. 'Prune LeNet-5 baseline: L1 global 90%' (the config's `describe`)."""
    spec = get_task(kind)
    cfg = parse_config(kind, config)
    describe = getattr(cfg, "describe", None)
    if describe is None:
        return spec.title

    def name_of(ref: str) -> str:
        try:
            return workspace.get_variant(ref).name if workspace is not None else ref
        except Exception:
            return ref
    return describe(name_of)
