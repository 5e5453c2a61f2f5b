"""Fine-tune any float variant into a child variant: masked variants keep their zeros (masks are
re-attached from them, as prune-and-recover does), shrunk ones keep their shapes, and the weights
of the best epoch by validation accuracy are kept, the parent's own weights counted as epoch 0, so
with `restore_best` a run never ends below its parent on the validation split."""
from __future__ import annotations

from dataclasses import dataclass, field

from core.base.config import DictConfig
from core.base.kinds import is_float
from core.compress.pruning.masks import attach_masks_from_zeros_, prunable_layers, remove_masks_
from core.measure.training import TrainConfig, train_
from core.tasks.common import (
    STEP_SKIPS,
    check_subset_name_device,
    child_draft,
    coerce_train,
    open_parent,
    seed_everything,
    train_on_device,
    unique_name,
)
from core.tasks.registry import TaskContext, TaskOutcome, register_task


def _finetune_train_default() -> TrainConfig:
    return TrainConfig(epochs=3, lr=0.01, schedule="cosine", early_stop=2, restore_best=True)


def quantized_refusal(v) -> str | None:
    """Why variant `v` cannot be fine-tuned (its weights are not float), or None."""
    if is_float(v.kind):
        return None
    parent = f" ({v.parent_id})" if v.parent_id else ""
    return (f"variant {v.id} ({v.name}) is quantized ({v.kind_label}): its weights are not float and cannot be "
            f"fine-tuned. Fine-tune its float parent{parent} instead, then quantize the result, or run "
            f"quantization-aware training on the Quantize page (mode qat; CLI: quantize VARIANT --mode qat)")


@dataclass(frozen=True)
class FinetuneJobConfig(DictConfig):
    """Fine-tune a float variant (masked, shrunk or dense) into a child variant; `train.early_stop`
    ends the run once validation accuracy stops improving and `train.restore_best` keeps the best
    epoch (the parent's weights when no epoch beats them)."""

    variant: str
    train: TrainConfig = field(default_factory=_finetune_train_default)
    subset: int | None = None     # train on this many training samples (None: all); always measured on the full test split
    name: str | None = None
    device: str = "auto"          # where it trains and is measured (overrides train.device)

    def __post_init__(self):
        if not isinstance(self.variant, str) or not self.variant.strip():
            raise ValueError("variant is required: the id or name of the float variant to fine-tune")
        coerce_train(self, _finetune_train_default)
        check_subset_name_device(self)

    def step(self, best_epoch: int, stopped_early: bool, epochs_run: int) -> dict:
        """The recipe step of the child: the training settings and what the run did with them."""
        settings = {k: v for k, v in self.train.to_dict().items() if k not in STEP_SKIPS}
        return {"step": "finetune", **settings, "subset": self.subset, "epochs_run": epochs_run,
                "best_epoch": best_epoch, "stopped_early": stopped_early}

    def describe(self, name_of) -> str:
        t = self.train
        text = f"Fine-tune {name_of(self.variant)}: {t.epochs} epoch{'s' if t.epochs != 1 else ''} at lr {t.lr:g}"
        if t.early_stop is not None:
            text += f", early stop after {t.early_stop}"
        return text


@register_task("finetune", FinetuneJobConfig, title="Fine-tune")
def run_finetune(ctx: TaskContext, cfg: FinetuneJobConfig) -> TaskOutcome:
    """Fine-tune a float variant and store the child, measured on the full test split. Events:
    the training loop's, with stage "finetune" ("early_stop" says at which epoch it stopped)."""
    v = ctx.workspace.get_variant(cfg.variant)
    refusal = quantized_refusal(v)
    if refusal:
        raise ValueError(refusal)
    ctx.on_progress(0.0, "loading data and model")
    parent = open_parent(ctx, v.id, subset=cfg.subset)
    model = parent.model
    root = ctx.workspace.lineage(parent.variant.id)[0]
    # masked: the zeros are pruned weights; masks hold them at zero through every optimizer step
    masked = [n for n, m in prunable_layers(model) if int((m.weight == 0).sum())] if v.kind.get("masked") else []
    if masked:
        attach_masks_from_zeros_(model, masked)
    tc = train_on_device(cfg)
    seed_everything(tc.seed)
    result = train_(model, parent.data, tc, should_stop=ctx.should_stop,
                    on_event=ctx.train_listener("finetune", (0.02, 0.88)))
    remove_masks_(model)
    model = model.cpu()
    epochs_run = len(result.history)
    start = result.start_val_accuracy
    if result.stopped_early:
        ctx.log(f"stopped early after epoch {epochs_run} of {tc.epochs}: no better val accuracy for "
                f"{tc.early_stop} epoch{'s' if tc.early_stop != 1 else ''}")
    if result.best_epoch == 0 and tc.restore_best:
        what = "no epoch beat the parent on the validation split: the child keeps the parent's weights"
    else:
        what = (f"best epoch {result.best_epoch} of {epochs_run} (val acc {result.val_accuracy:.2%}"
                + (f", parent {start:.2%}" if start is not None else "") + ")"
                + ("; its weights restored" if result.restored else ""))
    ctx.log(what)

    ctx.on_progress(0.9, "measuring on the full test split")
    name = unique_name(ctx.workspace, cfg.name or f"{parent.variant.name} | fine-tuned {epochs_run} ep")
    notes = (f"fine-tuned {epochs_run} epoch{'s' if epochs_run != 1 else ''} at lr {tc.lr:g}"
             + (f" (stopped early: patience {tc.early_stop})" if result.stopped_early else "") + f"; {what}"
             + (f"; masks kept on {len(masked)} layers" if masked else ""))
    extra = {"val_accuracy": result.val_accuracy, **ctx.load_context()}
    if start is not None:
        extra["parent_val_accuracy"] = start
    draft = child_draft(parent, model, name=name, step=cfg.step(result.best_epoch, result.stopped_early, epochs_run),
                        device=cfg.device, notes=notes, extra_metrics=extra)
    child = ctx.save(draft)
    ctx.on_progress(1.0, f"saved {child.id}")
    ctx.log(f"saved variant {child.id}: test acc {child.metrics['accuracy']:.4f} "
            f"(parent {parent.variant.metrics.get('accuracy', float('nan')):.4f})")
    return TaskOutcome(variant_id=child.id, result={
        "history": result.history, "best_epoch": result.best_epoch, "stopped_early": result.stopped_early,
        "epochs_run": epochs_run, "restored": result.restored, "val_accuracy": result.val_accuracy,
        "parent_id": parent.variant.id, "parent_accuracy": parent.variant.metrics.get("accuracy"),
        "parent_val_accuracy": start, "root_id": root.id, "root_accuracy": root.metrics.get("accuracy"),
        "masked_layers": masked})
