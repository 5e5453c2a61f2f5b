"""Measured metrics with the fixed names of DESIGN.md, and per-layer statistics.

Nothing here is estimated: accuracy is counted on the full test split, sizes are lengths of the
encoded files, latency is the median of timed runs after warm-up on a named device.
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from .data import Split
from .formats import encode_best, encode_dense

METRIC_NAMES = ("accuracy", "params", "nonzero_params", "size_bytes", "dense_size_bytes",
                "latency_ms_b1", "latency_ms_b64", "macs", "device")


@dataclass
class Metrics:
    accuracy: float
    params: int
    nonzero_params: int
    size_bytes: int
    dense_size_bytes: int
    latency_ms_b1: float
    latency_ms_b64: float
    macs: int
    device: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class LayerStat:
    name: str
    type: str
    shape: tuple[int, ...]
    params: int
    nonzero: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.params if self.params else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "sparsity": self.sparsity}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but no GPU is available")
    return dev


def device_name(device: torch.device | str) -> str:
    """Human name of a device, used in the `device` metric: 'cuda: NVIDIA H100' or 'cpu: x86_64, 2 threads'."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    return f"cpu: {platform.machine()}, {torch.get_num_threads()} threads"


def model_device(model: nn.Module) -> torch.device:
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return t.device if t is not None else torch.device("cpu")


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) over all parameters of the module."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    return total, nonzero


def layer_stats(model: nn.Module) -> list[LayerStat]:
    """One row per module that owns a `weight` parameter (conv, linear, norm layers)."""
    rows = []
    for name, m in model.named_modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor) or not name:
            continue
        params = sum(p.numel() for p in m.parameters(recurse=False))
        nonzero = sum(int(torch.count_nonzero(p.detach())) for p in m.parameters(recurse=False))
        rows.append(LayerStat(name, type(m).__name__, tuple(w.shape), params, nonzero))
    return rows


@torch.inference_mode()
def accuracy(model: nn.Module, split: Split, device: torch.device | str = "cpu", batch_size: int = 1000) -> float:
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for x, y in split.batches(batch_size, device=device):
        correct += (model(x).argmax(1) == y).sum()
    return int(correct) / max(1, len(split))


@torch.inference_mode()
def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass at batch 1, over conv and linear layers (the usual
    definition; biases, norms and activations are not MACs). Counted with forward hooks on the
    real output shapes, so shrunk layers count what they really compute."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp, out):
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inp, out):
        nonlocal total
        total += out.numel() * m.in_features

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        device = model_device(model)
        model.eval()(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return int(total)


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch: int, device: torch.device | str = "cpu",
                    warmup: int = 5, repeats: int = 20, min_seconds: float = 0.2) -> float:
    """Median milliseconds of one forward pass, after `warmup` untimed runs.

    Repeats until both `repeats` runs and `min_seconds` of timing are done (capped at 10x repeats)."""
    device = torch.device(device)
    model.eval()
    x = torch.randn(batch, *input_shape, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start < min_seconds and len(times) < 10 * repeats):
        t0 = time.perf_counter()
        model(x)
        sync()
        times.append((time.perf_counter() - t0) * 1000)
    return float(statistics.median(times))


def artifact_sizes(model: nn.Module) -> tuple[int, int]:
    """(size_bytes of the best honest encoding, dense_size_bytes of plain safetensors)."""
    state = model.state_dict()
    best, _ = encode_best(state)
    return len(best), len(encode_dense(state))


def evaluate(model: nn.Module, test: Split, input_shape: tuple[int, ...], *, device: str | torch.device = "auto",
             size_bytes: int | None = None, latency: bool = True) -> Metrics:
    """Measure every fixed metric. `size_bytes` is the length of the variant's stored file when the
    caller has it; otherwise the best encoding is built here to measure it."""
    dev = resolve_device(device)
    model = model.to(dev).eval()
    params, nonzero = count_params(model)
    best, dense = artifact_sizes(model)
    acc = accuracy(model, test, dev)
    lat1 = measure_latency(model, input_shape, 1, dev) if latency else float("nan")
    lat64 = measure_latency(model, input_shape, 64, dev) if latency else float("nan")
    return Metrics(accuracy=acc, params=params, nonzero_params=nonzero,
                   size_bytes=size_bytes if size_bytes is not None else best, dense_size_bytes=dense,
                   latency_ms_b1=lat1, latency_ms_b64=lat64, macs=count_macs(model, input_shape),
                   device=device_name(dev))
