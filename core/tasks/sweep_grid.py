"""Sweeps: one registered task run over a grid of settings (its *trials*), the best trial kept.

Two families, each a grid of two axes over an existing task:

    distill         temperature x alpha   -> `distill` (teacher = the sweep's variant)
    prune_finetune  amount x epochs       -> `prune_recover` in one step (prune, then fine-tune)

A trial is the task itself, run on a `ParcelWorkspace` (the parent's bytes, never the server's
disk) so the same function runs here, one trial after another, or on a Ray worker under Ray Tune
(`core.run.ray.tune`), and gives the same numbers in both. A trial keeps its variant's bytes only
until the sweep picks the best one: the others stay rows in the trials table.

Trials are chosen by **validation** accuracy (never the test split, which measures the result).
"""
from __future__ import annotations

import itertools
import math
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from core.base.cancel import Cancelled
from core.base.errors import describe_failure
from core.store.parcel import ParcelWorkspace
from core.tasks.registry import TaskContext, run_task

FAMILIES = {
    "distill": {"title": "Distillation: temperature × alpha", "task": "distill",
                "axes": ("temperature", "alpha"), "labels": ("temperature T", "alpha (soft-loss weight)")},
    "prune_finetune": {"title": "Prune and fine-tune: amount × epochs", "task": "prune_recover",
                       "axes": ("amount", "epochs"), "labels": ("prune amount", "fine-tune epochs")},
}
OBJECTIVES = {
    "val_accuracy": "highest validation accuracy",
    "smallest_within": "smallest file within the tolerance of the parent's validation accuracy",
}
MAX_TRIALS = 16
MAX_VALUES = 6     # per axis


def grid(a: tuple, b: tuple) -> list[tuple]:
    """Every (a, b) pair, a-major: the trials' order (and ids) everywhere."""
    return list(itertools.product(a, b))


def trial_config(family: str, base: dict, x, y) -> dict:
    """The task config of one trial: the family's task with the two axis values set."""
    if family == "distill":
        return {"teacher": base["variant"], "student": base["student"], "subset": base["subset"],
                "device": base["device"],
                "distill": {"temperature": float(x), "alpha": float(y), "epochs": base["epochs"], "seed": base["seed"]}}
    return {"variant": base["variant"], "subset": base["subset"], "steps": 1,
            "prune": {"method": "l1", "amount": float(x), "scope": "global"},
            "finetune": {"epochs": int(y), "lr": 0.01, "optimizer": "sgd", "schedule": "cosine",
                         "seed": base["seed"], "device": base["device"]}}


@dataclass
class TrialResult:
    """One trial's row: its settings, what it measured, where it ran. `saved` (the variant's draft
    with its bytes) is dropped once the best trial is chosen."""

    trial: int
    params: dict
    state: str                       # done | failed | cancelled
    metrics: dict
    seconds: float
    node: str = ""
    error: str | None = None
    saved: dict | None = None

    def row(self) -> dict:
        d = asdict(self)
        d.pop("saved")
        return d


ROW_METRICS = ("accuracy", "val_accuracy", "size_bytes", "nonzero_params", "params", "latency_ms_b1", "sparsity",
               "agreement", "train_seconds")


def run_trial(parcel: dict, kind: str, config: dict, *, on_progress: Callable[[float, str], None] = lambda p, m: None,
              should_stop: Callable[[], bool] = lambda: False) -> dict:
    """Run one trial of task `kind` on the parcel's variants; returns {"state", "metrics", "saved",
    "seconds", "node", "error"}. Never raises for the task's own failure: a failed trial is a row."""
    t0 = time.perf_counter()
    ws = ParcelWorkspace(parcel)
    ctx = TaskContext(ws, on_progress=on_progress, should_stop=should_stop, save_variant=ws.store)
    try:
        run_task(kind, config, ctx)
        saved = ws.saved[-1]
        metrics = {k: saved["metrics"][k] for k in ROW_METRICS if k in saved["metrics"]}
        return {"state": "done", "metrics": metrics, "saved": saved, "error": None,
                "seconds": time.perf_counter() - t0, "node": socket.gethostname()}
    except Cancelled:
        raise
    except Exception as e:   # noqa: BLE001 - one bad setting (a diverged run) must not end the sweep
        return {"state": "failed", "metrics": {}, "saved": None, "error": describe_failure(e),
                "seconds": time.perf_counter() - t0, "node": socket.gethostname()}
    finally:
        ws.close()


def pick_best(trials: list[TrialResult], objective: str, *, reference_val: float | None = None,
              tolerance: float = 0.01) -> tuple[TrialResult | None, str]:
    """The best finished trial under `objective`, and a sentence saying why it was chosen."""
    done = [t for t in trials if t.state == "done" and _finite(t.metrics.get("val_accuracy"))]
    if not done:
        return None, "no trial finished with a validation accuracy"

    def by_val(t):   # ties go to the smaller file, then to the earlier trial
        return (-t.metrics["val_accuracy"], t.metrics.get("size_bytes", 0), t.trial)

    if objective == "smallest_within" and reference_val is not None:
        floor = reference_val - tolerance
        ok = [t for t in done if t.metrics["val_accuracy"] >= floor - 1e-12]
        if ok:
            best = min(ok, key=lambda t: (t.metrics.get("size_bytes", 0), *by_val(t)))
            return best, (f"the smallest file among the {len(ok)} trial{'s' if len(ok) != 1 else ''} within "
                          f"{tolerance * 100:g} pt of the parent's validation accuracy ({reference_val:.2%})")
        best = min(done, key=by_val)
        return best, (f"no trial stayed within {tolerance * 100:g} pt of the parent's validation accuracy "
                      f"({reference_val:.2%}); kept the most accurate one instead")
    best = min(done, key=by_val)
    return best, "the highest validation accuracy"


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
