"""Which layers can take how much: the per-layer sensitivity scan, an allocation of a target
sparsity that follows it, and the AGP schedule of gradual pruning (Zhu & Gupta).
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn

from core.base.cancel import Cancelled
from core.base.config import check_fraction
from core.compress.pruning.masks import UNSTRUCTURED, prunable_layers, prune_layer_to_, remove_masks_
from core.compress.pruning.prune import PruneConfig, resolve_exclude
from core.data.types import Split
from core.measure.metrics import accuracy, channels_last_

DEFAULT_SENSITIVITY_AMOUNTS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


@dataclass
class ScanSetup:
    """What every sensitivity scan (here, or fanned out over Ray) starts from."""

    model: nn.Module                 # a private, mask-free, channels-last copy in eval mode
    amounts: tuple[float, ...]       # checked, sorted, unique
    layers: list[tuple[str, nn.Module]]
    excluded: dict[str, str]
    baseline_accuracy: float


@torch.no_grad()
def prepare_scan(model: nn.Module, val_subset: Split, amounts, *, method: str, exclude, seed: int,
                 on_start: Callable[[dict], None] | None = None) -> ScanSetup:
    """Check the settings, copy the model, pick the layers, measure the baseline, announce them."""
    if method not in UNSTRUCTURED:
        raise ValueError(f"sensitivity supports the unstructured methods {', '.join(UNSTRUCTURED)}; got {method!r}")
    amounts = tuple(sorted({check_fraction("amount", a) for a in amounts}))
    if not amounts:
        raise ValueError("sensitivity needs at least one amount")
    model = channels_last_(remove_masks_(copy.deepcopy(model).cpu().eval()))   # private copy: fast layout
    excluded = resolve_exclude(model, PruneConfig(method=method, amount=0.0, exclude=exclude, seed=seed))
    layers = [(n, m) for n, m in prunable_layers(model) if n not in excluded]
    base = accuracy(model, val_subset)
    if on_start:
        on_start({"method": method, "amounts": list(amounts), "baseline_accuracy": base,
                  "val_samples": len(val_subset), "excluded": excluded,
                  "layers": [{"name": n, "type": type(m).__name__, "weights": m.weight.numel()} for n, m in layers]})
    return ScanSetup(model, amounts, layers, excluded, base)


@torch.no_grad()
def layer_row(model: nn.Module, name: str, val_subset: Split, amounts, method: str, seed: int,
              each: Callable[[float, float], None] | None = None) -> dict:
    """One layer's row: accuracy at each amount with only layer `name` of `model` pruned; the
    layer is restored after each amount. `each(amount, accuracy)` is called as they come (it may
    raise Cancelled)."""
    m = dict(model.named_modules())[name]
    original = m.weight.detach().clone()
    n = original.numel()
    zeros = n - int(torch.count_nonzero(original))
    accs = []
    for a in amounts:
        prune_layer_to_(m, method, a, seed)
        acc = accuracy(model, val_subset)
        m.weight.data.copy_(original)
        accs.append(acc)
        if each:
            each(a, acc)
    return {"name": name, "type": type(m).__name__, "weights": n, "sparsity_before": zeros / n, "accuracy": accs}


def sensitivity_scan(model: nn.Module, val_subset: Split, amounts: tuple[float, ...] = DEFAULT_SENSITIVITY_AMOUNTS, *,
                     method: str = "l1", exclude: tuple[str, ...] | None = None, seed: int = 0,
                     on_point: Callable[[dict], None] | None = None,
                     on_start: Callable[[dict], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> dict:
    """For each prunable layer and amount: accuracy on `val_subset` when only that layer is pruned
    (unstructured, to that total sparsity). Works on a copy; each layer is restored after its row.

    Returns {"method", "amounts", "baseline_accuracy", "val_samples", "layers": [{"name", "type",
    "weights", "accuracy": [...]}], "excluded": {name: reason}}."""
    setup = prepare_scan(model, val_subset, amounts, method=method, exclude=exclude, seed=seed, on_start=on_start)
    rows = []
    total = len(setup.layers) * len(setup.amounts)
    done = 0
    for name, _ in setup.layers:
        if should_stop and should_stop():
            raise Cancelled(f"sensitivity cancelled at layer {name}")

        def each(a: float, acc: float, name=name) -> None:
            nonlocal done
            done += 1
            if on_point:
                on_point({"layer": name, "amount": a, "accuracy": acc, "done": done, "total": total})
            if should_stop and should_stop() and done < total:
                raise Cancelled(f"sensitivity cancelled at layer {name}")

        rows.append(layer_row(setup.model, name, val_subset, setup.amounts, method, seed, each))
    return scan_result(setup, method, val_subset, rows)


def scan_result(setup: ScanSetup, method: str, val_subset: Split, rows: list[dict]) -> dict:
    return {"method": method, "amounts": list(setup.amounts), "baseline_accuracy": setup.baseline_accuracy,
            "val_samples": len(val_subset), "layers": rows, "excluded": setup.excluded}


def suggest_allocation(sensitivity: dict, target_sparsity: float, *, resolution: float = 0.01) -> dict[str, float]:
    """Per-layer amounts whose weight-weighted sparsity meets `target_sparsity` with the least
    predicted accuracy loss.

    Each layer's predicted loss at amount a is read off its sensitivity curve (linear between the
    measured amounts, starting at no loss at its current sparsity, made non-decreasing). Greedy: in
    steps of `resolution`, raise the layer whose next step costs the least predicted loss per
    weight removed, until enough weights are removed; the last step is cut to hit the target."""
    target = check_fraction("target_sparsity", target_sparsity)
    rows = sensitivity["layers"]
    if not rows:
        raise ValueError("the sensitivity result has no layers")
    amounts = [float(a) for a in sensitivity["amounts"]]
    base = float(sensitivity["baseline_accuracy"])
    top = max(amounts)
    total = sum(r["weights"] for r in rows)
    if target > top + 1e-9:
        raise ValueError(f"target sparsity {target:.0%} is above the largest measured amount {top:.0%}; "
                         "run the sensitivity scan with higher amounts")

    curves = []
    for r in rows:
        start = float(r.get("sparsity_before", 0.0))
        xs = [start] + [a for a in amounts if a > start]
        ys = [0.0] + [max(0.0, base - acc) for a, acc in zip(amounts, r["accuracy"], strict=True) if a > start]
        for i in range(1, len(ys)):       # more pruning never predicted to help: monotone losses
            ys[i] = max(ys[i], ys[i - 1])
        curves.append((xs, ys))

    def loss(i: int, a: float) -> float:
        xs, ys = curves[i]
        if a <= xs[0]:
            return 0.0
        for j in range(1, len(xs)):
            if a <= xs[j]:
                t = (a - xs[j - 1]) / (xs[j] - xs[j - 1])
                return ys[j - 1] + t * (ys[j] - ys[j - 1])
        return ys[-1]

    alloc = [curves[i][0][0] for i in range(len(rows))]
    need = target * total - sum(a * r["weights"] for a, r in zip(alloc, rows, strict=True))
    while need > 1e-9:
        best, best_cost = None, math.inf
        for i, r in enumerate(rows):
            nxt = min(top, alloc[i] + resolution)
            if nxt <= alloc[i] + 1e-12:
                continue
            cost = (loss(i, nxt) - loss(i, alloc[i])) / ((nxt - alloc[i]) * r["weights"])
            if cost < best_cost - 1e-15 or (abs(cost - best_cost) <= 1e-15 and best is not None
                                             and r["weights"] > rows[best]["weights"]):
                best, best_cost = i, cost
        if best is None:
            break
        w = rows[best]["weights"]
        step = min(top, alloc[best] + resolution) - alloc[best]
        step = min(step, need / w)
        alloc[best] += step
        need -= step * w
    return {r["name"]: round(a, 4) for r, a in zip(rows, alloc, strict=True)}


def predicted_sparsity(sensitivity: dict, allocation: dict[str, float]) -> float:
    rows = sensitivity["layers"]
    total = sum(r["weights"] for r in rows)
    return sum(allocation.get(r["name"], 0.0) * r["weights"] for r in rows) / total if total else 0.0


# ---------------------------------------------------------------- gradual pruning (AGP)

def agp_schedule(initial: float, final: float, steps: int) -> list[float]:
    """Zhu & Gupta's automated gradual pruning: s_t = s_f + (s_i - s_f) * (1 - t/n)^3, t = 1..n.
    Prunes fast while there are many redundant weights, slowly near the target."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    initial = check_fraction("initial sparsity", initial)
    final = check_fraction("final sparsity", final)
    return [final + (initial - final) * (1 - t / steps) ** 3 for t in range(1, steps + 1)]
