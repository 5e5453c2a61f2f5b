"""Quantization: `quantize(model, QuantConfig, calib) -> (quantized copy, QuantReport)`.

Modes, and what each really buys (DESIGN.md: say which layers a quantization touched):

- `static-int8`: post-training static int8 of convolutions and linears (Conv+BN(+ReLU) folded first), per-channel
  weights, activations calibrated on N batches, x86 kernels. **Path: FX graph mode (`torch.ao.quantization`,
  deprecated; `fx_available()`, else `FxUnavailable`) in PyTorch eager; static QDQ in ONNX Runtime**
  (`core.measure.runtimes.quantize_onnx`, no torch.ao: the int8 path that outlives FX). `bench/quant_paths.py`
  (cpu: AMD EPYC, AVX512 kernels + AVX-512 VNNI, 1 thread; full test split), b1 / b64 speed-up over float in
  the same runtime, lenet5 and resnet-small: FX 1.23x / 4.47x and 1.49x / 2.80x, files 25-27% of float,
  -0.08 / -0.11 pt; ONNX Runtime QDQ 1.71x / 2.16x and 1.67x / 1.95x, 26-33%, +0.04 / +0.05 pt. PT2E
  (torch.export + X86InductorQuantizer) has no int8 kernels eagerly (0.3x-0.7x of float) and compiled
  (Inductor, freezing, 9-13 s per load) 0.92x / 1.65x and 1.14x / 2.39x over compiled float: FX stays.
- `dynamic-int8`: int8 weights of Linear/LSTM/GRU, activations quantized per batch on the fly.
  Convolutions stay float (there are no dynamic conv kernels): the coverage says so.
- `fp16` / `bf16`: the whole model computed in half precision (real kernels on a GPU; on the CPU
  usually slower, which the measured latency and the report say).
- `weight-only`: k-bit (2..8) per-channel weights, symmetric or affine, stored bit-packed with their
  scales; computed in float after dequantization (kind `simulated`): a smaller file, not a faster model.
- `qat`: fake-quant fine-tuning (a job, see `core.tasks.quantize`), then the static int8 model.

A quantized variant's file holds only tensors and JSON (`core.formats.quant`); it reloads by rebuilding the float
model from its arch, replaying this step's structure (`structure`, no calibration data) and loading its tensors.
"""
from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.base.config import DictConfig
from core.base.kinds import is_quantized_module
from core.base.ratios import SAME_SPEED_RATIO
from core.formats.quant import kbit_dequantize, kbit_quantize
from core.measure.lane import paired_note
from core.measure.latency import time_models
from core.measure.metrics import channels_last_

MODES = ("static-int8", "dynamic-int8", "fp16", "bf16", "weight-only", "qat")
MODE_TITLES = {"static-int8": "Static int8 (post-training, calibrated)", "dynamic-int8": "Dynamic int8 (Linear/LSTM/GRU)",
               "fp16": "fp16 (half precision)", "bf16": "bf16 (bfloat16)",
               "weight-only": "Weight-only k-bit (bits slider)", "qat": "Quantization-aware training (job)"}
