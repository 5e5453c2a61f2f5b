"""The `share-weights` and `entropy-code` commands of the CLI: Deep Compression's second and third
stages (run after `prune --steps N --finetune-epochs E`, its first).

    python -m core share-weights VARIANT [--bits-conv 8] [--bits-fc 5] [--epochs 1] [--lr 1e-4] [--subset N]
    python -m core entropy-code VARIANT

`core.cli.main` imports it: `add_commands` and `COMMANDS`.
"""
from __future__ import annotations

from core.cli.common import number, result_of, run_with_progress, whole
from core.tasks.share_weights import EntropyCodeJobConfig, ShareWeightsJobConfig


def add_commands(sub) -> None:
    sp = sub.add_parser("share-weights", help="trained weight sharing: k-means codebooks per layer (non-zero weights "
                                              "only), centroids fine-tuned; a child variant with a compact file")
    sp.add_argument("variant", help="id or name of a float (usually pruned) variant")
    sp.add_argument("--bits-conv", type=whole(1, 8), default=8, help="codebook bits of conv layers (default 8)")
    sp.add_argument("--bits-fc", type=whole(1, 8), default=5, help="codebook bits of linear layers (default 5)")
    sp.add_argument("--epochs", type=whole(0, 200), default=1, help="centroid fine-tuning epochs (0: k-means only)")
    sp.add_argument("--lr", type=number(0, 10), default=1e-4, help="learning rate of the centroid fine-tuning")
    sp.add_argument("--subset", type=whole(1, 10_000_000), help="training samples for the centroid fine-tuning")
    sp.add_argument("--seed", type=whole(0, 2**31 - 1), default=0)
    sp.add_argument("--name", help="name of the new variant")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    sp = sub.add_parser("entropy-code", help="Huffman-code a weight-shared variant's codes and relative indices "
                                             "(the same model in fewer bytes)")
    sp.add_argument("variant", help="id or name of a weight-shared variant (made by share-weights)")
    sp.add_argument("--name", help="name of the new variant")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def _print_ratio(v, ws, args) -> None:
    if args.json:
        return
    root = ws.lineage(v.id)[0]
    dense = root.metrics.get("dense_size_bytes")
    if dense:
        print(f"  {'compression':<17} {dense / v.metrics['size_bytes']:.1f}x against {root.name}'s float32 file "
              f"({dense:,} -> {v.metrics['size_bytes']:,} bytes)")


def cmd_share_weights(args, ws_factory) -> dict:
    ws = ws_factory()
    parent = ws.get_variant(args.variant)
    cfg = ShareWeightsJobConfig(variant=parent.id, bits_conv=args.bits_conv, bits_fc=args.bits_fc, epochs=args.epochs,
                                lr=args.lr, subset=args.subset, seed=args.seed, name=args.name, device=args.device)
    v = ws.get_variant(run_with_progress("share_weights", cfg, ws, args.json).variant_id)
    result = result_of(v, args)
    _print_ratio(v, ws, args)
    return result


def cmd_entropy_code(args, ws_factory) -> dict:
    ws = ws_factory()
    parent = ws.get_variant(args.variant)
    cfg = EntropyCodeJobConfig(variant=parent.id, name=args.name, device=args.device)
    v = ws.get_variant(run_with_progress("entropy_code", cfg, ws, args.json).variant_id)
    result = result_of(v, args)
    _print_ratio(v, ws, args)
    return result


COMMANDS = {"share-weights": cmd_share_weights, "entropy-code": cmd_entropy_code}
