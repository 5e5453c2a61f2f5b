"""Pruning acceptance numbers, measured in one run, printed as tables and saved to
bench/results/prune_bench.md and .json.

 (a) lenet5, global L1 at 90%: non-zero prunable weights against 10% of the prunable weights,
     size_bytes / dense_size_bytes of the stored variant file, and whether that file reloads to
     identical logits.
 (b) resnet-small, channel pruning at 50% (Torch-Pruning): params ratio and latency_ms_b64 before
     and after, timed alternately in this run; reload from arch edits gives identical logits.
 (c) the live preview on lenet5: wall time of `preview()` for several amounts and methods.

    .venv/bin/python bench/prune_bench.py [--workspace DIR] [--lenet5 base-lenet5] [--resnet base-resnet-small]

Variants are read from the workspace (default $WORKBENCH_HOME or ./workspace, where the shipped
baselines are seeded); children are stored in a temporary workspace, never in yours. When no
trained resnet-small exists, a freshly initialised one is used for (b) (params and latency do not
depend on the weights' values) and the table says so.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.data import cached_dataset  # noqa: E402
from core.metrics import accuracy, count_params, device_name, measure_latency  # noqa: E402
from core.models import create_model  # noqa: E402
from core.pruning import PruneConfig, preview, preview_subset, prune  # noqa: E402
from core.variants import base_arch, measure_and_store  # noqa: E402
from core.workspace import VariantNotFound, Workspace  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def md_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def load(ws: Workspace, ref: str):
    try:
        v = ws.get_variant(ref)
    except VariantNotFound:
        return None, None
    return v, ws.load_model(v)


def identical_logits(a, b, data) -> bool:
    x, _ = next(data.test.batches(256))
    with torch.no_grad():
        return bool(torch.equal(a.eval()(x), b.eval()(x)))


def bench_l1(ws, tmp_ws, ref, data) -> dict:
    v, model = load(ws, ref)
    if model is None:
        sys.exit(f"no variant {ref!r} in {ws.root}: train one with "
                 "`.venv/bin/python -m core --json train lenet5 --epochs 3` and pass --lenet5 ID")
    pruned, report = prune(model, PruneConfig(method="l1", amount=0.9, scope="global"))
    child = measure_and_store(tmp_ws, pruned, data=data, name="l1-90", arch=v.arch, recipe=[], kind=report.kind,
                              device="cpu")
    again = tmp_ws.load_model(child.id)
    m = child.metrics
    prunable = report.prunable_weights
    nz_prunable = sum(r.nonzero_after for r in report.layers if r.target is not None)
    return {"variant": f"{v.name} ({v.id})", "dense test acc": f"{v.metrics.get('accuracy', float('nan')):.4f}",
            "pruned test acc": f"{m['accuracy']:.4f}", "prunable weights": prunable,
            "non-zero prunable": nz_prunable, "10% of prunable": round(0.1 * prunable),
            "deviation": f"{(nz_prunable - 0.1 * prunable) / (0.1 * prunable):+.3%}",
            "nonzero_params (all)": m["nonzero_params"], "size_bytes": m["size_bytes"],
            "dense_size_bytes": m["dense_size_bytes"], "size ratio": f"{m['size_bytes'] / m['dense_size_bytes']:.3f}",
            "format": child.format, "reload identical logits": identical_logits(pruned, again, data)}


def bench_channel(ws, tmp_ws, ref, data, rounds: int) -> dict:
    v, model = load(ws, ref)
    arch = v.arch if v else base_arch("resnet-small", data)
    source = f"{v.name} ({v.id})" if v else "resnet-small, fresh init (no trained variant found)"
    if model is None:
        torch.manual_seed(0)
        model = create_model("resnet-small", num_classes=data.info.num_classes, in_channels=data.info.in_channels)
    model.eval()
    shape = data.info.input_shape
    pruned, report = prune(model, PruneConfig(method="channel", amount=0.5, norm=1), input_shape=shape)
    before, after = [], []
    for _ in range(rounds):      # alternate so machine noise hits both alike
        before.append(measure_latency(model, shape, 64, "cpu"))
        after.append(measure_latency(pruned, shape, 64, "cpu"))
    child = measure_and_store(tmp_ws, pruned, data=data, name="ch-50", arch=arch, recipe=[], kind=report.kind,
                              device="cpu")
    again = tmp_ws.load_model(child.id)
    p0, p1 = count_params(model)[0], count_params(pruned)[0]
    b, a = statistics.median(before), statistics.median(after)
    return {"model": source, "params before": p0, "params after": p1, "params ratio": f"{p1 / p0:.3f}",
            "latency_ms_b64 before": f"{b:.3f}", "latency_ms_b64 after": f"{a:.3f}", "speed-up": f"{b / a:.2f}x",
            "test acc before": f"{accuracy(model, data.test):.4f}", "test acc after (no fine-tune)":
            f"{child.metrics['accuracy']:.4f}", "reload identical logits": identical_logits(pruned, again, data),
            "rounds": rounds}


def bench_preview(ws, ref, data, repeats: int) -> list[dict]:
    _, model = load(ws, ref)
    val = preview_subset(data.val)
    rows = []
    cases = [("l1", "global", a) for a in (0.3, 0.5, 0.7, 0.9, 0.95)]
    cases += [("l1", "layer", 0.9), ("random", "global", 0.9), ("channel", "layer", 0.5), ("channel", "global", 0.5)]
    # as the page does: the unpruned model's batch-64 latency is timed once per variant (cached)
    ref = measure_latency(model, data.info.input_shape, 64, "cpu", warmup=2, repeats=7, min_seconds=0.0)
    for method, scope, amount in cases:
        cfg = PruneConfig(method=method, amount=amount, scope=scope)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            p = preview(model, cfg, val, reference_latency_ms_b64=ref)
            times.append(time.perf_counter() - t0)
        rows.append({"method": method, "scope": scope, "amount": amount, "median s": f"{statistics.median(times):.3f}",
                     "max s": f"{max(times):.3f}", "val subset acc": f"{p.accuracy:.4f}",
                     "size_bytes": p.size_bytes, "under 1 s": max(times) < 1.0})
        print(f"preview {method} {scope} {amount}: {statistics.median(times):.3f} s", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", help="workspace to read variants from (default $WORKBENCH_HOME or ./workspace)")
    ap.add_argument("--lenet5", default="base-lenet5", help="trained lenet5 variant (id or name)")
    ap.add_argument("--resnet", default="base-resnet-small", help="resnet-small variant (optional)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating latency rounds for (b)")
    ap.add_argument("--repeats", type=int, default=5, help="preview calls per case for (c)")
    a = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    ws = Workspace(a.workspace)
    data = cached_dataset("fashion-mnist")
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_ws = Workspace(tmp, seed_baselines=False)
        l1 = bench_l1(ws, tmp_ws, a.lenet5, data)
        print(json.dumps(l1), flush=True)
        ch = bench_channel(ws, tmp_ws, a.resnet, data, a.rounds)
        print(json.dumps(ch), flush=True)
    pv = bench_preview(ws, a.lenet5, data, a.repeats)
    dev = device_name("cpu")
    loadavg = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    cols_a = ["variant", "dense test acc", "pruned test acc", "prunable weights", "non-zero prunable",
              "10% of prunable", "deviation", "nonzero_params (all)", "size_bytes", "dense_size_bytes", "size ratio",
              "format", "reload identical logits"]
    cols_b = ["model", "params before", "params after", "params ratio", "latency_ms_b64 before",
              "latency_ms_b64 after", "speed-up", "test acc before", "test acc after (no fine-tune)",
              "reload identical logits", "rounds"]
    cols_c = ["method", "scope", "amount", "median s", "max s", "val subset acc", "size_bytes", "under 1 s"]
    text = (f"# Pruning benchmark ({when}, {dev}, torch {torch.__version__})\n\n"
            f"Command: `.venv/bin/python bench/prune_bench.py {' '.join(sys.argv[1:])}`\n\n"
            f"Machine load average (1/5/15 min) at the end: {loadavg} on {os.cpu_count()} cores: other processes "
            "running at the same time slow every timing below.\n\n"
            "## (a) lenet5, global L1 90% (target: non-zero within 1% of 10% of prunable; size <= 20% of dense)\n\n"
            + md_table([l1], cols_a) +
            "\n\n## (b) resnet-small, channel pruning 50% (target: params <= 60%, latency_ms_b64 lower)\n\n"
            f"Latency: median over {a.rounds} alternating rounds of `measure_latency` (each a median of >= 20 runs "
            "after warm-up), batch 64, CPU.\n\n" + md_table([ch], cols_b) +
            "\n\n## (c) live preview on lenet5 (target < 1 s), fixed 1,000-image validation subset\n\n"
            "Wall time of `core.pruning.preview` as the Prune page calls it: prune a copy, accuracy on the "
            "subset, encode the file and, for channel pruning, time batch 64 after pruning (the unpruned "
            f"latency is timed once per variant and cached, as the page does). {a.repeats} calls per case.\n\n"
            + md_table(pv, cols_c) + "\n")
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prune_bench.md").write_text(text)
    (RESULTS / "prune_bench.json").write_text(json.dumps({"when": when, "device": dev, "load": loadavg, "l1_90": l1,
                                                          "channel_50": ch, "preview": pv}, indent=2))


if __name__ == "__main__":
    main()