INT8_MODES = ("static-int8", "dynamic-int8", "qat")
CPU_ONLY_MODES = INT8_MODES       # fbgemm/x86 kernels: measured on the CPU
CALIB_BATCH = 64
MAX_CALIB_BATCHES = 200
NO_SPEEDUP_RATIO = SAME_SPEED_RATIO   # under it a quantized model is the same speed as its float parent
NO_SPEEDUP_TEXT = "no real speed-up on this backend"
FX_MISSING = ("static int8 needs torch.ao.quantization FX, which this torch no longer ships: torch {} has no quantize_fx."
              "prepare_fx/convert_fx (static int8 and QAT variants need them; ONNX Runtime's static QDQ int8 does not).")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_RNN = (nn.LSTM, nn.GRU)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class QuantConfig(DictConfig):
    """One quantization step. `keep_float` names layers left in float (int8 and weight-only modes)."""

    mode: str = "static-int8"
    bits: int = 8                      # weight-only
    symmetric: bool = True             # weight-only: symmetric (zero at code 0) or affine
    calib_batches: int = 8             # static/qat: calibration batches of 64 training images
    keep_float: tuple[str, ...] = ()

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {self.mode!r}")
        if type(self.bits) is not int or not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be a whole number from 2 to 8, got {self.bits!r}")
        if type(self.calib_batches) is not int or not 1 <= self.calib_batches <= MAX_CALIB_BATCHES:
            raise ValueError(f"calib_batches must be a whole number from 1 to {MAX_CALIB_BATCHES}, "
                             f"got {self.calib_batches!r}")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric must be true or false, got {self.symmetric!r}")
        keep = self.keep_float
        if isinstance(keep, str) or not isinstance(keep, (list, tuple)) or not all(isinstance(k, str) for k in keep):
            raise ValueError("keep_float must be a list of layer names")
        object.__setattr__(self, "keep_float", tuple(sorted(set(keep))))
        if self.keep_float and self.mode in ("fp16", "bf16"):
            raise ValueError(f"{self.mode} converts the whole model; keep_float applies to the int8 and weight-only modes")

    def label(self) -> str:
        what = f"weight-only {self.bits}-bit {'sym' if self.symmetric else 'affine'}" if self.mode == "weight-only" else self.mode
        return what + (f", {len(self.keep_float)} layer(s) kept float" if self.keep_float else "")

    @property
    def kind(self) -> dict[str, bool]:
        """The kind flags this mode declares (float tensors cannot show them)."""
        return {"quantized": self.mode != "weight-only", "simulated": self.mode == "weight-only"}

    def step(self) -> dict:
        return {"step": "quantize", **self.to_dict()}


# ---------------------------------------------------------------- coverage

@dataclass
class LayerCoverage:
    name: str
    type: str
    params: int
    action: str          # "quantized" | "float" | "folded" | "unsupported"
    detail: str


def weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every leaf module that owns parameters (what a coverage table lists)."""
    return [(n, m) for n, m in model.named_modules()
            if n and not list(m.children()) and any(True for _ in m.parameters(recurse=False))]


def _bn_folds(model: nn.Module) -> dict[str, str]:
    """{batchnorm: conv} for every BatchNorm that directly follows a convolution in the traced graph."""
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception:   # an untraceable model: static FX quantization will say so when it runs
        return {}
    mods = dict(model.named_modules())
    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(mods.get(node.target), _BN):
            src = node.args[0] if node.args else None
            if getattr(src, "op", None) == "call_module" and isinstance(mods.get(src.target), _CONV):
                out[node.target] = src.target
    return out


def plan(model: nn.Module, config: QuantConfig) -> list[LayerCoverage]:
    """What `config` will do to every layer, before anything runs."""
    mode, keep = config.mode, set(config.keep_float)
    folds = _bn_folds(model) if mode in ("static-int8", "qat") else {}
    rows = []
    for name, m in weighted_layers(model):
        params = sum(p.numel() for p in m.parameters(recurse=False))
        t = type(m).__name__
        if mode in ("fp16", "bf16"):
            rows.append(LayerCoverage(name, t, params, "quantized", f"computed in {mode}"))
            continue
        if name in keep:
            rows.append(LayerCoverage(name, t, params, "float", "kept in float (your choice)"))
            continue
        if mode in ("static-int8", "qat"):
            if isinstance(m, (*_CONV, nn.Linear)):
                rows.append(LayerCoverage(name, t, params, "quantized",
                                          "int8 weights (per channel) and int8 activations, x86 kernels"))
            elif isinstance(m, _BN) and name in folds:
                rows.append(LayerCoverage(name, t, params, "folded", f"folded into {folds[name]} before quantizing"))
            elif isinstance(m, _RNN):
                rows.append(LayerCoverage(name, t, params, "unsupported",
                                          "static int8 has no LSTM/GRU kernels: kept in float (use dynamic int8)"))
            else:
                rows.append(LayerCoverage(name, t, params, "float", f"no static int8 kernel for {t}: kept in float"))
        elif mode == "dynamic-int8":
            if isinstance(m, (nn.Linear, *_RNN)):
                rows.append(LayerCoverage(name, t, params, "quantized",
                                          "int8 weights, activations quantized per batch on the fly"))
            elif isinstance(m, _CONV):
                rows.append(LayerCoverage(name, t, params, "unsupported",
                                          "dynamic int8 has no convolution kernels: kept in float (use static int8)"))
            else:
                rows.append(LayerCoverage(name, t, params, "float", f"{t} is not quantized by dynamic int8"))
        else:   # weight-only
            if isinstance(m, (*_CONV, nn.Linear)):
                rows.append(LayerCoverage(name, t, params, "quantized",
                                          f"{config.bits}-bit weights stored packed, computed in float"))
            else:
                rows.append(LayerCoverage(name, t, params, "float", f"{t} weights stay float"))
    return rows


def outcome(float_model: nn.Module, quantized: nn.Module, config: QuantConfig) -> list[LayerCoverage]:
    """What `config` did to every layer, read off the quantized model itself."""
    before = plan(float_model, config)
    if config.mode in ("fp16", "bf16", "weight-only"):
        return before            # these modes change tensors in place of the same modules
    mods = dict(quantized.named_modules())
    rows = []
    for r in before:
        m = mods.get(r.name)
        if m is None:
            action, detail = ("folded", r.detail) if r.action == "folded" else ("float", "not found after conversion")
        elif is_quantized_module(m):
            how = "dynamic" if ".dynamic." in type(m).__module__ else "static"
            action, detail = "quantized", f"int8 {how} {type(m).__name__} kernel (x86)"
        else:
            action, detail = ("float" if r.action == "quantized" else r.action,
                              r.detail if r.action != "quantized" else f"still float after conversion ({type(m).__name__})")
        rows.append(LayerCoverage(r.name, r.type, r.params, action, detail))
    return rows


def coverage_warning(rows: list[LayerCoverage], config: QuantConfig) -> str | None:
    """One sentence when the mode leaves weighted conv/linear/RNN layers in float without being asked."""
    main = [r for r in rows if r.type in {c.__name__ for c in (*_CONV, nn.Linear, *_RNN)}]
    quantized = [r for r in main if r.action == "quantized"]
    left = [r for r in main if r.action != "quantized" and r.name not in config.keep_float]
    if not left:
        return None
    total = sum(r.params for r in main) or 1
    share = sum(r.params for r in quantized) / total
    return (f"{config.mode} quantizes {len(quantized)} of {len(main)} conv/linear layers ({share:.0%} of their "
            f"weights); {len(left)} stay float: {', '.join(r.name for r in left[:6])}"
            f"{' ...' if len(left) > 6 else ''}. Why: {left[0].detail}.")


# ---------------------------------------------------------------- error per layer

def sqnr_db(signal: torch.Tensor, noisy: torch.Tensor) -> float:
    """10 log10(|signal|^2 / |signal - noisy|^2) in dB; inf when they are equal."""
    s = float(signal.double().pow(2).sum())
    n = float((signal.double() - noisy.double()).pow(2).sum())
    return math.inf if n == 0 else (10 * math.log10(s / n) if s > 0 else -math.inf)


def fake_weight(w: torch.Tensor, config: QuantConfig) -> torch.Tensor:
    """The weight as the mode stores it, dequantized to float (what the layer really computes with)."""
    if config.mode == "weight-only":
        codes, scale, zp, _ = kbit_quantize(w, config.bits, config.symmetric)
        return kbit_dequantize(codes, scale, zp)
    if config.mode in ("fp16", "bf16"):
        return w.to(torch.float16 if config.mode == "fp16" else torch.bfloat16).float()
    codes, scale, zp, _ = kbit_quantize(w, 8, True)       # int8 per-channel symmetric, as the x86 observers
    return kbit_dequantize(codes, scale, zp)


def _fake_input(x: torch.Tensor, config: QuantConfig) -> torch.Tensor:
    if config.mode in ("static-int8", "qat", "dynamic-int8"):
        levels = 127 if config.mode != "dynamic-int8" else 255    # x86 static: 7-bit activations (reduce_range)
        lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
        scale = (hi - lo) / levels or 1.0
        zp = round(-lo / scale)
        return (torch.clamp(torch.round(x / scale) + zp, 0, levels) - zp) * scale
    if config.mode in ("fp16", "bf16"):
        return x.to(torch.float16 if config.mode == "fp16" else torch.bfloat16).float()
    return x


@dataclass
class LayerError:
    name: str
    type: str
    weight_sqnr_db: float
    output_sqnr_db: float


@torch.inference_mode()
def layer_errors(model: nn.Module, config: QuantConfig, calib: list[torch.Tensor],
                 layers: list[str] | None = None) -> list[LayerError]:
    """For each quantized conv/linear layer: the SQNR of its stored weight, and of its output on
    the calibration batches when its weights (and, for int8 modes, its inputs) are quantized as
    the mode does, the rest of the model float: where the error comes from, layer by layer."""
    mods = dict(model.named_modules())
    names = layers if layers is not None else [r.name for r in plan(model, config)
                                               if r.action == "quantized" and isinstance(mods[r.name], (*_CONV, nn.Linear))]
    fake = {n: fake_weight(mods[n].weight.detach(), config) for n in names}
    acc = {n: [0.0, 0.0] for n in names}

    def hook(name):
        def run(m, inp, out):
            x = _fake_input(inp[0].float(), config)
            wq = fake[name].to(out.dtype)
            y = m._conv_forward(x, wq, m.bias) if isinstance(m, _CONV) else F.linear(x, wq, m.bias)
            acc[name][0] += float(out.double().pow(2).sum())
            acc[name][1] += float((out.double() - y.double()).pow(2).sum())
        return run

    hooks = [mods[n].register_forward_hook(hook(n)) for n in names]
    was = model.training
    model.eval()
    try:
        for x in calib:
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    out = []
    for n in names:
        s, e = acc[n]
        out.append(LayerError(n, type(mods[n]).__name__, sqnr_db(mods[n].weight.detach(), fake[n]),
                              math.inf if e == 0 else 10 * math.log10(s / e) if s > 0 else -math.inf))
    return out


def worst_layers(errors: list[LayerError], n: int) -> list[str]:
    """The `n` layers with the lowest output SQNR (the shortcut "keep the worst N in float")."""
    return [e.name for e in sorted(errors, key=lambda e: e.output_sqnr_db)[:max(0, n)]]


# ---------------------------------------------------------------- the modes

class LowPrecision(nn.Module):
    """A model computed in fp16/bf16: inputs cast in, logits cast back to float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype

    def forward(self, x):
        return self.model(x.to(self.dtype)).float()


