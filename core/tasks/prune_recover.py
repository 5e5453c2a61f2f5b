"""Gradual pruning with recovery: AGP steps from the parent's sparsity to the target, each followed
by fine-tuning with the masks held fixed (unstructured) or on the shrunk model (channels)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch.nn as nn

from core.compress.pruning.masks import attach_masks_from_zeros_, nonzero_count, prunable_layers, remove_masks_
from core.compress.pruning.prune import PruneConfig, prune, resolve_exclude
from core.compress.pruning.schedule import agp_schedule
from core.compress.pruning.structural import relative_channel_amount
from core.measure.metrics import accuracy, model_device
from core.measure.training import TrainConfig, train_
from core.tasks.common import child_draft, open_parent, unique_name
from core.tasks.prune import PruneJobConfig
from core.tasks.registry import TaskContext, TaskOutcome, register_task


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
        object.__setattr__(self, "finetune", TrainConfig.coerce(self.finetune))
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise ValueError(f"steps must be a whole number of at least 1, got {self.steps!r}")
        if self.subset is not None and (not isinstance(self.subset, int) or self.subset < 1):
            raise ValueError(f"subset must be a positive number of samples, got {self.subset}")

    def step(self) -> dict:
        d = {"step": "prune_recover", **self.to_dict()}
        d.pop("variant")
        d.pop("name")
        return d

    def describe(self, name_of) -> str:
        ep = self.finetune.epochs
        return (f"Prune and recover {name_of(self.variant)}: {self.prune.label()} in {self.steps} step"
                f"{'s' if self.steps != 1 else ''} × {ep} fine-tuning epoch{'s' if ep != 1 else ''}")


@register_task("prune_recover", PruneRecoverJobConfig, title="Prune and recover")
def run_prune_recover(ctx: TaskContext, cfg: PruneRecoverJobConfig) -> TaskOutcome:
    """Gradual pruning with fine-tuning after each step. Events: {"stage": "prune_recover", "kind":
    "point", "step", "steps", "phase": "start" | "pruned" | "recovered", "sparsity", "val_accuracy"}
    draw the live accuracy-vs-sparsity curve."""
    pc: PruneConfig = cfg.prune
    ctx.on_progress(0.0, "loading data and model")
    parent = open_parent(ctx, cfg.variant, subset=cfg.subset)
    data, model = parent.data, parent.model
    input_shape = data.info.input_shape
    excluded = resolve_exclude(model, pc)
    names = [n for n, _ in prunable_layers(model) if n not in excluded]
    w0 = {n: m.weight.numel() for n, m in prunable_layers(model) if n in names}
    total0 = sum(w0.values())

    def sparsity_now(m: nn.Module) -> tuple[float, dict[str, float]]:
        nz = {n: nonzero_count(mod) for n, mod in prunable_layers(m) if n in names}
        return 1 - sum(nz.values()) / total0, {n: 1 - nz[n] / w0[n] for n in names}

    s0, layer_s0 = sparsity_now(model)
    if pc.structured:
        s0, layer_s0 = 0.0, {n: 0.0 for n in names}   # channel amounts count from the parent's channels
    elif pc.amount <= s0 + 1e-9 and not pc.layer_amounts:
        raise ValueError(f"variant {parent.variant.id} is already {s0:.1%} sparse, at or above the target "
                         f"{pc.amount:.0%}")
    schedule = agp_schedule(s0, max(pc.amount, s0), cfg.steps)
    layer_schedules = {n: agp_schedule(min(layer_s0[n], a), max(a, layer_s0[n]), cfg.steps)
                       for n, a in pc.layer_amounts.items()}
    history: list[dict] = []

    def point(step: int, phase: str, m: nn.Module, target: float) -> dict:
        sp, _ = sparsity_now(m)
        p = {"step": step, "steps": cfg.steps, "phase": phase, "target": round(target, 6), "sparsity": sp,
             "val_accuracy": accuracy(m, data.val, model_device(m)), "params": sum(q.numel() for q in m.parameters())}
        history.append(p)
        ctx.on_event({"stage": "prune_recover", "kind": "point", **p})
        return p

    p = point(0, "start", model, s0)
    ctx.log(f"start: sparsity {p['sparsity']:.1%}, val acc {p['val_accuracy']:.4f}; AGP targets "
            + ", ".join(f"{t:.1%}" for t in schedule))
    done = {"_": s0, **{n: 0.0 for n in pc.layer_amounts}}
    for k, target in enumerate(schedule, 1):
        lo, hi = 0.9 * (k - 1) / cfg.steps, 0.9 * k / cfg.steps
        ctx.on_progress(lo, f"step {k}/{cfg.steps}: pruning to {target:.1%}")
        if pc.structured:   # Torch-Pruning counts from the current channels: convert to relative amounts
            amount = relative_channel_amount(done["_"], target)
            overrides = {n: relative_channel_amount(done[n], layer_schedules[n][k - 1]) for n in pc.layer_amounts}
            done = {"_": target, **{n: layer_schedules[n][k - 1] for n in pc.layer_amounts}}
        else:
            amount = target
            overrides = {n: layer_schedules[n][k - 1] for n in pc.layer_amounts}
        step_cfg = replace(pc, amount=min(amount, 0.99), layer_amounts={n: min(a, 0.99) for n, a in overrides.items()})
        model, _ = prune(model, step_cfg, input_shape=input_shape)   # a new private copy each step
        point(k, "pruned", model, target)
        if not pc.structured:
            attach_masks_from_zeros_(model, names)   # fine-tuning keeps the pruned weights at zero
        train_(model, data, replace(cfg.finetune, seed=cfg.finetune.seed + k), should_stop=ctx.should_stop,
               on_event=ctx.train_listener(f"fine-tune {k}/{cfg.steps}", (lo, hi)))
        remove_masks_(model)
        model = model.cpu()
        p = point(k, "recovered", model, target)
        ctx.log(f"step {k}/{cfg.steps}: sparsity {p['sparsity']:.1%}, val acc after fine-tune {p['val_accuracy']:.4f}")

    ctx.on_progress(0.92, "measuring on the full test split")
    name = unique_name(ctx.workspace, cfg.name or f"{parent.variant.name} | {pc.label()}, {cfg.steps} AGP steps x "
                                                  f"{cfg.finetune.epochs} ep")
    notes = "AGP steps (sparsity: val accuracy after fine-tuning): " + "; ".join(
        f"{q['sparsity']:.1%}: {q['val_accuracy']:.2%}" for q in history if q["phase"] in ("start", "recovered"))
    draft = child_draft(parent, model, name=name, step=cfg.step(), device=cfg.device, notes=notes,
                        extra_metrics={"sparsity": round(history[-1]["sparsity"], 6),
                                       "val_accuracy": history[-1]["val_accuracy"], **ctx.load_context()})
    v = ctx.save(draft)
    ctx.on_progress(1.0, f"saved {v.id}")
    last = history[-1]
    ctx.log(f"saved variant {v.id}: sparsity {last['sparsity']:.1%}, val acc {last['val_accuracy']:.4f}, "
            f"test acc {v.metrics['accuracy']:.4f}")
    return TaskOutcome(variant_id=v.id, result={"history": history})
