"""Workspace administration commands of the CLI: check, repair, import, delete, restore-baselines,
jobs. Kept apart from core/cli/main.py (the step commands) so each stays small.

    python -m core check                      # the index against the files; exit 1 when not healthy
    python -m core repair                     # rebuild the index from the variant files
    python -m core import FILE [--model NAME] [--dataset NAME] [--name NAME]
    python -m core delete VARIANT [--cascade | --reparent]
    python -m core restore-baselines          # bring back deleted shipped baselines
    python -m core jobs [--state STATE]       # read-only: works on a full disk
"""
from __future__ import annotations

from core.cli.common import print_table, whole
from core.store.checkpoints import import_file
from core.store.jobstore import JOB_STATES
from core.store.repair import check, repair


def cmd_check(args, ws_factory) -> dict:
    rep = check(args.workspace)
    if not args.json:
        print("\n".join(rep.lines()))
    out = {"ok": rep.ok, "database": rep.database, "indexed": rep.indexed, "on_disk": rep.on_disk,
           "unindexed": rep.unindexed, "missing_files": rep.missing_files, "unreadable": rep.unreadable}
    if not rep.ok:
        args.exit_code = 1   # a health check: problems found is not a usage error
    return out


def cmd_repair(args, ws_factory) -> dict:
    rep = repair(args.workspace)
    if not args.json:
        print("\n".join(rep.lines()))
    return {"moved_aside": str(rep.moved_aside) if rep.moved_aside else None, "restored": rep.restored,
            "dropped_rows": rep.dropped_rows, "notes": rep.notes}


def cmd_import(args, ws_factory) -> dict:
    ws = ws_factory()
    v = import_file(ws, args.file, model_name=args.model, dataset=args.dataset, name=args.name, device=args.device)
    if not args.json:
        print(f"imported {args.file} as variant {v.id}: {v.name}, test accuracy {v.metrics['accuracy']:.4f}")
    return {"id": v.id, "name": v.name, "kind": v.kind, **v.metrics}


def cmd_delete(args, ws_factory) -> dict:
    ws = ws_factory()
    v = ws.get_variant(args.variant)
    gone = ws.delete_variant(v.id, cascade=args.cascade, reparent=args.reparent)
    if not args.json:
        print(f"deleted {', '.join(gone)}")
    return {"deleted": gone}


def cmd_restore_baselines(args, ws_factory) -> dict:
    ws = ws_factory()
    added = ws.restore_baselines()
    if not args.json:
        print(f"restored {', '.join(v.id for v in added)}" if added else "every shipped baseline is already here")
    return {"restored": [v.id for v in added]}


def cmd_jobs(args, ws_factory) -> dict:
    ws = ws_factory()
    jobs = ws.jobs.list(states=tuple(args.state) if args.state else None, limit=args.limit)
    if not args.json:
        if not jobs:
            print("no jobs")
        else:
            print_table([{"id": j.id, "state": j.state, "progress": f"{j.progress:.0%}", "title": j.title,
                          "variant": j.variant_id or ""} for j in jobs], ["id", "state", "progress", "title", "variant"])
    return {"jobs": [{"id": j.id, "kind": j.kind, "state": j.state, "title": j.title, "progress": j.progress,
                      "variant_id": j.variant_id, "error": j.error} for j in jobs]}


COMMANDS = {"check": cmd_check, "repair": cmd_repair, "import": cmd_import, "delete": cmd_delete,
            "restore-baselines": cmd_restore_baselines, "jobs": cmd_jobs}


def add_commands(sub) -> None:
    sub.add_parser("check", help="check the index against the variant files (exit 1 when not healthy)")
    sub.add_parser("repair", help="rebuild the index from the variant files (a damaged database is moved aside)")
    sp = sub.add_parser("import", help="import a checkpoint file (safetensors or a .pt state_dict) as a root variant")
    sp.add_argument("file")
    sp.add_argument("--model", help="registered architecture (default: the one a workbench file names)")
    sp.add_argument("--dataset", default="fashion-mnist")
    sp.add_argument("--name")
    sp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    sp = sub.add_parser("delete", help="delete a variant (refused while a job uses it)")
    sp.add_argument("variant", help="variant id, id prefix or name")
    how = sp.add_mutually_exclusive_group()
    how.add_argument("--cascade", action="store_true", help="also delete its descendants")
    how.add_argument("--reparent", action="store_true", help="its children move to its parent")
    sub.add_parser("restore-baselines", help="bring back the shipped baselines that were deleted")
    sp = sub.add_parser("jobs", help="list jobs (read-only)")
    sp.add_argument("--state", action="append", choices=JOB_STATES)
    sp.add_argument("--limit", type=whole(1, 10_000), default=50)


