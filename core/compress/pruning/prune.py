"""Pruning: `prune(model, PruneConfig) -> (pruned copy, PruneReport)`.

Two families, and they tell the truth about what they buy (DESIGN.md, honesty rules):

- `l1` / `random` (unstructured, `core.compress.pruning.masks`): `torch.nn.utils.prune` masks made
  permanent. Zeros stay in dense tensors (kind `masked`): no speed-up; bytes are saved only by the
  sparse file encoding. `amount` is the target TOTAL sparsity of the prunable weights, so pruning
  an already-pruned variant keeps its zeros and removes only the missing count.
- `channel` (structured, `core.compress.pruning.structural`): Torch-Pruning removes whole output channels
  and every coupled slice, so the model is physically smaller and faster (kind `shrunk`).

The last classifier is excluded by default and the report says so; no prunable layer is ever
skipped without a reason in `PruneReport.skipped`. The preview, the sensitivity scan and the AGP
schedule live in `pruning_preview` and `pruning_schedule`.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field

import torch.nn as nn

from core.base.config import DictConfig, check_fraction
from core.base.kinds import derive_kind
from core.compress.pruning.masks import UNSTRUCTURED, nonzero_count, prunable_layers, prune_unstructured_, remove_masks_
from core.compress.pruning.structural import remove_channels_
from core.measure.metrics import count_params
from core.models.registry import classifier_name

METHODS = (*UNSTRUCTURED, "channel")
SCOPES = ("layer", "global")
CLASSIFIER_REASON = ("the last classifier: its outputs are the class scores, and pruning it costs the most "
                     "accuracy per weight (excluded by default)")


@dataclass(frozen=True)
class PruneConfig(DictConfig):
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
        object.__setattr__(self, "amount", check_fraction("amount", self.amount))
        if self.norm not in (1, 2):
            raise ValueError(f"norm must be 1 or 2, got {self.norm!r}")
        if not isinstance(self.layer_amounts, dict):
            raise ValueError("layer_amounts must be a dict of layer name -> amount, "
                             f"got {type(self.layer_amounts).__name__}")
        amounts = {str(k): check_fraction(f"layer_amounts[{k!r}]", v) for k, v in sorted(self.layer_amounts.items())}
        object.__setattr__(self, "layer_amounts", amounts)
        if self.exclude is not None:
            if isinstance(self.exclude, str):
                raise ValueError("exclude must be a list of layer names, not one string")
            object.__setattr__(self, "exclude", tuple(str(x) for x in self.exclude))
            both = set(self.exclude) & set(amounts)
            if both:
                raise ValueError(f"layer(s) {', '.join(sorted(both))} are both excluded and given an amount")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def __hash__(self) -> int:  # dict field: hash the canonical JSON (lets caches key on it)
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def structured(self) -> bool:
        return self.method == "channel"

    def label(self, pruned: list[str] | None = None) -> str:
        """Short human label: 'L1 global 90%', 'channel L2 layer 50% (+2 overrides)', or, when the
        overrides cover every layer being pruned (`pruned`), 'L1 per-layer amounts'."""
        m = {"l1": "L1", "random": "random", "channel": f"channel L{self.norm}"}[self.method]
        if pruned and set(pruned) <= set(self.layer_amounts):
            return f"{m} per-layer amounts"
        s = f"{m} {self.scope} {self.amount:.0%}"
        if self.layer_amounts:
            s += f" (+{len(self.layer_amounts)} override{'s' if len(self.layer_amounts) > 1 else ''})"
        return s


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
    kind: dict[str, bool]               # kind flags of the pruned model (core.base.kinds)
    removed_channels: dict[str, list[int]] = field(default_factory=dict)  # layer -> removed output channels
    removed_inputs: dict[str, list[int]] = field(default_factory=dict)    # layer -> removed input channels
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
        return {**{k: getattr(self, k) for k in ("config", "skipped", "kind", "removed_channels", "removed_inputs",
                                                 "params_before", "params_after", "nonzero_before", "nonzero_after",
                                                 "notes", "seconds", "sparsity", "sparsity_before",
                                                 "prunable_weights", "params_ratio")},
                "layers": [r.to_dict() for r in self.layers]}

    def summary(self) -> str:
        if self.kind.get("shrunk") and self.removed_channels:
            n = sum(len(v) for v in self.removed_channels.values())
            s = (f"removed {n} channels: params {self.params_before:,} -> {self.params_after:,} "
                 f"({self.params_ratio:.1%})")
        else:
            s = f"sparsity of prunable weights {self.sparsity_before:.1%} -> {self.sparsity:.1%}"
        if self.skipped:
            s += "; left alone: " + ", ".join(f"{d['name']} ({d['reason'].split(':')[0]})" for d in self.skipped)
        return s


def resolve_exclude(model: nn.Module, config: PruneConfig) -> dict[str, str]:
    """Excluded layer name -> reason. Raises ValueError for names that are not prunable layers."""
    names = [n for n, _ in prunable_layers(model)]
    for what, given in (("layer_amounts", config.layer_amounts), ("exclude", config.exclude or ())):
        unknown = [n for n in given if n not in names]
        if unknown:
            raise ValueError(f"unknown layer(s) in {what}: {', '.join(unknown)}; prunable layers: {', '.join(names)}")
    if config.exclude is None:
        cls = classifier_name(model)
        return {cls: CLASSIFIER_REASON} if cls in names else {}
    return {n: "excluded in the config" for n in config.exclude}


def _snapshot(model: nn.Module) -> dict[str, tuple[str, list[int], int, int]]:
    return {n: (type(m).__name__, list(m.weight.shape), m.weight.numel(), nonzero_count(m))
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
    removed: dict[str, list[int]] = {}
    removed_in: dict[str, list[int]] = {}
    notes: list[str] = []
    if config.structured:
        if input_shape is None:
            raise ValueError("channel pruning needs input_shape (C, H, W) to trace the model's dependency graph")
        r = remove_channels_(model, amount=config.amount, scope=config.scope, norm=config.norm,
                             layer_amounts=config.layer_amounts, targets=targets, excluded=excluded,
                             input_shape=tuple(input_shape))
        removed, removed_in, skipped_extra, notes = r.removed, r.inputs, r.skipped, r.notes
    else:
        pooled = [] if config.scope == "layer" else [n for n in targets if n not in config.layer_amounts]
        skipped_extra = prune_unstructured_(model, config.method, targets, pooled, config.amount, config.seed)
    after = _snapshot(model)
    params_after, nonzero_after = count_params(model)
    layers = [LayerReport(n, typ, shape, after[n][1], numel, after[n][2], nz, after[n][3], targets.get(n))
              for n, (typ, shape, numel, nz) in before.items()]
    skipped = [{"name": n, "type": before[n][0], "reason": r} for n, r in {**excluded, **skipped_extra}.items()]
    kind = derive_kind(model, shrunk=bool(removed))
    report = PruneReport(config.to_dict(), layers, skipped, kind, removed, removed_in, params_before, params_after,
                         nonzero_before, nonzero_after, notes, time.perf_counter() - t0)
    return model, report
