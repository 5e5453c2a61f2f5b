"""Timing stability: do the speed-ups the workbench shows hold when the machine is busy?

The same three pairs, timed in the one measurement lane (`core.measure.lane`) on an idle machine
and with 1 and 2 CPU-burning background processes (`while True: pass`, started before and killed
after each condition), each condition `--repeats` times:

1. LeNet-5 (shipped baseline) vs its 50% channel-pruned child (`prune`, method `channel`);
2. LeNet-5 float vs its static int8 (`quantize`, `static-int8`, 4 calibration batches);
3. ResNet-small float vs its static int8;

in PyTorch eager (`time_models`), in ONNX Runtime and in OpenVINO (`time_graphs`; int8 = ONNX Runtime static
QDQ of the float parent), at batch 64 and batch 1. Per pair x runtime x batch x condition: the
ratio shown (parent / child, with its 95% interval) or "not measurable now" with the reason, and
whether the shown ratio lies within +/-10% of the idle ratio (the median of the idle repeats).
"Contradicting figures": a pair x runtime x batch called faster (>= 1.1x) in one measurement and
slower (<= 1/1.1) in another. Acceptance row: `python -m core --json eval base-lenet5` in a
temporary workspace, idle and with 2 burners: its batch-64 latency is within +/-25% of the idle
figure, or reported as not measurable with the reason.

    .venv/bin/python bench/timing_stability.py [--repeats 3] [--budget 10] [--quick] [--out NAME]

Results: bench/results/<out>.md and .json. Run the full one on an otherwise idle machine (the
burners are the only load it means to measure under); --quick is a smoke run (one repeat, pairs
1-2, small budgets: its figures are not measurements).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
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

from core.compress.pruning.prune import PruneConfig, prune  # noqa: E402
from core.compress.quant.quantize import QuantConfig, calibration_batches, quantize  # noqa: E402
from core.data.datasets import cached_dataset  # noqa: E402
from core.measure.lane import device_label, other_cores_now  # noqa: E402
from core.measure.latency import time_models  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402

RESULTS = REPO / "bench" / "results"
BATCHES = (64, 1)
CONDITIONS = (0, 1, 2)                 # CPU-burning background processes
NEAR_IDLE = 0.10                       # a shown ratio within +/-10% of the idle ratio
CLI_NEAR_IDLE = 0.25                   # the CLI's b64 latency within +/-25% of its idle figure
LANE_WAIT_S = 60.0                     # how long a lane call waits for another measurement to finish
CALLED = 1.1                           # >= 1.1x: called faster; <= 1/1.1: called slower
RUNTIMES = {"torch": "PyTorch eager", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}
PREFIXES = (("", "torch"), ("ort_", "onnxruntime"), ("ov_", "openvino"))
# The burner sets PR_SET_PDEATHSIG (prctl option 1) to SIGKILL: it dies with this script, whatever happens.
BURN = ("import ctypes, signal\ntry:\n    ctypes.CDLL(None).prctl(1, signal.SIGKILL)\nexcept Exception:\n    pass\n"
        "while True:\n    pass\n")


@contextlib.contextmanager
def burners(n: int):
    """`n` processes burning one core each for the block, killed (by their own ids) after it."""
    procs: list[subprocess.Popen] = []
    try:
        for _ in range(n):
            procs.append(subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        if procs:
            time.sleep(0.5)            # started and spinning before the first pass
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


# ---------------------------------------------------------------- the pairs

def build_pairs(names: list[str], data) -> list[dict]:
    """Each pair: the float parent and its child as torch modules, and their ONNX Runtime sessions
    (or the reason there are none)."""
    ws = Workspace(tempfile.mkdtemp(prefix="timing-stability-"), seed_baselines=True)
    shape = tuple(data.info.input_shape)
    calib = calibration_batches(data.train, 4)
    pairs = []
    for key in names:
        model_name, change = {"prune": ("lenet5", "prune"), "lenet5-int8": ("lenet5", "int8"),
                              "resnet-int8": ("resnet-small", "int8")}[key]
        parent = ws.load_model(ws.get_variant(f"base-{model_name}")).eval()
        if change == "prune":
            child, _ = prune(parent, PruneConfig(method="channel", amount=0.5), input_shape=shape)
            label = "LeNet-5 vs channel-pruned 50%"
        else:
            child, _ = quantize(parent, QuantConfig(mode="static-int8"), calib)
            label = f"{'LeNet-5' if model_name == 'lenet5' else 'ResNet-small'} float vs static int8"
        pair = {"pair": label, "parent": parent, "child": child.eval(), "graphs": None, "ort_model": "",
                "ort_unavailable": ""}
        try:   # the same ONNX graphs for ONNX Runtime and OpenVINO
            from core.measure.runtimes import calibration_arrays, onnx_bytes, onnx_runtime_model
            child_bytes, what = onnx_runtime_model(child, shape, parent, calibration_arrays(torch.cat(calib)))
            pair["graphs"] = {"parent": onnx_bytes(parent, shape), "child": child_bytes}
            pair["ort_model"] = f"fp32 parent vs {what} child"
        except Exception as e:  # noqa: BLE001 - OnnxUnavailable, no onnxruntime: said in the table
            pair["ort_unavailable"] = f"no ONNX Runtime figures: {type(e).__name__}: {e}"
        print(f"built {label} (ONNX Runtime: {pair['ort_model'] or pair['ort_unavailable']})", flush=True)
        pairs.append(pair)
    return pairs


def measure(pair: dict, runtime: str, shape, budget_s: float) -> list[dict]:
    """One call of the lane for the pair in one runtime (both batches): a record per batch. It waits
    up to LANE_WAIT_S for another measurement (another process) to release the lane: the load this
    benchmark means to measure under is the burners', not a lane held elsewhere."""
    wait_s = max(budget_s, LANE_WAIT_S)
    if runtime != "torch" and pair["graphs"] is None:
        return [{"batch": b, "ratio": None, "low": None, "high": None, "reason": pair["ort_unavailable"]}
                for b in BATCHES]
    if runtime == "torch":
        rep = time_models({"parent": pair["parent"], "child": pair["child"]}, shape, BATCHES, budget_s=budget_s,
                          wait_s=wait_s)
    else:
        from core.measure.runtimes import time_graphs
        rep = time_graphs(runtime, pair["graphs"], shape, BATCHES, budget_s=budget_s, wait_s=wait_s)
    out = []
    for b in BATCHES:
        f = rep.ratio_figure("parent", "child", b)
        tp, tc = rep.timings["parent"][b], rep.timings["child"][b]
        out.append({"batch": b, "ratio": f.value, "low": f.low, "high": f.high, "reason": f.reason,
                    "parent_ms": rep.shown_ms("parent", b), "child_ms": rep.shown_ms("child", b),
                    "clean": tp.runs + tc.runs, "dropped": tp.dropped + tc.dropped,
                    "other_cores": rep.other_cores, "seconds": rep.seconds})
    return out


