"""Pruning: `prune(model, PruneConfig) -> (pruned copy, PruneReport)`, a fast `preview`, the
per-layer sensitivity scan and the AGP schedule used by the prune-and-recover task.

Two families, and they tell the truth about what they buy (DESIGN.md, honesty rules):

- `l1` / `random` (unstructured): `torch.nn.utils.prune` masks, made permanent with `prune.remove`.
  Zeros stay in dense tensors (kind `masked`): no speed-up; bytes are saved only by the sparse file
  encoding of `core.formats`. `amount` is the target TOTAL sparsity of the prunable weights, so
  pruning an already-pruned variant keeps its zeros and removes only the missing count.
- `channel` (structured): Torch-Pruning's dependency graph removes whole output channels plus every
  coupled slice (BatchNorm, the next layer's inputs, residual partners), so the model is physically
  smaller and faster (kind `shrunk`). `amount` is the fraction of each layer's (or, with scope
  `global`, of all) current output channels to remove.

The last classifier is excluded by default and the report says so; no prunable layer is ever
skipped without a reason in `PruneReport.skipped`.
"""
from __future__ import annotations

import copy
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn as nn
import torch.nn.utils.prune as tprune

from .data import Split
from .formats import encode_best, encode_dense
from .metrics import accuracy as split_accuracy
from .metrics import count_params, measure_latency
from .models import classifier_name

METHODS = ("l1", "random", "channel")
UNSTRUCTURED = ("l1", "random")
SCOPES = ("layer", "global")
PRUNABLE_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
DEFAULT_SENSITIVITY_AMOUNTS = (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
PREVIEW_VAL_SAMPLES = 1000

CLASSIFIER_REASON = ("the last classifier: its outputs are the class scores, and pruning it costs the most "
                     "accuracy per weight (excluded by default)")


def _check_fraction(name: str, v, upper_inclusive: bool = False) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1), got {v!r}") from None
    ok = 0 <= f <= 1 if upper_inclusive else 0 <= f < 1
    if not ok or not math.isfinite(f):
        raise ValueError(f"{name} must be in [0, 1), got {v!r}")
    return f


@dataclass(frozen=True)
class PruneConfig:
    """One pruning step. `layer_amounts` overrides `amount` per layer name; `exclude=None` means
    the default (the last classifier); an explicit tuple replaces the default."""

    method: str = "l1"
    amount: float = 0.5
    scope: str = "layer"
    norm: int = 1                      # channel importance: L1 or L2 norm of each output channel
    layer_amounts: dict[str, float] = field(default_factory=dict)
    exclude: tuple[str, ...] | None = None
    seed: int = 0                      # for the random method

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}; got {self.scope!r}")
        object.__setattr__(self, "amount", _check_fraction("amount", self.amount))
        if self.norm not in (1, 2):
            raise ValueError(f"norm must be 1 or 2, got {self.norm!r}")
        if not isinstance(self.layer_amounts, dict):
            raise ValueError("layer_amounts must be a dict of layer name -> amount, "
                             f"got {type(self.layer_amounts).__name__}")
        amounts = {str(k): _check_fraction(f"layer_amounts[{k!r}]", v) for k, v in sorted(self.layer_amounts.items())}
        object.__setattr__(self, "layer_amounts", amounts)
        if self.exclude is not None:
            if isinstance(self.exclude, str):
                raise ValueError("exclude must be a list of layer names, not one string")
            object.__setattr__(self, "exclude", tuple(str(x) for x in self.exclude))
            both = set(self.exclude) & set(amounts)
            if both:
                raise ValueError(f"layer(s) {', '.join(sorted(both))} are both excluded and given an amount")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def __hash__(self) -> int:  # dict field: hash the canonical JSON (lets Streamlit and lru caches key on it)
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def structured(self) -> bool:
        return self.method == "channel"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exclude"] = list(self.exclude) if self.exclude is not None else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PruneConfig:
        names = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in names}
        if d.get("exclude") is not None:
            d["exclude"] = tuple(d["exclude"])
        return cls(**d)

    def label(self) -> str:
        """Short human label, e.g. 'L1 global 90%' or 'channel L2 layer 50% (+2 overrides)'."""
        m = {"l1": "L1", "random": "random", "channel": f"channel L{self.norm}"}[self.method]
        s = f"{m} {self.scope} {self.amount:.0%}"
        if self.layer_amounts:
            s += f" (+{len(self.layer_amounts)} override{'s' if len(self.layer_amounts) > 1 else ''})"
        return s


