"""One-shot pruning of a variant into a child variant, and the live preview of exactly that step."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn as nn

from core.base.config import DictConfig
from core.compress.pruning.masks import prunable_layers
from core.compress.pruning.preview import PreviewResult, preview
from core.compress.pruning.prune import PruneConfig, prune, resolve_exclude
from core.data.types import Split
from core.store.variants import arch_with_edits, file_metadata
from core.tasks.common import child_draft, existing_child, open_parent, unique_name
from core.tasks.registry import TaskContext, TaskOutcome, register_task


@dataclass(frozen=True)
class PruneJobConfig(DictConfig):
    """Prune a variant once into a child variant (no fine-tuning)."""

    variant: str
    prune: PruneConfig = field(default_factory=PruneConfig)
    name: str | None = None
    device: str = "auto"          # where the child's metrics are measured

    def __post_init__(self):
        if not self.variant or not str(self.variant).strip():
            raise ValueError("variant is required: the id or name of the variant to prune")
        object.__setattr__(self, "prune", PruneConfig.coerce(self.prune))

    def step(self) -> dict:
        """The recipe step this config adds to the child."""
        return {"step": "prune", **self.prune.to_dict()}

    def describe(self, name_of) -> str:
        return f"Prune {name_of(self.variant)}: {self.prune.label()}"


def child_name(ws, parent, config: PruneConfig, model: nn.Module) -> str:
    """The name Apply gives the child (told apart from any variant already so named)."""
    excluded = resolve_exclude(model, config)
    pruned = [n for n, _ in prunable_layers(model) if n not in excluded]
    return unique_name(ws, f"{parent.name} | {config.label(pruned)}")


def find_applied(ws, parent_id: str, config: PruneConfig):
    """The child a previous Apply with exactly these settings made, or None."""
    return existing_child(ws, parent_id, PruneJobConfig(parent_id, config).step())


@register_task("prune", PruneJobConfig, title="Prune")
def run_prune(ctx: TaskContext, cfg: PruneJobConfig) -> TaskOutcome:
    """Prune a variant once and store the child with full-test-split metrics."""
    parent = open_parent(ctx, cfg.variant)
    ctx.on_progress(0.05, f"pruning {parent.variant.name}: {cfg.prune.label()}")
    pruned, report = prune(parent.model, cfg.prune, input_shape=parent.data.info.input_shape)
    ctx.on_event({"stage": "prune", "kind": "report", "report": report.to_dict()})
    ctx.on_progress(0.5, "measuring on the full test split")
    name = unique_name(ctx.workspace, cfg.name) if cfg.name else child_name(ctx.workspace, parent.variant, cfg.prune,
                                                                           parent.model)
    draft = child_draft(parent, pruned, name=name, step=cfg.step(), device=cfg.device, notes=report.summary(),
                        extra_metrics={"sparsity": round(report.sparsity, 6), **ctx.load_context()})
    v = ctx.save(draft)
    ctx.log(report.summary())
    ctx.log(f"saved variant {v.id}: test accuracy {v.metrics['accuracy']:.4f}, {v.metrics['size_bytes']} bytes")
    ctx.on_progress(1.0, f"saved {v.id}")
    return TaskOutcome(variant_id=v.id, result={"report": report.to_dict()})


def preview_child(ws, parent, model: nn.Module, config: PruneConfig, val_subset: Split) -> PreviewResult:
    """The preview of Apply on `parent` (whose model is `model`, not changed): the file size is
    the length of the bytes Apply would write, header (name, dataset, arch) included."""
    name = child_name(ws, parent, config, model)

    def metadata(pruned: nn.Module) -> dict[str, str]:
        return file_metadata(name, parent.dataset, arch_with_edits(parent.arch, pruned))
    return preview(model, config, val_subset, metadata=metadata)
