"""The `export` command of the CLI: write a variant in a download format, reload-verified first.

    python -m core export VARIANT --format safetensors|compact|onnx|recipe|bundle --out PATH [--force]

PATH is a file name, or an existing folder (the file keeps its export name). What goes with the
file is written beside it: model_card.json (safetensors), load_compact.py (compact). A format that
does not apply to the variant, or a file that failed its check, is an error that says why.
`core.cli.main` finds this module by name and calls `add_commands(sub, whole, number)`.
"""
from __future__ import annotations

from core.io.export.pipeline import FORMATS, export, save_to


def add_commands(sub) -> None:
    sp = sub.add_parser("export", help="write a variant as safetensors, compact, onnx, recipe or a bundle zip "
                                       "(each file reloaded and checked in a fresh process first)")
    sp.add_argument("variant", help="variant id, id prefix or name")
    sp.add_argument("--format", required=True, choices=list(FORMATS), help="what to write (see the Export page)")
    sp.add_argument("--out", required=True, metavar="PATH", help="the file to write, or an existing folder")
    sp.add_argument("--force", action="store_true", help="export and check again even when a checked file is cached")


def cmd_export(args, ws_factory) -> dict:
    from pathlib import Path

    out = Path(args.out)
    if not out.is_dir() and not out.parent.is_dir():
        raise ValueError(f"--out {args.out}: the folder {out.parent} does not exist")
    ws = ws_factory()
    v = ws.get_variant(args.variant)
    r = export(ws, v, args.format, force=args.force)
    if not r.ok:
        what = "is not available for" if r.status == "unavailable" else "failed its check for"
        raise ValueError(f"{args.format} {what} {v.name} ({v.id}): {r.message}")
    written = save_to(r, out)
    if not args.json:
        print(f"{args.format} of {v.name} ({v.id}): {r.message}")
        for p in written:
            print(f"  wrote {p} ({p.stat().st_size:,} bytes)")
    return {"id": v.id, "format": args.format, "status": r.status, "files": [str(p) for p in written],
            "size_bytes": r.size_bytes, "max_abs_diff": r.max_abs_diff, "agreement": r.agreement,
            "n_images": r.n_images, "message": r.message}


COMMANDS = {"export": cmd_export}
