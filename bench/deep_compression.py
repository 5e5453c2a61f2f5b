"""Deep Compression (Han, Mao and Dally, ICLR 2016) rebuilt from workbench steps on the shipped
Fashion-MNIST LeNet-5, with the stage table of the paper's Table 3:

  base-lenet5 --prune_recover (iterative magnitude pruning with retraining, per-layer amounts)
              --share_weights (k-means codebooks: 6-bit conv, 4-bit fc; centroids fine-tuned)
              --entropy_code  (canonical Huffman of the codes and relative indices)

Per stage: the variant file's bytes (codebooks, indices and header included), the compression
ratio against the float32 dense file, accuracy on the full test split and its change, and per
layer where the bytes went. Target: >= 50x at <= 0.5 point loss (the paper: 39x on MNIST).

    .venv/bin/python bench/deep_compression.py [--quick] [--device cpu]

A fresh temporary workspace seeded with the shipped baselines is used; nothing is written to
yours. Results: bench/results/deep_compression.md and .json (--quick writes *_quick.*).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.compress.pruning.prune import PruneConfig  # noqa: E402
from core.formats.shared import file_breakdown  # noqa: E402
from core.measure.training import TrainConfig  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402
from core.tasks import PruneRecoverJobConfig, TaskContext, run_task  # noqa: E402
from core.tasks.share_weights import EntropyCodeJobConfig, ShareWeightsJobConfig  # noqa: E402

# fraction of weights pruned per layer (Han et al. kept 66%/12%/8%/19% of LeNet-5's
# conv1/conv2/fc1/fc2). Here fc1, 93% of the weights, is pruned harder (the 50x target needs it)
# and the conv layers gentler; 6/4-bit codebooks (Han et al.: 8/5) pay for the gentler convs.
# Measured: conv 0.9 / fc2 0.85 with 8/5 bits gave 52.7x at -0.90 point; these 55.0x at -0.48.
LAYER_AMOUNTS = {"conv1": 0.5, "conv2": 0.8, "fc1": 0.96, "fc2": 0.8}
TARGET_RATIO, TARGET_LOSS = 50.0, 0.005


def fresh_process_check(path: Path) -> dict:
    """The final file restored by its small loader in a fresh process, classifying the whole test split."""
    out = subprocess.run([sys.executable, "-m", "core.io.deep_compression_loader", str(path), "--predict", "10000"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"the loader failed on {path}: {out.stderr.strip()}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    return {"file_bytes": path.stat().st_size, "fresh_process_accuracy": got["accuracy"],
            "test_images": len(got["predictions"]), "command": "python -m core.io.deep_compression_loader FILE --predict 10000"}


def gap_note(rows: list[dict]) -> str:
    """Where a missed target comes from, read off the stage rows, and what would close it."""
    final, pruned, shared = rows[-1], rows[1], rows[2]
    parts = [f"Bytes: {final['ratio']:.1f}x ({'met' if final['ratio'] >= TARGET_RATIO else 'NOT met'})."]
    parts.append(f"Accuracy: pruning + retraining {pruned['change_points']:+.2f} points, weight sharing "
                 f"{shared['change_points'] - pruned['change_points']:+.2f}, Huffman coding "
                 f"{final['change_points'] - shared['change_points']:+.2f} (lossless).")
    parts.append("What closes it: more retraining per AGP step, gentler conv pruning paid for by fewer codebook "
                 "bits (the defaults), or fewer bits with more centroid fine-tuning when the bytes are short.")
    return " ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small subsets and few epochs (about 1-2 minutes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--subset", type=int, default=None, help="training samples for retraining and centroid tuning")
    ap.add_argument("--steps", type=int, default=None, help="AGP pruning steps (default 4; --quick 2)")
    ap.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs per AGP step (default 3; --quick 1)")
    ap.add_argument("--layer-amounts", default=None, metavar="L=A,...",
                    help=f"fraction pruned per layer (default {','.join(f'{k}={v}' for k, v in LAYER_AMOUNTS.items())})")
    ap.add_argument("--bits-conv", type=int, default=6, help="codebook bits of conv layers (default 6; Han et al.: 8)")
    ap.add_argument("--bits-fc", type=int, default=4, help="codebook bits of fc layers (default 4; Han et al.: 5)")
    ap.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the retraining (cosine decay per step)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    t0 = time.time()
    load0 = os.getloadavg()
    ws = Workspace(tempfile.mkdtemp(prefix="deep-compression-"))
    ctx = TaskContext(ws, log=lambda s: print("  " + s, flush=True))
    if args.quick:
        steps, ft_epochs, subset, share_epochs, share_subset = 2, 1, 3000, 1, 3000
    else:
        steps, ft_epochs, subset, share_epochs, share_subset = 4, 3, None, 2, None
    steps, ft_epochs = args.steps or steps, args.epochs or ft_epochs
    if args.subset:
        subset = share_subset = args.subset
    amounts = dict(LAYER_AMOUNTS)
    if args.layer_amounts:
        amounts.update({k: float(v) for k, v in (kv.split("=") for kv in args.layer_amounts.split(","))})
    bits = f"{args.bits_conv}/{args.bits_fc} bit"
    base = ws.get_variant("base-lenet5")
    print(f"pruning {amounts} in {steps} AGP steps x {ft_epochs} epochs", flush=True)
    pr = run_task("prune_recover", PruneRecoverJobConfig(
        variant=base.id, prune=PruneConfig(amount=0.9, scope="layer", layer_amounts=amounts, exclude=()),
        steps=steps, finetune=TrainConfig(epochs=ft_epochs, lr=args.lr, optimizer="sgd", schedule="cosine"),
        subset=subset, device=args.device), ctx).variant_id
    print(f"weight sharing {bits} (conv/fc)", flush=True)
    sh = run_task("share_weights", ShareWeightsJobConfig(variant=pr, bits_conv=args.bits_conv, bits_fc=args.bits_fc,
                                                         epochs=share_epochs, lr=1e-4, subset=share_subset,
                                                         device=args.device),
                  ctx).variant_id
    print("entropy coding", flush=True)
    ec = run_task("entropy_code", EntropyCodeJobConfig(variant=sh, device=args.device), ctx).variant_id

    dense_bytes = base.metrics["dense_size_bytes"]
    base_acc = base.metrics["accuracy"]
    stages = [("float32 dense (base-lenet5)", base), ("pruned + retrained", ws.get_variant(pr)),
              (f"+ weight sharing ({bits})", ws.get_variant(sh)), ("+ Huffman coding", ws.get_variant(ec))]
    rows, layers = [], {}
    for label, v in stages:
        data = ws.weights_path(v).read_bytes()
        size = dense_bytes if label.startswith("float32") else len(data)   # base: the float32 dense file
        rows.append({"stage": label, "variant": v.id, "format": v.format, "bytes": size,
                     "ratio": round(dense_bytes / size, 2), "nonzero": v.metrics["nonzero_params"],
                     "accuracy": v.metrics["accuracy"], "change_points": round(100 * (v.metrics["accuracy"] - base_acc), 2)})
        layers[label] = file_breakdown(data)
    final = rows[-1]
    reload_check = fresh_process_check(ws.weights_path(ws.get_variant(ec)))
    print(f"reloaded in a fresh process: accuracy {reload_check['fresh_process_accuracy']:.4f} on "
          f"{reload_check['test_images']:,} test images", flush=True)
    met = final["ratio"] >= TARGET_RATIO and base_acc - final["accuracy"] <= TARGET_LOSS
    load1 = os.getloadavg()
    result = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": args.quick, "device": args.device,
              "seconds": round(time.time() - t0, 1), "loadavg_start": load0, "loadavg_end": load1,
              "layer_amounts": amounts, "bits_conv": args.bits_conv, "bits_fc": args.bits_fc, "steps": steps,
              "finetune_epochs": ft_epochs, "lr": args.lr, "subset": subset,
              "share_epochs": share_epochs, "stages": rows, "reload_check": reload_check, "bytes_per_layer": layers,
              "target": f">= {TARGET_RATIO:.0f}x at <= {100 * TARGET_LOSS:.1f} point loss", "target_met": met}
    lines = [f"# Deep Compression on Fashion-MNIST LeNet-5{' (--quick)' if args.quick else ''}", "",
             f"`.venv/bin/python {' '.join(['bench/deep_compression.py', *sys.argv[1:]])}`, "
             f"{result['date']}, {result['seconds']} s, load average {load0[0]:.2f} at start, {load1[0]:.2f} at end "
             f"(2 shared cores).", "",
             f"Pruning per layer {amounts}, {steps} AGP steps x {ft_epochs} fine-tuning epochs "
             f"(subset {subset or 'all'}); weight sharing {args.bits_conv}-bit conv / {args.bits_fc}-bit fc codebooks, "
             f"{share_epochs} centroid "
             f"fine-tuning epochs; Huffman coding of codes and relative indices (per stream, where smaller).", "",
             "| stage | variant | bytes | ratio vs float32 | non-zero weights | test accuracy | change (points) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['variant']} | {r['bytes']:,} | {r['ratio']:.1f}x | {r['nonzero']:,} | "
                     f"{r['accuracy']:.4f} | {r['change_points']:+.2f} |")
    lines += ["", f"Target {result['target']}: **{'met' if met else 'NOT met'}** "
              f"({final['ratio']:.1f}x at a {-final['change_points']:.2f} point loss; the paper: 39x on MNIST at no loss).",
              *([] if met else ["", gap_note(rows)]),
              "", f"The final file ({reload_check['file_bytes']:,} bytes) restored by `{reload_check['command']}` in a "
              f"fresh process: accuracy {reload_check['fresh_process_accuracy']:.4f} on the "
              f"{reload_check['test_images']:,} test images.",
              "", "## Where the bytes went (per layer and part)", ""]
    for label, per in layers.items():
        if label.startswith("float32"):
            continue
        lines.append(f"**{label}**: " + "; ".join(
            f"{layer}: " + ", ".join(f"{p} {b:,}" for p, b in sorted(parts.items())) for layer, parts in per.items()))
        lines.append("")
    text = "\n".join(lines)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = ("deep_compression_quick" if args.quick else "deep_compression") \
        + ("_cuda" if args.device.startswith("cuda") else "")       # a GPU run sits beside the CPU one
    (out / f"{stem}.md").write_text(text + "\n")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
