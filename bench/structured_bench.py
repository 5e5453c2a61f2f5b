"""Structured (channel) pruning with recovery on the small ResNet, against the DepGraph anchor.

For each amount: the `prune` task (method channel, Torch-Pruning DepGraph, L1 group importance)
on `base-resnet-small`, then the `finetune` task on the shrunk child (the recovery), then the
`quantize` task (static int8, FX x86) on the recovered child. For every variant: MACs ratio and
params ratio against the parent, latency ratio at batch 1 and 64 (parent and child reloaded from
their files and timed alternately in one call), test accuracy on the full 10,000-image test split.

Anchor: DepGraph (Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023, Table 1):
ResNet-56 on CIFAR-10, 2.57x fewer MACs at +0.11 point accuracy (93.53 -> 93.64).
Ours is a different model and data set (small ResNet on Fashion-MNIST); the comparison is the
shape of the trade-off, not the same task.

    .venv/bin/python bench/structured_bench.py [--quick] [--device cpu|cuda] [--amounts 0.3,0.4,0.5]
        [--epochs 2] [--subset N] [--out structured_bench]

--quick: one amount (0.5), 1 epoch on 2,000 training samples, shorter timing: a smoke run of a
couple of minutes (its results go to bench/results/<out>_quick.* unless --out is given).
"""
from __future__ import annotations

import argparse
import json
import os
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


from core.compress.pruning.prune import PruneConfig  # noqa: E402
from core.compress.quant.quantize import QuantConfig  # noqa: E402
from core.data.datasets import cached_dataset  # noqa: E402
from core.measure.lane import CpuWatch, device_label  # noqa: E402
from core.measure.latency import time_models  # noqa: E402
from core.measure.metrics import count_macs, count_params  # noqa: E402
from core.measure.pareto import compare_rows  # noqa: E402
from core.measure.training import TrainConfig  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402
from core.tasks import PruneJobConfig, QuantizeJobConfig, TaskContext, run_task  # noqa: E402
from core.tasks.finetune import FinetuneJobConfig  # noqa: E402

RESULTS = REPO / "bench" / "results"
ANCHOR = {"name": "DepGraph, ResNet-56 on CIFAR-10", "macs_ratio": 2.57, "acc_change_pt": 0.11,
          "source": "Fang et al., DepGraph: Towards Any Structural Pruning, CVPR 2023, Table 1"}


def fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[dict], cols: list[str]) -> str:
    return md_table(rows, cols, fmt) + "\n"


