"""The `finetune` command of the CLI: fine-tune a float variant into a child variant, or, with
--dataset, transfer a variant (or a torchvision model) to another dataset.

    python -m core finetune VARIANT [--epochs N] [--lr LR] [--batch-size B] [--early-stop N]
                                    [--no-restore-best] [--subset N] [--seed S] [--name NAME] [--device D]
    python -m core finetune VARIANT|MODEL --dataset NAME|ZIP [--freeze-backbone] [--untrained] ...

A ZIP of class folders is imported into the workspace first (as `core.data.uploaded` does for
the page), under the zip's file name unless --dataset-name says otherwise.

`core.cli.main` imports it: `add_commands` and `COMMANDS`.
"""
from __future__ import annotations

from core.base.limits import MAX_ZIP_BYTES
from core.cli.common import number, result_of, run_with_progress, whole
from core.data.datasets import get_info, list_datasets
from core.data.uploaded import import_image_zip, slug
from core.measure.training import MAX_BATCH, MAX_EPOCHS, MAX_LR, TrainConfig
from core.tasks.finetune import FinetuneJobConfig
from core.tasks.transfer import TransferJobConfig, is_model_name


def add_commands(sub) -> None:
    """Add the `finetune` parser to `sub`."""
    sp = sub.add_parser("finetune", help="fine-tune a float variant into a child variant (masked zeros and shrunk "
                                         "shapes kept; the best epoch by val accuracy restored)")
    sp.add_argument("variant", help="variant id, id prefix or name (a float variant: not quantized); with --dataset "
                                    "also a registered model name (resnet18, mobilenet_v3_small: ImageNet weights)")
    sp.add_argument("--dataset", metavar="NAME|ZIP",
                    help="transfer learning: a built-in or uploaded dataset, or a zip of class folders to import; "
                         "the classifier is replaced for its classes")
    sp.add_argument("--dataset-name", metavar="NAME", help="the name a ZIP is imported under (default: its file name)")
    sp.add_argument("--freeze-backbone", action="store_true",
                    help="with --dataset: train only the new classifier, the rest kept as it is")
    sp.add_argument("--untrained", action="store_true",
                    help="with --dataset and a registered model: start from random weights, not ImageNet's")
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
    ws = ws_factory()
    train = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed,
                        early_stop=args.early_stop or None, restore_best=args.restore_best, device=args.device)
    if args.dataset:
        return _transfer(args, ws, train)
    if args.freeze_backbone or args.untrained or args.dataset_name:
        raise ValueError("--freeze-backbone, --untrained and --dataset-name go with --dataset (transfer learning)")
    parent = ws.get_variant(args.variant)
    config = FinetuneJobConfig(variant=parent.id, train=train, subset=args.subset, name=args.name, device=args.device)
    out = run_with_progress("finetune", config, ws, args.json)
    v = ws.get_variant(out.variant_id)
    res = out.result or {}
    result = {**result_of(v, args), **{k: res.get(k) for k in (
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


def dataset_from_arg(ws, value: str, name: str | None = None) -> str:
    """The dataset name `--dataset` means: a ZIP file is imported into the workspace first."""
    from pathlib import Path

    path = Path(value)
    if not (value.lower().endswith(".zip") or path.is_file()):
        return get_info(value, ws.root).name      # a known dataset, or one line naming the choices
    if not path.is_file():
        raise ValueError(f"no such zip file: {value}")
    if path.stat().st_size > MAX_ZIP_BYTES:
        raise ValueError(f"{value} is {path.stat().st_size / 1e6:,.0f} MB; the limit for a dataset zip is "
                         f"{MAX_ZIP_BYTES / 1e6:,.0f} MB")
    name = name or slug(path.stem)
    if name in {d.name for d in list_datasets(ws.root)}:
        raise ValueError(f"a dataset named {name!r} already exists: use it with --dataset {name}, or import "
                         f"{path.name} under another name with --dataset-name NAME")
    info = import_image_zip(ws.root, path.read_bytes(), name, filename=path.name)
    print(f"imported {path.name} as dataset {info.name!r}: {info.num_classes} classes", flush=True)
    return info.name


def _transfer(args, ws, train) -> dict:
    source = args.variant if is_model_name(args.variant) else ws.get_variant(args.variant).id
    dataset = dataset_from_arg(ws, args.dataset, args.dataset_name)
    config = TransferJobConfig(source=source, dataset=dataset, freeze_backbone=args.freeze_backbone,
                               pretrained=not args.untrained, train=train, subset=args.subset, name=args.name,
                               device=args.device)
    out = run_with_progress("transfer", config, ws, args.json)
    v = ws.get_variant(out.variant_id)
    res = out.result or {}
    result = {**result_of(v, args), **{k: res.get(k) for k in (
        "best_epoch", "stopped_early", "epochs_run", "val_accuracy", "source_id", "source", "dataset",
        "trainable_params", "frozen_params", "notices", "chance_accuracy", "history")}}
    if not args.json:
        for n in res.get("notices", []):
            print(f"  {n}")
        print(f"  {res.get('trainable_params', 0):,} trainable, {res.get('frozen_params', 0):,} frozen parameters")
        for row in res.get("history", []):
            mark = "  (best)" if row["epoch"] == res.get("best_epoch") else ""
            print(f"  epoch {row['epoch']:<3} loss {row['loss']:.4f}  val acc {row['val_accuracy']:.4f}{mark}")
        print(f"  test accuracy {v.metrics['accuracy']:.4f} on {res.get('dataset')} "
              f"(chance {res.get('chance_accuracy', 0):.4f})")
    return result


COMMANDS = {"finetune": cmd_finetune}
