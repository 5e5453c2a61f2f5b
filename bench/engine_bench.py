"""Engine figures: the prune-slider preview latency on every shipped model, and the app's start to
its first rendered page with trained models in the workspace.

 (a) preview: `core.tasks.prune.preview_child` exactly as the Prune page calls it on a slider move
     (prune a copy, accuracy on the fixed 1,000-image validation subset, encode the file Apply
     would write; for channels the before/after timing too), per shipped model and setting: one
     warm-up call, then the median (and max) of N calls.
 (b) app start: `streamlit run app.py` headless on 127.0.0.1 (a free port, a fresh temporary
     WORKBENCH_HOME seeded with the shipped, trained baselines): seconds from the process start
     until /_stcore/health answers ok, and until the home page has rendered in headless Chromium
     (Playwright; the page's main block is there, its script no longer running); then a second
     browser session on the warm server (a reload).

    .venv/bin/python bench/engine_bench.py [--quick] [--no-app] [--repeats 5] [--starts 3]

--quick: one preview setting per model, 3 calls, one app start (about a minute). Results:
bench/results/engine_bench.md and .json (engine_bench_quick.* with --quick).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.bench_common import free_port, md_table  # noqa: E402

warnings.filterwarnings("ignore")


from core.compress.pruning.preview import preview_subset  # noqa: E402
from core.compress.pruning.prune import PruneConfig  # noqa: E402
from core.data.datasets import cached_dataset  # noqa: E402
from core.measure.lane import CpuWatch, device_label  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402
from core.tasks.prune import preview_child  # noqa: E402

RESULTS = REPO / "bench" / "results"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
CASES = [("l1", "global", 0.5), ("l1", "global", 0.9), ("channel", "layer", 0.5)]
SETTLED_JS = ("() => !!document.querySelector('[data-testid=\"stMainBlockContainer\"]') && "
              "!document.querySelector('[data-testid=\"stStatusWidget\"]') && "
              "document.querySelectorAll('[data-testid=\"stMarkdownContainer\"], h1, h2, h3').length > 0")


def fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[dict], cols: list[str]) -> str:
    return md_table(rows, cols, fmt) + "\n"


def shipped(ws) -> list:
    return [v for v in ws.list_variants() if v.id.startswith("base-") or getattr(v, "parent_id", None) is None]


def bench_preview(ws, repeats: int, cases) -> list[dict]:
    rows = []
    for v in shipped(ws):
        data = cached_dataset(v.dataset)
        val = preview_subset(data.val)
        model = ws.load_model(v)
        for method, scope, amount in cases:
            cfg = PruneConfig(method=method, amount=amount, scope=scope)
            preview_child(ws, v, model, cfg, val)      # warm-up
            secs = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                preview_child(ws, v, model, cfg, val)
                secs.append(time.perf_counter() - t0)
            rows.append({"model": v.id, "setting": cfg.label(), "calls": repeats,
                         "median_s": statistics.median(secs), "max_s": max(secs), "under_1s": max(secs) < 1.0})
            print(rows[-1], flush=True)
    return rows


def _healthy(url: str) -> bool:
    try:
        return urllib.request.urlopen(url + "/_stcore/health", timeout=1).read().strip() == b"ok"
    except OSError:
        return False


def app_start(browser, tmp: Path, i: int) -> dict:
    """One cold start of the app in a fresh workspace: seconds to healthy and to the first render."""
    home = tmp / f"home-{i}"
    Workspace(home)                      # seeded with the shipped, trained baselines (not timed)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WORKBENCH_HOME": str(home), "WORKBENCH_MAX_JOBS": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--server.headless", "true",
                             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not _healthy(url):
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError("streamlit did not start")
            time.sleep(0.05)
        healthy = time.perf_counter() - t0
        out = {"start": i + 1, "variants": len(Workspace(home).list_variants()), "health_s": healthy}
        for label in ("first_render_s", "warm_render_s"):
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = ctx.new_page()
            t1 = time.perf_counter()
            page.goto(url + "/")
            page.wait_for_selector('[data-testid="stMainBlockContainer"]', timeout=120_000)
            time.sleep(0.3)   # let the script run flag (the status widget) appear if the run is not over
            page.wait_for_function(SETTLED_JS, timeout=120_000, polling=20)
            t2 = time.perf_counter()
            out[label] = (t2 - t0) if label == "first_render_s" else (t2 - t1)
            ctx.close()
        out["render_after_health_s"] = out["first_render_s"] - healthy
        print(out, flush=True)
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def bench_app(starts: int) -> list[dict]:
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}: app start skipped", flush=True)
        return []
    from playwright.sync_api import sync_playwright
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for i in range(starts):
                rows.append(app_start(browser, Path(tmp), i))
        finally:
            browser.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one setting per model, 3 calls, one app start")
    ap.add_argument("--repeats", type=int, default=None, help="preview calls per setting after the warm-up (default 5)")
    ap.add_argument("--starts", type=int, default=None, help="app cold starts (default 3)")
    ap.add_argument("--no-app", action="store_true", help="only the preview (no Streamlit, no browser)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="accepted for scripts/bench; the "
                    "preview runs where the Prune page runs it (CPU)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results", default=str(RESULTS))
    a = ap.parse_args()
    repeats = a.repeats or (3 if a.quick else 5)
    starts = a.starts or (1 if a.quick else 3)
    cases = CASES[:1] if a.quick else CASES
    out = a.out or ("engine_bench_quick" if a.quick else "engine_bench")
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, CpuWatch() as watch:
        ws = Workspace(Path(tmp) / "ws")
        pv = bench_preview(ws, repeats, cases)
        app = [] if a.no_app else bench_app(starts)
    load_after = os.getloadavg()
    other = f"{watch.other_cores:.2f}" if watch.other_cores is not None else "unknown"
    dev = device_label("cpu")
    cmd = (".venv/bin/python bench/engine_bench.py " + " ".join(sys.argv[1:])).strip()
    text = (f"# Engine benchmark ({when}, {dev}, torch {torch.__version__})\n\nCommand: `{cmd}`"
            f"{' (quick: a smoke run)' if a.quick else ''}. Load average before {load_before[0]:.2f}, after "
            f"{load_after[0]:.2f}; other processes used {other} CPU cores on average during the run (the Streamlit "
            "server and Chromium of (b) count as other).\n\n"
            f"## (a) Prune-slider preview per move, server side (target < 1 s)\n\n`preview_child` as the Prune page "
            f"calls it on a cache miss: one warm-up call, then the median and max of {repeats} calls.\n\n"
            + table(pv, ["model", "setting", "calls", "median_s", "max_s", "under_1s"]))
    if app:
        text += ("\n## (b) App start to the first rendered page\n\n`streamlit run app.py` headless in a fresh "
                 "workspace holding the shipped trained baselines: seconds from the process start to "
                 "`/_stcore/health` ok and to the home page rendered in headless Chromium (main block present, "
                 "script finished); `warm_render_s` = a second browser session on the running server.\n\n"
                 + table(app, ["start", "variants", "health_s", "first_render_s", "render_after_health_s",
                               "warm_render_s"]))
    summary = {}
    if pv:
        summary["preview_median_s_max"] = max(r["median_s"] for r in pv)
        summary["preview_max_s"] = max(r["max_s"] for r in pv)
    if app:
        summary["health_s_median"] = statistics.median(r["health_s"] for r in app)
        summary["first_render_s_median"] = statistics.median(r["first_render_s"] for r in app)
        summary["warm_render_s_median"] = statistics.median(r["warm_render_s"] for r in app)
    res = Path(a.results)
    res.mkdir(parents=True, exist_ok=True)
    (res / f"{out}.md").write_text(text)
    (res / f"{out}.json").write_text(json.dumps({
        "when": when, "device": dev, "command": cmd, "quick": a.quick, "load_before": load_before,
        "load_after": load_after, "other_cores": other, "preview": pv, "app_start": app, "summary": summary},
        indent=1, default=str))
    print(text)


if __name__ == "__main__":
    main()
