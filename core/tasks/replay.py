"""Replay a recipe as a job: every step run again from its root (core.tasks.recipe_replay), so an uploaded
recipe can be replayed from the browser and watched like any other job."""
from __future__ import annotations

from dataclasses import dataclass

from core.base.config import DictConfig
from core.tasks.recipe_replay import check_recipe, replay_in
from core.tasks.registry import TaskContext, TaskOutcome, register_task


@dataclass(frozen=True)
class ReplayJobConfig(DictConfig):
    """Replay a recipe (a list of step dicts) from its root; `reuse_root` starts from a variant
    here made by exactly the recipe's first step instead of making the root again."""

    recipe: list
    reuse_root: bool = True
    name: str | None = None

    def __post_init__(self):
        if isinstance(self.recipe, tuple):
            object.__setattr__(self, "recipe", list(self.recipe))
        check_recipe(self.recipe)
        if not isinstance(self.reuse_root, bool):
            raise ValueError(f"reuse_root must be true or false, got {self.reuse_root!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise ValueError(f"name must be text, got {self.name!r}")

    def describe(self, name_of) -> str:
        steps = [s.get("step") for s in self.recipe]
        text = f"Replay a recipe: {' → '.join(steps)}"
        return text + (f" → {self.name}" if self.name else "")


@register_task("replay", ReplayJobConfig, title="Replay a recipe")
def run_replay(ctx: TaskContext, cfg: ReplayJobConfig) -> TaskOutcome:
    """Run every step of a recipe again from its root, each with its recorded seed, and store the
    variants it makes; the result compares the last one with any variant here of the same recipe."""
    result = replay_in(ctx, cfg.recipe, reuse_root=cfg.reuse_root, name=cfg.name)
    out = result.to_dict()
    if "accuracy_delta_points" in out:
        o = out["originals"][0]
        ctx.log(f"original {o['name']} ({o['id']}): test accuracy {o['accuracy']:.4f}; replayed "
                f"{out['accuracy']:.4f} ({out['accuracy_delta_points']:+.2f} points)")
    return TaskOutcome(variant_id=result.variant.id, result=out)
