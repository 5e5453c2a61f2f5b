"""Measured metrics with the fixed names of DESIGN.md, and per-layer statistics.

Nothing here is estimated: accuracy is counted on the full test split, sizes are lengths of the
encoded files, latency is the median of timed runs after warm-up on a named device.
"""
from __future__ import annotations

import contextlib
import copy
import os
import platform
import statistics
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn

from core.base.kinds import is_quantized_module, layer_weights
from core.data.types import Split
from core.formats.encoding import encode_best, encode_dense
from core.formats.quant import dequantized_state, flatten_state

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


# ---------------------------------------------------------------- latency

BUSY_OTHER_CORES = 0.25   # other processes using more than this many cores while timing: flagged


@dataclass
class Timing:
    """Milliseconds of one forward pass: median and interquartile range of `runs` timed passes."""

    median_ms: float
    iqr_ms: float
    runs: int

    @classmethod
    def of(cls, seconds: list[float]) -> Timing:
        ms = sorted(t * 1000 for t in seconds)
        q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0], ms[0], ms[0]]
        return cls(float(statistics.median(ms)), float(q[2] - q[0]), len(ms))


@dataclass
class LatencyReport:
    """Timings of one or more models measured in ONE call, pass by pass alternately, so load on
    the machine hits them alike; `other_cores` is how much CPU other processes used meanwhile."""

    timings: dict[str, dict[int, Timing]]      # model label -> batch size -> timing
    device: str
    other_cores: float | None = None
    busy: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def ms(self, label: str, batch: int) -> float:
        return self.timings[label][batch].median_ms

    def ratio(self, slow: str, fast: str, batch: int) -> float:
        """How many times faster `fast` ran than `slow` (same call, same device)."""
        return self.ms(slow, batch) / self.ms(fast, batch)

    def busy_note(self) -> str:
        if self.other_cores is None:
            return ""
        return (f"Measured while other processes used {self.other_cores:.1f} CPU cores: the timings may be slower "
                "than on an idle machine." if self.busy else "")


class CpuWatch:
    """CPU time used by OTHER processes during a block, in cores (Linux /proc/stat; None elsewhere).
    A background job or a test run can slow a forward pass several-fold on a 2-core machine: this
    is how a figure taken under load is told apart from one taken on an idle machine."""

    def __enter__(self) -> CpuWatch:
        self.other_cores: float | None = None
        self._start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        end = self._sample()
        if self._start is None or end is None:
            return
        (busy0, own0, t0), (busy1, own1, t1) = self._start, end
        wall = t1 - t0
        if wall > 0:
            self.other_cores = max(0.0, ((busy1 - busy0) - (own1 - own0)) / wall)

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields_ = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = sum(fields_[:3]) + sum(fields_[5:8])   # user nice system irq softirq steal
        t = os.times()
        return busy / hz, t.user + t.system, time.monotonic()


@torch.inference_mode()
def time_models(models: dict[str, nn.Module], input_shape: tuple[int, ...], batches: tuple[int, ...] = (1, 64),
                device: torch.device | str = "cpu", *, warmup: int = 3, min_runs: int = 15, max_runs: int = 200,
                min_seconds: float = 0.2, budget_s: float | None = None) -> LatencyReport:
    """Time every model at every batch size, one forward pass of each in turn (a, b, a, b, ...)
    after `warmup` untimed passes, until each has `min_runs` passes and `min_seconds` of timing.
    With `budget_s`, stop early (at no fewer than 3 passes each) when the budget is spent: the
    live preview uses it to stay interactive. Models are used in eval mode and left as they were."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    timings: dict[str, dict[int, Timing]] = {k: {} for k in models}
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack, CpuWatch() as watch:
        for m in models.values():
            stack.enter_context(eval_mode(m))
        for batch in batches:
            x = torch.randn(batch, *input_shape, device=device)
            for m in models.values():
                for _ in range(warmup):
                    m(x)
            sync()
            runs: dict[str, list[float]] = {k: [] for k in models}
            t0 = time.perf_counter()
            while True:
                for label, m in models.items():
                    t = time.perf_counter()
                    m(x)
                    sync()
                    runs[label].append(time.perf_counter() - t)
                n, spent = len(runs[next(iter(runs))]), time.perf_counter() - t0
                if n >= max_runs or (n >= min_runs and spent >= min_seconds):
                    break
                if budget_s is not None and n >= 3 and time.perf_counter() - t_start >= budget_s / len(batches):
                    break
            for label in models:
                timings[label][batch] = Timing.of(runs[label])
    other = watch.other_cores
    return LatencyReport(timings, device_name(device), other, other is not None and other > BUSY_OTHER_CORES,
                         time.perf_counter() - t_start)


def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch: int, device: torch.device | str = "cpu",
                    **kwargs) -> float:
    """Median milliseconds of one forward pass of one model (see `time_models`)."""
    return time_models({"model": model}, input_shape, (batch,), device, **kwargs).ms("model", batch)


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
             size_bytes: int | None = None, latency: bool = True, reference: nn.Module | None = None) -> Metrics:
    """Measure every fixed metric on a copy of `model` (the model given is not moved or changed).

    `size_bytes` is the length of the variant's stored file when the caller has it; otherwise the
    best encoding is built here to measure it. With `reference` (the parent), both are timed in the
    same call, alternately, and the parent's figures are kept as `reference_latency_ms_b*` so a
    ratio between the two never mixes timings taken under different load."""
    dev = resolve_device(device)
    model = copy.deepcopy(model).to(dev).eval()
    params, nonzero = count_params(model)
    best, dense = artifact_sizes(model)
    acc = accuracy(model, test, dev)
    extra: dict = {}
    lat1 = lat64 = float("nan")
    if latency:
        models = {"model": model}
        if reference is not None:
            models["reference"] = copy.deepcopy(reference).to(dev).eval()
        rep = time_models(models, input_shape, (1, 64), dev)
        lat1, lat64 = rep.ms("model", 1), rep.ms("model", 64)
        extra = {"latency_ms_b1_iqr": rep.timings["model"][1].iqr_ms, "latency_ms_b64_iqr": rep.timings["model"][64].iqr_ms,
                 "latency_other_cores": rep.other_cores, "latency_busy": rep.busy,
                 "latency_measured_at": time.time()}
        if reference is not None:
            extra |= {"reference_latency_ms_b1": rep.ms("reference", 1), "reference_latency_ms_b64": rep.ms("reference", 64)}
    return Metrics(accuracy=acc, params=params, nonzero_params=nonzero,
                   size_bytes=size_bytes if size_bytes is not None else best, dense_size_bytes=dense,
                   latency_ms_b1=lat1, latency_ms_b64=lat64, macs=count_macs(model, input_shape),
                   device=device_name(dev), extra=extra)
