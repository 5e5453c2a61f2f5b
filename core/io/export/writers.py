"""Producing the export files of a variant (one writer per format): the plain dense safetensors
with its model card, the compact file with its loader, ONNX, the recipe. Part of `core.io.export.pipeline`,
which checks every file these write in a fresh process before offering it."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from core.compress.quant.quantize import LowPrecision
from core.data.datasets import get_info
from core.formats import encoding as formats
from core.io.export.formats import (
    CARD_FILE,
    INT8,
    LOADER_FILE,
    ExportUnavailable,
    parent_words,
    quant_mode,
    unavailable_reason,
)
from core.io.model_card import model_card
from core.measure.runtimes import OnnxUnavailable, export_onnx

# ---------------------------------------------------------------- producing files

def _card_bytes(ws, v) -> bytes:
    return json.dumps(model_card(ws, v), indent=1, allow_nan=False).encode()


def dense_state(ws, v) -> tuple[dict, str]:
    """(plain state_dict, compute dtype) of a float, weight-shared, fp16/bf16 or weight-only variant."""
    import torch

    mode = quant_mode(ws, v)
    if mode is None and v.is_shared:   # codebooks + codes: the decoded weights
        return ws.load_model(v).state_dict(), "float32"
    if mode is None:
        return formats.load_file(ws.weights_path(v))[0], "float32"
    if mode in INT8:
        raise ExportUnavailable(unavailable_reason(ws, v, "safetensors"))
    model = ws.load_model(v)
    if isinstance(model, LowPrecision):   # fp16/bf16: the half tensors as they are, computed in that dtype
        return ({k: t for k, t in model.model.state_dict().items()},
                {torch.float16: "float16", torch.bfloat16: "bfloat16"}[model.dtype])
    return model.state_dict(), "float32"   # weight-only: the dequantized weights the model computes with


def write_safetensors(ws, v, out: Path) -> list[Path]:
    """The plain dense safetensors file at `out` and the model card beside it; returns both paths."""
    from safetensors.torch import save_file

    state, dtype = dense_state(ws, v)
    card = _card_bytes(ws, v)
    meta = {"format": "pt", "workbench_export": "safetensors", "variant_id": v.id, "name": v.name,
            "dataset": v.dataset, "arch": json.dumps(v.arch), "compute_dtype": dtype, "model_card": card.decode()}
    save_file({k: t.detach().cpu().contiguous().clone() for k, t in state.items()}, str(out), metadata=meta)
    card_path = out.with_name(CARD_FILE)
    card_path.write_bytes(card)
    return [out, card_path]


LOADER_SOURCE = '''"""Load a Compression Workbench compact file (sparse, int8 or k-bit weights) into a PyTorch module.

Needs: torch, safetensors, numpy, and the Compression Workbench repository's `core` package on the
Python path (run from the repository root, or set PYTHONPATH=/path/to/the/repository). The file is
data only (safetensors: tensors and JSON metadata, no code); the architecture is in its metadata.

    import load_compact
    model = load_compact.load("{filename}")          # eval mode, CPU
    logits = model(x)                                   # x: (N, C, H, W) float32, normalised as in model_card.json

Run it as a script to print the model and check one forward pass: python load_compact.py FILE
"""
import json
import sys
from pathlib import Path


def load(path):
    try:
        from core.formats.encoding import read_metadata
        from core.compress.quant.files import model_from_bytes
    except ImportError as e:
        raise SystemExit("load_compact.py needs the Compression Workbench `core` package: run it from the "
                         "repository root or set PYTHONPATH to it (" + str(e) + ")")
    data = Path(path).read_bytes()
    arch = json.loads(read_metadata(data)["arch"])
    return model_from_bytes(arch, data).eval()


if __name__ == "__main__":
    import torch

    from core.formats.encoding import read_metadata

    file = sys.argv[1] if len(sys.argv) > 1 else "{filename}"
    model = load(file)
    kw = json.loads(read_metadata(Path(file).read_bytes())["arch"]).get("kwargs", {})
    x = torch.zeros(1, kw.get("in_channels", 1), kw.get("image_size", 28), kw.get("image_size", 28))
    print(model)
    with torch.no_grad():
        print("logits of a blank image:", [round(float(t), 3) for t in model(x)[0]])
'''


def write_compact(ws, v, out: Path) -> list[Path]:
    reason = unavailable_reason(ws, v, "compact")
    if reason:
        raise ExportUnavailable(reason)
    shutil.copyfile(ws.weights_path(v), out)
    loader = out.with_name(LOADER_FILE)
    loader.write_text(LOADER_SOURCE.replace("{filename}", out.name))
    return [out, loader]


def _onnx_model(ws, v):
    """The module torch.onnx.export traces (eval, CPU) and an example input of batch 2."""
    import torch

    info = get_info(v.dataset, ws.root)
    return ws.load_model(v).eval(), torch.zeros(2, *info.input_shape)


def write_onnx(ws, v, out: Path) -> list[Path]:
    """ONNX file at `out` (model card in its metadata). ExportUnavailable says why when the
    exporter has no mapping for the variant's modules."""


    model, example = _onnx_model(ws, v)
    mode = quant_mode(ws, v)
    try:
        export_onnx(model, example, out)
    except OnnxUnavailable as e:
        advice = (f" Export {parent_words(ws, v)} to ONNX instead"
                  + (", then quantize it with onnxruntime.quantization.quantize_dynamic." if mode == "dynamic-int8"
                     else "."))
        what = f"a {mode} model" if mode else "this model"
        raise ExportUnavailable(str(e).replace("this model", what, 1) + "." + advice) from None
    import onnx

    m = onnx.load(str(out))
    card = _card_bytes(ws, v).decode()
    for k, val in (("model_card", card), ("variant_id", v.id), ("name", v.name)):
        p = m.metadata_props.add()
        p.key, p.value = k, val
    m.producer_name = "compression-workbench"
    onnx.checker.check_model(m)
    onnx.save(m, str(out))
    return [out]


def recipe_document(ws, v) -> dict:
    """The recipe JSON: the steps (what `core.tasks.recipe_replay.parse_recipe` reads) and what they should give."""
    chain = ws.lineage(v.id)
    return {"workbench_recipe": 1, "variant_id": v.id, "name": v.name, "dataset": v.dataset,
            "root": {"id": chain[0].id, "name": chain[0].name, "origin": chain[0].origin},
            "arch": v.arch, "kind": v.kind,
            "expected_metrics": {k: v.metrics.get(k) for k in ("accuracy", "params", "nonzero_params", "size_bytes",
                                                                "device")},
            "recipe": v.recipe}


def write_recipe(ws, v, out: Path) -> list[Path]:
    out.write_text(json.dumps(recipe_document(ws, v), indent=1, allow_nan=False, default=str))
    return [out]


WRITERS = {"safetensors": write_safetensors, "compact": write_compact, "onnx": write_onnx, "recipe": write_recipe}
