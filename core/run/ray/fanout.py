"""The sensitivity scan fanned out over a Ray cluster: one Ray task per layer, gathered into the
result `pruning_schedule.sensitivity_scan` gives (same keys, same layer order, same numbers: each
layer's row is `pruning_schedule.layer_row`, as in the local loop, on its own copy of the model).

`RayFanout` is what a Ray job's actor puts in `TaskContext.fanout` (`core.run.ray.worker`): the
sensitivity task scans through it, the sweep task runs its trials through it (Ray Tune,
`core.run.ray.tune`); a task anywhere else stays the local loop.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from core.base.cancel import Cancelled
from core.compress.pruning.schedule import layer_row, prepare_scan, scan_result
from core.data.types import Split
from core.measure.metrics import channels_last_
from core.run.ray.cluster import wants_gpu

WAIT_S = 0.3   # how often the gathering loop looks at should_stop


@torch.no_grad()
def scan_layer(model: nn.Module, val_subset: Split, name: str, amounts: list[float], method: str, seed: int) -> dict:
    """One layer's row, computed as the local loop computes it (`layer_row`), and the task's own
    time (`seconds`, for the scaling figures; not part of the scan's result). `model` is the
    prepared copy the local scan measures."""
    import copy
    import time

    t0 = time.perf_counter()
    torch.set_num_threads(1)   # Ray gives this task one CPU
    model = channels_last_(copy.deepcopy(model))   # its own writable copy (the object store's may be shared)
    row = layer_row(model, name, val_subset, amounts, method, seed)
    return {**row, "seconds": time.perf_counter() - t0}


def ray_sensitivity_scan(model: nn.Module, val_subset: Split, amounts: tuple[float, ...], *, method: str = "l1",
                         exclude: tuple[str, ...] | None = None, seed: int = 0,
                         on_point: Callable[[dict], None] | None = None,
                         on_start: Callable[[dict], None] | None = None,
                         should_stop: Callable[[], bool] | None = None) -> dict:
    """`sensitivity_scan` with one Ray task per layer. Points are reported per finished layer
    (in the order layers finish); a cancel cancels the tasks still running."""
    import ray

    setup = prepare_scan(model, val_subset, amounts, method=method, exclude=exclude, seed=seed, on_start=on_start)
    amounts, layers = setup.amounts, setup.layers
    model_ref, val_ref = ray.put(setup.model), ray.put(val_subset)   # sent once, shared by every task
    task = ray.remote(scan_layer).options(num_cpus=1, max_retries=0)
    pending = {task.remote(model_ref, val_ref, n, list(amounts), method, seed): n for n, _ in layers}
    rows: dict[str, dict] = {}
    total, done = len(layers) * len(amounts), 0
    while pending:
        if should_stop and should_stop():
            for ref in pending:
                ray.cancel(ref, force=True)
            raise Cancelled(f"sensitivity cancelled with {len(pending)} of {len(layers)} layers still running")
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
        for ref in ready:
            row = ray.get(ref)
            seconds = row.pop("seconds")
            rows[pending.pop(ref)] = row
            for a, acc in zip(amounts, row["accuracy"], strict=True):
                done += 1
                if on_point:
                    on_point({"layer": row["name"], "amount": a, "accuracy": acc, "done": done, "total": total,
                              "task_seconds": round(seconds, 4)})
    return scan_result(setup, method, val_subset, [rows[n] for n, _ in layers])


class RayFanout:
    """`TaskContext.fanout` inside a Ray job (see `core.tasks.registry.Fanout`)."""

    def sensitivity_scan(self, model: nn.Module, val_subset: Split, amounts, **kwargs) -> dict:
        return ray_sensitivity_scan(model, val_subset, amounts, **kwargs)

    def sweep_trials(self, parcel: dict, kind: str, configs: list[dict], *, device: str, gpus_per_trial: float,
                     cpus_per_trial: int, max_concurrent: int | None, on_progress, on_done, should_stop) -> None:
        import ray

        from core.run.ray.tune import tune_trials  # imports Ray Tune: only where a sweep runs on Ray

        gpus = gpus_per_trial if wants_gpu({"device": device}, ray.cluster_resources().get("GPU", 0)) else 0
        tune_trials(parcel, kind, configs, max_concurrent=max_concurrent, cpus=cpus_per_trial, gpus=gpus,
                    on_progress=on_progress, on_done=on_done, should_stop=should_stop)