class FxUnavailable(RuntimeError):
    """This torch no longer ships torch.ao.quantization's FX graph mode (FX_MISSING says so)."""


def fx_available() -> bool:
    """Whether torch.ao.quantization.quantize_fx still has prepare_fx, prepare_qat_fx and convert_fx."""
    try:
        from torch.ao.quantization import quantize_fx
    except ImportError:
        return False
    return all(callable(getattr(quantize_fx, f, None)) for f in ("prepare_fx", "prepare_qat_fx", "convert_fx"))


def _fx():   # where FX is called
    if not fx_available():
        raise FxUnavailable(FX_MISSING.format(torch.__version__))
    return torch.ao.quantization.quantize_fx


def _qconfig_mapping(config: QuantConfig, qat: bool):
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    torch.backends.quantized.engine = "x86"
    mapping = get_default_qat_qconfig_mapping("x86") if qat else get_default_qconfig_mapping("x86")
    for name in config.keep_float:
        mapping.set_module_name(name, None)
    return mapping


def prepare_static(model: nn.Module, config: QuantConfig, example: torch.Tensor, *, qat: bool = False) -> nn.Module:
    """FX-prepared copy of `model` with observers (or fake-quant for QAT) in place."""
    fx, m = _fx(), copy.deepcopy(model).cpu()
    with warnings.catch_warnings(action="ignore"):   # torch.ao's deprecation chatter
        if qat:
            return fx.prepare_qat_fx(m.train(), _qconfig_mapping(config, True), (example,))
        return fx.prepare_fx(m.eval(), _qconfig_mapping(config, False), (example,))


