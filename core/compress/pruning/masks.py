"""Masks: which layers can be pruned, unstructured (L1 / random) pruning with
`torch.nn.utils.prune`, and attaching or removing masks around fine-tuning.

Masks keep zeros inside dense tensors: they cost no bytes and save no time by themselves (only the
sparse file encoding of `core.formats.encoding` turns zeros into saved bytes).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
UNSTRUCTURED = ("l1", "random")


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and Linear modules with a weight, in definition order."""
    return [(n, m) for n, m in model.named_modules()
            if n and isinstance(m, PRUNABLE_TYPES) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def nonzero_count(m: nn.Module) -> int:
    return int(torch.count_nonzero(m.weight.detach()))


def weight_sparsity(model: nn.Module, names: list[str] | None = None) -> float:
    """Fraction of zeros among the weights of the given prunable layers (all of them by default)."""
    total = zeros = 0
    for n, m in prunable_layers(model):
        if names is None or n in names:
            total += m.weight.numel()
            zeros += m.weight.numel() - nonzero_count(m)
    return zeros / total if total else 0.0


def attach_masks_from_zeros_(model: nn.Module, names: list[str] | None = None) -> nn.Module:
    """In place: attach a `torch.nn.utils.prune` mask to each prunable layer that marks its current
    zeros as pruned, so training keeps them at zero (the forward pre-hook multiplies by the mask)."""
    for name, m in prunable_layers(model):
        if (names is None or name in names) and not tprune.is_pruned(m):
            tprune.custom_from_mask(m, "weight", mask=m.weight.detach() != 0)
    return model


def remove_masks_(model: nn.Module) -> nn.Module:
    """In place: make every attached mask permanent (`prune.remove`): plain `weight` tensors again,
    with the zeros kept, and a state_dict without `*_orig` / `*_mask` keys."""
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(m, hook._tensor_name)
    return model


def prune_unstructured_(model: nn.Module, method: str, targets: dict[str, float], pooled: list[str],
                        pool_target: float, seed: int) -> dict[str, str]:
    """In place: prune each layer of `targets` not in `pooled` to its own total sparsity, and the
    `pooled` layers together (one global ranking) to `pool_target`. Returns {layer: reason} for
    layers left alone.

    Earlier zeros are kept. For L1 that needs no extra mask: zeros are the smallest magnitudes, so
    asking L1Unstructured for the TOTAL count of zeros wanted prunes every earlier zero first. For
    random, the earlier zeros are attached as a custom mask first, and the method then picks only
    the count still missing among the surviving weights (PruningContainer semantics)."""
    modules = dict(model.named_modules())
    zeros = {n: modules[n].weight.numel() - nonzero_count(modules[n]) for n in targets}
    skipped: dict[str, str] = {}

    def apply(ns: list[str], target: float) -> None:
        total = sum(modules[n].weight.numel() for n in ns)
        have = sum(zeros[n] for n in ns)
        want = round(target * total)
        if want <= have:
            if target > 0:
                for n in ns:   # say the layer's own sparsity; for a pool also the pool's
                    own = zeros[n] / modules[n].weight.numel()
                    where = (f"the globally ranked layers are already at {have / total:.1%} (this layer "
                             f"{own:.1%})" if len(ns) > 1 else f"already at {own:.1%} sparsity")
                    skipped[n] = f"{where}, at or above the target {target:.0%}: earlier zeros are kept, none added"
            return
        if method == "l1":
            amount, cls = want, tprune.L1Unstructured
        else:
            for n in ns:
                if zeros[n]:
                    tprune.custom_from_mask(modules[n], "weight", mask=modules[n].weight.detach() != 0)
            amount, cls = want - have, tprune.RandomUnstructured
        if len(ns) == 1:
            cls.apply(modules[ns[0]], "weight", amount=amount)
        else:
            tprune.global_unstructured([(modules[n], "weight") for n in ns], pruning_method=cls, amount=amount)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for n in targets:
            if n not in pooled:
                apply([n], targets[n])
        if pooled:
            apply(pooled, pool_target)
    remove_masks_(model)
    return skipped


def prune_layer_to_(m: nn.Module, method: str, amount: float, seed: int = 0) -> None:
    """In place: prune one layer's weight to a total sparsity of `amount`, keeping earlier zeros."""
    original_zeros = m.weight.numel() - nonzero_count(m)
    extra = max(0, round(amount * m.weight.numel()) - original_zeros)
    if not extra:
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        tprune.custom_from_mask(m, "weight", mask=m.weight.detach() != 0)
        (tprune.L1Unstructured if method == "l1" else tprune.RandomUnstructured).apply(m, "weight", amount=extra)
        tprune.remove(m, "weight")
