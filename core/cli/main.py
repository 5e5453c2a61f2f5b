"""The CLI (run as `python -m core`): python -m core [--workspace DIR] [--json] COMMAND ...

Bad input (unknown model, missing variant, bad number) prints one `error:` line and exits 2.
With --json, the last line printed is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from core.base.config import plain
from core.base.errors import is_disk_full
from core.base.paths import workspace_dir
from core.base.ratios import RUNTIMES
from core.base.units import human_bytes
from core.cli import admin as cli_admin
from core.cli import distill as cli_distill
from core.cli import export as cli_export
from core.cli import finetune as cli_finetune
from core.cli import quantize as cli_quantize
from core.cli import replay as cli_replay
from core.cli import serve as cli_serve
from core.cli import sharing as cli_sharing
from core.cli.common import (
    BATCH,
    EPOCHS,
    EXIT_USAGE,
    LR,
    SEED,
    STEPS,
    SUBSET,
    CliError,
    Parser,
    fraction,
    print_latency,
    print_metrics,
    print_table,
    result_of,
    run_with_progress,
)
from core.compress.pruning.prune import PruneConfig
from core.data.datasets import dataset_available, get_info, list_datasets
from core.io.model_card import json_safe, latency_card
from core.measure.training import TrainConfig
from core.models.registry import create_model, list_models
from core.run import jobs
from core.run.runners import runner_name
from core.store.workspace import VariantHasChildren, VariantInUse, VariantNotFound, Workspace, WorkspaceError
from core.tasks import (
    MeasureJobConfig,
    PruneJobConfig,
    PruneRecoverJobConfig,
    TrainJobConfig,
    config_fields,
    list_tasks,
    validate_config,
)

# ---------------------------------------------------------------- commands

def cmd_models(args, ws_factory) -> dict:
    rows = []
    for spec in list_models():
        m = create_model(spec.name, num_classes=10, in_channels=1)
        rows.append({"name": spec.name, "params": sum(p.numel() for p in m.parameters()),
                     "pretrained": "ImageNet" if spec.has_pretrained else "", "description": spec.description})
    if not args.json:
        print("params counted for 1x28x28 inputs and 10 classes")
        print_table(rows, ["name", "params", "pretrained", "description"])
    return {"models": rows}


def cmd_datasets(args, ws_factory) -> dict:
    rows = [{"name": d.name, "title": d.title, "classes": d.num_classes, "input": "x".join(map(str, d.input_shape)),
             "on_disk": d.uploaded or dataset_available(d.name), "description": d.description}
            for d in list_datasets(workspace_dir(args.workspace))]   # uploaded ones: in this workspace
    if not args.json:
        print_table(rows, ["name", "title", "classes", "input", "on_disk", "description"])
    return {"datasets": rows}


def _variant_row(v) -> dict:
    m = v.metrics
    return {"id": v.id, "name": v.name, "parent": v.parent_id or "", "dataset": v.dataset, "kind": v.kind_label,
            "accuracy": f"{m['accuracy']:.4f}" if "accuracy" in m else "", "params": m.get("params", ""),
            "nonzero": m.get("nonzero_params", ""), "size": human_bytes(m["size_bytes"]) if "size_bytes" in m else ""}


def cmd_variants(args, ws_factory) -> dict:
    if args.dataset:
        get_info(args.dataset, ws_factory().root)   # an unknown name is a usage error, not an empty list
    ws = ws_factory()
    variants = ws.list_variants(args.dataset)
    lost = ws.unindexed()
    if lost:   # a lost or re-created index: never silent
        print(f"warning: {len(lost)} variant file(s) are not in the index ({', '.join(p.name for p in lost[:5])}): "
              f"run `python -m core --workspace {ws.root} repair`", file=sys.stderr)
    if not args.json:
        if not variants:
            print(f"no variants in {ws.root}")
        else:
            print_table([_variant_row(v) for v in variants],
                        ["id", "name", "parent", "dataset", "kind", "accuracy", "params", "nonzero", "size"])
    return {"variants": [{"id": v.id, "name": v.name, "parent_id": v.parent_id, "dataset": v.dataset,
                          "kind": v.kind, "metrics": v.metrics} for v in variants]}


def cmd_train(args, ws_factory) -> dict:
    ws = ws_factory()
    config = TrainJobConfig(model=args.model, dataset=args.dataset, subset=args.subset, name=args.name,
                            pretrained=args.pretrained,
                            train=TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                              optimizer=args.optimizer, device=args.device, seed=args.seed))
    out = run_with_progress("train", config, ws, args.json)
    return result_of(ws.get_variant(out.variant_id), args)


def cmd_eval(args, ws_factory) -> dict:
    """Measure a variant again; print its latency in the chosen runtime(s), each figure with its
    95% interval or why it is not measurable now."""
    ws = ws_factory()
    runtimes = tuple(RUNTIMES) if args.runtime == "all" else (args.runtime,)
    config = MeasureJobConfig(variant=ws.get_variant(args.variant).id, device=args.device, runtime=args.runtime,
                              what="latency" if args.latency_only else "all")
    out = run_with_progress("measure", config, ws, args.json)
    v = ws.get_variant(out.variant_id)
    card = latency_card(v.metrics, masked=bool(v.kind.get("masked")), runtimes=runtimes)
    if not args.json:
        print(f"variant {v.id}: {v.name} [{v.kind_label}]")
        print_metrics(v.metrics, latency=False)
        print_latency(card)
    return {"id": v.id, "name": v.name, "parent_id": v.parent_id, "kind": v.kind, **v.metrics, "latency": card}


def layer_amount(s: str) -> tuple[str, float]:
    name, sep, value = s.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected LAYER=AMOUNT, e.g. conv1=0.5, got {s!r}")
    return name, fraction(value)


def cmd_prune(args, ws_factory) -> dict:
    """One-shot prune into a child variant; with --steps or --finetune-epochs, gradual pruning
    with fine-tuning (the prune_recover task)."""
    ws = ws_factory()
    parent = ws.get_variant(args.variant)
    prune_cfg = PruneConfig(method=args.method, amount=args.amount, scope=args.scope, norm=args.norm,
                            layer_amounts=dict(args.layer_amount or []), seed=args.seed,
                            exclude=[x for x in args.exclude.split(",") if x] if args.exclude is not None else None)
    if args.steps or args.finetune_epochs:
        config = PruneRecoverJobConfig(
            variant=parent.id, prune=prune_cfg, steps=args.steps or 1, subset=args.subset, name=args.name,
            device=args.device, finetune=TrainConfig(epochs=args.finetune_epochs or 1, lr=args.lr,
                                                     batch_size=args.batch_size, device=args.device, seed=args.seed))
        out = run_with_progress("prune_recover", config, ws, args.json)
    else:
        out = run_with_progress("prune", PruneJobConfig(variant=parent.id, prune=prune_cfg, name=args.name, device=args.device),
                        ws, args.json)
    v = ws.get_variant(out.variant_id)
    result = result_of(v, args)
    if not args.json:
        print(f"  {'sparsity':<17} {v.metrics.get('sparsity', 0):.4f} (prunable weights)")
        if v.notes:
            print(f"  {v.notes}")
    return result


# ---------------------------------------------------------------- any registered task

def setting(s: str) -> tuple[str, object]:
    """KEY=VALUE with a dotted key for nested settings (prune.amount=0.9); VALUE is read as JSON
    when it parses (0.9, true, [1, 2], null), else as a string."""
    key, sep, raw = s.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. prune.amount=0.9, got {s!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def build_config(base: dict, settings: list[tuple[str, object]]) -> dict:
    config = json.loads(json.dumps(base))
    for key, value in settings:
        node = config
        *path, leaf = key.split(".")
        for part in path:
            if not isinstance(node.setdefault(part, {}), dict):
                raise CliError(f"{key}: {part} is not a group of settings")
            node = node[part]
        node[leaf] = value
    return config


def _config_from_args(args) -> dict:
    base = {}
    if args.config:
        try:
            base = json.loads(args.config)
        except ValueError as e:
            raise CliError(f"--config is not JSON: {e}") from None
        if not isinstance(base, dict):
            raise CliError("--config must be a JSON object")
    return build_config(base, args.set or [])


def cmd_tasks(args, ws_factory) -> dict:
    rows = []
    for spec in list_tasks():
        fields_ = config_fields(spec.kind)
        rows.append({"kind": spec.kind, "title": spec.title, "summary": spec.summary, "config": spec.config_cls.__name__,
                     "settings": ", ".join(f"{n}" + ("" if d == "(required)" else f"={json.dumps(plain(d))}")
                                           for n, _, d in fields_)})
    if not args.json:
        for r in rows:
            print(f"{r['kind']}: {r['summary']}\n    {r['settings']}")
    return {"tasks": rows}


def cmd_run(args, ws_factory) -> dict:
    """Run any registered task in this process."""
    ws = ws_factory()
    config = validate_config(args.kind, _config_from_args(args))
    out = run_with_progress(args.kind, config, ws, args.json)
    result = {"kind": args.kind, "variant_id": out.variant_id, "result": out.result}
    if out.variant_id:
        result.update(result_of(ws.get_variant(out.variant_id), args))
    elif not args.json:
        print(json.dumps(out.result, indent=1, default=str)[:4000])
    return result


def cmd_submit(args, ws_factory) -> dict:
    """Queue any registered task as a background job; with --wait, follow it to its end."""
    import time

    ws = ws_factory()
    job_id = jobs.submit(ws, args.kind, _config_from_args(args))
    job = ws.jobs.get(job_id)
    if args.wait:
        while not job.is_final:
            time.sleep(0.5)
            jobs.reap(ws)
            job = ws.jobs.get(job_id)
    if not args.json:
        print(f"job {job.id} ({job.title}): {job.state}" + (f", variant {job.variant_id}" if job.variant_id else ""))
    return {"job_id": job.id, "state": job.state, "variant_id": job.variant_id, "error": job.error}


COMMANDS: dict[str, Callable] = {"models": cmd_models, "datasets": cmd_datasets, "variants": cmd_variants,
                                 "train": cmd_train, "eval": cmd_eval, "prune": cmd_prune, "tasks": cmd_tasks,
                                 "run": cmd_run, "submit": cmd_submit}
# the other commands, one module per group: each has `add_commands(sub)` and its `COMMANDS`
COMMAND_MODULES = (cli_finetune, cli_admin, cli_distill, cli_quantize, cli_export, cli_replay, cli_serve, cli_sharing)
for _mod in COMMAND_MODULES:
    COMMANDS.update(_mod.COMMANDS)


def build_parser() -> Parser:
    p = Parser(prog="python -m core", description="Compression Workbench engine")
    p.add_argument("--workspace", metavar="DIR", help="workspace directory (default: $WORKBENCH_HOME or ./workspace)")
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--runner", choices=["local", "ray"],
                   help="where jobs run: local processes or a Ray cluster (default: $WORKBENCH_RUNNER or local)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    sub.add_parser("models", help="list registered models")
    sub.add_parser("datasets", help="list datasets and whether they are on disk")
    sp = sub.add_parser("variants", help="list the workspace's variants")
    sp.add_argument("--dataset")
    sp = sub.add_parser("train", help="train a registered model into a new baseline variant")
    sp.add_argument("model")
    sp.add_argument("--dataset", default="fashion-mnist")
    sp.add_argument("--epochs", type=EPOCHS, default=3)
    sp.add_argument("--subset", type=SUBSET, help="use only this many training samples")
    sp.add_argument("--batch-size", type=BATCH, default=64)
    sp.add_argument("--lr", type=LR, default=0.05)
    sp.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="sgd")
    sp.add_argument("--name")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    sp.add_argument("--seed", type=SEED, default=0)
    sp.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (torchvision models)")
    sp = sub.add_parser("eval", help="measure every metric of a variant again (a child is timed with its parent)")
    sp.add_argument("variant", help="variant id, id prefix or name")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    sp.add_argument("--latency-only", action="store_true", help="measure only the latency again")
    sp.add_argument("--runtime", choices=[*RUNTIMES, "all"], default="all",
                    help="the runtime whose latency to measure and show (PyTorch eager, ONNX Runtime, OpenVINO), or all")
    sp = sub.add_parser("prune", help="prune a variant into a child variant (one-shot, or gradual with fine-tuning)")
    sp.add_argument("variant", help="variant id, id prefix or name")
    sp.add_argument("--amount", type=fraction, required=True,
                    help="target sparsity of the prunable weights (l1, random) or fraction of channels (channel)")
    sp.add_argument("--method", choices=["l1", "random", "channel"], default="l1")
    sp.add_argument("--scope", choices=["layer", "global"], default="layer")
    sp.add_argument("--norm", type=int, choices=[1, 2], default=1, help="channel importance norm (channel method)")
    sp.add_argument("--layer-amount", type=layer_amount, action="append", metavar="LAYER=AMOUNT",
                    help="per-layer amount override (repeatable)")
    sp.add_argument("--exclude", metavar="LAYERS", help="comma-separated layers to leave alone "
                    "(default: the last classifier; pass '' to prune every layer)")
    sp.add_argument("--steps", type=STEPS, help="gradual pruning (AGP) steps, each followed by fine-tuning")
    sp.add_argument("--finetune-epochs", type=EPOCHS, help="fine-tuning epochs after each step")
    sp.add_argument("--lr", type=LR, default=0.01, help="fine-tuning learning rate")
    sp.add_argument("--batch-size", type=BATCH, default=64)
    sp.add_argument("--subset", type=SUBSET, help="fine-tune on only this many training samples")
    sp.add_argument("--name")
    sp.add_argument("--seed", type=SEED, default=0)
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    sub.add_parser("tasks", help="list the registered step kinds and their settings")
    for name, what in (("run", "run any registered task here (e.g. run prune variant=base-lenet5 prune.amount=0.9)"),
                       ("submit", "queue any registered task as a background job")):
        sp = sub.add_parser(name, help=what)
        sp.add_argument("kind", help="a registered task kind (see: python -m core tasks)")
        sp.add_argument("set", nargs="*", type=setting, metavar="KEY=VALUE",
                        help="settings; dotted keys for nested ones (prune.amount=0.9)")
        sp.add_argument("--config", metavar="JSON", help="settings as one JSON object (KEY=VALUE pairs override it)")
        if name == "submit":
            sp.add_argument("--wait", action="store_true", help="wait until the job ends")
    for mod in COMMAND_MODULES:
        mod.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one `error:` line: 2 for bad input or a workspace that
    cannot be used (say how to recover), 1 for an internal error (WORKBENCH_DEBUG=1 shows it)."""
    import os
    import sqlite3

    args = None
    try:
        args = build_parser().parse_args(argv)
        if args.runner:
            os.environ["WORKBENCH_RUNNER"] = args.runner   # the queue reads it, as in a server
        if args.command == "submit" and runner_name() == "ray":
            args.wait = True   # a Ray job's actor belongs to this process: exiting now would interrupt it
        result = COMMANDS[args.command](args, lambda: Workspace(args.workspace))
    except (CliError, VariantNotFound, VariantHasChildren, VariantInUse, WorkspaceError, ValueError,
            FileNotFoundError) as e:
        return _fail(e, EXIT_USAGE)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (sqlite3.DatabaseError, OSError) as e:
        if is_disk_full(e):
            return _fail(f"the workspace's disk is full or cannot be written ({e}); free some space and try again",
                         EXIT_USAGE)
        if isinstance(e, sqlite3.DatabaseError):
            return _fail(f"the workspace database cannot be read ({e}); run `python -m core check`, then "
                         "`python -m core repair`", EXIT_USAGE)
        return _fail(f"{e.strerror or e}" + (f": {e.filename}" if getattr(e, "filename", None) else ""), EXIT_USAGE)
    except Exception as e:  # noqa: BLE001 - a bug, not the user's input: still one line, exit 1
        if os.environ.get("WORKBENCH_DEBUG"):
            raise
        return _fail(f"internal error: {type(e).__name__}: {e} (set WORKBENCH_DEBUG=1 for the traceback)", 1)
    if args.json:
        print(json.dumps(json_safe(result), allow_nan=False))   # NaN (not measurable) is null
    return getattr(args, "exit_code", 0)


def _fail(e, code: int) -> int:
    text = " ".join(str(e).split()) or type(e).__name__   # exactly one line
    print(f"error: {text}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
