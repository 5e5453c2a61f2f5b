"""Learn lessons: how long every live experiment of every lesson file takes to answer, on this CPU.

    .venv/bin/python bench/lessons_bench.py [--repeats 3] [--only which-weights-go,...] [--no-buttons]

For each lesson (lessons/NN-<id>.md) in a fresh process and a fresh temporary workspace seeded with
the shipped baselines: one warm-up call at the default settings (its time is reported as the
first call: loading the model, the data and the per-process caches), then the default settings
and each control moved, one at a time, to a few values (every option of a select or radio; min,
middle and max of a slider). A setting's first call is what a student waits for when moving the
control there (`first_s`); `median_s`/`max_s` are over that call and `--repeats - 1` more (the
per-process caches answer those). A button (e.g. "Re-run the scan live") is timed once, pressed,
and reported apart: it is allowed to take longer and says so on the page. The worst case over
every setting's first call is what the 2-second target is about.

Results: bench/results/lessons_bench.md and .json, with the date, the machine and its load
average (on a 2-core machine shared with other work the numbers are rough).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.bench_common import md_table  # noqa: E402

warnings.filterwarnings("ignore")


from core.lessons.content import Lesson, default_params, load_lessons  # noqa: E402
from core.lessons.experiments import run_experiment  # noqa: E402
from core.measure.lane import CpuWatch, device_label  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402

RESULTS = REPO / "bench" / "results"
TARGET_S = 2.0


def moves(lesson: Lesson) -> list[tuple[str, dict]]:
    """(setting label, params): the defaults, then each value control moved alone to a few values."""
    base = default_params(lesson)
    out = [("defaults", dict(base))]
    for c in lesson.controls:
        if c.type == "button":
            continue
        if c.type in ("select", "radio"):
            values = list(c.options)
        else:
            mid = c.min + round((c.max - c.min) / 2 / c.step) * c.step
            values = [c.min, mid, c.max]
            if isinstance(c.default, int):
                values = [int(v) for v in values]
            else:
                values = [round(float(v), 6) for v in values]
        for v in dict.fromkeys(values):
            if v != base[c.key]:
                out.append((f"{c.key}={v}", {**base, c.key: v}))
    return out


def timed(name: str, ws, params: dict) -> tuple[float, str | None]:
    t = time.perf_counter()
    try:
        run_experiment(name, ws, params)
        err = None
    except Exception as e:  # noqa: BLE001  (a failing experiment is a result row, not the end of the bench)
        err = f"{type(e).__name__}: {e}"
    return time.perf_counter() - t, err


def bench_lesson(ws, lesson: Lesson, repeats: int, buttons: bool) -> tuple[dict, list[dict]]:
    first, err = timed(lesson.experiment, ws, default_params(lesson))
    warm = {"lesson": lesson.id, "experiment": lesson.experiment, "first_call_s": round(first, 3), "error": err}
    rows = []
    for label, params in moves(lesson):
        times, err = [], None
        for _ in range(max(1, repeats)):
            t, err = timed(lesson.experiment, ws, params)
            times.append(t)
            if err:
                break
        rows.append({"lesson": lesson.id, "experiment": lesson.experiment, "setting": label, "kind": "control",
                     "calls": len(times), "first_s": round(times[0], 3), "median_s": round(statistics.median(times), 3),
                     "max_s": round(max(times), 3), "under_2s": max(times) < TARGET_S, "error": err})
    if buttons:
        for c in lesson.controls:
            if c.type == "button":
                t, err = timed(lesson.experiment, ws, {**default_params(lesson), c.key: True})
                rows.append({"lesson": lesson.id, "experiment": lesson.experiment, "setting": f"{c.key} pressed",
                             "kind": "button", "calls": 1, "first_s": round(t, 3), "median_s": round(t, 3),
                             "max_s": round(t, 3), "under_2s": t < TARGET_S, "error": err})
    return warm, rows


def table(rows: list[dict], cols: list[str]) -> str:
    return md_table(rows, cols) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="calls per setting (the first one is the move itself)")
    ap.add_argument("--only", default="", help="comma-separated lesson ids (default: every lesson file)")
    ap.add_argument("--no-buttons", action="store_true", help="do not press the lessons' buttons (long live runs)")
    ap.add_argument("--out", default="lessons_bench")
    ap.add_argument("--results", default=str(RESULTS))
    a = ap.parse_args()
    lessons = load_lessons()
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = [o for o in only if o not in {x.id for x in lessons}]
    if unknown:
        raise SystemExit(f"unknown lesson id(s): {', '.join(unknown)}; known: {', '.join(x.id for x in lessons)}")
    lessons = [x for x in lessons if not only or x.id in only]
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load_before = os.getloadavg()
    warms, rows = [], []
    with tempfile.TemporaryDirectory() as tmp, CpuWatch() as watch:
        ws = Workspace(Path(tmp) / "ws")
        for lesson in lessons:
            print(f"{lesson.id} ({lesson.experiment}) ...", flush=True)
            w, r = bench_lesson(ws, lesson, a.repeats, not a.no_buttons)
            warms.append(w)
            rows.extend(r)
            for row in r:
                print(f"  {row['setting']:<28} first {row['first_s']:7.3f} s  median {row['median_s']:7.3f} s  "
                      f"max {row['max_s']:7.3f} s" + (f"  ERROR {row['error']}" if row["error"] else ""), flush=True)
    load_after = os.getloadavg()
    other = f"{watch.other_cores:.2f}" if watch.other_cores is not None else "unknown"
    controls = [r for r in rows if r["kind"] == "control" and not r["error"]]
    worst = max(controls, key=lambda r: r["max_s"]) if controls else None
    errors = [r for r in rows + warms if r.get("error")]
    dev = device_label("cpu")
    cmd = (".venv/bin/python bench/lessons_bench.py " + " ".join(sys.argv[1:])).strip()
    text = (f"# Learn lessons benchmark ({when}, {dev}, torch {torch.__version__})\n\nCommand: `{cmd}`. Load average "
            f"before {load_before[0]:.2f}, after {load_after[0]:.2f}; other processes used {other} CPU cores on "
            "average during the run" + (" (a busy machine: these numbers are rough, slower than on an idle one)"
                                        if watch.other_cores is not None and watch.other_cores > 0.25 else "")
            + ".\n\nEach lesson's experiment as the Learn page calls it, in one process: a warm-up call at the "
            f"defaults (first call), then each setting: its first call (the control just moved there) and "
            f"{a.repeats - 1} more; median and max over those {a.repeats}. Target: under {TARGET_S:.0f} s per "
            "answer after the first call; buttons (long live runs) are reported apart.\n\n"
            "## First call per lesson (loads the model, data and per-process caches)\n\n"
            + table(warms, ["lesson", "experiment", "first_call_s", "error"])
            + "\n## Every setting\n\n"
            + table(rows, ["lesson", "experiment", "setting", "kind", "calls", "first_s", "median_s", "max_s",
                           "under_2s", "error"]))
    if worst:
        text += (f"\n**Worst case after the first call (controls)**: {worst['max_s']:.2f} s, {worst['lesson']} with "
                 f"{worst['setting']} ({'under' if worst['max_s'] < TARGET_S else 'OVER'} the {TARGET_S:.0f} s target).\n")
    slow = [r for r in controls if r["max_s"] >= TARGET_S]
    if slow:
        text += "Over the target: " + ", ".join(f"{r['lesson']} {r['setting']} ({r['max_s']:.2f} s)" for r in slow) + ".\n"
    for r in rows:
        if r["kind"] == "button" and not r["error"]:
            text += f"Button: {r['lesson']} {r['setting']} took {r['max_s']:.2f} s (a live run the page labels).\n"
    if errors:
        text += "\nErrors: " + "; ".join(f"{r['lesson']} {r.get('setting', 'first call')}: {r['error']}"
                                         for r in errors) + "\n"
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / f"{a.out}.md").write_text(text)
    (res / f"{a.out}.json").write_text(json.dumps({
        "when": when, "device": dev, "command": cmd, "load_before": load_before, "load_after": load_after,
        "other_cores": other, "target_s": TARGET_S, "first_calls": warms, "rows": rows,
        "worst": worst}, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
