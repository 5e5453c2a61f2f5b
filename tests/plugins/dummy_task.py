"""A step kind that lives outside core/: registered by importing this module, which the CLI and
the job workers do when WORKBENCH_TASK_MODULES names it. Used by tests/test_tasks.py."""
from __future__ import annotations

from dataclasses import dataclass

from core.base.config import DictConfig
from core.tasks import TaskContext, TaskOutcome, register_task


@dataclass(frozen=True)
class EchoConfig(DictConfig):
    """Say something back, a number of times."""

    text: str
    times: int = 1

    def __post_init__(self):
        if not isinstance(self.times, int) or self.times < 1:
            raise ValueError(f"times must be a positive whole number, got {self.times!r}")

    def describe(self, name_of) -> str:
        return f"Echo {self.text!r} x{self.times}"


@register_task("echo", EchoConfig, title="Echo")
def run_echo(ctx: TaskContext, cfg: EchoConfig) -> TaskOutcome:
    """Repeat a text: one event and one log line per repetition."""
    for i in range(cfg.times):
        ctx.on_event({"stage": "echo", "kind": "point", "i": i})
        ctx.on_progress((i + 1) / cfg.times, f"said it {i + 1} time(s)")
        ctx.log(f"echo {i + 1}: {cfg.text}")
    return TaskOutcome(result={"echo": " ".join([cfg.text] * cfg.times)})
