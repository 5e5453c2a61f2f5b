"""Does distillation help? The shipped LeNet-5 baseline teaches lenet5-small on Fashion-MNIST,
against the same student trained from scratch with the same budget (epochs, samples, lr, batch,
seed, batch order and initial weights), over several seeds.

Both arms run `core.compress.distill.kd.distill_` (the scratch arm with `use_teacher=False`: plain
cross-entropy, the teacher only asked for the agreement figure); test accuracy is on the full
test split. The default budget, 3 epochs on the whole 55,000-sample training split, takes about 4
minutes on a nearly idle 2-core CPU (2 epochs on 20,000 samples: about 70 s idle, 11 minutes at a
load average of 7); a short budget is where a teacher's soft targets matter most. The load average
before and after is printed and saved: times are only comparable between runs on an idle machine.

    .venv/bin/python bench/distill_bench.py [--seeds 0 1 2] [--epochs 3] [--subset 55000]
                                            [--temperature 4] [--alpha 0.9] [--lr 0.005] [--device auto|cpu|cuda]

Results: bench/results/distill_bench.md and .json.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from core.compress.distill.kd import DistillConfig, distill_  # noqa: E402
from core.data.datasets import cached_dataset  # noqa: E402
from core.measure.lane import device_label  # noqa: E402
from core.measure.metrics import accuracy, resolve_device  # noqa: E402
from core.models.registry import create_model  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402

RESULTS = REPO / "bench" / "results"


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--subset", type=int, default=55_000)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--alpha", type=float, default=0.9)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--student", default="lenet5-small")
    ap.add_argument("--out", default="distill_bench")
    args = ap.parse_args()

    t_all = time.perf_counter()
    load_before = os.getloadavg()
    dev = resolve_device(args.device)
    ws = Workspace(tempfile.mkdtemp(prefix="distill-bench-"), seed_baselines=True)
    teacher_v = ws.get_variant("base-lenet5")
    teacher = ws.load_model(teacher_v)
    full = cached_dataset(teacher_v.dataset)
    data = dataclasses.replace(full, train=full.train.subset(args.subset, seed=0))
    test = full.test.to(dev) if dev.type == "cuda" else full.test
    teacher_acc = accuracy(teacher.to(dev), test, dev)
    print(f"teacher {teacher_v.name}: test accuracy {teacher_acc:.4f} on {device_label(dev)}; "
          f"student {args.student}, {args.epochs} epochs on {len(data.train):,} samples, seeds {args.seeds}", flush=True)

    runs = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        init = create_model(args.student, num_classes=full.info.num_classes, in_channels=full.info.in_channels,
                            image_size=full.info.image_size)
        for arm in ("scratch", "distilled"):
            cfg = DistillConfig(temperature=args.temperature, alpha=args.alpha if arm == "distilled" else 0.0,
                                epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=seed)
            student = copy.deepcopy(init)
            t0 = time.perf_counter()
            res = distill_(student, copy.deepcopy(teacher), data, cfg, device=args.device,
                           use_teacher=arm == "distilled")
            seconds = time.perf_counter() - t0
            acc = accuracy(student, test, dev)
            runs.append({"seed": seed, "arm": arm, "test_accuracy": acc, "val_accuracy": res.val_accuracy,
                         "agreement": res.history[-1]["agreement"], "seconds": round(seconds, 1)})
            print(f"  seed {seed} {arm:<9} test acc {acc:.4f}, agreement {res.history[-1]['agreement']:.4f}, "
                  f"{seconds:.1f} s", flush=True)

    def arm(name: str, key: str = "test_accuracy") -> list[float]:
        return [r[key] for r in runs if r["arm"] == name]

    scratch, distilled = arm("scratch"), arm("distilled")
    gaps = [(d - s) / (teacher_acc - s) if teacher_acc - s > 1e-9 else float("nan")
            for d, s in zip(distilled, scratch, strict=True)]
    (sm, ss), (dm, ds) = mean_std(scratch), mean_std(distilled)
    summary = {"teacher": teacher_v.name, "teacher_accuracy": teacher_acc, "student": args.student,
               "scratch_mean": sm, "scratch_std": ss, "distilled_mean": dm, "distilled_std": ds,
               "gap_closed_mean": statistics.fmean(gaps), "gap_closed_per_seed": gaps,
               "scratch_seconds_mean": statistics.fmean(arm("scratch", "seconds")),
               "distilled_seconds_mean": statistics.fmean(arm("distilled", "seconds")),
               "total_seconds": round(time.perf_counter() - t_all, 1), "device": device_label(dev),
               "load_before": [round(x, 2) for x in load_before],
               "load_after": [round(x, 2) for x in os.getloadavg()],
               "settings": {k: v for k, v in vars(args).items() if k != "out"}, "runs": runs}

    whole = len(data.train) == len(full.train)
    lines = [
        f"# Distillation: {teacher_v.name} -> {args.student} (Fashion-MNIST)", "",
        f"{args.epochs} epochs on {'the whole' if whole else 'a'} {len(data.train):,}-sample training "
        f"{'split' if whole else 'subset'}, batch {args.batch_size}, SGD lr "
        f"{args.lr:g}, T={args.temperature:g}, alpha={args.alpha:g} (scratch: alpha 0, no teacher); the same initial "
        f"weights, seed and batch order per seed in both arms; seeds {args.seeds}; test accuracy on the full test "
        f"split; device {summary['device']}.", "",
        "| teacher accuracy | scratch (mean ± std) | distilled (mean ± std) | gap closed (mean) | s per run, scratch | "
        "s per run, distilled | total s |",
        "|---|---|---|---|---|---|---|",
        f"| {teacher_acc:.4f} | {sm:.4f} ± {ss:.4f} | {dm:.4f} ± {ds:.4f} | {summary['gap_closed_mean']:.1%} | "
        f"{summary['scratch_seconds_mean']:.1f} | {summary['distilled_seconds_mean']:.1f} | {summary['total_seconds']} |",
        "", "| seed | arm | test accuracy | val agreement with teacher | seconds |", "|---|---|---|---|---|",
        *[f"| {r['seed']} | {r['arm']} | {r['test_accuracy']:.4f} | {r['agreement']:.4f} | {r['seconds']} |"
          for r in runs],
        "", f"Load average (1, 5, 15 min) before {summary['load_before']}, after {summary['load_after']}"
        + (" — other work was running: the times are inflated and not comparable with an idle run."
           if max(load_before[0], summary["load_after"][0]) > 1.5 else "."),
    ]
    md = "\n".join(lines) + "\n"
    print(md)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text(md)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
