"""Pruning acceptance numbers, measured in one run, printed as tables and saved to
bench/results/prune_bench.md and .json.

 (a) lenet5, global L1 at 90% through the `prune` task: non-zero prunable weights against 10% of
     the prunable weights, size_bytes / dense_size_bytes of the stored file, identical reload.
 (b) resnet-small, channel pruning at 50%: params ratio and latency_ms_b64 before and after,
     timed alternately in one call (median and interquartile range); identical reload.
 (c) the live preview, server side, on every shipped model: wall time of one slider move as the
     Prune page computes it (prune a copy, accuracy on the fixed 1,000-image validation subset,
     encode the file Apply would write, and for channels time before/after together).
 (d) the browser round trip with Playwright and Chromium, on every shipped model: from the key
     press that moves the Amount slider to the page being idle again (heading updated, no element
     stale, no "Running" indicator), for amounts never shown before (no cache hit).

    .venv/bin/python bench/prune_bench.py [--models base-lenet5,...] [--no-browser] [--moves 6]

Variants are read from a fresh temporary workspace seeded with the shipped baselines; nothing is
written to yours. The CPU time other processes used during the run is reported: a figure taken
while other work ran is not comparable.
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
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from bench.bench_common import free_port, md_table  # noqa: E402
from core.compress.pruning.preview import preview_subset  # noqa: E402
from core.compress.pruning.prune import PruneConfig, prune  # noqa: E402
from core.data.datasets import cached_dataset  # noqa: E402
from core.measure.lane import CpuWatch, device_label  # noqa: E402
from core.measure.latency import time_models  # noqa: E402
from core.measure.metrics import count_params  # noqa: E402
from core.store.workspace import Workspace  # noqa: E402
from core.tasks import PruneJobConfig, TaskContext, run_task  # noqa: E402
from core.tasks.prune import preview_child  # noqa: E402

RESULTS = REPO / "bench" / "results"
SHIPPED = ("base-lenet5", "base-lenet300", "base-resnet-small")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def identical_logits(a, b, data) -> bool:
    x, _ = next(data.test.batches(256))
    with torch.no_grad():
        return bool(torch.equal(a.eval()(x), b.eval()(x)))


def bench_l1(ws, data) -> dict:
    v = ws.get_variant("base-lenet5")
    model = ws.load_model(v)
    pruned, report = prune(model, PruneConfig(method="l1", amount=0.9, scope="global"))
    child = ws.get_variant(run_task("prune", PruneJobConfig(variant=v.id, prune=PruneConfig(amount=0.9, scope="global"),
                                                            device="cpu"), TaskContext(ws)).variant_id)
    m = child.metrics
    prunable = report.prunable_weights
    nz = sum(r.nonzero_after for r in report.layers if r.target is not None)
    return {"variant": f"{v.name} ({v.id})", "dense test acc": f"{v.metrics['accuracy']:.4f}",
            "pruned test acc": f"{m['accuracy']:.4f}", "prunable weights": prunable, "non-zero prunable": nz,
            "10% of prunable": round(0.1 * prunable), "deviation": f"{(nz - 0.1 * prunable) / (0.1 * prunable):+.3%}",
            "size_bytes": m["size_bytes"], "dense_size_bytes": m["dense_size_bytes"],
            "size ratio": f"{m['size_bytes'] / m['dense_size_bytes']:.3f}", "format": child.format,
            "reload identical logits": identical_logits(pruned, ws.load_model(child), data)}


def bench_channel(ws, data) -> dict:
    v = ws.get_variant("base-resnet-small")
    model = ws.load_model(v)
    shape = data.info.input_shape
    pruned, report = prune(model, PruneConfig(method="channel", amount=0.5), input_shape=shape)
    rep = time_models({"before": model, "after": pruned}, shape, (1, 64), "cpu", min_runs=40, min_seconds=1.0)
    child = ws.get_variant(run_task("prune", PruneJobConfig(variant=v.id, prune=PruneConfig(method="channel",
                                                                                               amount=0.5),
                                                            device="cpu"), TaskContext(ws)).variant_id)
    t = rep.timings
    p0, p1 = count_params(model)[0], count_params(pruned)[0]
    return {"model": f"{v.name} ({v.id})", "params before": p0, "params after": p1, "params ratio": f"{p1 / p0:.3f}",
            "b64 before ms (IQR)": f"{t['before'][64].median_ms:.2f} ({t['before'][64].iqr_ms:.2f})",
            "b64 after ms (IQR)": f"{t['after'][64].median_ms:.2f} ({t['after'][64].iqr_ms:.2f})",
            "speed-up b64": f"{rep.ratio('before', 'after', 64):.2f}x",
            "speed-up b1": f"{rep.ratio('before', 'after', 1):.2f}x", "runs each": t["after"][64].runs,
            "other CPU (cores)": f"{rep.other_cores:.2f}" if rep.other_cores is not None else "?",
            "test acc after (no fine-tune)": f"{child.metrics['accuracy']:.4f}",
            "reload identical logits": identical_logits(pruned, ws.load_model(child), data)}


PREVIEW_CASES = [("l1", "global", a) for a in (0.3, 0.5, 0.7, 0.9)] + [("l1", "layer", 0.8), ("random", "global", 0.6),
                                                                        ("channel", "layer", 0.5),
                                                                        ("channel", "global", 0.7)]


def bench_preview(ws, data, models: list[str], repeats: int) -> list[dict]:
    val = preview_subset(data.val)
    rows = []
    for ref in models:
        v = ws.get_variant(ref)
        model = ws.load_model(v)
        times, worst = [], ("", 0.0)
        for method, scope, amount in PREVIEW_CASES:
            cfg = PruneConfig(method=method, amount=amount, scope=scope)
            for _ in range(repeats):
                t0 = time.perf_counter()
                preview_child(ws, v, model, cfg, val)
                dt = time.perf_counter() - t0
                times.append(dt)
                if dt > worst[1]:
                    worst = (cfg.label(), dt)
        rows.append({"model": ref, "slider moves": len(times), "median s": f"{statistics.median(times):.3f}",
                     "p90 s": f"{statistics.quantiles(times, n=10)[-1]:.3f}", "max s": f"{max(times):.3f}",
                     "slowest case": worst[0], "under 1 s": max(times) < 1.0})
        print(f"preview {ref}: median {statistics.median(times):.3f} s, max {max(times):.3f} s", flush=True)
    return rows


# ---------------------------------------------------------------- (d) the browser

IDLE_JS = """(want) => {
  const heads = [...document.querySelectorAll('h3')].map(h => h.innerText);
  if (!heads.some(h => h.includes('Preview') && h.includes(want))) return false;
  if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  return document.querySelectorAll('.js-plotly-plot').length > 0;
}"""


def bench_browser(home: str, models: list[str], moves: int) -> list[dict]:
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "WORKBENCH_HOME": home}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                               "--server.port", str(port), "--server.headless", "true"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(url + "/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for ref in models:
                for method in ("l1", "channel"):
                    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                    page = ctx.new_page()
                    t0 = time.perf_counter()
                    page.goto(f"{url}/prune?variant={ref}")
                    page.wait_for_function(IDLE_JS, arg="50%", timeout=120_000, polling=20)
                    opened = time.perf_counter() - t0
                    if method == "channel":
                        page.get_by_test_id("stRadio").filter(has_text="Method").get_by_text("Channels").click()
                        page.wait_for_function(IDLE_JS, arg="channel", timeout=120_000, polling=20)
                    thumb = page.get_by_test_id("stSlider").filter(has_text="Amount").first.get_by_role("slider")
                    times = []
                    for i in range(moves):   # 0.55, 0.60, ...: amounts never previewed before
                        thumb.focus()
                        t0 = time.perf_counter()
                        thumb.press("ArrowRight")
                        page.wait_for_function(IDLE_JS, arg=f"{50 + 5 * (i + 1)}%", timeout=120_000, polling=20)
                        times.append(time.perf_counter() - t0)
                    ctx.close()
                    rows.append({"model": ref, "method": method, "page open s": f"{opened:.2f}",
                                 "moves": len(times), "median s": f"{statistics.median(times):.2f}",
                                 "max s": f"{max(times):.2f}", "under 1 s": max(times) < 1.0,
                                 "each s": " ".join(f"{t:.2f}" for t in times)})
                    print(f"browser {ref} {method}: open {opened:.2f} s, moves {rows[-1]['each s']}", flush=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(SHIPPED), help="variants to preview (the shipped baselines)")
    ap.add_argument("--repeats", type=int, default=3, help="server-side preview calls per case")
    ap.add_argument("--moves", type=int, default=6, help="slider moves per model and method in the browser")
    ap.add_argument("--no-browser", action="store_true", help="skip (d)")
    a = ap.parse_args()
    models = [m for m in a.models.split(",") if m]
    data = cached_dataset("fashion-mnist")
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    with tempfile.TemporaryDirectory() as tmp, CpuWatch() as watch:
        ws = Workspace(Path(tmp) / "ws")
        l1 = bench_l1(ws, data)
        print(json.dumps(l1), flush=True)
        ch = bench_channel(ws, data)
        print(json.dumps(ch), flush=True)
        pv = bench_preview(ws, data, models, a.repeats)
        br = [] if a.no_browser else bench_browser(str(Path(tmp) / "browser-ws"), models, a.moves)
    dev = device_label("cpu")
    other = f"{watch.other_cores:.2f}" if watch.other_cores is not None else "unknown"
    cols_a = ["variant", "dense test acc", "pruned test acc", "prunable weights", "non-zero prunable",
              "10% of prunable", "deviation", "size_bytes", "dense_size_bytes", "size ratio", "format",
              "reload identical logits"]
    cols_b = ["model", "params before", "params after", "params ratio", "b64 before ms (IQR)", "b64 after ms (IQR)",
              "speed-up b64", "speed-up b1", "runs each", "other CPU (cores)", "test acc after (no fine-tune)",
              "reload identical logits"]
    cols_c = ["model", "slider moves", "median s", "p90 s", "max s", "slowest case", "under 1 s"]
    cols_d = ["model", "method", "page open s", "moves", "median s", "max s", "under 1 s", "each s"]
    text = (f"# Pruning benchmark ({when}, {dev}, torch {torch.__version__})\n\n"
            f"Command: `.venv/bin/python bench/prune_bench.py {' '.join(sys.argv[1:])}`\n\n"
            f"Other processes used {other} CPU cores on average during the whole run (the browser and the "
            "Streamlit server of (d) are this benchmark's own and count as 'other' there).\n\n"
            "## (a) lenet5, global L1 90% (target: non-zero within 1% of 10% of prunable; size <= 20% of dense)\n\n"
            + md_table([l1], cols_a) +
            "\n\n## (b) resnet-small, channel pruning 50% (target: params <= 60%, latency_ms_b64 lower)\n\n"
            "Both models timed in one call, one forward pass of each in turn, median and interquartile range.\n\n"
            + md_table([ch], cols_b) +
            "\n\n## (c) live preview, server side, per slider move (target < 1 s)\n\n"
            f"`preview_child` as the Prune page calls it on a cache miss, {a.repeats} calls for each of "
            f"{len(PREVIEW_CASES)} settings: " + ", ".join(f"{m} {s} {x:.0%}" for m, s, x in PREVIEW_CASES) + ".\n\n"
            + md_table(pv, cols_c) + "\n")
    if br:
        text += ("\n## (d) browser round trip per slider move (target < 1 s)\n\n"
                 "Playwright + Chromium against `streamlit run app.py`: a key press moves the Amount slider one step "
                 "(0.50 -> 0.55 -> ...: no cached preview), timed until the page is idle again (the preview heading "
                 "shows the new amount, no element is stale, no Running indicator).\n\n" + md_table(br, cols_d) + "\n")
    print()
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prune_bench.md").write_text(text)
    (RESULTS / "prune_bench.json").write_text(json.dumps({"when": when, "device": dev, "other_cores": other,
                                                          "l1_90": l1, "channel_50": ch, "preview": pv,
                                                          "browser": br}, indent=2))


if __name__ == "__main__":
    main()
