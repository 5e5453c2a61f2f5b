"""PyTorch eager latency of modules, timed in the measurement lane (`core.measure.lane`): the
only way the engine times a torch model."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn as nn

from core.measure.lane import LatencyReport, run_lane

TORCH_RUNTIME = "PyTorch eager"


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode for the block, then back in the mode it was in (callers' models are
    not changed: a model mid-training stays in training mode)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:   # each submodule as it was (a model may mix modes)
            m.training = training


def _forward(model: nn.Module, x: torch.Tensor):
    def run():
        with torch.inference_mode():
            model(x)
    return run


def time_models(models: dict[str, nn.Module], input_shape: tuple[int, ...], batches: tuple[int, ...] = (1, 64),
                device: torch.device | str = "cpu", *, warmup: int = 3, min_runs: int = 15, max_runs: int = 2000,
                min_seconds: float = 0.2, budget_s: float | None = None, wait_s: float | None = None) -> LatencyReport:
    """Time every model at every batch size in the lane, one pass of each in turn (a, b, a, b,
    ...), until the medians and the ratios to the first model settle within +/-10% or `budget_s`
    (default `default_budget_s()`, 10 s) is spent. Models are used in eval mode and left as they were."""
    device = torch.device(device)
    inputs = {b: torch.randn(b, *input_shape, device=device) for b in batches}
    with contextlib.ExitStack() as stack:
        for m in models.values():
            stack.enter_context(eval_mode(m))
        passes = {label: {b: _forward(m, inputs[b]) for b in batches} for label, m in models.items()}
        return run_lane(passes, device=device, warmup=warmup, min_runs=min_runs, min_seconds=min_seconds,
                        max_runs=max_runs, budget_s=budget_s, wait_s=wait_s)


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch: int, device: torch.device | str = "cpu",
                    **kwargs) -> float | None:
    """Median milliseconds of one forward pass of one model, or None when it did not settle."""
    return time_models({"model": model}, input_shape, (batch,), device, **kwargs).shown_ms("model", batch)
