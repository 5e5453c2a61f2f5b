"""The live preview behind the Prune page's sliders: prune a copy and measure it quickly.

Everything it shows is measured, and labelled for what it is: accuracy on a FIXED validation
subset (not the test set), the length of the very bytes Apply would write (the caller passes the
file's metadata, so the header is counted), and for structural pruning the latency before and
after, timed in this call, alternately, the same way.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from core.base.ratios import Ratio
from core.compress.pruning.prune import PruneConfig, PruneReport, prune
from core.compress.pruning.structural import MIN_KEEP_CHANNELS, MIN_KEEP_FRACTION, removed_view
from core.data.types import Split
from core.formats.encoding import encode_best, encode_dense
from core.measure.lane import LatencyReport, paired_note
from core.measure.latency import time_models
from core.measure.metrics import accuracy, channels_last_, count_params

PREVIEW_VAL_SAMPLES = 1000
PREVIEW_TIMING_BUDGET_S = 3.0    # at most, per slider move: the lane stops as soon as the ratio settles (idle: < 0.5 s)

MASKED_SPEED_NOTE = ("Masked pruning keeps the zeros inside dense tensors: dense kernels do exactly the same work, "
                     "so it runs at the same speed as before. Only the file shrinks (sparse encoding).")


def preview_subset(val: Split, n: int = PREVIEW_VAL_SAMPLES, seed: int = 0) -> Split:
    """The fixed validation subset previews are measured on (same images every time)."""
    return val.subset(n, seed=seed)


def amount_meaning(config: PruneConfig) -> str:
    """What the Amount slider means for this method and scope, in one sentence."""
    a = f"{config.amount:.0%}"
    if not config.structured:
        how = "by |weight|" if config.method == "l1" else "at random"
        if config.scope == "global":
            return (f"{a} of all prunable weights, ranked together {how}, become zeros (earlier zeros count); "
                    "layers end up with different sparsities.")
        return f"each pruned layer gets {a} zeros among its weights, chosen {how} (earlier zeros count)."
    keep = f"each layer keeps at least {MIN_KEEP_FRACTION:.0%} of its output channels (at least {MIN_KEEP_CHANNELS})"
    what = (f"{a} of all output channels, ranked together by their L{config.norm} norm, are removed"
            if config.scope == "global" else f"each layer loses {a} of its output channels (lowest L{config.norm} norm)")
    return (f"{what}; {keep}. A layer also loses the input columns of the channels removed from the layer "
            "before it, so more weights go than the amount says.")


@dataclass
class PreviewResult:
    config: dict
    label: str
    amount_meaning: str
    sparsity: float                     # zeros (or removed weights) among the prunable, non-excluded weights
    layers: list[dict]                  # per prunable layer: name, type, weights, nonzero, sparsity, target, ...
    accuracy: float
    accuracy_label: str
    val_samples: int
    params: int
    nonzero_params: int
    size_bytes: int                     # length of the file Apply would save, header included
    size_format: str                    # "sparse" | "dense"
    dense_size_bytes: int
    latency: LatencyReport | None       # before/after, one call, alternately (structural only)
    speed_note: str
    report: PruneReport
    seconds: float
    model: nn.Module = field(repr=False, compare=False)

    @property
    def speedup(self) -> Ratio | None:
        """How many times faster at batch 64, with its 95% interval (structural only; both timed
        in this call); its value is None when the ratio did not settle (not measurable now)."""
        return self.latency.ratio_figure("before", "after", 64) if self.latency else None

    @property
    def latency_ratio(self) -> float | None:
        f = self.speedup
        return f.value if f else None

    def after_weight(self, original: nn.Module, name: str) -> torch.Tensor:
        """Layer `name` as the heatmap shows it after pruning: for masks the pruned weight; for
        removed channels the ORIGINAL weight with what was removed set to zero (same shape)."""
        if self.report.removed_channels or self.report.removed_inputs:
            w = dict(original.named_modules())[name].weight
            return removed_view(w, self.report.removed_channels.get(name, []), self.report.removed_inputs.get(name, []))
        return dict(self.model.named_modules())[name].weight.detach()

    def all_layers(self, original: nn.Module) -> list[tuple[str, torch.Tensor]]:
        return [(r.name, self.after_weight(original, r.name)) for r in self.report.layers]


def _layer_rows(report: PruneReport) -> list[dict]:
    """Rows for the per-layer bars. With channels removed, the weights removed are split into
    those that went with the layer's own output channels and the input columns that followed the
    channels removed from the layer before it."""
    rows = []
    for r in report.layers:
        row = {"name": r.name, "type": r.type, "weights": r.weights_after, "nonzero": r.nonzero_after,
               "sparsity": r.sparsity_after, "target": r.target, "excluded": r.target is None,
               "shape": r.shape_after}
        if report.removed_channels or report.removed_inputs:
            out_frac = len(report.removed_channels.get(r.name, [])) / r.shape_before[0]
            in_frac = len(report.removed_inputs.get(r.name, [])) / r.shape_before[1] if len(r.shape_before) > 1 else 0
            row["removed_out"] = out_frac
            row["removed_in"] = (1 - out_frac) * in_frac
        rows.append(row)
    return rows


def preview(model: nn.Module, config: PruneConfig, val_subset: Split, *,
            metadata: Callable[[nn.Module], dict[str, str]] | None = None, measure_speed: bool = True,
            timing_budget_s: float = PREVIEW_TIMING_BUDGET_S) -> PreviewResult:
    """Prune a copy of `model` and measure it: sparsity, accuracy on the FIXED `val_subset`, the
    bytes of the file (with `metadata(pruned)` in its header, as Apply writes it) and, for
    structural pruning, batch-64 latency before and after, timed together. `model` is not changed."""
    t0 = time.perf_counter()
    input_shape = tuple(val_subset.images.shape[1:])
    pruned, report = prune(model, config, input_shape=input_shape)
    meta = metadata(pruned) if metadata else None
    state = pruned.state_dict()
    best, fmt = encode_best(state, meta)
    dense = len(encode_dense(state, meta)) if fmt == "sparse" else len(best)
    lat = None
    if report.kind.get("shrunk") and measure_speed:
        lat = time_models({"before": model, "after": pruned}, input_shape, (64,), "cpu", warmup=1,
                          budget_s=timing_budget_s)
        note = "Channels physically removed: " + paired_note(lat, "before", "after", 64)
    elif report.kind.get("shrunk"):
        note = "Channels physically removed: smaller dense layers, so it runs faster (not timed in this preview)."
    else:
        note = MASKED_SPEED_NOTE
    acc = accuracy(channels_last_(pruned), val_subset)   # `pruned` is our private copy: the fast layout is fine
    params, nonzero = count_params(pruned)
    pruned_layers = [r.name for r in report.layers if r.target is not None]
    return PreviewResult(config.to_dict(), config.label(pruned_layers), amount_meaning(config), report.sparsity,
                         _layer_rows(report), acc,
                         f"accuracy on a fixed {len(val_subset):,}-image validation subset (not the test set)",
                         len(val_subset), params, nonzero, len(best), fmt, dense, lat, note, report,
                         time.perf_counter() - t0, pruned)
