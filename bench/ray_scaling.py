"""Scale-out with Ray, measured: the same sensitivity scan and the same small sweep with the local
runner's code path and with Ray at 1 and 2 workers on this machine; wall time and speed-up per
configuration, and the expected time on N workers from the measured per-task time and overhead.

    .venv/bin/python bench/ray_scaling.py [--quick] [--device cpu|cuda] [--workers 1,2]

Each configuration runs in a fresh Python process (Ray starts once per process):
  local    the loop the local runner's worker runs (sensitivity_scan; trials one after another),
           torch with its default threads (2 here)
  ray-N    a local Ray with N CPUs (`ray.init(num_cpus=N)`), the task run as it runs inside a Ray
           job: one Ray task per layer (sensitivity), one Ray Tune trial per grid point (sweep),
           each task with 1 CPU (1 torch thread) or 1 GPU
The time of `ray.init` is reported apart (a server pays it once, not per job). The results of every
configuration are compared: the same layers' accuracies and the same trials' non-zero counts.
Saved to bench/results/ray_scaling[_quick][_cuda].md and .json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.bench_common import md_table  # noqa: E402

RESULTS = REPO / "bench" / "results"

WORKLOADS = {
    # a scan with more layers than workers (resnet-small: 9 layer tasks once the classifier is kept)
    "sensitivity": {"full": {"variant": "Small ResNet baseline", "amounts": [0.3, 0.5, 0.7, 0.9], "val_subset": 1000},
                    "quick": {"variant": "LeNet-5 baseline", "amounts": [0.5, 0.9], "val_subset": 300}},
    # 4 trials of prune + 1 fine-tune epoch on 5,000 samples, each measured on the full test split
    "sweep": {"full": {"variant": "LeNet-5 baseline", "family": "prune_finetune",
                       "grid": {"amount": [0.5, 0.8, 0.9, 0.95], "epochs": [1]}, "subset": 5000},
              "quick": {"variant": "LeNet-5 baseline", "family": "prune_finetune",
                        "grid": {"amount": [0.5, 0.9], "epochs": [1]}, "subset": 500}},
}


# ------------------------------------------------------------------ one configuration (child process)

def run_child(config: str, workload: str, size: str, device: str, home: str) -> dict:
    """Run one workload under one configuration in this process; returns its timings and a
    fingerprint of its numbers (to check every configuration computed the same thing)."""
    from core.measure.lane import device_label
    from core.measure.metrics import resolve_device
    from core.run.ray.fanout import RayFanout
    from core.store.workspace import Workspace
    from core.tasks import TaskContext, run_task

    ws = Workspace(home)   # seeded with the shipped baselines
    spec = dict(WORKLOADS[workload][size])
    spec["variant"] = ws.get_variant(spec["variant"]).id
    if workload == "sweep":
        spec["device"] = device
    init_s = 0.0
    if config.startswith("ray-"):
        import ray

        from core.run.ray.cluster import runtime_env

        t0 = time.perf_counter()
        ray.init(num_cpus=int(config.split("-")[1]), num_gpus=1 if device == "cuda" else 0, include_dashboard=False,
                 _node_ip_address="127.0.0.1", runtime_env=runtime_env(), logging_level="ERROR", log_to_driver=False)
        init_s = time.perf_counter() - t0
    events: list[dict] = []
    t0 = time.perf_counter()
    fanout = RayFanout() if config.startswith("ray-") else None   # as inside a Ray job: fan out
    out = run_task(workload, spec, TaskContext(ws, on_event=events.append, fanout=fanout))
    wall = time.perf_counter() - t0
    r = out.result
    if workload == "sensitivity":
        fingerprint = {row["name"]: [round(a, 6) for a in row["accuracy"]] for row in r["layers"]}
        per_layer = {e["layer"]: e["task_seconds"] for e in events if "task_seconds" in e}   # Ray tasks' own time
        tasks, task_s = len(r["layers"]), list(per_layer.values()) or None
    else:
        fingerprint = {str(t["params"]): t["metrics"].get("nonzero_params") for t in r["trials"]}
        tasks, task_s = len(r["trials"]), [t["seconds"] for t in r["trials"]]
    return {"config": config, "workload": workload, "wall_s": wall, "ray_init_s": init_s, "tasks": tasks,
            "task_s": task_s, "fingerprint": fingerprint, "device": device_label(resolve_device(device))}


def child(config: str, workload: str, size: str, device: str, home: str) -> dict:
    cmd = [sys.executable, __file__, "--child", config, "--workload", workload, "--size", size, "--device", device,
           "--home", home]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(f"{config} {workload} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def other_cpu(seconds: float = 2.0) -> float | None:
    """Cores busy with other processes right now (an idle machine reads ~0)."""
    from core.measure.lane import CpuWatch

    with CpuWatch() as w:
        time.sleep(seconds)
    return w.other_cores


# ------------------------------------------------------------------ the table and the model for N workers

def expected_on(n_workers: int, tasks: int, per_task_s: float, overhead_s: float) -> float:
    """Wall time with n workers: a fixed overhead, then the tasks in ceil(tasks / n) waves."""
    return overhead_s + math.ceil(tasks / n_workers) * per_task_s


def summary(raw: list[dict]) -> list[dict]:
    """The measured table: per workload and configuration, the median wall time, its spread and
    the speed-up against the local loop, and whether every configuration computed the same numbers."""
    rows = []
    for workload in dict.fromkeys(r["workload"] for r in raw):
        mine = [r for r in raw if r["workload"] == workload]
        configs = list(dict.fromkeys(r["config"] for r in mine))
        prints = {json.dumps(r["fingerprint"], sort_keys=True) for r in mine}
        local_s = statistics.median(r["wall_s"] for r in mine if r["config"] == "local")
        for c in configs:
            runs = [r for r in mine if r["config"] == c]
            walls = [r["wall_s"] for r in runs]
            med = statistics.median(walls)
            rows.append({"workload": workload, "configuration": c, "tasks": runs[0]["tasks"], "runs": len(runs),
                         "wall s (median)": f"{med:.1f}",
                         "spread s": f"{min(walls):.1f}-{max(walls):.1f}" if len(walls) > 1 else "",
                         "speed-up vs local": f"{local_s / med:.2f}x",
                         "ray.init s": f"{statistics.median(r['ray_init_s'] for r in runs):.1f}" if c != "local" else "",
                         "same numbers": "yes" if len(prints) == 1 else "NO"})
    return rows


def expected(raw: list[dict]) -> list[dict]:
    """Per-task time and overhead from the 1-worker Ray runs, where tasks run one after another
    (overhead = wall - the sum of the tasks' own times: Ray workers starting, the parent's
    baseline, gathering), and the wall time they predict with N workers."""
    model = []
    for workload in dict.fromkeys(r["workload"] for r in raw):
        one = [r for r in raw if r["workload"] == workload and r["config"] == "ray-1" and r["task_s"]]
        if not one:
            continue
        tasks = one[0]["tasks"]
        per_task = statistics.median(t for r in one for t in r["task_s"])
        overhead = statistics.median(max(0.0, r["wall_s"] - sum(r["task_s"])) for r in one)
        for k in sorted({tasks, 16}):   # as measured, and a 16-task job (a full 16-trial sweep)
            for n in (1, 2, 4, 8, 16):
                t_n = expected_on(n, k, per_task, overhead)
                model.append({"workload": workload, "tasks": k, "workers": n, "per task s": f"{per_task:.2f}",
                              "overhead s": f"{overhead:.1f}", "expected wall s": f"{t_n:.1f}",
                              "expected speed-up vs 1 worker": f"{expected_on(1, k, per_task, overhead) / t_n:.2f}x"})
    return model


def report(raw: list[dict], meta: dict) -> str:
    rows, model = summary(raw), expected(raw)
    text = (f"# Ray scaling ({meta['size']})\n\n"
            f"Measured {meta['measured_at']} on {meta['host']} ({meta['cores']} cores), device {raw[0]['device']}, "
            f"`{meta['command']}`.\n"
            "Workloads: " + "; ".join(f"{w}: {json.dumps(WORKLOADS[w][meta['size']])}" for w in WORKLOADS) + ".\n"
            "\n## Measured\n\n" + md_table(rows, list(rows[0])))
    if model:
        text += ("\n\n## Expected with N workers (from the 1-worker run: wall = overhead + ceil(tasks / N) x "
                 "per-task time)\n\n" + md_table(model, list(model[0])))
    return text + "\n"


def save(raw: list[dict], meta: dict) -> None:
    text = report(raw, meta)
    print("\n" + text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "ray_scaling" + ("_quick" if meta["size"] == "quick" else "") + ("_cuda" if meta["device"] == "cuda" else "")
    (RESULTS / f"{stem}.md").write_text(text)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": summary(raw), "expected": expected(raw),
                                                      "runs": raw}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny workloads (a test runs this)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--workers", default="1,2", help="Ray worker counts (CPUs, or trials at once)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration (the median is shown)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="which of: " + ", ".join(WORKLOADS))
    ap.add_argument("--report", metavar="JSON", help="rebuild the tables from a saved result, measure nothing")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--workload", help=argparse.SUPPRESS)
    ap.add_argument("--size", help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.workload, args.size, args.device, args.home)))
        return
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        save(saved["runs"], saved["meta"])
        return
    size = "quick" if args.quick else "full"
    configs = ["local"] + [f"ray-{n}" for n in args.workers.split(",")]
    meta = {"size": size, "device": args.device, "host": socket.gethostname(), "cores": os.cpu_count(),
            "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": " ".join([".venv/bin/python", "bench/ray_scaling.py"] + sys.argv[1:])}
    raw = []
    with tempfile.TemporaryDirectory(prefix="ray-scaling-") as home:
        from core.store.workspace import Workspace

        Workspace(home)   # seed the baselines once, before anything is timed
        for workload in args.workloads.split(","):
            for rep in range(args.repeats):
                for c in configs:   # alternately, so a slow spell hits every configuration
                    busy = other_cpu()
                    r = child(c, workload, size, args.device, home)
                    r["other_cores_before"] = busy
                    raw.append(r)
                    print(f"{workload:12s} {c:7s} run {rep + 1}: {r['wall_s']:.1f} s (ray.init {r['ray_init_s']:.1f} s; "
                          f"other processes {busy if busy is None else round(busy, 2)} cores before)", flush=True)
    save(raw, meta)


if __name__ == "__main__":
    main()
