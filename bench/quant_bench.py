"""Quantization on this machine: what static int8 really buys on the shipped models, and how live
the bits slider is.

1. Static int8 (the `quantize` task, FX x86) of `lenet5`, `resnet-small` and a 90%-pruned
   `lenet5`: each stored variant reloaded from the workspace, float parent and int8 child timed
   alternately in one call (batch 1 and 64, median and IQR of the passes after warm-up),
   `size_bytes` = the stored files, accuracy = the full test split. Targets (issue 10): size at
   most 27% of the float file, accuracy within 0.5 point, batch-64 latency below the float
   model's for both and at least 1.5x faster for the small ResNet; the pruned+int8 file smaller
   than the pruned-only and the int8-only files.
2. Every other mode once per model (dynamic int8, fp16, bf16, weight-only 4-bit), timed the same way.
3. The bits slider: `preview_child` for weight-only 2..8 bits on every shipped model (what one
   slider move costs the server).

    .venv/bin/python bench/quant_bench.py [--device cpu|cuda] [--out quant_bench]

Results: bench/results/<out>.md and .json. Run it on an idle machine: figures taken while other
work ran are flagged in the `busy` column.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.bench_common import md_table  # noqa: E402

warnings.filterwarnings("ignore")


from core.compress.pruning.preview import preview_subset  # noqa: E402
from core.compress.quant.quantize import QuantConfig, calibration_batches, speed_verdict  # noqa: E402
from core.data.datasets import cached_dataset  # noqa: E402
from core.measure.latency import time_models  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402
from core.tasks import QuantizeJobConfig, TaskContext, run_task  # noqa: E402
from core.tasks.quantize import preview_child  # noqa: E402

RESULTS = REPO / "bench" / "results"
TIMING = {"warmup": 5, "min_runs": 40, "min_seconds": 1.0}    # --quick: a smoke run, few passes (not a measurement)


def quantize(ws, parent_id: str, device: str, **quant):
    out = run_task("quantize", QuantizeJobConfig(variant=parent_id, quant=QuantConfig(**quant), device=device),
                   TaskContext(ws))
    return ws.get_variant(out.variant_id)


def paired(ws, parent, child, input_shape, device: str) -> dict:
    """Float parent and child, both reloaded from their files, timed alternately in one call."""
    dev = "cpu" if child.metrics.get("device", "").startswith("cpu") else device
    models = {"float": ws.load_model(parent).to(dev), "child": ws.load_model(child).to(dev)}
    rep = time_models(models, input_shape, (1, 64), dev, **TIMING)
    t = rep.timings
    return {"float_b1_ms": t["float"][1].median_ms, "child_b1_ms": t["child"][1].median_ms,
            "float_b64_ms": t["float"][64].median_ms, "child_b64_ms": t["child"][64].median_ms,
            "float_b64_iqr": t["float"][64].iqr_ms, "child_b64_iqr": t["child"][64].iqr_ms,
            "speedup_b1": t["float"][1].median_ms / t["child"][1].median_ms,
            "speedup_b64": t["float"][64].median_ms / t["child"][64].median_ms,
            "device": dev, "busy": rep.busy_note() or "-"}


def row(ws, label: str, parent, child, input_shape, device: str) -> dict:
    r = {"model": label, "mode": child.recipe[-1].get("mode"), "kind": child.kind_label,
         "float_bytes": parent.metrics["size_bytes"], "child_bytes": child.metrics["size_bytes"],
         "size_ratio": child.metrics["size_bytes"] / parent.metrics["size_bytes"],
         "float_acc": parent.metrics["accuracy"], "child_acc": child.metrics["accuracy"],
         "acc_change_pt": 100 * (child.metrics["accuracy"] - parent.metrics["accuracy"]),
         **paired(ws, parent, child, input_shape, device)}
    r["verdict"] = speed_verdict({"latency_ms_b64": r["child_b64_ms"], "reference_latency_ms_b64": r["float_b64_ms"]}) or ""
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    return r


def fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[dict], cols: list[str]) -> str:
    return md_table(rows, cols, fmt) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default="quant_bench")
    ap.add_argument("--skip-modes", action="store_true", help="only static int8 and the slider")
    ap.add_argument("--quick", action="store_true", help="a smoke run: LeNet-5 only, few timed passes, three bit "
                    "widths on LeNet-300-100 for the slider (implies --skip-modes; its figures are not measurements)")
    args = ap.parse_args()
    if args.quick:
        args.skip_modes = True
        TIMING.update(warmup=1, min_runs=3, min_seconds=0.0)
    int8_models = ("lenet5",) if args.quick else ("lenet5", "resnet-small")
    slider_models, slider_bits, slider_calls = ((("lenet300",), (2, 4, 8), 1) if args.quick
                                               else (("lenet5", "lenet300", "resnet-small"), range(2, 9), 3))
    ws = Workspace(tempfile.mkdtemp(), seed_baselines=True)
    data = cached_dataset("fashion-mnist")
    shape = tuple(data.info.input_shape)
    rows, checks = [], []

    # 1. static int8, and the pruned + int8 combination
    for name in int8_models:
        parent = ws.get_variant(f"base-{name}")
        child = quantize(ws, parent.id, args.device, mode="static-int8")
        r = row(ws, name, parent, child, shape, args.device)
        rows.append(r)
        checks.append((f"{name}: int8 file <= 27% of float", r["size_ratio"] <= 0.27, f"{r['size_ratio']:.1%}"))
        checks.append((f"{name}: accuracy within 0.5 point", abs(r["acc_change_pt"]) <= 0.5, f"{r['acc_change_pt']:+.2f} pt"))
        need = 1.5 if name == "resnet-small" else 1.0
        checks.append((f"{name}: batch-64 latency {'>= 1.5x faster' if need > 1 else 'below float'}",
                       r["speedup_b64"] >= need if need > 1 else r["speedup_b64"] > 1.0, f"{r['speedup_b64']:.2f}x"))
    base = ws.get_variant("base-lenet5")
    pruned_id = run_task("prune", {"variant": base.id, "prune": {"amount": 0.9, "scope": "global"}, "device": "cpu"},
                         TaskContext(ws)).variant_id
    pruned = ws.get_variant(pruned_id)
    both = quantize(ws, pruned_id, args.device, mode="static-int8")
    r = row(ws, "lenet5 pruned 90%", pruned, both, shape, args.device)
    rows.append(r)
    int8_only = next(x for x in rows if x["model"] == "lenet5")["child_bytes"]
    checks.append(("pruned+int8 file smaller than pruned-only and int8-only",
                   both.metrics["size_bytes"] < min(pruned.metrics["size_bytes"], int8_only),
                   f"{both.metrics['size_bytes']:,} vs pruned {pruned.metrics['size_bytes']:,}, int8 {int8_only:,} "
                   f"(float {base.metrics['size_bytes']:,})"))

    # 2. the other modes
    if not args.skip_modes:
        for name in ("lenet5", "resnet-small", "lenet300"):
            parent = ws.get_variant(f"base-{name}")
            for quant in ({"mode": "dynamic-int8"}, {"mode": "fp16"}, {"mode": "bf16"}, {"mode": "weight-only", "bits": 4}):
                rows.append(row(ws, name, parent, quantize(ws, parent.id, args.device, **quant), shape, args.device))

    # 3. the bits slider
    slider = []
    for name in slider_models:
        v = ws.get_variant(f"base-{name}")
        model = ws.load_model(v)
        val, calib = preview_subset(data.val), calibration_batches(data.train, 8)
        preview_child(ws, v, model, QuantConfig(mode="weight-only", bits=8), val, calib)   # warm-up
        for bits in slider_bits:
            secs = []
            for _ in range(slider_calls):
                p = preview_child(ws, v, model, QuantConfig(mode="weight-only", bits=bits), val, calib)
                secs.append(p.seconds)
            slider.append({"model": name, "bits": bits, "median_s": statistics.median(secs), "max_s": max(secs),
                           "val_acc": p.accuracy, "file_bytes": p.size_bytes,
                           "min_layer_sqnr_db": min(e.output_sqnr_db for e in p.report.errors)})
            print(slider[-1], flush=True)

    dev_name = torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor() or platform.machine())
    head = (f"# Quantization benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {dev_name}, {torch.get_num_threads()} "
            f"threads, torch {torch.__version__})\n\nCommand: `.venv/bin/python bench/quant_bench.py --device "
            f"{args.device}{' --quick' if args.quick else ''}`. Sizes are the stored files; accuracy on the full "
            "10,000-image test split; latency = "
            "median ms of passes after warm-up, float parent and child reloaded from their files and timed "
            "alternately in one call (IQR = spread).\n\n")
    cols = ["model", "mode", "kind", "float_bytes", "child_bytes", "size_ratio", "float_acc", "child_acc",
            "acc_change_pt", "float_b1_ms", "child_b1_ms", "float_b64_ms", "child_b64_ms", "float_b64_iqr",
            "child_b64_iqr", "speedup_b1", "speedup_b64", "device", "verdict", "busy"]
    text = head + "## Variants\n\n" + table(rows, cols)
    text += "\n## Targets\n\n| check | met | measured |\n|---|---|---|\n" + "".join(
        f"| {c} | {'yes' if ok else 'NO'} | {m} |\n" for c, ok, m in checks)
    text += ("\n## Bits slider (weight-only preview per move, server side: quantize a copy, 1,000-image validation "
             "accuracy, encode the file, per-layer SQNR)\n\n" +
             table(slider, ["model", "bits", "median_s", "max_s", "val_acc", "file_bytes", "min_layer_sqnr_db"]))
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if args.device == "cpu" else f"_{args.device}"
    (RESULTS / f"{args.out}{suffix}.md").write_text(text)
    (RESULTS / f"{args.out}{suffix}.json").write_text(json.dumps({"rows": rows, "checks": checks, "slider": slider},
                                                                 indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
