"""Per-layer sensitivity: accuracy on a fixed validation subset when only one layer is pruned.
Produces no variant: the result goes out as the last event and as the job's result."""
from __future__ import annotations

from dataclasses import dataclass

from core.base.config import DictConfig
from core.compress.pruning.masks import UNSTRUCTURED
from core.compress.pruning.preview import preview_subset
from core.compress.pruning.schedule import DEFAULT_SENSITIVITY_AMOUNTS, sensitivity_scan
from core.tasks.common import open_parent
from core.tasks.registry import TaskContext, TaskOutcome, register_task


@dataclass(frozen=True)
class SensitivityJobConfig(DictConfig):
    """Per-layer sensitivity of a variant: accuracy when only one layer is pruned, per amount."""

    variant: str
    amounts: tuple[float, ...] = DEFAULT_SENSITIVITY_AMOUNTS
    method: str = "l1"
    val_subset: int = 1000
    exclude: tuple[str, ...] | None = None
    seed: int = 0

    def __post_init__(self):
        if not self.variant or not str(self.variant).strip():
            raise ValueError("variant is required: the id or name of the variant to scan")
        if self.method not in UNSTRUCTURED:
            raise ValueError(f"sensitivity method must be one of {', '.join(UNSTRUCTURED)}, got {self.method!r}")
        try:
            amounts = tuple(sorted({float(a) for a in self.amounts}))
        except (TypeError, ValueError):
            raise ValueError(f"amounts must be numbers in (0, 1), got {self.amounts!r}") from None
        if not amounts or any(not 0 < a < 1 for a in amounts):
            raise ValueError(f"amounts must be numbers in (0, 1), got {list(self.amounts)}")
        object.__setattr__(self, "amounts", amounts)
        if not isinstance(self.val_subset, int) or self.val_subset < 10:
            raise ValueError(f"val_subset must be at least 10 samples, got {self.val_subset}")
        if self.exclude is not None:
            object.__setattr__(self, "exclude", tuple(self.exclude))

    def describe(self, name_of) -> str:
        return (f"Sensitivity scan of {name_of(self.variant)}: {self.method.upper() if self.method == 'l1' else self.method}"
                f", {len(self.amounts)} amounts, {self.val_subset:,} validation images")


@register_task("sensitivity", SensitivityJobConfig, title="Sensitivity scan")
def run_sensitivity(ctx: TaskContext, cfg: SensitivityJobConfig) -> TaskOutcome:
    """Accuracy per layer and amount when only that layer is pruned; the result is the job's result."""
    ctx.on_progress(0.0, "loading data and model")
    parent = open_parent(ctx, cfg.variant)
    val = preview_subset(parent.data.val, cfg.val_subset)

    def on_point(p: dict) -> None:
        ctx.on_event({"stage": "sensitivity", "kind": "point", **p})
        ctx.on_progress(0.02 + 0.96 * p["done"] / p["total"],
                        f"{p['layer']} at {p['amount']:.0%}: val acc {p['accuracy']:.2%}")

    def on_start(info: dict) -> None:
        ctx.on_event({"stage": "sensitivity", "kind": "start", **info})

    scan = sensitivity_scan
    if ctx.fanout is not None:   # a Ray job: one Ray task per layer, gathered into the same result
        scan = ctx.fanout.sensitivity_scan
        ctx.log("fanning out over the Ray cluster: one task per layer")
    result = scan(parent.model, val, cfg.amounts, method=cfg.method, exclude=cfg.exclude, seed=cfg.seed,
                  on_point=on_point, on_start=on_start, should_stop=ctx.should_stop)
    v = parent.variant
    result = {**result, "variant": v.id, "variant_name": v.name, "config": cfg.to_dict()}
    ctx.on_event({"stage": "sensitivity", "kind": "result", "result": result})
    if result["layers"]:
        worst = min(result["layers"], key=lambda r: r["accuracy"][-1])
        ctx.log(f"sensitivity of {len(result['layers'])} layers x {len(cfg.amounts)} amounts on {len(val)} val images; "
                f"baseline {result['baseline_accuracy']:.4f}; most sensitive at {cfg.amounts[-1]:.0%}: {worst['name']}")
    return TaskOutcome(result=result)


def sensitivity_result(job, events: list[dict] | None = None) -> dict | None:
    """The finished result of a sensitivity job: its stored result, else its last result event."""
    stored = getattr(job, "result", None)
    if stored:
        return stored
    return sensitivity_from_events(events or [], final_only=True)


def sensitivity_from_events(events: list[dict], final_only: bool = False) -> dict | None:
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
    if start is None or final_only:
        return None
    n = len(start["amounts"])
    layers = [{**r, "accuracy": points[r["name"]]} for r in start["layers"] if len(points.get(r["name"], [])) == n]
    return {k: start[k] for k in ("method", "amounts", "baseline_accuracy", "val_samples", "excluded")} | {
        "layers": layers, "partial": True, "layers_total": len(start["layers"])}
