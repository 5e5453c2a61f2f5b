"""Structural removal: whole output channels go, with every coupled slice (BatchNorm, the next
layer's inputs, residual partners), found by Torch-Pruning's dependency graph. The model is
physically smaller and faster (kind `shrunk`).

`amount` is the fraction of each layer's current output channels to remove (scope `layer`), or of
all of them ranked together (scope `global`). Every layer keeps at least `min_kept(channels)`
channels, so a global ranking cannot hollow out one layer: without that floor, global 90% on two
LeNet-5s gave 83.5% and 99.8% of the weights removed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from core.compress.pruning.masks import PRUNABLE_TYPES
from core.models.registry import classifier_name

MIN_KEEP_FRACTION = 0.1   # a layer keeps at least this fraction of its output channels ...
MIN_KEEP_CHANNELS = 2     # ... and at least this many (or all it has, if fewer)
CLASS_SCORES_NOTE = ("{name}: its output channels are the class scores, so channel pruning never removes them; "
                     "its input columns go with the channels removed from the layer before it")


def min_kept(channels: int) -> int:
    """The fewest output channels a layer may keep after channel pruning."""
    return min(channels, max(MIN_KEEP_CHANNELS, math.ceil(MIN_KEEP_FRACTION * channels)))


@dataclass
class ChannelRemoval:
    removed: dict[str, list[int]] = field(default_factory=dict)   # layer -> removed output channels
    inputs: dict[str, list[int]] = field(default_factory=dict)    # layer -> removed input channels
    skipped: dict[str, str] = field(default_factory=dict)         # layer -> why none were removed
    notes: list[str] = field(default_factory=list)


def remove_channels_(model: nn.Module, *, amount: float, scope: str, norm: int, layer_amounts: dict[str, float],
                     targets: dict[str, float], excluded: dict[str, str],
                     input_shape: tuple[int, ...]) -> ChannelRemoval:
    """In place: remove output channels, planned on Torch-Pruning's dependency graph.

    Every group (a layer's output channels with all the slices coupled to them) is scored once,
    before anything is removed, by Torch-Pruning's MagnitudeImportance. Scope `layer` (and layers
    with their own amount) removes each group's lowest-scored fraction; scope `global` removes the
    lowest-scored `amount` of all channels ranked together. Either way a group keeps `min_kept`
    channels: Torch-Pruning's own global step skips a layer whose every channel falls under the
    threshold, which made global 90% remove LESS than global 70%. Each group is then pruned with
    explicit indices, recorded in the model's original channel numbers."""
    import torch_pruning as tp

    modules = dict(model.named_modules())
    names = {m: n for n, m in model.named_modules()}
    out = ChannelRemoval()
    ignored = set(excluded)
    cls = classifier_name(model)
    if cls and cls not in ignored and cls in targets:   # class scores are never removed
        ignored.add(cls)
        out.notes.append(CLASS_SCORES_NOTE.format(name=cls))
    importance = tp.importance.MagnitudeImportance(p=norm)
    with torch.enable_grad():  # the graph is traced through autograd
        dg = tp.DependencyGraph().build_dependency(model, torch.zeros(1, *input_shape))
    plans = []   # (root layer name, root module, pruning fn, per-channel scores, how many may go)
    out_prunable = set()
    for group in dg.get_all_groups(ignored_layers=[modules[n] for n in ignored], root_module_types=list(PRUNABLE_TYPES)):
        dep = group[0].dep
        root = dep.target.module
        for d, _ in group:
            if dg.is_out_channel_pruning_fn(d.handler) and d.target.module in names:
                out_prunable.add(names[d.target.module])
        if root not in names or names[root] not in targets:
            continue
        channels = dg.get_out_channels(root)
        scores = importance(group)
        if channels is None or scores is None or len(scores) != channels:
            continue
        plans.append((names[root], root, dep.handler, scores.detach().float(), channels - min_kept(channels)))
    chosen: dict[str, list[int]] = {}
    pooled = []
    for name, _, _, scores, allowed in plans:
        if scope == "layer" or name in layer_amounts:
            want = min(allowed, int(scores.numel() * layer_amounts.get(name, amount)))
            chosen[name] = torch.argsort(scores)[:max(want, 0)].tolist()
        else:
            pooled += [(float(sc), name, i) for i, sc in enumerate(scores.tolist())]
    if pooled:
        caps = {name: allowed for name, _, _, _, allowed in plans}
        budget = int(len(pooled) * amount)
        for _, name, i in sorted(pooled):
            if budget <= 0:
                break
            if len(chosen.setdefault(name, [])) < caps[name]:
                chosen[name].append(i)
                budget -= 1
    channels_before = {n: dg.get_out_channels(modules[n]) for n in targets}
    for name, root, fn, _, _ in plans:
        idxs = sorted(chosen.get(name, []))
        if not idxs:
            continue
        group = dg.get_pruning_group(root, fn, idxs)
        for dep, gidx in group:
            m = dep.target.module
            if isinstance(m, PRUNABLE_TYPES) and m in names:
                if dg.is_out_channel_pruning_fn(dep.handler):
                    out.removed.setdefault(names[m], []).extend(int(i) for i in gidx)
                elif dg.is_in_channel_pruning_fn(dep.handler):
                    out.inputs.setdefault(names[m], []).extend(int(i) for i in gidx)
        group.prune()
    out.removed = {n: sorted(set(v)) for n, v in out.removed.items()}
    out.inputs = {n: sorted(set(v)) for n, v in out.inputs.items()}
    for n, target in targets.items():
        if n not in out.removed and n not in ignored:
            out.skipped[n] = _why_none_removed(n in out_prunable, target, channels_before[n] or 0, scope)
    for n in ignored - set(excluded):
        out.skipped[n] = out.notes[0]
    return out


def _why_none_removed(out_prunable: bool, target: float, channels: int, scope: str) -> str:
    if not out_prunable:
        return ("its output channels are tied to an excluded layer or the model output in the dependency "
                "graph, so none can be removed")
    if target == 0:
        return "amount 0%"
    if scope == "layer" and int(channels * target) < 1:
        return f"{target:.0%} of {channels} channels rounds to 0"
    if scope == "global":
        return "the global ranking kept all its channels"
    return "Torch-Pruning left its channels in place (removing them would empty a coupled layer)"


def removed_view(weight: torch.Tensor, removed_out: list[int], removed_in: list[int]) -> torch.Tensor:
    """The ORIGINAL weight of a layer with what structured pruning removed set to zero: its removed
    output channels (rows) and input channels (columns), in the original's shape, so a heatmap
    shows exactly which weights are gone."""
    w = weight.detach().clone()
    if removed_out:
        w[torch.tensor(removed_out)] = 0
    if removed_in and w.ndim >= 2:
        w[:, torch.tensor(removed_in)] = 0
    return w


def relative_channel_amount(done: float, target: float) -> float:
    """Channel fraction to remove now so that, of the ORIGINAL channels, `target` are gone after
    `done` already were: 1 - (1 - target) / (1 - done)."""
    if target <= done:
        return 0.0
    return 1 - (1 - target) / (1 - done)
