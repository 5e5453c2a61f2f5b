"""Latency where it is deployed: every kind of variant of the shipped models, in every runtime the
workbench measures (PyTorch eager, ONNX Runtime), through the one measurement lane, each timed
together with its float parent, alternately, in one call: what the Model page, Compare, the model
card and `eval` show for it, and the verdict that names the runtime.

Variants per shipped model: float (the baseline), 50% channel-pruned (shrunk), 90% L1-masked,
static int8 (CNNs; FX in PyTorch eager, ONNX Runtime's static QDQ of the same float weights in
ONNX Runtime) and dynamic int8 (LeNet-300-100). Each figure is a median with its 95% interval,
or "not measurable now" with the reason.

    .venv/bin/python bench/runtime_bench.py [--models lenet300 lenet5 resnet-small] [--budget 10] [--quick]

Results: bench/results/runtime_bench.md and .json (runtime_bench_quick.* with --quick). Run it on
an idle machine.
"""
from __future__ import annotations

import argparse
import json
import math
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

from core.base.ratios import RUNTIMES, latency_ratio, runtime_verdict  # noqa: E402
from core.compress.pruning.prune import PruneConfig, prune  # noqa: E402
from core.compress.quant.quantize import QuantConfig, calibration_batches, quantize  # noqa: E402
from core.data.datasets import cached_dataset  # noqa: E402
from core.measure.lane import device_label, other_cores_now  # noqa: E402
from core.measure.speed import latency_metrics  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402

RESULTS = REPO / "bench" / "results"


def variants(name: str, model: torch.nn.Module, data, input_shape) -> dict[str, tuple[torch.nn.Module, bool]]:
    """label -> (model, masked?) for one shipped model."""
    out = {"float": (model, False)}
    out["channel-pruned 50%"] = (prune(model, PruneConfig(method="channel", amount=0.5), input_shape=input_shape)[0],
                                 False)
    out["L1-masked 90%"] = (prune(model, PruneConfig(amount=0.9, scope="global"), input_shape=input_shape)[0], True)
    calib = calibration_batches(data.train, 4)
    if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        out["static int8"] = (quantize(model, QuantConfig(mode="static-int8"), calib)[0], False)
    else:
        out["dynamic int8"] = (quantize(model, QuantConfig(mode="dynamic-int8"), calib)[0], False)
    return out


def fig(m: dict, key: str) -> str:
    v, ci = m.get(key), m.get(f"{key}_ci")
    if not isinstance(v, float) or math.isnan(v):
        return "not measurable now"
    return f"{v:.3g} ({ci[0]:.3g}-{ci[1]:.3g})" if ci else f"{v:.3g}"


def ratio_text(m: dict, runtime: str, batch: int) -> str:
    r = latency_ratio(m, {}, batch=batch, paired="reference", runtime=runtime)
    if not r.shown:
        return "-" if "nothing" in r.basis else "not measurable now"
    return f"{r.value:.2f}x ({r.low:.2f}-{r.high:.2f})" if r.low else f"{r.value:.2f}x"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["lenet300", "lenet5", "resnet-small"])
    ap.add_argument("--budget", type=float, default=10.0, help="seconds per runtime and variant, at most")
    ap.add_argument("--quick", action="store_true", help="LeNet-5 only, 2 s budgets: a smoke run, not measurements")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    models = ["lenet5"] if args.quick else args.models
    budget = 2.0 if args.quick else args.budget
    ws = Workspace(tempfile.mkdtemp(prefix="runtime-bench-"))
    data = cached_dataset("fashion-mnist")
    calib_images = data.test.normalize(data.test.images[:128])
    t0, rows, idle_before = time.time(), [], other_cores_now(1.0)
    for name in models:
        v = ws.get_variant(f"base-{name}")
        model = ws.load_model(v)
        input_shape = tuple(data.test.images.shape[1:])
        for label, (m, masked) in variants(name, model, data, input_shape).items():
            ref = None if label == "float" else model
            met = latency_metrics(m.eval(), input_shape, torch.device("cpu"), reference=ref, calib_images=calib_images,
                                  budget_s=budget)
            row = {"model": name, "variant": label, "metrics": met,
                   "verdict": runtime_verdict(met, masked=masked) if ref is not None else "(the float parent)"}
            for rt in RUNTIMES.values():
                for b in (1, 64):
                    row[f"{rt.title} b{b} ms"] = (fig(met, f"{rt.prefix}latency_ms_b{b}")
                                                  if not met.get(f"{rt.prefix}unavailable") else "no figure")
                row[f"{rt.title} vs float b64"] = ratio_text(met, rt.key, 64) if ref is not None else "-"
            row["ONNX Runtime model"] = met.get("ort_model") or met.get("ort_unavailable") or ""
            rows.append(row)
            print(f"{name:12s} {label:20s} " + " | ".join(f"{k}: {row[k]}" for k in row
                                                          if k.endswith(("ms", "b64")) and k != "metrics"), flush=True)
    cols = ["model", "variant"] + [f"{rt.title} {s}" for rt in RUNTIMES.values()
                                   for s in ("b1 ms", "b64 ms", "vs float b64")] + ["verdict", "ONNX Runtime model"]
    device = device_label("cpu")
    header = (f"# Latency in each runtime\n\nDevice: {device} (torch {torch.__version__}). Every figure through the "
              f"measurement lane: median of undisturbed passes with its 95% interval in brackets, each variant timed "
              f"together with its float parent, alternately, in one call per runtime; at most {budget:g} s per runtime "
              f"and variant. Other processes used {idle_before:.2f} cores just before. "
              f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {time.time() - t0:.0f} s. Command: `.venv/bin/python "
              f"bench/runtime_bench.py{' --quick' if args.quick else ''}`.\n\n")
    text = header + md_table(rows, cols) + "\n"
    print("\n" + text)
    stem = "runtime_bench_quick" if args.quick else "runtime_bench"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{stem}.md").write_text(text)
    (args.results / f"{stem}.json").write_text(json.dumps(
        {"device": device, "command": f".venv/bin/python bench/runtime_bench.py{' --quick' if args.quick else ''}",
         "when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=1, default=str))


if __name__ == "__main__":
    main()
