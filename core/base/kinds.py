"""The kind flags of a model, derived in this one place from the model itself, so that no caller
has to remember them (DESIGN.md: flags that tell the truth):

- `masked`: pruned zeros kept inside dense tensors (more than MASKED_MIN_ZEROS of the conv and
  linear weights are exactly zero; trained dense weights essentially never are);
- `shrunk`: layers physically smaller than the registered architecture builds them;
- `quantized`: real low-precision kernels; `simulated`: fake-quant or dequantized low-bit weights
  (both declared by the step that made them, since float tensors cannot show them).
"""
from __future__ import annotations

import torch
import torch.nn as nn

KIND_FLAGS = ("masked", "shrunk", "quantized", "simulated")
MASKED_MIN_ZEROS = 0.001
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def empty_kind() -> dict[str, bool]:
    return {k: False for k in KIND_FLAGS}


def is_quantized_module(m: nn.Module) -> bool:
    """A torch.ao quantized module (static or dynamic): its weight is a method returning a qtensor."""
    return type(m).__module__.startswith("torch.ao.nn.") and callable(getattr(m, "weight", None))


def layer_weights(model: nn.Module):
    """(name, module, weight as float, bias or None) of every module with a weight, quantized
    modules included (their int8 weights dequantized), so counts see through quantization."""
    for name, m in model.named_modules():
        if not name:
            continue
        if is_quantized_module(m):
            try:
                w = m.weight()
            except (RuntimeError, TypeError, AttributeError):   # e.g. dynamic LSTM: no single weight
                continue
            b = m.bias() if callable(getattr(m, "bias", None)) else None
            yield name, m, w.dequantize() if w.is_quantized else w, b
        else:
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor):
                yield name, m, w.detach(), getattr(m, "bias", None)


def zero_fraction(model: nn.Module) -> float:
    """Fraction of exact zeros among the weights of the model's conv and linear layers."""
    total = zeros = 0
    for _, m, w, _ in layer_weights(model):
        if isinstance(m, _WEIGHTED) or (is_quantized_module(m) and w.ndim >= 2):
            total += w.numel()
            zeros += w.numel() - int(torch.count_nonzero(w))
    return zeros / total if total else 0.0


def derive_kind(model: nn.Module, *, shrunk: bool, quantized: bool = False, simulated: bool = False) -> dict[str, bool]:
    """The kind flags of `model`. `shrunk` comes from the caller's structural evidence (an arch with
    edits, or channels removed by this step); `masked` is read off the weights."""
    return {"masked": zero_fraction(model) > MASKED_MIN_ZEROS, "shrunk": bool(shrunk),
            "quantized": bool(quantized), "simulated": bool(simulated)}


def is_float(kind: dict) -> bool:
    """Weights that a gradient step can move and a quantizer can read: neither `quantized` (integer
    kernels) nor `simulated` (low-bit codes). The one answer; a Variant asks it as `v.is_float`."""
    return not (kind.get("quantized") or kind.get("simulated"))


def kind_label(kind: dict) -> str:
    flags = [k for k in KIND_FLAGS if kind.get(k)]
    return "+".join(flags) if flags else "dense"
