"""Engine training-loop throughput against a plain PyTorch loop, side by side in one run.

Both loops train the same architecture (same initial weights) on the same in-memory data with the
same optimizer and batch size. Runs alternate plain/engine so machine noise hits both alike; the
table reports the median samples/s of each and their ratio (engine / plain; target >= 0.95).

    .venv/bin/python bench/train_overhead.py [--model lenet5] [--samples 20000] [--repeats 3] [--device auto]
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.data.datasets import load_dataset  # noqa: E402
from core.measure.lane import device_label  # noqa: E402
from core.measure.metrics import resolve_device  # noqa: E402
from core.measure.training import TrainConfig, make_optimizer, train_  # noqa: E402
from core.models.registry import create_model  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def plain_epoch(model, data, cfg: TrainConfig, device) -> float:
    """The textbook loop: zero_grad, forward, loss, backward, step. Returns samples/s."""
    model.to(device).train()
    opt = make_optimizer(model, cfg)
    split = data.train.to(device) if device.type == "cuda" else data.train
    gen = torch.Generator().manual_seed(cfg.seed)
    n = 0
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for x, y in split.batches(cfg.batch_size, shuffle=True, generator=gen):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        n += y.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def engine_epoch(model, data, cfg: TrainConfig) -> float:
    """Wall time of the whole train() call, set-up and the end-of-epoch validation included
    (the validation split is cut to 64 samples so that it does not dominate)."""
    if next(model.parameters()).device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    train_(model, data, cfg)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return len(data.train) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()

    device = resolve_device(a.device)
    data = load_dataset("fashion-mnist", subset=a.samples)
    data = dataclasses.replace(data, val=data.val.subset(64))
    cfg = TrainConfig(epochs=1, batch_size=a.batch_size, device=str(device), amp=False)
    torch.manual_seed(0)
    init = create_model(a.model, num_classes=data.info.num_classes, in_channels=data.info.in_channels)

    # one untimed warm-up epoch each (allocator, kernel selection)
    plain_epoch(copy.deepcopy(init), data, cfg, device)
    engine_epoch(copy.deepcopy(init), data, cfg)
    plain, engine = [], []
    for i in range(a.repeats):
        plain.append(plain_epoch(copy.deepcopy(init), data, cfg, device))
        engine.append(engine_epoch(copy.deepcopy(init), data, cfg))
        print(f"repeat {i + 1}: plain {plain[-1]:,.0f} samples/s, engine {engine[-1]:,.0f} samples/s", flush=True)
    p, e = statistics.median(plain), statistics.median(engine)
    row = {"model": a.model, "samples": len(data.train), "batch_size": a.batch_size, "device": device_label(device),
           "plain_samples_per_s": round(p, 1), "engine_samples_per_s": round(e, 1), "ratio": round(e / p, 4),
           "repeats": a.repeats, "host": platform.node(), "when": time.strftime("%Y-%m-%d %H:%M:%S")}
    lines = ["| model | train samples | batch | device | plain loop samples/s | engine samples/s | engine/plain |",
             "|---|---|---|---|---|---|---|",
             f"| {a.model} | {row['samples']} | {a.batch_size} | {row['device']} | {p:,.0f} | {e:,.0f} | {e / p:.3f} |"]
    table = "\n".join(lines)
    print()
    print(table)
    RESULTS.mkdir(exist_ok=True)
    tag = "cuda" if device.type == "cuda" else "cpu"
    (RESULTS / f"train_overhead_{tag}.md").write_text(
        f"# Training-loop overhead ({row['when']})\n\nMedian of {a.repeats} alternating runs, "
        f"one epoch each, after a warm-up epoch.\n\n{table}\n")
    (RESULTS / f"train_overhead_{tag}.json").write_text(json.dumps(row, indent=2))


if __name__ == "__main__":
    main()
