"""Copy a trained variant into baselines/ so that every new workspace starts with it.

    .venv/bin/python scripts/ship_baseline.py --workspace /tmp/bw VARIANT STEM

The shipped file is the variant's own weights (safetensors) with its name, arch, recipe and
measured metrics in the header's metadata; Workspace.seed_baselines imports it as `base-STEM`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.formats import encoding as formats  # noqa: E402
from core.store.workspace import BASELINES_DIR, Workspace, atomic_write  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", required=True)
    ap.add_argument("variant")
    ap.add_argument("stem", help="file name under baselines/, e.g. lenet5")
    ap.add_argument("--name", help="display name (default: the variant's)")
    a = ap.parse_args()
    ws = Workspace(a.workspace, seed_baselines=False)
    v = ws.get_variant(a.variant)
    state, meta = formats.load_file(ws.weights_path(v))
    info = {"name": a.name or v.name, "dataset": v.dataset, "arch": v.arch, "recipe": v.recipe,
            "metrics": v.metrics, "kind": v.kind, "notes": v.notes}
    meta = {k: val for k, val in meta.items() if k != formats.FORMAT_KEY}
    data, fmt = formats.encode_best(state, {**meta, "variant": json.dumps(info)})
    out = BASELINES_DIR / f"{a.stem}.safetensors"
    atomic_write(out, data)
    print(f"wrote {out} ({len(data):,} bytes, {fmt}): {info['name']}, accuracy {v.metrics['accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