def convert_static(prepared: nn.Module) -> nn.Module:
    with warnings.catch_warnings(action="ignore"):
        return _fx().convert_fx(prepared.cpu().eval())


def _dynamic(model: nn.Module, config: QuantConfig) -> nn.Module:
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic
    torch.backends.quantized.engine = "x86"
    names = {n: default_dynamic_qconfig for n, m in model.named_modules()
             if isinstance(m, (nn.Linear, *_RNN)) and n not in config.keep_float}
    with warnings.catch_warnings(action="ignore"):
        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), qconfig_spec=names, dtype=torch.qint8)


def _weight_only(model: nn.Module, config: QuantConfig) -> nn.Module:
    m = copy.deepcopy(model).cpu().eval()
    mods = dict(m.named_modules())
    for r in plan(model, config):
        if r.action == "quantized":
            w = mods[r.name].weight
            with torch.no_grad():
                w.copy_(fake_weight(w.detach(), config).to(w.dtype))
    return m


def structure(model: nn.Module, config: QuantConfig, example: torch.Tensor) -> nn.Module:
    """The quantized module structure of `config` on `model`, without calibration (its scales are
    placeholders): what a stored file's tensors load into."""
    if config.mode in ("static-int8", "qat"):
        return convert_static(prepare_static(model, config, example, qat=config.mode == "qat"))
    if config.mode == "dynamic-int8":
        return _dynamic(model, config)
    if config.mode in ("fp16", "bf16"):
        return LowPrecision(copy.deepcopy(model).cpu().eval(), torch.float16 if config.mode == "fp16" else torch.bfloat16)
    return copy.deepcopy(model).cpu().eval()


@dataclass
class QuantReport:
    config: dict
    label: str
    coverage_before: list[LayerCoverage]
    coverage_after: list[LayerCoverage]
    errors: list[LayerError]
    warning: str | None
    logits_sqnr_db: float               # whole model, quantized vs float, on the calibration batches
    agreement: float                    # top-1 match rate with the float model on the calibration batches
    calib_images: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["logits_sqnr_db"] = _finite(d["logits_sqnr_db"])
        for e in d["errors"]:
            e["weight_sqnr_db"], e["output_sqnr_db"] = _finite(e["weight_sqnr_db"]), _finite(e["output_sqnr_db"])
        return d

    def summary(self) -> str:
        q = sum(1 for r in self.coverage_after if r.action == "quantized")
        return (f"{self.label}: {q} of {len(self.coverage_after)} layers quantized; logits SQNR "
                f"{self.logits_sqnr_db:.1f} dB, top-1 agreement with float {self.agreement:.1%} on "
                f"{self.calib_images} calibration images" + (f". {self.warning}" if self.warning else ""))