# ---------------------------------------------------------------- the acceptance row: the CLI

def cli_eval(ws_root: str) -> dict:
    """`python -m core --json eval base-lenet5` in the workspace `ws_root`: its b64 latencies."""
    env = {**os.environ, "WORKBENCH_HOME": ws_root, "PYTHONUNBUFFERED": "1"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "core", "--json", "eval", "base-lenet5"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        return {"error": f"exit {p.returncode}: {p.stderr.strip()[-300:]}", "seconds": seconds}
    m = json.loads(p.stdout.strip().splitlines()[-1])
    out = {"seconds": seconds, "other_cores": m.get("latency_other_cores")}
    card = (m.get("latency") or {}).get("runtimes") or {}     # the CLI's latency card, where it prints one
    for prefix, runtime in PREFIXES:
        fig = ((card.get(runtime) or {}).get("batches") or {}).get("64")
        if fig is not None:
            v, ci, why = fig.get("median_ms"), fig.get("ci_ms"), fig.get("reason") or ""
            status = fig.get("status", "")
        else:     # the flat metric keys (NaN, or null in strict JSON, = not measurable)
            v, ci = m.get(f"{prefix}latency_ms_b64"), m.get(f"{prefix}latency_ms_b64_ci")
            why, status = m.get(f"{prefix}latency_unmeasured") or "", ""
        ok = isinstance(v, (int, float)) and math.isfinite(v) and status in ("", "measured")
        out[prefix + "b64_ms"] = float(v) if ok else None
        out[prefix + "b64_ci"] = ci if ok else None
        out[prefix + "reason"] = why or ("" if ok else (m.get(f"{prefix}unavailable") or status or ""))
    return out


# ---------------------------------------------------------------- the tables

def ratio_words(r: dict) -> str:
    if r["ratio"] is not None:
        return f"{r['ratio']:.2f}x ({r['low']:.2f}-{r['high']:.2f})"
    return "withheld"


def near(value: float | None, ref: float | None, tol: float) -> bool | None:
    if value is None or ref is None:
        return None
    return abs(value / ref - 1) <= tol


def summarise(records: list[dict]) -> tuple[list[dict], list[dict], dict]:
    """(table rows per pair x runtime x batch x condition, contradictions, counts)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["pair"], r["runtime"], r["batch"]), []).append(r)
    rows, contradictions = [], []
    counts = {"figures": len(records), "shown": 0, "withheld": 0, "near_idle": 0, "compared": 0,
              "by_condition": {n: {"shown": 0, "withheld": 0, "near_idle": 0, "compared": 0} for n in CONDITIONS}}
    for (pair, runtime, batch), rs in groups.items():
        idle = [r["ratio"] for r in rs if r["burners"] == 0 and r["ratio"] is not None]
        idle_ratio = statistics.median(idle) if idle else None
        for r in rs:
            r["idle_ratio"] = idle_ratio
            r["near_idle"] = near(r["ratio"], idle_ratio, NEAR_IDLE)
            c = counts["by_condition"][r["burners"]]
            key = "shown" if r["ratio"] is not None else "withheld"
            counts[key] += 1
            c[key] += 1
            if r["near_idle"] is not None:
                counts["compared"] += 1
                c["compared"] += 1
                counts["near_idle"] += r["near_idle"]
                c["near_idle"] += r["near_idle"]
        shown = [r for r in rs if r["ratio"] is not None]
        faster = [r for r in shown if r["ratio"] >= CALLED]
        slower = [r for r in shown if r["ratio"] <= 1 / CALLED]
        if faster and slower:
            contradictions.append({"pair": pair, "runtime": RUNTIMES[runtime], "batch": batch,
                                   "faster": [ratio_words(r) + f" ({r['burners']} burners)" for r in faster],
                                   "slower": [ratio_words(r) + f" ({r['burners']} burners)" for r in slower]})
        for n in CONDITIONS:
            cond = [r for r in rs if r["burners"] == n]
            if not cond:
                continue
            compared = [r for r in cond if r["near_idle"] is not None]
            reasons = sorted({r["reason"] for r in cond if r["ratio"] is None})
            rows.append({"pair": pair, "runtime": RUNTIMES[runtime], "batch": batch, "burners": n,
                         "shown": f"{sum(r['ratio'] is not None for r in cond)}/{len(cond)}",
                         "ratios (95% interval)": "; ".join(ratio_words(r) for r in cond),
                         "idle ratio": f"{idle_ratio:.2f}x" if idle_ratio else "no idle figure",
                         "within 10% of idle": (f"{sum(r['near_idle'] for r in compared)}/{len(compared)}"
                                                if compared else "-"),
                         "withheld because": "; ".join(reasons) or "-",
                         "dropped passes": sum(r.get("dropped", 0) for r in cond),
                         "other cores": "/".join(f"{r['other_cores']:.1f}" if r.get("other_cores") is not None
                                                 else "?" for r in cond)})
    counts["contradictions"] = len(contradictions)
    return rows, contradictions, counts


def cli_rows(runs: list[dict]) -> list[dict]:
    rows = []
    for prefix, title in ((p, RUNTIMES[r]) for p, r in PREFIXES):
        idle = [r[prefix + "b64_ms"] for r in runs if r["burners"] == 0 and r.get(prefix + "b64_ms") is not None]
        idle_ms = statistics.median(idle) if idle else None
        for r in runs:
            ms = r.get(prefix + "b64_ms")
            ok = near(ms, idle_ms, CLI_NEAR_IDLE)
            if "error" in r:
                shown, ok, why = "CLI failed", False, r["error"]
            elif ms is None:
                shown, why = "not measurable now", r.get(prefix + "reason") or "(no reason given)"
                ok = bool(r.get(prefix + "reason"))      # withheld is fine, when it says why
            else:
                ci = r.get(prefix + "b64_ci") or [float("nan")] * 2
                shown, why = f"{ms:.2f} ms ({ci[0]:.2f}-{ci[1]:.2f})", "-"
            rows.append({"runtime": title, "burners": r["burners"], "repeat": r["repeat"], "b64 latency": shown,
                         "idle b64": f"{idle_ms:.2f} ms" if idle_ms else "no idle figure",
                         "within 25% of idle or withheld with reason": "-" if ok is None else ("yes" if ok else "NO"),
                         "reason": why, "CLI s": f"{r.get('seconds', 0):.1f}"})
    return rows


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None, help="measurements per condition (default 3; quick: 1)")
    ap.add_argument("--budget", type=float, default=None, help="seconds per lane call, both batches (default 10; "
                    "quick: 1.5)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: one repeat, pairs 1-2, small budgets "
                    "(about a minute; its figures are not measurements)")
    ap.add_argument("--no-cli", action="store_true", help="skip the acceptance row (python -m core eval)")
    ap.add_argument("--out", default=None, help="results name (default timing_stability; quick: timing_stability_quick)")
    ap.add_argument("--results", default=str(RESULTS), help="folder for the .md and .json")
    args = ap.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    budget = args.budget or (1.5 if args.quick else 10.0)
    out = args.out or ("timing_stability_quick" if args.quick else "timing_stability")
    t_start = time.perf_counter()
    load_before = other_cores_now(1.0)
    data = cached_dataset("fashion-mnist")
    shape = tuple(data.info.input_shape)
    pairs = build_pairs(["prune", "lenet5-int8"] if args.quick else ["prune", "lenet5-int8", "resnet-int8"], data)
    setup_s = time.perf_counter() - t_start
    print(f"pairs built in {setup_s:.1f} s", flush=True)

    records, cli_runs = [], []
    cli_ws = tempfile.mkdtemp(prefix="timing-stability-cli-")
    for rep in range(repeats):
        for n in CONDITIONS:
            quiet = other_cores_now(0.5)
            with burners(n):
                for pair in pairs:
                    for runtime in RUNTIMES:
                        for r in measure(pair, runtime, shape, budget):
                            records.append({"pair": pair["pair"], "runtime": runtime, "burners": n, "repeat": rep + 1,
                                            "load_before": quiet, **r})
                            print(f"repeat {rep + 1}, {n} burners, {pair['pair']}, {RUNTIMES[runtime]}, b{r['batch']}: "
                                  f"{ratio_words(r) if r['ratio'] else r['reason']}", flush=True)
                if not args.no_cli and n in (0, 2):
                    cli_runs.append({"burners": n, "repeat": rep + 1, **cli_eval(cli_ws)})
                    print(f"repeat {rep + 1}, {n} burners, CLI eval: {cli_runs[-1]}", flush=True)

    rows, contradictions, counts = summarise(records)
    acceptance = cli_rows(cli_runs)
    met = [r["within 25% of idle or withheld with reason"] for r in acceptance]
    counts["cli_ok"], counts["cli_not_ok"], counts["cli_rows"] = met.count("yes"), met.count("NO"), len(met)
    seconds = time.perf_counter() - t_start

    cmd = "bench/timing_stability.py" + (" --quick" if args.quick else "") + (
        f" --repeats {args.repeats}" if args.repeats else "") + (f" --budget {args.budget}" if args.budget else "")
    head = (f"# Timing stability ({time.strftime('%Y-%m-%d %H:%M')}, {device_label('cpu')}, {os.cpu_count()} cores, "
            f"torch {torch.__version__})\n\nCommand: `.venv/bin/python {cmd}` ({seconds:.0f} s; other processes used "
            f"{load_before if load_before is None else round(load_before, 2)} cores before it started). Each "
            f"condition {repeats} time(s), a lane call of {budget:g} s budget per pair and runtime (waiting up to "
            f"{LANE_WAIT_S:.0f} s for a measurement elsewhere to release the lane); burners = "
            "background processes running `while True: pass`. Ratio = parent / child latency in one lane call "
            "(how many times faster the child ran), with its 95% interval; `withheld` = not measurable now. "
            f"Idle ratio = the median of the shown idle ratios.\n\n")
    if args.quick:
        head += "**Quick run: a smoke test, not a measurement.**\n\n"
    bc = counts["by_condition"]
    summary = [
        f"Shown ratios within +/-10% of the idle ratio: {counts['near_idle']} of {counts['compared']} compared ("
        + "; ".join(f"{n} burners {bc[n]['near_idle']}/{bc[n]['compared']}" for n in CONDITIONS) + ").",
        f"Withheld (not measurable now): {counts['withheld']} of {counts['figures']} figures ("
        + "; ".join(f"{n} burners {bc[n]['withheld']}/{bc[n]['shown'] + bc[n]['withheld']}" for n in CONDITIONS)
        + ").",
        f"Contradicting figures (a pair x runtime x batch called >= {CALLED}x faster in one measurement and "
        f"<= 1/{CALLED} in another): {counts['contradictions']}.",
    ]
    if acceptance:
        summary.append(f"Acceptance (`python -m core --json eval base-lenet5`, b64 within +/-25% of idle or withheld "
                       f"with its reason): met in {counts['cli_ok']} of {counts['cli_rows']} rows, missed in "
                       f"{counts['cli_not_ok']}, {counts['cli_rows'] - counts['cli_ok'] - counts['cli_not_ok']} not "
                       "comparable (no idle figure).")
    text = head + "## Ratios\n\n" + md_table(rows, list(rows[0]) if rows else []) + "\n"
    text += "\n## Contradicting figures\n\n" + ("".join(
        f"- {c['pair']}, {c['runtime']}, b{c['batch']}: faster {', '.join(c['faster'])}; slower "
        f"{', '.join(c['slower'])}\n" for c in contradictions) or "None.\n")
    if acceptance:
        text += "\n## Acceptance: the CLI (`python -m core --json eval base-lenet5`, temporary workspace)\n\n"
        text += md_table(acceptance, list(acceptance[0])) + "\n"
    text += "\n## Summary\n\n" + "".join(f"- {s}\n" for s in summary)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{out}.md").write_text(text)
    (results / f"{out}.json").write_text(json.dumps(
        {"device": device_label("cpu"), "repeats": repeats, "budget_s": budget, "quick": args.quick,
         "load_before": load_before, "seconds": seconds, "setup_s": setup_s, "ort_models": {p["pair"]: p["ort_model"] or
                                                                       p["ort_unavailable"] for p in pairs},
         "records": records, "rows": rows, "contradictions": contradictions, "cli": cli_runs,
         "acceptance": acceptance, "counts": counts, "summary": summary}, indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
