"""Step kinds that fail the way a bad day does, for tests/test_job_faults.py (registered by
importing this module, which workers do when WORKBENCH_TASK_MODULES names it)."""
from __future__ import annotations

import errno
from dataclasses import dataclass

from core.base.config import DictConfig
from core.tasks import TaskContext, TaskOutcome, register_task


@dataclass(frozen=True)
class FillDiskConfig(DictConfig):
    """Write a variant on a disk that has no space left."""

    where: str = "weights.safetensors"


@register_task("fill_disk", FillDiskConfig, title="Fill the disk")
def run_fill_disk(ctx: TaskContext, cfg: FillDiskConfig) -> TaskOutcome:
    """Fail as a full disk does while the result is being saved."""
    ctx.on_progress(0.5, "saving")
    raise OSError(errno.ENOSPC, "No space left on device", cfg.where)