# ---------------------------------------------------------------- layers and masks

def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv and Linear modules with a weight, in definition order."""
    return [(n, m) for n, m in model.named_modules()
            if n and isinstance(m, PRUNABLE_TYPES) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def _weight(m: nn.Module) -> torch.Tensor:
    return m.weight.detach()


def resolve_exclude(model: nn.Module, config: PruneConfig) -> dict[str, str]:
    """Excluded layer name -> reason. Raises ValueError for names that are not prunable layers."""
    names = [n for n, _ in prunable_layers(model)]
    _check_names(names, config)
    if config.exclude is None:
        cls = classifier_name(model)
        return {cls: CLASSIFIER_REASON} if cls in names else {}
    return {n: "excluded in the config" for n in config.exclude}


def _check_names(names: list[str], config: PruneConfig) -> None:
    known = set(names)
    for what, given in (("layer_amounts", config.layer_amounts), ("exclude", config.exclude or ())):
        unknown = [n for n in given if n not in known]
        if unknown:
            raise ValueError(f"unknown layer(s) in {what}: {', '.join(unknown)}; prunable layers: {', '.join(names)}")


def attach_masks_from_zeros_(model: nn.Module, names: list[str] | None = None) -> nn.Module:
    """In place: attach a `torch.nn.utils.prune` mask to each prunable layer that marks its current
    zeros as pruned, so training keeps them at zero (the forward pre-hook multiplies by the mask)."""
    for name, m in prunable_layers(model):
        if (names is None or name in names) and not tprune.is_pruned(m):
            tprune.custom_from_mask(m, "weight", mask=_weight(m) != 0)
    return model


def remove_masks_(model: nn.Module) -> nn.Module:
    """In place: make every attached mask permanent (`prune.remove`): plain `weight` tensors again,
    with the zeros kept, and a state_dict without `*_orig` / `*_mask` keys."""
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, tprune.BasePruningMethod):
                tprune.remove(m, hook._tensor_name)
    return model


def weight_sparsity(model: nn.Module, names: list[str] | None = None) -> float:
    """Fraction of zeros among the weights of the given prunable layers (all of them by default)."""
    total = zeros = 0
    for n, m in prunable_layers(model):
        if names is None or n in names:
            w = _weight(m)
            total += w.numel()
            zeros += w.numel() - int(torch.count_nonzero(w))
    return zeros / total if total else 0.0


# ---------------------------------------------------------------- the report

@dataclass
class LayerReport:
    name: str
    type: str
    shape_before: list[int]
    shape_after: list[int]
    weights_before: int
    weights_after: int
    nonzero_before: int
    nonzero_after: int
    target: float | None               # the amount asked for this layer; None when excluded

    @property
    def sparsity_before(self) -> float:
        return 1 - self.nonzero_before / self.weights_before if self.weights_before else 0.0

    @property
    def sparsity_after(self) -> float:
        """Zeros among the ORIGINAL weight count: removed channels count as pruned too."""
        return 1 - self.nonzero_after / self.weights_before if self.weights_before else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "sparsity_before": self.sparsity_before, "sparsity_after": self.sparsity_after}


@dataclass
class PruneReport:
    config: dict
    layers: list[LayerReport]
    skipped: list[dict]                 # {"name", "type", "reason"} for every prunable layer left alone
    kind: dict[str, bool]               # {"masked": zeros kept in dense tensors, "shrunk": layers smaller}
    removed_channels: dict[str, list[int]] = field(default_factory=dict)  # layer -> removed output channels
    removed_inputs: dict[str, list[int]] = field(default_factory=dict)    # layer -> removed input channels/features
    params_before: int = 0
    params_after: int = 0
    nonzero_before: int = 0
    nonzero_after: int = 0
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def _pruned_layers(self) -> list[LayerReport]:
        return [r for r in self.layers if r.target is not None]

    @property
    def sparsity(self) -> float:
        """Zeros (or removed weights) among the prunable, non-excluded weights."""
        rows = self._pruned_layers()
        before = sum(r.weights_before for r in rows)
        return 1 - sum(r.nonzero_after for r in rows) / before if before else 0.0

    @property
    def sparsity_before(self) -> float:
        rows = self._pruned_layers()
        before = sum(r.weights_before for r in rows)
        return 1 - sum(r.nonzero_before for r in rows) / before if before else 0.0

    @property
    def prunable_weights(self) -> int:
        return sum(r.weights_before for r in self._pruned_layers())

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0

    def layer(self, name: str) -> LayerReport:
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict:
        return {"config": self.config, "layers": [r.to_dict() for r in self.layers], "skipped": self.skipped,
                "kind": self.kind, "removed_channels": self.removed_channels, "removed_inputs": self.removed_inputs,
                "params_before": self.params_before,
                "params_after": self.params_after, "nonzero_before": self.nonzero_before,
                "nonzero_after": self.nonzero_after, "sparsity": self.sparsity, "sparsity_before": self.sparsity_before,
                "prunable_weights": self.prunable_weights, "params_ratio": self.params_ratio, "notes": self.notes,
                "seconds": self.seconds}

    def summary(self) -> str:
        if self.kind.get("shrunk"):
            n = sum(len(v) for v in self.removed_channels.values())
            s = (f"removed {n} channels: params {self.params_before:,} -> {self.params_after:,} "
                 f"({self.params_ratio:.1%})")
        else:
            s = f"sparsity of prunable weights {self.sparsity_before:.1%} -> {self.sparsity:.1%}"
        if self.skipped:
            s += "; left alone: " + ", ".join(f"{d['name']} ({d['reason'].split(':')[0]})" for d in self.skipped)
        return s


def removed_view(weight: torch.Tensor, report: PruneReport, name: str) -> torch.Tensor:
    """The ORIGINAL weight of layer `name` with what structured pruning removed set to zero: its
    removed output channels (rows) and removed input channels (columns), in the original's shape,
    so a heatmap shows exactly which weights are gone. For masks the pruned model already shows it."""
    w = weight.detach().clone()
    out = report.removed_channels.get(name, [])
    if out:
        w[torch.tensor(out)] = 0
    ins = report.removed_inputs.get(name, [])
    if ins and w.ndim >= 2:
        w[:, torch.tensor(ins)] = 0
    return w


def _snapshot(model: nn.Module) -> dict[str, tuple[str, list[int], int, int]]:
    return {n: (type(m).__name__, list(m.weight.shape), m.weight.numel(), int(torch.count_nonzero(_weight(m))))
            for n, m in prunable_layers(model)}


# ---------------------------------------------------------------- prune

def prune(model: nn.Module, config: PruneConfig, *, input_shape: tuple[int, ...] | None = None
          ) -> tuple[nn.Module, PruneReport]:
    """Prune a copy of `model`; the input is never changed.

    `input_shape` (C, H, W) is needed by channel pruning to trace the dependency graph."""
    t0 = time.perf_counter()
    model = copy.deepcopy(model).cpu().eval()
    remove_masks_(model)  # a model mid fine-tune may still carry masks: start from plain weights
    excluded = resolve_exclude(model, config)
    before = _snapshot(model)
    params_before, nonzero_before = count_params(model)
    targets = {n: config.layer_amounts.get(n, config.amount) for n in before if n not in excluded}
    notes: list[str] = []
    removed: dict[str, list[int]] = {}
    removed_in: dict[str, list[int]] = {}
    if config.structured:
        if input_shape is None:
            raise ValueError("channel pruning needs input_shape (C, H, W) to trace the model's dependency graph")
        removed, removed_in, skipped_extra, notes = _prune_channels_(model, config, targets, excluded,
                                                                     tuple(input_shape))
    else:
        skipped_extra = _prune_unstructured_(model, config, targets)
    after = _snapshot(model)
    params_after, nonzero_after = count_params(model)

    layers = [LayerReport(n, typ, shape, after[n][1], numel, after[n][2], nz, after[n][3], targets.get(n))
              for n, (typ, shape, numel, nz) in before.items()]
    skipped = [{"name": n, "type": before[n][0], "reason": r} for n, r in excluded.items()]
    skipped += [{"name": n, "type": before[n][0], "reason": r} for n, r in skipped_extra.items()]
    sparse_left = any(r.nonzero_after < r.weights_after for r in layers if r.target is not None)
    kind = {"masked": sparse_left, "shrunk": config.structured and params_after < params_before}
    report = PruneReport(config.to_dict(), layers, skipped, kind, removed, removed_in, params_before, params_after,
                         nonzero_before, nonzero_after, notes, time.perf_counter() - t0)
    return model, report


def _prune_unstructured_(model: nn.Module, config: PruneConfig, targets: dict[str, float]) -> dict[str, str]:
    """Masks via torch.nn.utils.prune, then prune.remove; returns {layer: reason} for layers left alone.

    Earlier zeros are kept. For L1 that needs no extra mask: zeros are the smallest magnitudes, so
    asking L1Unstructured for the TOTAL count of zeros wanted prunes every earlier zero first. For
    random, the earlier zeros are attached as a custom mask first, and the method then picks only
    the count still missing among the surviving weights (PruningContainer semantics)."""
    modules = dict(model.named_modules())
    names = list(targets)
    per_layer = names if config.scope == "layer" else [n for n in names if n in config.layer_amounts]
    pooled = [n for n in names if n not in per_layer]
    zeros = {n: modules[n].weight.numel() - int(torch.count_nonzero(_weight(modules[n]))) for n in names}
    skipped: dict[str, str] = {}

    def apply(ns: list[str], target: float) -> None:
        total = sum(modules[n].weight.numel() for n in ns)
        have = sum(zeros[n] for n in ns)
        want = round(target * total)
        if want <= have:
            if target > 0:
                for n in ns:
                    skipped[n] = (f"already at {have / total:.1%} sparsity, at or above the target {target:.0%}: "
                                  "earlier zeros are kept, none added")
            return
        params = [(modules[n], "weight") for n in ns]
        if config.method == "l1":
            amount = want
            method = tprune.L1Unstructured
        else:
            for n in ns:
                if zeros[n]:
                    tprune.custom_from_mask(modules[n], "weight", mask=_weight(modules[n]) != 0)
            amount = want - have
            method = tprune.RandomUnstructured
        if len(params) == 1:
            method.apply(params[0][0], "weight", amount=amount)
        else:
            tprune.global_unstructured(params, pruning_method=method, amount=amount)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        for n in per_layer:
            apply([n], targets[n])
        if pooled:
            apply(pooled, config.amount)
    remove_masks_(model)
    return skipped


def _prune_channels_(model: nn.Module, config: PruneConfig, targets: dict[str, float], excluded: dict[str, str],
                     input_shape: tuple[int, ...]
                     ) -> tuple[dict[str, list[int]], dict[str, list[int]], dict[str, str], list[str]]:
    """Physically remove output channels with Torch-Pruning's MetaPruner, one interactive step, so
    each removed group is recorded (indices of the input model's channels) before it is pruned."""
    import torch_pruning as tp

    modules = dict(model.named_modules())
    names = {m: n for n, m in model.named_modules()}
    notes: list[str] = []
    # The classifier's outputs are the class scores: never remove them, even if not excluded.
    cls = classifier_name(model)
    ignored = set(excluded)
    if cls and cls not in ignored and cls in targets:
        ignored.add(cls)
        notes.append(f"{cls}: its output channels are the class scores; channel pruning never removes them "
                     "(its input channels still shrink with the layer before it)")
    ratio_dict = {modules[n]: a for n, a in config.layer_amounts.items() if n not in ignored}
    example = torch.zeros(1, *input_shape)
    with torch.enable_grad():  # the graph is traced through autograd
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=config.norm),
            pruning_ratio=config.amount, pruning_ratio_dict=ratio_dict or None,
            ignored_layers=[modules[n] for n in ignored], global_pruning=config.scope == "global")
        dg = pruner.DG
        # which prunable layers lose output channels in some dependency group at all
        out_prunable = set()
        groups = dg.get_all_groups(ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types)
        for group in groups:
            for dep, _ in group:
                if dg.is_out_channel_pruning_fn(dep.handler) and dep.target.module in names:
                    out_prunable.add(names[dep.target.module])
        out_before = {n: dg.get_out_channels(modules[n]) for n in targets}
        removed: dict[str, list[int]] = {}
        inputs: dict[str, list[int]] = {}
        for group in pruner.step(interactive=True):
            for dep, idxs in group:
                m = dep.target.module
                if not (isinstance(m, PRUNABLE_TYPES) and m in names):
                    continue
                if dg.is_out_channel_pruning_fn(dep.handler):
                    removed.setdefault(names[m], []).extend(int(i) for i in idxs)
                elif dg.is_in_channel_pruning_fn(dep.handler):
                    inputs.setdefault(names[m], []).extend(int(i) for i in idxs)
            group.prune()
    removed = {n: sorted(set(v)) for n, v in removed.items()}
    inputs = {n: sorted(set(v)) for n, v in inputs.items()}
    skipped: dict[str, str] = {}
    for n, target in targets.items():
        if n in removed or n in ignored:
            continue
        ch = out_before[n] or 0
        if n not in out_prunable:
            skipped[n] = ("its output channels are tied to an excluded layer or the model output in the dependency "
                          "graph, so none can be removed")
        elif target == 0:
            skipped[n] = "amount 0%"
        elif config.scope == "layer" and int(ch * target) < 1:
            skipped[n] = f"{target:.0%} of {ch} channels rounds to 0"
        elif config.scope == "global":
            skipped[n] = ("global ranking kept all its channels (or would have removed every one, which "
                          "Torch-Pruning refuses)")
        else:
            skipped[n] = "Torch-Pruning left its channels in place (removing them would empty a coupled layer)"
    for n in ignored - set(excluded):
        skipped[n] = notes[0] if notes else "output channels are the model output"
    return removed, inputs, skipped, notes


