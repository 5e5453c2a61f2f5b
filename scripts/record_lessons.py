"""Record what a Learn lesson cannot measure within about two seconds, into lessons/recorded/.

    .venv/bin/python scripts/record_lessons.py [--only sensitivity-base-lenet5.json,...] [--workspace DIR] [--list]

Every `core/lessons/exp_*.py` module may define `RECORDINGS = {"file-name.json": fn}` with
`fn(ws: Workspace) -> dict` (JSON-serialisable). Each one runs here on the shipped baselines (a fresh
temporary workspace seeded with them, unless --workspace is given) and is written to
`lessons/recorded/<file-name.json>` with `recorded_at` (UTC), `device`, `command` and the load
average, which the lesson shows beside the result ("recorded on ..., re-record with ...").
Keep recordings small (a few kB): they are committed.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from core.lessons.common import recorded_dir  # noqa: E402
from core.measure.lane import CpuWatch, device_label  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402

MAX_BYTES = 64_000   # tests/test_lessons.py refuses a shipped recording above this


def find_recordings() -> dict[str, tuple[str, object]]:
    """file name -> (module name, function) over every core/lessons/exp_*.py module's RECORDINGS."""
    import core.lessons as pkg

    found: dict[str, tuple[str, object]] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if not info.name.startswith("exp_"):
            continue
        mod = importlib.import_module(f"core.lessons.{info.name}")
        for name, fn in (getattr(mod, "RECORDINGS", None) or {}).items():
            if not name.endswith(".json") or "/" in name:
                raise SystemExit(f"{mod.__name__}.RECORDINGS: {name!r} must be a plain file name ending in .json")
            if name in found:
                raise SystemExit(f"recording {name} is defined twice: {found[name][0]} and {mod.__name__}")
            found[name] = (mod.__name__, fn)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="", help="comma-separated file names (default: every recording)")
    ap.add_argument("--workspace", default=None, help="a workspace holding the shipped baselines "
                    "(default: a fresh temporary one)")
    ap.add_argument("--out", default=None, help="folder to write to (default: lessons/recorded)")
    ap.add_argument("--list", action="store_true", help="list the recordings and exit")
    a = ap.parse_args(argv)
    found = find_recordings()
    if a.list:
        for name, (mod, _) in found.items():
            print(f"{name}  ({mod})")
        return 0
    wanted = [s.strip() for s in a.only.split(",") if s.strip()] or list(found)
    unknown = [w for w in wanted if w not in found]
    if unknown:
        print(f"unknown recording(s): {', '.join(unknown)}; known: {', '.join(found) or 'none'}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else recorded_dir()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(a.workspace or Path(tmp) / "ws")
        for name in wanted:
            mod, fn = found[name]
            print(f"recording {name} ({mod}) ...", flush=True)
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            with CpuWatch() as watch:
                data = fn(ws)
            if not isinstance(data, dict):
                raise SystemExit(f"{mod}: the recording of {name} returned {type(data).__name__}, not a dict")
            command = f".venv/bin/python scripts/record_lessons.py --only {name}"
            other = watch.other_cores
            record = {"recorded_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                      "device": device_label("cpu"), "command": command,
                      "load_average": round(load, 2),
                      "other_cores": round(other, 2) if other is not None else None,
                      "record_seconds": round(time.perf_counter() - t0, 1), **data}
            text = json.dumps(record, indent=1, default=_plain)
            tmp_path = out / f".{name}.tmp"
            tmp_path.write_text(text + "\n")
            os.replace(tmp_path, out / name)
            print(f"  wrote {out / name} ({len(text):,} bytes, {record['record_seconds']} s)", flush=True)
            if len(text) > MAX_BYTES:
                print(f"  warning: {name} is over {MAX_BYTES // 1000} kB; recordings are committed, keep them small "
                      "(round numbers, store curves at fewer points)", file=sys.stderr)
    return 0


def _plain(x):
    """numpy / torch scalars and tuples that json cannot write by itself."""
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, (set, frozenset)):
        return sorted(x)
    raise TypeError(f"cannot record a {type(x).__name__} as JSON")


if __name__ == "__main__":
    sys.exit(main())
