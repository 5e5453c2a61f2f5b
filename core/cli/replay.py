"""The `replay` command of the CLI: run every step of a recipe again from its root.

    python -m core replay RECIPE.json [--no-reuse-root] [--name NAME]

RECIPE.json is a list of step objects (what the Export page's "recipe" download holds), or a JSON
object with a `recipe` list (a variant record or a model card). The first step makes the root: with
the default `--reuse-root` a variant here made by exactly that step is used (the shipped baselines
are); `--no-reuse-root` makes it again (trains it). Every later step runs again with its recorded
settings and seed. The result is compared with any variant here that has the same recipe.

`core.cli.main` imports it: `add_commands` and `COMMANDS`.
"""
from __future__ import annotations

import sys
from pathlib import Path

from core.base.limits import MAX_RECIPE_BYTES
from core.cli.common import progress_bar, result_of
from core.tasks import TaskContext
from core.tasks.recipe_replay import parse_recipe, preflight, replay_in


def add_commands(sub) -> None:
    """Add the `replay` parser to `sub` (`whole` and `number`: core.cli.main's bounded argparse types)."""
    sp = sub.add_parser("replay", help="re-run every step of a recipe (JSON) from its root, each with its "
                                       "recorded seed, and compare the result with the original")
    sp.add_argument("recipe", metavar="RECIPE.json",
                    help="a JSON list of recipe steps, or an object with a \"recipe\" list (a variant record)")
    sp.add_argument("--reuse-root", dest="reuse_root", action="store_true", default=True,
                    help="start from a variant here made by exactly the recipe's first step (default)")
    sp.add_argument("--no-reuse-root", dest="reuse_root", action="store_false",
                    help="make the root again too (train it), even when such a variant exists")
    sp.add_argument("--name", help="name of the replayed variant (default: the last step's usual name)")


def read_recipe(path: str) -> list[dict]:
    """The checked recipe in file `path`; ValueError (one line) for a missing, huge or bad file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such recipe file: {path}")
    size = p.stat().st_size
    if size > MAX_RECIPE_BYTES:
        raise ValueError(f"{path} is {size:,} bytes; a recipe file is at most {MAX_RECIPE_BYTES:,} bytes")
    return parse_recipe(p.read_bytes())


def cmd_replay(args, ws_factory) -> dict:
    """Replay a recipe; prints each step's variant and the replayed vs original metrics."""
    recipe = read_recipe(args.recipe)
    ws = ws_factory()
    plan = preflight(ws, recipe, reuse_root=args.reuse_root)     # refused here, before anything runs
    if not args.json:
        for line in plan:
            print(f"  {line}")
    on_progress, close = progress_bar(f"Replay {len(recipe)} step{'s' if len(recipe) != 1 else ''}")
    log = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr))
    try:
        result = replay_in(TaskContext(ws, on_progress=on_progress, log=log), recipe, reuse_root=args.reuse_root,
                           name=args.name)
    finally:
        close()
    out = result.to_dict()
    v = result.variant
    summary = {**result_of(v, args), "replay": out}
    if not args.json:
        for s in out["steps"]:
            print(f"  step {s['index']} {s['step']:<14} {'reused ' if s['reused'] else 'made   '}{s['variant_id']}")
        for o in out["originals"][:1]:
            print(f"  original {o['name']} ({o['id']}): accuracy {o['accuracy']:.4f}, params {o['params']:,}, "
                  f"non-zero {o['nonzero_params']:,}")
            print(f"  replayed {v.name} ({v.id}): accuracy {v.metrics['accuracy']:.4f}, params "
                  f"{v.metrics['params']:,}, non-zero {v.metrics['nonzero_params']:,} "
                  + (f"({out['accuracy_delta_points']:+.2f} points)" if "accuracy_delta_points" in out else ""))
        if not out["originals"]:
            print("  no variant in this workspace has this recipe to compare with")
    return summary


COMMANDS = {"replay": cmd_replay}
