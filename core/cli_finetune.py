"""The `finetune` command of the CLI: fine-tune a float variant into a child variant.

    python -m core finetune VARIANT [--epochs N] [--lr LR] [--batch-size B] [--early-stop N]
                                    [--no-restore-best] [--subset N] [--seed S] [--name NAME] [--device D]

`core.cli` registers it with `add_finetune_command(sub, whole, number)` and `cmd_finetune`.
"""
from __future__ import annotations

from .training import MAX_BATCH, MAX_EPOCHS, MAX_LR


def add_finetune_command(sub, whole, number) -> None:
    """Add the `finetune` parser to `sub`; `whole` and `number` are core.cli's bounded argparse types."""
    sp = sub.add_parser("finetune", help="fine-tune a float variant into a child variant (masked zeros and shrunk "
                                         "shapes kept; the best epoch by val accuracy restored)")
    sp.add_argument("variant", help="variant id, id prefix or name (a float variant: not quantized)")
    sp.add_argument("--epochs", type=whole(1, MAX_EPOCHS), default=3)
    sp.add_argument("--lr", type=number(0.0, MAX_LR), default=0.01)
    sp.add_argument("--batch-size", type=whole(1, MAX_BATCH), default=64)
    sp.add_argument("--early-stop", type=whole(0, MAX_EPOCHS), default=2, metavar="N",
                    help="stop after N epochs without a better validation accuracy (0: never stop early)")
    sp.add_argument("--no-restore-best", dest="restore_best", action="store_false",
                    help="keep the last epoch's weights (default: the best epoch's, the parent counted as epoch 0)")
    sp.add_argument("--subset", type=whole(1, 100_000_000), help="train on only this many training samples")
    sp.add_argument("--seed", type=whole(0, 2**31 - 1), default=0)
    sp.add_argument("--name")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def cmd_finetune(args, ws_factory) -> dict:
    """Fine-tune a float variant; prints the metrics, each epoch's val accuracy and the best epoch."""
    from .cli import _result, _run_task
    from .tasks.finetune import FinetuneJobConfig
    from .training import TrainConfig

    ws = ws_factory()
    parent = ws.get_variant(args.variant)
    train = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                        early_stop=args.early_stop or None, restore_best=args.restore_best, device=args.device)
    config = FinetuneJobConfig(variant=parent.id, train=train, subset=args.subset, name=args.name, device=args.device)
    out = _run_task("finetune", config, ws, args.json)
    v = ws.get_variant(out.variant_id)
    res = out.result or {}
    result = {**_result(v, args), **{k: res.get(k) for k in (
        "best_epoch", "stopped_early", "epochs_run", "restored", "val_accuracy", "parent_val_accuracy",
        "parent_accuracy", "root_id", "root_accuracy", "history")}}
    if not args.json:
        for row in res.get("history", []):
            mark = "  (best)" if row["epoch"] == res.get("best_epoch") else ""
            print(f"  epoch {row['epoch']:<3} loss {row['loss']:.4f}  val acc {row['val_accuracy']:.4f}{mark}")
        if res.get("stopped_early"):
            print(f"  stopped early after epoch {res['epochs_run']} of {args.epochs}")
        if res.get("best_epoch") == 0 and args.restore_best:
            print("  no epoch beat the parent on the validation split: the child keeps the parent's weights")
        pa, ra = res.get("parent_accuracy"), res.get("root_accuracy")
        if pa is not None:
            line = f"  {'vs parent':<17} test acc {pa:.4f} -> {v.metrics['accuracy']:.4f}"
            if ra is not None and res.get("root_id") != parent.id:
                line += f" (dense root {res['root_id']}: {ra:.4f})"
            print(line)
    return result
