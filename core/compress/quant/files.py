"""A quantized variant's file: its integer tensors, scales and zero points (`core.formats.quant`)
plus the quantization step's config in the safetensors metadata, and nothing else. Reloading
rebuilds the float model from the arch, replays the step's structure (`quantization.structure`,
no calibration data) and loads the stored tensors into it."""
from __future__ import annotations

import json
from collections import OrderedDict

import torch
import torch.nn as nn

from core.base.limits import FormatError
from core.compress.quant.quantize import QuantConfig, plan, structure
from core.formats import encoding as formats
from core.formats.quant import QUANT_LAYOUT_KEY, decode_kbit, encode_kbit, flatten_state, read_layout, unflatten_state
from core.formats.shared import decode_shared, is_shared_file
from core.models.registry import build_from_arch

QUANT_CONFIG_KEY = "workbench_quant_config"


def encode_quantized(qmodel: nn.Module, config: QuantConfig, metadata: dict[str, str], *,
                     float_model: nn.Module | None = None) -> tuple[bytes, str]:
    """(bytes, format) of a quantized model's file. Weight-only codes are taken from the FLOAT
    weights of `float_model` (quantizing them once, as `quantize` did), not re-quantized."""
    if config.mode == "weight-only":
        if float_model is None:
            raise ValueError("weight-only files are encoded from the float model")
        tensors, layout = {}, {}
        targets = {f"{r.name}.weight" for r in plan(float_model, config) if r.action == "quantized"}
        for name, t in float_model.state_dict().items():
            if name in targets:
                encode_kbit(name, t, config.bits, config.symmetric, tensors, layout)
            else:
                tensors[name] = t
    else:
        tensors, layout = flatten_state(qmodel.state_dict())
    meta = {**metadata, QUANT_CONFIG_KEY: json.dumps(config.to_dict()), QUANT_LAYOUT_KEY: json.dumps(layout)}
    data, fmt = formats.encode_best(tensors, meta)
    return data, f"{config.mode}+{fmt}"


def is_quantized_file(meta: dict[str, str]) -> bool:
    return QUANT_CONFIG_KEY in meta


def _placeholder_weights_(model: nn.Module) -> nn.Module:
    """Finite, deterministic values in a freshly built model (shrunk layers are uninitialised), so
    that converting its structure computes no NaN; every value is replaced by the stored tensors."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in [*model.named_parameters(), *model.named_buffers()]:
            if t.is_floating_point():
                t.copy_(torch.ones_like(t) if name.endswith("running_var") else torch.randn(t.shape, generator=g) * 0.01)
    return model


def config_of(meta: dict[str, str]) -> QuantConfig:
    try:
        return QuantConfig.from_dict(json.loads(meta[QUANT_CONFIG_KEY]))
    except (ValueError, TypeError, RecursionError) as e:
        raise FormatError(f"the file's quantization config is not valid: {str(e)[:200]}") from None


def model_from_decoded(arch: dict, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> nn.Module:
    """The quantized module a file's decoded tensors describe (eval mode, CPU)."""
    config = config_of(meta)
    layout = read_layout(meta) or {}
    float_model = _placeholder_weights_(build_from_arch(arch)).eval()
    if config.mode == "weight-only":
        expected = {k: tuple(v.shape) for k, v in float_model.state_dict().items()}
        state = {**tensors, **decode_kbit(dict(tensors), layout, expected=expected)}
        state = {k: v for k, v in state.items() if not k.endswith((".__packed__", ".__qmask__", ".__qscale__",
                                                                   ".__qzp__"))}
        float_model.load_state_dict(state, strict=True)
        return float_model
    kw = arch.get("kwargs", {})
    size = kw.get("image_size", 28)
    example = torch.zeros(2, kw.get("in_channels", 1), size, size)
    q = structure(float_model, config, example)
    state = OrderedDict(unflatten_state(tensors, layout))
    # quantized modules read their state by the version their own state_dict records
    state._metadata = getattr(q.state_dict(), "_metadata", None)  # type: ignore[attr-defined]
    q.load_state_dict(state, strict=True)
    return q.eval()


def model_from_bytes(arch: dict, data: bytes) -> nn.Module:
    """Any variant file -> its module: float (dense or sparse) or quantized."""
    tensors, meta = formats.decode(data)
    if is_shared_file(meta):
        expected = {k: tuple(v.shape) for k, v in build_from_arch(arch).state_dict().items()}
        return build_from_arch(arch, decode_shared(tensors, meta, expected=expected)).eval()
    if is_quantized_file(meta):
        return model_from_decoded(arch, tensors, meta)
    return build_from_arch(arch, tensors).eval()


__all__ = ["QUANT_CONFIG_KEY", "QUANT_LAYOUT_KEY", "encode_quantized", "is_quantized_file", "model_from_bytes",
           "model_from_decoded"]
