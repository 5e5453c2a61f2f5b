"""Measured metrics with the fixed names of DESIGN.md, and per-layer statistics.

Nothing here is estimated: accuracy is counted on the full test split, sizes are lengths of the
encoded files, latency is the median of timed runs after warm-up on a named device.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from core.base.kinds import is_quantized_module, layer_weights
from core.data.types import Split
from core.formats.encoding import encode_best, encode_dense
from core.formats.quant import dequantized_state, flatten_state
from core.measure.lane import device_label
from core.measure.latency import eval_mode
from core.measure.speed import latency_metrics

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
    extra: dict = field(default_factory=dict)   # spread and load of the latency figures, paired parent timings

    def to_dict(self) -> dict:
        d = asdict(self)
        return {**{k: v for k, v in d.items() if k != "extra"}, **d["extra"]}


@dataclass
class LayerStat:
    name: str
    type: str
    shape: tuple[int, ...]
    params: int                 # all of the module's own parameters (weight and bias)
    nonzero: int
    weights: int                # the weight tensor alone: what pruning works on
    nonzero_weights: int

    @property
    def sparsity(self) -> float:
        """Zeros among the WEIGHTS (biases excluded): the same number the Prune page shows."""
        return 1.0 - self.nonzero_weights / self.weights if self.weights else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "sparsity": self.sparsity}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was asked for but no GPU is available")
    return dev


def model_device(model: nn.Module) -> torch.device:
    t = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return t.device if t is not None else torch.device("cpu")


def count_params(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) over all parameters of the module, the int8 weights and
    biases of quantized modules included (they are not nn.Parameters)."""
    total = nonzero = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p.detach()))
    for _, m, w, b in layer_weights(model):
        if is_quantized_module(m):
            for t in (w, b):
                if isinstance(t, torch.Tensor):
                    total += t.numel()
                    nonzero += int(torch.count_nonzero(t.detach()))
    return total, nonzero


def layer_stats(model: nn.Module) -> list[LayerStat]:
    """One row per module that owns a `weight` parameter (conv, linear, norm layers)."""
    rows = []
    for name, m, w, b in layer_weights(model):
        tensors = [w, b] if is_quantized_module(m) else list(m.parameters(recurse=False))
        tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
        params = sum(t.numel() for t in tensors)
        nonzero = sum(int(torch.count_nonzero(t.detach())) for t in tensors)
        rows.append(LayerStat(name, type(m).__name__, tuple(w.shape), params, nonzero, w.numel(),
                              int(torch.count_nonzero(w))))
    return rows


def channels_last_(model: nn.Module) -> nn.Module:
    """In place, on a PRIVATE model: channels_last memory layout when it has 2-D convolutions.
    oneDNN's channels_last kernels run LeNet-style convs about twice as fast on this kind of CPU
    (measured: LeNet-5 on 1,000 images 119 -> 55 ms), with the same predictions up to float rounding."""
    if any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model.to(memory_format=torch.channels_last)
    return model


@torch.inference_mode()
def accuracy(model: nn.Module, split: Split, device: torch.device | str = "cpu", batch_size: int = 1000) -> float:
    """Top-1 accuracy of `model` (already on `device`) on the whole split. The one accuracy helper
    of the engine; leaves the model as it found it."""
    channels_last = next((p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                          for p in model.parameters() if p.ndim == 4), False)
    correct = torch.zeros((), dtype=torch.long, device=device)
    with eval_mode(model):
        for x, y in split.batches(batch_size, device=device):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            correct += (model(x).argmax(1) == y).sum()
    return int(correct) / max(1, len(split))


def class_probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax probabilities (N, classes) of `model` on normalised inputs `x` (N, C, H, W): the one
    inference path of the Predict page and the REST/gRPC services. Eval mode, no gradients, on the
    model's device; a model shared by threads is never switched in place (one left in training
    mode runs as an eval-mode copy)."""
    if any(m.training for m in model.modules()):
        model = copy.deepcopy(model).eval()
    with torch.inference_mode():
        logits = model(x.to(model_device(model)))
    return torch.softmax(logits.float(), dim=1)


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
    for m in model.modules():   # quantized conv/linear modules carry the same size attributes
        if isinstance(m, nn.Conv2d) or (is_quantized_module(m) and hasattr(m, "kernel_size")):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear) or (is_quantized_module(m) and hasattr(m, "in_features")):
            hooks.append(m.register_forward_hook(linear_hook))
    try:
        with eval_mode(model):
            model(torch.zeros(1, *input_shape, device=model_device(model)))
    finally:
        for h in hooks:
            h.remove()
    return int(total)


def artifact_sizes(model: nn.Module) -> tuple[int, int]:
    """(size_bytes of the best honest encoding, dense_size_bytes of plain safetensors), no metadata."""
    state = model.state_dict()
    if any(not isinstance(v, torch.Tensor) or v.is_quantized or v.dtype in (torch.float16, torch.bfloat16)
           for v in state.values()):
        best, _ = encode_best(flatten_state(state)[0])
        return len(best), len(encode_dense(dequantized_state(state)))   # dense = the float32 file it replaces
    best, _ = encode_best(state)
    return len(best), len(encode_dense(state))


def evaluate(model: nn.Module, test: Split, input_shape: tuple[int, ...], *, device: str | torch.device = "auto",
             size_bytes: int | None = None, latency: bool = True, reference: nn.Module | None = None,
             runtimes: tuple[str, ...] | None = None, latency_budget_s: float | None = None) -> Metrics:
    """Measure every fixed metric on a copy of `model` (the model given is not moved or changed).

    `size_bytes` is the length of the variant's stored file when the caller has it; otherwise the
    best encoding is built here to measure it. Latency is timed in the measurement lane, in each
    of `runtimes` (`core.measure.speed`); with `reference` (the parent), both are timed in the same
    call, alternately, and the parent's figures are kept as `reference_*latency_ms_b*` so a ratio
    between the two never mixes timings taken under different load. A latency that did not settle
    is NaN, with the reason."""
    dev = resolve_device(device)
    model = copy.deepcopy(model).to(dev).eval()
    params, nonzero = count_params(model)
    best, dense = artifact_sizes(model)
    acc = accuracy(model, test, dev)
    extra: dict = {}
    lat1 = lat64 = float("nan")
    if latency:
        extra = latency_metrics(model, input_shape, dev, reference=reference, runtimes=runtimes,
                                calib_images=test.normalize(test.images[:128].cpu()), budget_s=latency_budget_s)
        lat1, lat64 = extra.pop("latency_ms_b1", lat1), extra.pop("latency_ms_b64", lat64)
        extra.pop("device", None)
    return Metrics(accuracy=acc, params=params, nonzero_params=nonzero,
                   size_bytes=size_bytes if size_bytes is not None else best, dense_size_bytes=dense,
                   latency_ms_b1=lat1, latency_ms_b64=lat64, macs=count_macs(model, input_shape),
                   device=device_label(dev), extra=extra)
