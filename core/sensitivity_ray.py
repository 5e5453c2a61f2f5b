"""The sensitivity scan fanned out over a Ray cluster: one Ray task per layer, gathered into the
result `pruning_schedule.sensitivity_scan` gives (same keys, same layer order, same numbers: each
layer's row is computed exactly as the local loop computes it, on its own copy of the model).

Used by the sensitivity task when it runs inside a Ray job (`core.ray_worker` sets the flag); a
scan anywhere else stays the local loop.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

import torch
import torch.nn as nn

from .cancel import Cancelled
from .data import Split
from .metrics import accuracy, channels_last_
from .pruning import PruneConfig, resolve_exclude
from .pruning_masks import UNSTRUCTURED, prunable_layers, prune_layer_to_, remove_masks_

_inside = threading.local()
WAIT_S = 0.3   # how often the gathering loop looks at should_stop


def inside_ray_job() -> bool:
    """Is this thread running a job's task inside a Ray actor (so it may start Ray tasks)?"""
    return getattr(_inside, "job", False)


def mark_ray_job(on: bool) -> None:
    _inside.job = on


def _prepared(model: nn.Module) -> nn.Module:
    # the same private copy and layout the local scan measures
    import copy

    return channels_last_(remove_masks_(copy.deepcopy(model).cpu().eval()))


@torch.no_grad()
def scan_layer(model: nn.Module, val_subset: Split, name: str, amounts: list[float], method: str, seed: int) -> dict:
    """One layer's row: accuracy at each amount with only this layer pruned (the local loop's body),
    and the task's own time (`seconds`, for the scaling figures; not part of the scan's result)."""
    import time

    t0 = time.perf_counter()
    model = _prepared(model)
    m = dict(model.named_modules())[name]
    torch.set_num_threads(1)   # Ray gives this task one CPU
    original = m.weight.detach().clone()
    n = original.numel()
    zeros = n - int(torch.count_nonzero(original))
    accs = []
    for a in amounts:
        prune_layer_to_(m, method, a, seed)
        accs.append(accuracy(model, val_subset))
        m.weight.data.copy_(original)
    return {"name": name, "type": type(m).__name__, "weights": n, "sparsity_before": zeros / n, "accuracy": accs,
            "seconds": time.perf_counter() - t0}


def ray_sensitivity_scan(model: nn.Module, val_subset: Split, amounts: tuple[float, ...], *, method: str = "l1",
                         exclude: tuple[str, ...] | None = None, seed: int = 0,
                         on_point: Callable[[dict], None] | None = None,
                         on_start: Callable[[dict], None] | None = None,
                         should_stop: Callable[[], bool] | None = None) -> dict:
    """`sensitivity_scan` with one Ray task per layer. Points are reported per finished layer
    (in the order layers finish); a cancel cancels the tasks still running."""
    import ray

    from .config import check_fraction

    if method not in UNSTRUCTURED:
        raise ValueError(f"sensitivity supports the unstructured methods {', '.join(UNSTRUCTURED)}; got {method!r}")
    amounts = tuple(sorted({check_fraction("amount", a) for a in amounts}))
    if not amounts:
        raise ValueError("sensitivity needs at least one amount")
    local = _prepared(model)
    excluded = resolve_exclude(local, PruneConfig(method=method, amount=0.0, exclude=exclude, seed=seed))
    layers = [(n, m) for n, m in prunable_layers(local) if n not in excluded]
    base = accuracy(local, val_subset)
    if on_start:
        on_start({"method": method, "amounts": list(amounts), "baseline_accuracy": base,
                  "val_samples": len(val_subset), "excluded": excluded,
                  "layers": [{"name": n, "type": type(m).__name__, "weights": m.weight.numel()} for n, m in layers]})
    model_ref, val_ref = ray.put(model.cpu()), ray.put(val_subset)   # sent once, shared by every task
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
    return {"method": method, "amounts": list(amounts), "baseline_accuracy": base, "val_samples": len(val_subset),
            "layers": [rows[n] for n, _ in layers], "excluded": excluded}
