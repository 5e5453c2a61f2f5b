"""Which static int8 path gives real int8 kernels on this CPU with torch 2.14: FX graph mode
(`torch.ao.quantization.quantize_fx`, deprecated but working) or PT2E export quantization with
torchao's X86InductorQuantizer (run through `torch.compile`, the only way it gets int8 kernels).

For each shipped CNN: float, FX int8 and PT2E int8, timed alternately in one run at batch 1 and 64
(median of repeated passes after warm-up), with validation-subset accuracy and the time to
prepare/compile. The result decided `core/compress/quant/quantize.py`'s static path (see its docstring).

    .venv/bin/python bench/quant_paths.py [--models lenet5 resnet-small] [--out quant_paths]
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
warnings.filterwarnings("ignore")

from core.data.datasets import cached_dataset  # noqa: E402
from core.measure.latency import time_models  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402

RESULTS = REPO / "bench" / "results"


def fx_int8(model, calib):
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    torch.backends.quantized.engine = "x86"
    p = prepare_fx(copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calib[:1],))
    with torch.no_grad():
        p(calib)
    return convert_fx(p)


def pt2e_int8(model, calib):
    import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    q = xiq.X86InductorQuantizer()
    q.set_global(xiq.get_default_x86_inductor_quantization_config())
    exported = torch.export.export(copy.deepcopy(model).eval(), (calib[:2],),
                                   dynamic_shapes=({0: torch.export.Dim("b", min=1, max=1024)},)).module()
    p = prepare_pt2e(exported, q)
    with torch.no_grad():
        p(calib)
    c = convert_pt2e(p)
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    allow_exported_model_train_eval(c)   # time_models calls eval()
    return torch.compile(c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["lenet5", "resnet-small"])
    ap.add_argument("--out", default="quant_paths")
    args = ap.parse_args()
    ws = Workspace(tempfile.mkdtemp(), seed_baselines=True)
    rows = []
    for name in args.models:
        v = ws.get_variant(f"base-{name}")
        model = ws.load_model(v).eval()
        data = cached_dataset(v.dataset)
        val = data.val.subset(1000, seed=0)
        calib = next(iter(val.batches(256)))[0]   # normalised, as the model sees them
        out = {"float": model}
        prep = {}
        for label, fn in (("fx", fx_int8), ("pt2e", pt2e_int8)):
            t = time.perf_counter()
            try:
                out[label] = fn(model, calib)
                with torch.no_grad():   # the first calls compile (PT2E): count them in the preparation
                    for b in (1, 64):
                        out[label](calib[:b])
                prep[label] = time.perf_counter() - t
            except Exception as e:  # a path that fails is reported, not hidden
                print(f"{name}: {label} failed: {type(e).__name__}: {e}"[:400])
        input_shape = tuple(val.images.shape[1:])
        lat = time_models(out, input_shape, (1, 64), "cpu", warmup=3, budget_s=6.0)
        for label, m in out.items():
            with torch.no_grad():
                acc = _acc(m, val)
            rows.append({"model": name, "path": label, "val_accuracy": round(acc, 4),
                         "b1_ms": round(lat.ms(label, 1), 3), "b64_ms": round(lat.ms(label, 64), 3),
                         "b64_speedup": round(lat.ms("float", 64) / lat.ms(label, 64), 2),
                         "prepare_s": round(prep.get(label, 0.0), 1), "busy": lat.busy_note()})
            print(rows[-1])
    head = (f"# Static int8 paths on {platform.processor() or platform.machine()} "
            f"({torch.get_num_threads()} threads, torch {torch.__version__}), {time.strftime('%Y-%m-%d %H:%M')}\n\n"
            f"Command: `.venv/bin/python bench/quant_paths.py --models {' '.join(args.models)}`. "
            "Accuracy on a fixed 1,000-image validation subset; latency = median after warm-up, all paths "
            "timed alternately in one call.\n\n")
    cols = ["model", "path", "val_accuracy", "b1_ms", "b64_ms", "b64_speedup", "prepare_s", "busy"]
    table = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n" + "".join(
        "| " + " | ".join(str(r[c]) for c in cols) + " |\n" for r in rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(head + table)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(rows, indent=1))
    print(table)


def _acc(model, split) -> float:
    correct = 0
    for x, y in split.batches(500):
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(split)


if __name__ == "__main__":
    main()
