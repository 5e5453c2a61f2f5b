"""The Quantize page's in-page run: quantize a copy and measure it quickly, labelled for what it
is (validation-subset accuracy, the length of the very bytes Save would write, and latency before
and after timed alternately in this call on the CPU). The bits slider calls it on every move."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from core.compress.quant.files import encode_quantized
from core.compress.quant.quantize import QuantConfig, QuantReport, quantize, speed_verdict, weighted_layers
from core.data.types import Split
from core.formats.quant import kbit_quantize
from core.measure.lane import LatencyReport, paired_note
from core.measure.latency import time_models
from core.measure.metrics import accuracy

PREVIEW_TIMING_BUDGET_S = 0.5
QUANTIZABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.LSTM, nn.GRU)   # what some mode can touch
WHOLE_MODEL_MODES = ("fp16", "bf16")      # convert every layer: nothing to keep in float, no integer grid


def quantizable_layers(model: nn.Module) -> list[str]:
    """The layers a quantization mode can touch (what "keep in float" offers), in model order."""
    return [n for n, m in weighted_layers(model) if isinstance(m, QUANTIZABLE)]


def grid_levels(weight: torch.Tensor, config: QuantConfig, channel: int) -> np.ndarray:
    """The values output channel `channel` of `weight` can take under `config` (per-channel grid):
    (k - zp[c]) * scale[c] for every code k. Empty for fp16/bf16 (no integer grid)."""
    if config.mode in WHOLE_MODEL_MODES:
        return np.array([], dtype=np.float64)
    bits, symmetric = (config.bits, config.symmetric) if config.mode == "weight-only" else (8, True)
    _, scale, zp, qmax = kbit_quantize(weight, bits, symmetric)
    top = 2 * qmax if symmetric else qmax           # symmetric codes run 0..2*qmax (zero at qmax)
    k = np.arange(top + 1, dtype=np.float64)
    return (k - float(zp[channel])) * float(scale[channel])


@dataclass
class QuantPreview:
    config: dict
    label: str
    accuracy: float
    accuracy_label: str
    val_samples: int
    size_bytes: int                     # length of the file Save would write, header included
    size_format: str
    report: QuantReport
    latency: LatencyReport | None       # float ("before") and quantized ("after"), one call, alternately, CPU
    speed_note: str
    seconds: float
    model: nn.Module = field(repr=False, compare=False)

    @property
    def speedup_b64(self) -> float | None:
        """How many times faster at batch 64, or None when not timed or the ratio did not settle."""
        return self.latency.ratio_figure("before", "after", 64).value if self.latency else None

    @property
    def verdict(self) -> str | None:
        """NO_SPEEDUP_TEXT when the quantized copy was timed less than 1.1x faster at batch 64 (a
        settled ratio only)."""
        ratio = self.speedup_b64
        return speed_verdict({"latency_ms_b64": 1.0, "reference_latency_ms_b64": ratio}) if ratio else None


def preview_quantize(model: nn.Module, config: QuantConfig, val_subset: Split, calib: list[torch.Tensor], *,
                     metadata: Callable[[], dict[str, str]] | None = None, measure_speed: bool = True,
                     timing_budget_s: float = PREVIEW_TIMING_BUDGET_S) -> QuantPreview:
    """Quantize a copy of `model` (not changed) with `config` and measure it on `val_subset`."""
    t0 = time.perf_counter()
    q, report = quantize(model, config, calib, time_half_precision=not measure_speed)
    data, fmt = encode_quantized(q, config, metadata() if metadata else {}, float_model=model)
    acc = accuracy(q, val_subset)
    lat = None
    if config.mode == "weight-only":
        note = ("Weight-only: the weights are stored as packed k-bit codes but computed in float after "
                "dequantization, so it runs at the float model's speed (kind simulated; not timed).")
    elif measure_speed:
        input_shape = tuple(val_subset.images.shape[1:])
        lat = time_models({"before": model, "after": q}, input_shape, (1, 64), "cpu", warmup=2,
                          budget_s=timing_budget_s)
        note = "Float and quantized: " + paired_note(lat, "before", "after", 64, 1)
    else:
        note = "Not timed in this preview."
    return QuantPreview(config.to_dict(), config.label(), acc,
                        f"accuracy on a fixed {len(val_subset):,}-image validation subset (not the test set)",
                        len(val_subset), len(data), fmt, report, lat, note, time.perf_counter() - t0, q)