def measure(ws, parent, child, label: str, shape, device: str, timing: dict) -> dict:
    """Ratios of `child` against `parent`; both reloaded from their files and timed alternately."""
    dev = "cpu" if child.metrics.get("device", "").startswith("cpu") else device
    pm, cm = ws.load_model(parent).to(dev).eval(), ws.load_model(child).to(dev).eval()
    macs_p = parent.metrics.get("macs") or count_macs(pm.cpu(), shape)
    macs_c = child.metrics.get("macs") or count_macs(cm.cpu(), shape)
    pm, cm = pm.to(dev), cm.to(dev)
    params_p, params_c = count_params(pm)[0], count_params(cm)[0]
    rep = time_models({"parent": pm, "child": cm}, shape, (1, 64), dev, **timing)
    t = rep.timings
    r = {"variant": label, "id": child.id, "kind": child.kind_label,
         "macs": int(macs_c), "macs_ratio": macs_p / macs_c, "params": params_c, "params_ratio": params_p / params_c,
         "size_bytes": child.metrics["size_bytes"], "size_ratio": parent.metrics["size_bytes"] / child.metrics["size_bytes"],
         "parent_b1_ms": t["parent"][1].median_ms, "child_b1_ms": t["child"][1].median_ms,
         "parent_b64_ms": t["parent"][64].median_ms, "child_b64_ms": t["child"][64].median_ms,
         "speedup_b1": rep.ratio("parent", "child", 1), "speedup_b64": rep.ratio("parent", "child", 64),
         "parent_acc": parent.metrics["accuracy"], "acc": child.metrics["accuracy"],
         "acc_change_pt": 100 * (child.metrics["accuracy"] - parent.metrics["accuracy"]),
         "device": dev, "other_cores": round(rep.other_cores, 2) if rep.other_cores is not None else None}
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}, flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one amount, 1 epoch on a 2,000-sample subset")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--amounts", default=None, help="channel amounts (default 0.3,0.4,0.5; quick: 0.5)")
    ap.add_argument("--epochs", type=int, default=None, help="recovery epochs (default 2; quick: 1)")
    ap.add_argument("--subset", type=int, default=None, help="recovery training samples (default all; quick: 2000)")
    ap.add_argument("--no-int8", action="store_true", help="skip the channel-pruned + int8 combination")
    ap.add_argument("--out", default=None, help="results name (default structured_bench, quick: structured_bench_quick)")
    ap.add_argument("--results", default=str(RESULTS), help="folder for the .md and .json")
    a = ap.parse_args()
    amounts = [float(x) for x in (a.amounts or ("0.5" if a.quick else "0.3,0.4,0.5")).split(",") if x]
    epochs = a.epochs or (1 if a.quick else 2)
    subset = a.subset or (2000 if a.quick else None)
    out = a.out or ("structured_bench_quick" if a.quick else "structured_bench")
    out += "" if a.device == "cpu" else f"_{a.device}"
    timing = ({"warmup": 2, "min_runs": 8, "min_seconds": 0.2} if a.quick
              else {"warmup": 5, "min_runs": 40, "min_seconds": 1.0})
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    rows = []

    def report(variants: list, watch_cores, partial: bool) -> str:
        """Write the .md and .json (after each amount too, so a long run that is stopped keeps its rows)."""
        load_after = os.getloadavg()
        total = time.perf_counter() - t_start
        dev = device_label(a.device)
        other = f"{watch_cores:.2f}" if watch_cores is not None else "unknown"
        cmd = ".venv/bin/python bench/structured_bench.py " + " ".join(sys.argv[1:])
        best = max((r for r in rows if r["stage"] == "recovered" and r["acc_change_pt"] >= -0.5),
                   key=lambda r: r["macs_ratio"], default=None)
        cols = ["variant", "macs_ratio", "params_ratio", "size_ratio", "parent_b1_ms", "child_b1_ms", "speedup_b1",
                "parent_b64_ms", "child_b64_ms", "speedup_b64", "parent_acc", "acc", "acc_change_pt", "other_cores"]
        text = (f"# Structured pruning benchmark ({when}, {dev}, torch {torch.__version__})\n\n"
                f"Command: `{cmd.strip()}`{' (quick: a smoke run, not a result)' if a.quick else ''}"
                f"{' (PARTIAL: the run was still going; rows so far)' if partial else ''}. "
                f"Recovery: `finetune` {epochs} epoch(s), SGD lr 0.01 cosine, on "
                f"{'all' if subset is None else f'{subset:,}'} training samples. Ratios are parent / child "
                "(higher = smaller or faster); latency = median ms, parent and child reloaded from their files and timed "
                "alternately in one call; accuracy on the full 10,000-image Fashion-MNIST test split. `other_cores` = "
                f"CPU other processes used during that timing.\n\nLoad average before {load_before[0]:.2f}, after "
                f"{load_after[0]:.2f}; other processes used {other} cores on average over the run ({total:.0f} s).\n\n"
                f"Anchor: {ANCHOR['name']}: {ANCHOR['macs_ratio']}x MACs at {ANCHOR['acc_change_pt']:+.2f} point "
                f"({ANCHOR['source']}).\n\n" + table(rows, cols))
        if best is None:
            text += ("\nNo recovered point is within 0.5 point of the parent: more recovery epochs (or a smaller amount) "
                     "would be needed to match the anchor's accuracy.\n")
        else:
            text += (f"\nBest recovered point within 0.5 point: {best['variant']}: {best['macs_ratio']:.2f}x MACs at "
                     f"{best['acc_change_pt']:+.2f} point (anchor {ANCHOR['macs_ratio']}x at "
                     f"{ANCHOR['acc_change_pt']:+.2f}).\n")
        res = Path(a.results)
        res.mkdir(parents=True, exist_ok=True)
        (res / f"{out}.md").write_text(text)
        (res / f"{out}.json").write_text(json.dumps({
            "when": when, "device": dev, "command": cmd.strip(), "quick": a.quick, "load_before": load_before,
            "load_after": load_after, "other_cores": other, "seconds": round(total, 1), "anchor": ANCHOR,
            "settings": {"amounts": amounts, "epochs": epochs, "subset": subset}, "partial": partial, "rows": rows,
            "variants": variants}, indent=1, default=str))
        return text

    with tempfile.TemporaryDirectory() as tmp, CpuWatch() as watch:
        ws = Workspace(Path(tmp) / "ws")
        last = [0.0]

        def progress(p: float, msg: str) -> None:   # a line every 20 s at most: how far the task is
            if time.perf_counter() - last[0] > 20:
                last[0] = time.perf_counter()
                print(f"  [{time.strftime('%H:%M:%S')}] {p:.0%} {msg}", flush=True)
        ctx = TaskContext(ws, on_progress=progress)
        base = ws.get_variant("base-resnet-small")
        shape = tuple(cached_dataset(base.dataset).info.input_shape)
        for amount in amounts:
            t0 = time.perf_counter()
            pruned = ws.get_variant(run_task("prune", PruneJobConfig(
                variant=base.id, prune=PruneConfig(method="channel", amount=amount), device=a.device), ctx).variant_id)
            r = measure(ws, base, pruned, f"channel {amount:.0%}, no fine-tune", shape, a.device, timing)
            r.update(amount=amount, stage="pruned")
            rows.append(r)
            rec = ws.get_variant(run_task("finetune", FinetuneJobConfig(
                variant=pruned.id, subset=subset, device=a.device,
                train=TrainConfig(epochs=epochs, lr=0.01, schedule="cosine")), ctx).variant_id)
            r = measure(ws, base, rec, f"channel {amount:.0%} + fine-tune {epochs} ep", shape, a.device, timing)
            r.update(amount=amount, stage="recovered", seconds=round(time.perf_counter() - t0, 1))
            rows.append(r)
            if not a.no_int8:
                q = ws.get_variant(run_task("quantize", QuantizeJobConfig(
                    variant=rec.id, quant=QuantConfig(mode="static-int8"), device=a.device), ctx).variant_id)
                r = measure(ws, base, q, f"channel {amount:.0%} + fine-tune + static int8", shape, a.device, timing)
                r.update(amount=amount, stage="recovered+int8")
                rows.append(r)
            if amount != amounts[-1]:
                report(compare_rows(ws.list_variants()), None, partial=True)
        variants = compare_rows(ws.list_variants())
    text = report(variants, watch.other_cores, partial=False)
    print(text)


if __name__ == "__main__":
    main()