# ---------------------------------------------------------------- preview

@torch.inference_mode()
def subset_accuracy(model: nn.Module, split: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy on a (small) split on the CPU, changing `model` IN PLACE to channels_last
    memory layout when it has 2-D convolutions: oneDNN's channels_last kernels run LeNet-style
    convs about twice as fast on this kind of CPU. Same numbers as `metrics.accuracy`."""
    model.eval()
    convs = any(isinstance(m, nn.Conv2d) for m in model.modules())
    if convs:
        model.to(memory_format=torch.channels_last)
    correct = 0
    for x, y in split.batches(batch_size):
        if convs:
            x = x.contiguous(memory_format=torch.channels_last)
        correct += int((model(x).argmax(1) == y).sum())
    return correct / max(1, len(split))


@dataclass
class PreviewResult:
    config: dict
    sparsity: float                     # zeros among the prunable (non-excluded) weights
    model_sparsity: float               # zeros among all parameters, incl. biases and excluded layers
    layers: list[dict]                  # per prunable layer: name, type, weights, nonzero, sparsity, target
    accuracy: float
    accuracy_label: str
    val_samples: int
    params: int
    nonzero_params: int
    size_bytes: int                     # length of the file Apply would save (best honest encoding)
    size_format: str                    # "sparse" | "dense"
    dense_size_bytes: int
    latency_ms_b64: float | None        # measured now for structured pruning; None for masks
    reference_latency_ms_b64: float | None
    speed_note: str
    report: PruneReport
    seconds: float
    model: nn.Module = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("model", "report")}
        d["report"] = self.report.to_dict()
        return d


MASKED_SPEED_NOTE = ("Masked pruning keeps the zeros inside dense tensors: dense kernels do exactly the same work, "
                     "so it runs at the same speed as before. Only the file shrinks (sparse encoding).")


def preview(model: nn.Module, config: PruneConfig, val_subset: Split, *, measure_speed: bool = True,
            reference_latency_ms_b64: float | None = None) -> PreviewResult:
    """Prune a copy and measure, quickly: sparsity, accuracy on the given FIXED validation subset,
    the size of the file that Apply would write and, for structured pruning, latency (batch 64)
    before and after, timed now and alternately, or only after when the caller passes the
    unpruned model's `reference_latency_ms_b64` (timed once, e.g. cached per variant)."""
    t0 = time.perf_counter()
    input_shape = tuple(val_subset.images.shape[1:])
    pruned, report = prune(model, config, input_shape=input_shape)
    lat = ref = None
    if config.structured:
        if measure_speed and reference_latency_ms_b64:   # the caller timed the unpruned model already
            ref = reference_latency_ms_b64
            lat = measure_latency(pruned, input_shape, 64, "cpu", warmup=1, repeats=5, min_seconds=0.0)
            note = (f"Channels physically removed: measured on CPU, batch 64, median of 5 runs: {ref:.2f} ms "
                    f"before (timed once for this variant), {lat:.2f} ms after (timed now).")
        elif measure_speed:   # before the accuracy pass below changes the copy's memory layout
            ref, lat = paired_latency(model, pruned, input_shape, 64, rounds=5, warmup=1)
            note = (f"Channels physically removed: measured now on CPU, batch 64, median of 5 alternating runs: "
                    f"{ref:.2f} ms before, {lat:.2f} ms after.")
        else:
            note = "Channels physically removed: smaller dense layers, so it runs faster (not timed in this preview)."
    else:
        note = MASKED_SPEED_NOTE
    acc = subset_accuracy(pruned, val_subset)
    state = pruned.state_dict()
    best, fmt = encode_best(state)
    dense = len(encode_dense(state)) if fmt == "sparse" else len(best)
    params, nonzero = count_params(pruned)
    layers = [{"name": r.name, "type": r.type, "weights": r.weights_after, "nonzero": r.nonzero_after,
               "sparsity": r.sparsity_after, "target": r.target, "excluded": r.target is None,
               "shape": r.shape_after} for r in report.layers]
    return PreviewResult(config.to_dict(), report.sparsity, 1 - nonzero / params if params else 0.0, layers, acc,
                         f"accuracy on a fixed {len(val_subset):,}-image validation subset (not the test set)",
                         len(val_subset), params, nonzero, len(best), fmt, dense, lat, ref, note, report,
                         time.perf_counter() - t0, pruned)


@torch.inference_mode()
def paired_latency(a: nn.Module, b: nn.Module, input_shape: tuple[int, ...], batch: int, rounds: int = 7,
                   warmup: int = 2) -> tuple[float, float]:
    """Median ms of one forward pass of `a` and of `b`, timed alternately (CPU) so that load on the
    machine hits both alike."""
    a.eval()
    b.eval()
    x = torch.randn(batch, *input_shape)
    for _ in range(warmup):
        a(x)
        b(x)
    ta, tb = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        a(x)
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b(x)
        tb.append(time.perf_counter() - t)
    return statistics.median(ta) * 1000, statistics.median(tb) * 1000


def preview_subset(val: Split, n: int = PREVIEW_VAL_SAMPLES, seed: int = 0) -> Split:
    """The fixed validation subset previews are measured on (same images every time)."""
    return val.subset(n, seed=seed)


# ---------------------------------------------------------------- sensitivity

@torch.no_grad()
def sensitivity_scan(model: nn.Module, val_subset: Split, amounts: tuple[float, ...] = DEFAULT_SENSITIVITY_AMOUNTS, *,
                     method: str = "l1", exclude: tuple[str, ...] | None = None, seed: int = 0,
                     on_point: Callable[[dict], None] | None = None,
                     on_start: Callable[[dict], None] | None = None,
                     should_stop: Callable[[], bool] | None = None) -> dict:
    """For each prunable layer and amount: accuracy on `val_subset` when only that layer is pruned
    (unstructured, to that total sparsity). Works on a copy; each layer is restored after its row.

    Returns {"method", "amounts", "baseline_accuracy", "val_samples", "layers": [{"name", "type",
    "weights", "accuracy": [...]}], "excluded": {name: reason}}."""
    if method not in UNSTRUCTURED:
        raise ValueError(f"sensitivity supports the unstructured methods {', '.join(UNSTRUCTURED)}; got {method!r}")
    amounts = tuple(sorted({_check_fraction("amount", a) for a in amounts}))
    if not amounts:
        raise ValueError("sensitivity needs at least one amount")
    model = copy.deepcopy(model).cpu().eval()
    remove_masks_(model)
    cfg = PruneConfig(method=method, amount=0.0, exclude=exclude, seed=seed)
    excluded = resolve_exclude(model, cfg)
    layers = [(n, m) for n, m in prunable_layers(model) if n not in excluded]
    base = subset_accuracy(model, val_subset)
    if on_start:
        on_start({"method": method, "amounts": list(amounts), "baseline_accuracy": base,
                  "val_samples": len(val_subset), "excluded": excluded,
                  "layers": [{"name": n, "type": type(m).__name__, "weights": m.weight.numel()} for n, m in layers]})
    method_cls = tprune.L1Unstructured if method == "l1" else tprune.RandomUnstructured
    rows = []
    total = len(layers) * len(amounts)
    done = 0
    for name, m in layers:
        original = m.weight.detach().clone()
        n = original.numel()
        zeros = n - int(torch.count_nonzero(original))
        accs = []
        for a in amounts:
            if should_stop and should_stop():
                from .training import Cancelled
                raise Cancelled(f"sensitivity cancelled at layer {name}")
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                tprune.custom_from_mask(m, "weight", mask=original != 0)
                extra = max(0, round(a * n) - zeros)
                if extra:
                    method_cls.apply(m, "weight", amount=extra)
                tprune.remove(m, "weight")
            acc = subset_accuracy(model, val_subset)
            m.weight.data.copy_(original)
            accs.append(acc)
            done += 1
            if on_point:
                on_point({"layer": name, "amount": a, "accuracy": acc, "done": done, "total": total})
        rows.append({"name": name, "type": type(m).__name__, "weights": n, "sparsity_before": zeros / n,
                     "accuracy": accs})
    return {"method": method, "amounts": list(amounts), "baseline_accuracy": base, "val_samples": len(val_subset),
            "layers": rows, "excluded": excluded}


def suggest_allocation(sensitivity: dict, target_sparsity: float, *, resolution: float = 0.01) -> dict[str, float]:
    """Per-layer amounts whose weight-weighted sparsity meets `target_sparsity` with the least
    predicted accuracy loss.

    Each layer's predicted loss at amount a is read off its sensitivity curve (linear between the
    measured amounts, starting at no loss at its current sparsity, made non-decreasing). Greedy: in
    steps of `resolution`, raise the layer whose next step costs the least predicted loss per
    weight removed, until enough weights are removed; the last step is cut to hit the target."""
    target = _check_fraction("target_sparsity", target_sparsity)
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
    initial = _check_fraction("initial sparsity", initial)
    final = _check_fraction("final sparsity", final)
    return [final + (initial - final) * (1 - t / steps) ** 3 for t in range(1, steps + 1)]


def relative_channel_amount(done: float, target: float) -> float:
    """Channel fraction to remove now so that, of the ORIGINAL channels, `target` are gone after
    `done` already were: 1 - (1 - target) / (1 - done)."""
    if target <= done:
        return 0.0
    return 1 - (1 - target) / (1 - done)


# ---------------------------------------------------------------- variants: one-shot and gradual

def _check_parent_kind(parent) -> None:
    if parent.kind.get("quantized") or parent.kind.get("simulated"):
        raise ValueError(f"variant {parent.id} ({parent.name}) is quantized; prune its float parent, then quantize")


def _child_kind(parent_kind: dict, report_kind: dict) -> dict:
    return {"masked": bool(report_kind.get("masked")),
            "shrunk": bool(parent_kind.get("shrunk") or report_kind.get("shrunk"))}


def prune_variant(ws, ref: str, config: PruneConfig, *, name: str | None = None, device: str = "auto",
                  on_progress: Callable[[float, str], None] | None = None):
    """Prune a stored variant once and store the child with full-test-set metrics.
    Returns (child Variant, PruneReport)."""
    from .data import cached_dataset
    from .variants import child_recipe, measure_and_store

    progress = on_progress or (lambda p, m: None)
    parent = ws.get_variant(ref)
    _check_parent_kind(parent)
    data = cached_dataset(parent.dataset)
    model = ws.load_model(parent)
    pruned, report = prune(model, config, input_shape=data.info.input_shape)
    progress(0.5, "measuring on the full test split")
    step = {"step": "prune", **config.to_dict()}
    notes = report.summary()
    child = measure_and_store(ws, pruned, data=data, name=name or f"{parent.name} | {config.label()}",
                              arch=parent.arch, recipe=child_recipe(parent, step),
                              kind=_child_kind(parent.kind, report.kind), parent_id=parent.id, device=device,
                              notes=notes, extra_metrics={"sparsity": round(report.sparsity, 6)})
    progress(1.0, f"saved {child.id}")
    return child, report


def prune_recover(ws, cfg, ctx):
    """Gradual pruning with recovery: AGP steps from the parent's sparsity to `cfg.prune.amount`,
    each followed by `cfg.finetune` epochs with the masks fixed (unstructured) or on the shrunk
    model (channel). `cfg` is a tasks.PruneRecoverJobConfig, `ctx` a tasks.TaskContext.
    Returns (child Variant, history of curve points)."""
    from dataclasses import replace

    from .data import cached_dataset
    from .training import train
    from .variants import child_recipe, measure_and_store

    pc: PruneConfig = cfg.prune
    parent = ws.get_variant(cfg.variant)
    _check_parent_kind(parent)
    ctx.on_progress(0.0, "loading data and model")
    data = cached_dataset(parent.dataset, cfg.subset)
    model = ws.load_model(parent)
    input_shape = data.info.input_shape
    excluded = resolve_exclude(model, pc)
    names = [n for n, _ in prunable_layers(model) if n not in excluded]
    modules = dict(model.named_modules())
    w0 = {n: modules[n].weight.numel() for n in names}
    total0 = sum(w0.values())

    def sparsity_now(m: nn.Module) -> tuple[float, dict[str, float]]:
        mods = dict(m.named_modules())
        nz = {n: int(torch.count_nonzero(_weight(mods[n]))) for n in names}
        return 1 - sum(nz.values()) / total0, {n: 1 - nz[n] / w0[n] for n in names}

    s0, layer_s0 = sparsity_now(model)
    if pc.structured:
        s0, layer_s0 = 0.0, {n: 0.0 for n in names}   # channel amounts count from the parent's channels
    elif pc.amount <= s0 + 1e-9 and not pc.layer_amounts:
        raise ValueError(f"variant {parent.id} is already {s0:.1%} sparse, at or above the target {pc.amount:.0%}")
    schedule = agp_schedule(s0, max(pc.amount, s0), cfg.steps)
    layer_schedules = {n: agp_schedule(min(layer_s0[n], a), max(a, layer_s0[n]), cfg.steps)
                       for n, a in pc.layer_amounts.items()}
    history: list[dict] = []

    def point(step: int, phase: str, m: nn.Module, target: float) -> dict:
        acc = split_accuracy(m, data.val, "cpu" if next(m.parameters()).device.type == "cpu" else next(
            m.parameters()).device)
        sp, _ = sparsity_now(m)
        p = {"step": step, "steps": cfg.steps, "phase": phase, "target": round(target, 6), "sparsity": sp,
             "val_accuracy": acc, "params": sum(q.numel() for q in m.parameters())}
        history.append(p)
        ctx.on_event({"stage": "prune_recover", "kind": "point", **p})
        return p

    p = point(0, "start", model, s0)
    ctx.log(f"start: sparsity {p['sparsity']:.1%}, val acc {p['val_accuracy']:.4f}; AGP targets "
            + ", ".join(f"{t:.1%}" for t in schedule))
    done_amounts = {"_": s0, **{n: 0.0 for n in pc.layer_amounts}}
    for k, target in enumerate(schedule, 1):
        lo, hi = 0.9 * (k - 1) / cfg.steps, 0.9 * k / cfg.steps
        ctx.on_progress(lo, f"step {k}/{cfg.steps}: pruning to {target:.1%}")
        if pc.structured:   # Torch-Pruning counts from the current channels: convert to relative amounts
            amount = relative_channel_amount(done_amounts["_"], target)
            overrides = {n: relative_channel_amount(done_amounts[n], layer_schedules[n][k - 1])
                         for n in pc.layer_amounts}
            done_amounts = {"_": target, **{n: layer_schedules[n][k - 1] for n in pc.layer_amounts}}
        else:
            amount = target
            overrides = {n: layer_schedules[n][k - 1] for n in pc.layer_amounts}
        step_cfg = replace(pc, amount=min(amount, 0.99), layer_amounts={n: min(a, 0.99) for n, a in overrides.items()})
        model, report = prune(model, step_cfg, input_shape=input_shape)
        point(k, "pruned", model, target)
        if not pc.structured:
            attach_masks_from_zeros_(model, names)   # fine-tuning keeps the pruned weights at zero
        seed = cfg.finetune.seed + k
        train(model, data, replace(cfg.finetune, seed=seed), should_stop=ctx.should_stop,
              on_event=ctx.train_listener(f"fine-tune {k}/{cfg.steps}", (lo, hi)))
        remove_masks_(model)
        model = model.cpu()
        p = point(k, "recovered", model, target)
        ctx.log(f"step {k}/{cfg.steps}: sparsity {p['sparsity']:.1%}, val acc after fine-tune {p['val_accuracy']:.4f}")

    ctx.on_progress(0.92, "measuring on the full test split")
    final_cfg = replace(pc)
    step = {"step": "prune_recover", **cfg.to_dict(), "prune": final_cfg.to_dict()}
    step.pop("variant", None)
    kind = {"masked": any(int(torch.count_nonzero(_weight(m))) < m.weight.numel()
                          for n, m in prunable_layers(model) if n in names),
            "shrunk": bool(parent.kind.get("shrunk") or pc.structured)}
    name = cfg.name or f"{parent.name} | {pc.label()}, {cfg.steps} AGP steps x {cfg.finetune.epochs} ep"
    child = measure_and_store(ws, model, data=data, name=name, arch=parent.arch, recipe=child_recipe(parent, step),
                              kind=kind, parent_id=parent.id, device=cfg.device,
                              notes="AGP steps (sparsity: val accuracy after fine-tuning): " + "; ".join(
                                  f"{q['sparsity']:.1%}: {q['val_accuracy']:.2%}" for q in history
                                  if q["phase"] in ("start", "recovered")),
                              extra_metrics={"sparsity": round(history[-1]["sparsity"], 6),
                                             "val_accuracy": history[-1]["val_accuracy"]})
    ctx.on_progress(1.0, f"saved {child.id}")
    return child, history