def _finite(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def calibration_batches(train_split, n_batches: int, seed: int = 0) -> list[torch.Tensor]:
    """`n_batches` fixed batches of CALIB_BATCH training images (normalised, as the model sees them)."""
    subset = train_split.subset(n_batches * CALIB_BATCH, seed=seed)
    return [x for x, _ in subset.batches(CALIB_BATCH)][:n_batches]


@torch.inference_mode()
def _compare(float_model: nn.Module, quantized: nn.Module, calib: list[torch.Tensor]) -> tuple[float, float]:
    ref, out = [], []
    for x in calib:
        ref.append(float_model(x).float())
        out.append(quantized(x).float())
    r, o = torch.cat(ref), torch.cat(out)
    return sqnr_db(r, o), float((r.argmax(1) == o.argmax(1)).float().mean())


def quantize(model: nn.Module, config: QuantConfig, calib: list[torch.Tensor], *,
             prepared_qat: nn.Module | None = None, time_half_precision: bool = True) -> tuple[nn.Module, QuantReport]:
    """A quantized copy of `model` (float, not changed) and its report. `calib`: calibration batches
    (static int8 runs them through the observers; every mode measures its error on them). For
    `qat`, pass the fake-quant model after training as `prepared_qat`; it is converted here.
    fp16/bf16 are timed against float32 on the CPU for the report unless `time_half_precision` is
    False (a caller that times them itself, as the page's preview does, says it once)."""
    t0 = time.perf_counter()
    model = copy.deepcopy(model).cpu().eval()
    names = {n for n, _ in model.named_modules()}
    unknown = [n for n in config.keep_float if n not in names]
    if unknown:
        raise ValueError(f"keep_float names layers the model does not have: {', '.join(unknown[:5])}")
    before = plan(model, config)
    if config.mode == "static-int8":
        prepared = prepare_static(model, config, calib[0])
        with torch.inference_mode():
            for x in calib:
                prepared(x)
        q = convert_static(prepared)
    elif config.mode == "qat":
        if prepared_qat is None:
            raise ValueError("qat converts a model after fake-quant training: run it as a job (quantize task)")
        q = convert_static(prepared_qat)
    elif config.mode == "dynamic-int8":
        q = _dynamic(model, config)
    elif config.mode in ("fp16", "bf16"):
        q = structure(model, config, calib[0])
    else:
        q = channels_last_(_weight_only(model, config))   # private float copies: the fast layout is fine
    q.eval()
    after = outcome(model, q, config)
    channels_last_(model)                                  # our private float copy, for the comparisons
    errors = layer_errors(model, config, calib[:2], [r.name for r in after if r.action == "quantized" and
                                                    r.type in {c.__name__ for c in (*_CONV, nn.Linear)}])
    logits_sqnr, agreement = _compare(model, q, calib[:4])
    notes = []
    if config.mode in ("fp16", "bf16") and time_half_precision:
        notes.append(_half_precision_on_cpu(model, q, config.mode, tuple(calib[0].shape[1:])))
    if config.mode == "weight-only":
        notes.append("Weight-only: the file stores packed k-bit codes, but the model computes in float after "
                     "dequantizing them (kind simulated): smaller, not faster.")
    report = QuantReport(config.to_dict(), config.label(), before, after, errors, coverage_warning(after, config),
                         logits_sqnr, agreement, sum(len(x) for x in calib), time.perf_counter() - t0, notes)
    return q, report


def runs_on_cpu_only(variant) -> bool:
    """A variant whose file holds int8 modules (fbgemm/x86 kernels): measured on the CPU only."""
    last = variant.recipe[-1] if variant.recipe else {}
    return last.get("step") == "quantize" and last.get("mode") in CPU_ONLY_MODES


def _half_precision_on_cpu(model: nn.Module, q: nn.Module, mode: str, input_shape: tuple[int, ...]) -> str:
    """fp16/bf16 on the CPU, timed now against float32 (batch 64, alternately, a short budget)."""
    rep = time_models({"float32": model, mode: q}, input_shape, (64,), "cpu", warmup=1, budget_s=3.0)
    return f"{mode} runs real half-precision kernels on a GPU. On this CPU, float32 -> {mode} " + \
        paired_note(rep, "float32", mode, 64)


def speed_verdict(metrics: dict) -> str | None:
    """NO_SPEEDUP_TEXT when the variant was timed less than 1.1x faster than its parent at batch 64
    in the same call (same device); None when it was faster or no fair comparison exists."""
    mine, ref = metrics.get("latency_ms_b64"), metrics.get("reference_latency_ms_b64")
    if not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in (mine, ref)):
        return None
    return NO_SPEEDUP_TEXT if ref / mine < NO_SPEEDUP_RATIO else None
