"""Build docs/BENCHMARKS.md from the saved results in bench/results/ (*.json, and the .md tables),
and docs/pareto.png: the accuracy/size Pareto front of every variant the benchmarks made, drawn by
the Compare page's own figure (core.viz.compare.tradeoff_chart) and rendered to PNG by headless
Chromium through Playwright (no kaleido).

One table per area with the published anchor and its source, our figure, the command that made it,
the machine and the date. Nothing is invented: where a result file does not exist yet, the section
names the command that produces it.

    .venv/bin/python bench/make_benchmarks_doc.py [--results bench/results] [--out docs/BENCHMARKS.md]
        [--png docs/pareto.png | --no-png]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
PY = ".venv/bin/python"


class Results:
    def __init__(self, folder: Path, quick: bool = False):
        self.folder, self.quick = folder, quick

    def path(self, stem: str, ext: str) -> Path:
        """bench/results/<stem>.<ext>; with `quick`, <stem>_quick.<ext> where a smoke run saved one."""
        q = self.folder / f"{stem}_quick.{ext}"
        return q if self.quick and q.exists() else self.folder / f"{stem}.{ext}"

    def json(self, stem: str) -> dict | None:
        p = self.path(stem, "json")
        try:
            return json.loads(p.read_text()) if p.exists() else None
        except ValueError:
            return None

    def md(self, stem: str) -> str | None:
        p = self.path(stem, "md")
        return p.read_text() if p.exists() else None

    def has(self, stem: str) -> bool:
        return self.path(stem, "json").exists() or self.path(stem, "md").exists()

    def when(self, stem: str) -> str:
        """The run's date: the json's `when`, else the date in the .md's heading, else the file's date."""
        j = self.json(stem) or {}
        for k in ("when", "date"):
            if j.get(k):
                return str(j[k])[:16]
        m = re.search(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2})?", (self.md(stem) or "")[:400])
        if m:
            return m.group(0)
        for ext in ("json", "md"):
            p = self.path(stem, ext)
            if p.exists():
                return time.strftime("%Y-%m-%d", time.gmtime(p.stat().st_mtime)) + " (file date)"
        return "?"

    def machine(self, stem: str) -> str:
        j = self.json(stem) or {}
        dev = j.get("device") or ""
        md = self.md(stem) or ""
        m = re.search(r"Machine: (.+?)\.(?:\s|$)", md)
        if m:
            return m.group(1).strip()
        if not dev:
            head = md.splitlines()[0] if md else ""
            m = re.search(r"\((.*)\)", head)
            dev = re.sub(r"^\d{4}-\d{2}-\d{2}[ \d:]*,\s*", "", m.group(1)) if m else ""
        m = re.search(r"\d+ (?:shared )?cores", md[:1000])
        if dev in ("cpu", "cuda") and m:
            dev = f"{dev}, {m.group(0)}"
        return (dev + ", 2-core VM" if "2 threads" in dev and "VM" not in dev else dev) or "this machine (2-core VM)"

    def command(self, stem: str, default: str) -> str:
        j = self.json(stem) or {}
        if j.get("command"):
            return str(j["command"])
        m = re.search(r"Command: `([^`]+)`", self.md(stem) or "") or re.search(r"^`(\.venv/bin/python [^`]+)`",
                                                                               self.md(stem) or "", re.M)
        return m.group(1) if m else default


def row_table(rows: list[list[str]]) -> str:
    head = ["measure", "anchor (published)", "ours", "command", "machine", "date"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def missing(cmd: str, stem: str) -> str:
    return (f"_Not measured yet: no `bench/results/{stem}.json` (or `.md`). Produce it with `{cmd}`, then rerun "
            f"`{PY} bench/make_benchmarks_doc.py` (or `scripts/bench`)._\n\n")


def pct(x: float) -> str:
    return f"{x:.1%}"


# ---------------------------------------------------------------- the areas

def deep_compression(r: Results) -> str:
    stem, cmd = "deep_compression", f"{PY} bench/deep_compression.py --device cpu"
    text = ("## Deep Compression (Fashion-MNIST, LeNet-5)\n\nAnchor: Han, Mao and Dally, *Deep Compression*, ICLR "
            "2016, Table 3: LeNet-5 on MNIST compressed 39x at no accuracy loss (prune + trained weight sharing + "
            "Huffman coding). Target here: at least 50x at a loss of at most 0.5 point on Fashion-MNIST.\n\n")
    j, used = r.json(stem), stem
    if not j:
        text += missing(cmd, stem)
        j, used = Results(r.folder, quick=True).json(stem), f"{stem}_quick"
        if not j:
            return text
        text += ("Only the smoke run (`--quick`: small subsets, 1 epoch per stage) has been saved; its stages, which "
                 "are not the result:\n\n")
    rq = Results(r.folder, quick=used.endswith("_quick"))
    rows = []
    for s in j.get("stages", []):
        rows.append([s.get("stage", "?"), "39x at 0.0 pt (MNIST; Han et al., ICLR 2016)" if s is j["stages"][-1] else "",
                     f"{s.get('bytes', 0):,} B, {s.get('ratio', 0):.1f}x, accuracy {s.get('accuracy', 0):.2%} "
                     f"({s.get('change_points', 0):+.2f} pt)", rq.command(stem, cmd), rq.machine(stem), rq.when(stem)])
    text += row_table(rows)
    if "target_met" in j:
        text += f"\nTarget ({j.get('target', '>= 50x at <= 0.5 point')}) met: {'yes' if j['target_met'] else 'NO'}.\n"
    rc = j.get("reload_check")
    if rc:
        text += (f"\nThe final file ({rc['file_bytes']:,} bytes) reloaded in a fresh process by its small loader "
                 f"(`{rc['command']}`) classifies the {rc['test_images']:,} test images at "
                 f"{rc['fresh_process_accuracy']:.2%}.\n")
    return text + f"\nStage table with bytes per layer: [`bench/results/{used}.md`](../bench/results/{used}.md).\n"


def quantization(r: Results) -> str:
    stem, cmd = "quant_bench", f"{PY} bench/quant_bench.py --device cpu"
    text = ("## Quantization (static int8, FX x86)\n\nAnchor: int8 weights take a quarter of float32 storage and "
            "run faster on integer kernels (Jacob et al., *Quantization and Training of Neural Networks for Efficient "
            "Integer-Arithmetic-Only Inference*, CVPR 2018); the issue's targets: file at most 27% of float, within "
            "0.5 point, batch-64 latency below float (at least 1.5x for the small ResNet).\n\n")
    j = r.json(stem)
    if not j:
        return text + missing(cmd, stem)
    rows = []
    for q in j.get("rows", []):
        if q.get("mode") != "static-int8":
            continue
        rows.append([f"{q['model']}: size / float, accuracy change, speed-up b1 / b64",
                     "25% size (int8 vs fp32), targets <= 27%, >= -0.5 pt",
                     f"{pct(q['size_ratio'])}, {q['acc_change_pt']:+.2f} pt, {q['speedup_b1']:.2f}x / "
                     f"{q['speedup_b64']:.2f}x", r.command(stem, cmd), r.machine(stem), r.when(stem)])
    text += row_table(rows)
    return text + f"\nEvery mode, the targets and the bits slider: [`bench/results/{stem}.md`](../bench/results/{stem}.md).\n"


INT8_DECISION = (
    "Decision: **PyTorch eager keeps FX graph mode; ONNX Runtime uses static QDQ.** FX is the only path with int8 "
    "kernels in PyTorch eager (PT2E's converted graph run eagerly is slower than float). Compiled, PT2E reaches about "
    "FX's batch-64 latency, but only over a compiled float model, after 9-13 s of compilation at every load and batch "
    "size, in an archive of 36-70% of float instead of a 25-27% file, and on this torch only with Inductor's freezing "
    "and one graph per batch size. FX is deprecated, so it runs behind `fx_available()` in "
    "`core/compress/quant/quantize.py` (a torch without it gets `FxUnavailable`, said plainly). ONNX Runtime's static "
    "QDQ (`core.measure.runtimes.quantize_onnx`) needs no torch.ao and gives the lowest latencies measured here: it is "
    "the int8 path that outlives FX.\n")


def _inline(r: Results, stem: str, cmd: str) -> str:
    """A saved markdown result without its title line (its tables and notes as they were saved)."""
    md = r.md(stem)
    if not md:
        return missing(cmd, stem)
    lines = md.splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip() + "\n\n"


def speed(r: Results) -> str:
    """Issue 22: the measurement lane's figures, the runtimes, the stability under load, the int8 paths."""
    text = ("## Speed you can trust: the measurement lane, runtimes, stability under load\n\n"
            "Every latency below went through `core.measure.lane`: a machine-wide lock (one timing at a time), a "
            "fixed thread count, preempted passes dropped (thread CPU time under 90% of wall time), repeated until "
            "the 95% interval of each median and ratio is within +/-10%, else withheld as \"not measurable now\".\n\n"
            "### Latency in each runtime (PyTorch eager, ONNX Runtime, OpenVINO)\n\n")
    text += _inline(r, "runtime_bench", f"{PY} bench/runtime_bench.py")
    text += "### Stability under load (0, 1, 2 CPU-burning processes)\n\n"
    text += _inline(r, "timing_stability", f"{PY} bench/timing_stability.py")
    text += "### Static int8 paths: FX vs PT2E vs ONNX Runtime QDQ\n\n"
    text += _inline(r, "quant_paths", f"{PY} bench/quant_paths.py") + INT8_DECISION
    return text


def structured(r: Results) -> str:
    stem, cmd = "structured_bench", f"{PY} bench/structured_bench.py"
    text = ("## Structured pruning with recovery (small ResNet, Fashion-MNIST)\n\nAnchor: DepGraph (Fang et al., "
            "*DepGraph: Towards Any Structural Pruning*, CVPR 2023, Table 1): ResNet-56 on CIFAR-10, 2.57x fewer MACs "
            "at +0.11 point. Ours: channel pruning (Torch-Pruning, the same library) of a different model on a "
            "different data set, each amount recovered by the `finetune` task, then static int8.\n\n")
    j = r.json(stem)
    if not j:
        return text + missing(cmd, stem)
    rows = []
    for q in j.get("rows", []):
        if q.get("stage") == "pruned":
            continue
        rows.append([q["variant"] + ": MACs, params, size ratios; speed-up b1 / b64; accuracy change",
                     "2.57x MACs at +0.11 pt (ResNet-56, CIFAR-10)",
                     f"{q['macs_ratio']:.2f}x MACs, {q['params_ratio']:.2f}x params, {q['size_ratio']:.2f}x file; "
                     f"{q['speedup_b1']:.2f}x / {q['speedup_b64']:.2f}x; {q['acc_change_pt']:+.2f} pt",
                     r.command(stem, cmd), r.machine(stem), r.when(stem)])
    text += row_table(rows)
    lb, la = j.get("load_before"), j.get("load_after")
    if lb and la:
        text += (f"\nLoad average during the run: {lb[0]:.2f} before, {la[0]:.2f} after; other processes used "
                 f"{j.get('other_cores')} cores on average (latency ratios are taken alternately in one call, so load "
                 "hits both models alike).\n")
    return text + f"\nFull table (including the unrecovered cuts): [`bench/results/{stem}.md`](../bench/results/{stem}.md).\n"


def distillation(r: Results) -> str:
    stem, cmd = "distill_bench", f"{PY} bench/distill_bench.py"
    text = ("## Distillation (LeNet-5 teacher, lenet5-small student)\n\nAnchor: Hinton, Vinyals and Dean, *Distilling "
            "the Knowledge in a Neural Network*, 2015, section 3: on MNIST the distilled small net made 74 test "
            "errors against 146 from scratch and 67 for the teacher, 91% of the gap closed.\n\n")
    j = r.json(stem)
    if not j:
        return text + missing(cmd, stem)
    s = j.get("settings", {})
    text += row_table([[
        "gap closed = (distilled - scratch) / (teacher - scratch), mean of seeds",
        "91% (MNIST; Hinton et al. 2015)",
        f"{pct(j['gap_closed_mean'])} (teacher {pct(j['teacher_accuracy'])}, scratch {pct(j['scratch_mean'])}, "
        f"distilled {pct(j['distilled_mean'])}; seeds {s.get('seeds')}, {s.get('epochs')} epochs)",
        r.command(stem, cmd), r.machine(stem), r.when(stem)]])
    return text + f"\nPer seed: [`bench/results/{stem}.md`](../bench/results/{stem}.md).\n"


def engine(r: Results) -> str:
    text = ("## Engine: training throughput, prune-slider preview, app start\n\nAnchor for training: a plain PyTorch "
            "loop on the same model and data, timed alternately in the same run (target: engine/plain >= 0.95). The "
            "preview and the app start have no published anchor; the targets are the project's (a slider move "
            "under 1 s).\n\n")
    rows = []
    stem = "train_overhead_cpu"
    if r.has(stem):
        j = r.json(stem) or {}
        rows.append(["training samples/s, engine vs plain loop", "plain PyTorch loop (ratio 1.0; target >= 0.95)",
                     f"{j.get('engine_samples_per_s')} vs {j.get('plain_samples_per_s')} samples/s, ratio "
                     f"{j.get('ratio')} ({j.get('model')}, batch {j.get('batch_size')})",
                     r.command(stem, f"{PY} bench/train_overhead.py --device cpu"), r.machine(stem), r.when(stem)])
    else:
        text += missing(f"{PY} bench/train_overhead.py --device cpu", stem)
    stem = "prune_bench"
    if r.has(stem):
        j = r.json(stem) or {}
        pv = j.get("preview", [])
        if pv:
            rows.append(["prune-slider preview per move, server side (prune_bench, 8 settings)", "target < 1 s",
                         "; ".join(f"{p['model']} median {p['median s']} s, max {p['max s']} s" for p in pv),
                         r.command(stem, f"{PY} bench/prune_bench.py"), r.machine(stem), r.when(stem)])
        br = j.get("browser", [])
        if br:
            rows.append(["prune-slider move in the browser, key press to idle page", "target < 1 s",
                         "; ".join(f"{b['model']} {b['method']} median {b['median s']} s" for b in br),
                         r.command(stem, f"{PY} bench/prune_bench.py"), r.machine(stem), r.when(stem)])
    stem, cmd = "engine_bench", f"{PY} bench/engine_bench.py"
    j = r.json(stem)
    if j:
        for p in j.get("preview", []):
            rows.append([f"preview {p['model']} {p['setting']} (median of {p['calls']} after warm-up)", "target < 1 s",
                         f"median {p['median_s']:.3f} s, max {p['max_s']:.3f} s", r.command(stem, cmd),
                         r.machine(stem), r.when(stem)])
        app = j.get("app_start", [])
        if app:
            s = j.get("summary", {})
            rows.append([f"app start to first rendered home page (shipped trained models, {len(app)} cold starts, "
                         "median)", "-",
                         f"health ok {s['health_s_median']:.1f} s, first render {s['first_render_s_median']:.1f} s; "
                         f"a second session on the warm server {s['warm_render_s_median']:.1f} s",
                         r.command(stem, cmd), r.machine(stem), r.when(stem)])
        lb = j.get("load_before")
        if lb:
            text += f"engine_bench load average: {lb[0]:.2f} before, {j['load_after'][0]:.2f} after.\n\n"
    else:
        text += missing(cmd, stem)
    if rows:
        text += row_table(rows)
    return text


def serving(r: Results) -> str:
    stem, cmd = "serve_bench", f"{PY} bench/serve_bench.py"
    text = ("## Serving: REST and gRPC requests per second\n\nNo published anchor fits a 2-core VM; the reference is "
            "the same predict call in process (no network), measured in the same run.\n\n")
    md = r.md(stem)
    if not md:
        return text + missing(cmd, stem)
    rows = []
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 9 and cells[2] in ("1", "4") and cells[0] != "input":
            rows.append([f"{cells[0]}, {cells[1]}, {cells[2]} client(s): req/s (median ms)",
                         "in-process predict, same run" if cells[1] != "in-process predict" else "-",
                         f"{cells[6]} req/s ({cells[7]} ms)", r.command(stem, cmd), r.machine(stem), r.when(stem)])
    text += row_table(rows)
    return text + f"\nNotes and the whole table: [`bench/results/{stem}.md`](../bench/results/{stem}.md).\n"


def scaling(r: Results) -> str:
    """Ray scale-out: the measured table and the expected times on N workers, as saved."""
    stem, cmd = "ray_scaling", f"{PY} bench/ray_scaling.py"
    text = ("## Scale-out with Ray: a sensitivity scan and a sweep, local against Ray workers\n\nNo published "
            "anchor; the reference is the local runner's loop on the same machine in the same run.\n\n")
    md = r.md(stem)
    if not md:
        return text + missing(cmd, stem)
    body = md.split("\n", 2)[2] if md.startswith("# ") else md   # without its own title
    return text + body.replace("## ", "### ") + f"\nSaved as [`bench/results/{stem}.md`](../bench/results/{stem}.md).\n"


# ---------------------------------------------------------------- the Pareto figure

def gpu(r: Results) -> str:
    """The GPU runs (`scripts/gpu-check`: every *_cuda result), or why there are none."""
    text = ("## GPU\n\nEvery script takes `--device cuda`; `scripts/gpu-check` runs the GPU-marked tests and the GPU "
            "benchmarks (training with data resident on the GPU and AMP, fp16/bf16 latency, distillation, structured "
            "pruning, Deep Compression, serving) in one command and writes `*_cuda` results beside the CPU ones.\n\n")
    found = sorted(r.folder.glob("*_cuda.md"))
    if not found:
        return text + ("_Not measured: no GPU was lent to the sessions that produced these results (the device "
                       "tool's status said no machine was drawn for this task), and no `*_cuda` result is saved. "
                       "The CPU tables above are the measured ones._\n")
    rows = [[p.stem, f"[`bench/results/{p.name}`](../bench/results/{p.name})",
             time.strftime("%Y-%m-%d %H:%M", time.gmtime(p.stat().st_mtime))] for p in found]
    return text + "| result | file | date |\n|---|---|---|\n" + "\n".join("| " + " | ".join(c) + " |" for c in rows) + "\n"


def variant_rows(r: Results) -> list[dict]:
    """Every variant the saved results describe, as core.measure.pareto.compare_rows-shaped rows."""
    rows: list[dict] = []
    for p in sorted(r.folder.glob("*.json")):
        quick_file = p.stem.endswith("_quick")
        if (quick_file and not r.quick) or (not quick_file and r.quick and (r.folder / f"{p.stem}_quick.json").exists()):
            continue
        j = json.loads(p.read_text()) if p.exists() else {}
        for v in j.get("variants", []) if isinstance(j, dict) else []:
            if isinstance(v, dict) and v.get("accuracy") is not None and v.get("size_bytes"):
                rows.append({**v, "id": f"{p.stem}:{v['id']}",
                             "parent_id": f"{p.stem}:{v['parent_id']}" if v.get("parent_id") else ""})
    dc = r.json("deep_compression") or {}
    prev = ""
    for i, st in enumerate(dc.get("stages", [])):
        if st.get("bytes") and st.get("accuracy") is not None:
            vid = f"deep_compression:{i}"
            rows.append({"id": vid, "name": f"Deep Compression: {st.get('stage')}", "parent_id": prev,
                         "method": "trained" if i == 0 else "deep compression", "kind": st.get("format", ""),
                         "accuracy": st["accuracy"], "size_bytes": st["bytes"]})
            prev = vid
    q = r.json("quant_bench") or {}
    for x in q.get("rows", []):
        base = f"quant_bench:{x['model']}"
        if not any(v["id"] == base for v in rows):
            rows.append({"id": base, "name": f"{x['model']} (float)", "parent_id": "",
                         "method": "prune" if "pruned" in x["model"] else "trained",
                         "kind": "float", "accuracy": x["float_acc"], "size_bytes": x["float_bytes"]})
        rows.append({"id": f"{base}:{x['mode']}", "name": f"{x['model']} {x['mode']}", "parent_id": base,
                     "method": "quantize", "kind": x.get("kind", ""), "accuracy": x["child_acc"],
                     "size_bytes": x["child_bytes"]})
    return rows


PNG_HTML = """<html><head><meta charset="utf-8"><style>body{margin:0;background:white}</style></head>
<body>%s</body></html>"""


def pareto_png(rows: list[dict], png: Path) -> bool:
    """Render the Compare page's accuracy/size figure of `rows` to `png` with headless Chromium."""
    if not rows or not Path(CHROMIUM).exists():
        return False
    from core.viz.compare import tradeoff_chart
    fig = tradeoff_chart(rows, "size_bytes", title="Every benchmark variant: test accuracy against file size",
                         height=620)
    fig.update_layout(width=1100, legend={"orientation": "h", "y": -0.15})
    shown = [r["accuracy"] for r in rows if r["accuracy"] >= 0.5] or [r["accuracy"] for r in rows]
    lo = min(shown)    # an unrecovered cut (near chance) would squash the rest: it is left below the axis
    hi = max(r["accuracy"] for r in rows)
    fig.update_yaxes(range=[max(0.0, lo - 0.01), min(1.0, hi + 0.01)])
    html = PNG_HTML % fig.to_html(full_html=False, include_plotlyjs=True, config={"staticPlot": True})
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1120, "height": 660})
            page.set_content(html, wait_until="load")
            page.wait_for_selector(".main-svg", timeout=30_000)
            png.parent.mkdir(parents=True, exist_ok=True)
            page.locator(".js-plotly-plot").first.screenshot(path=str(png))
        finally:
            browser.close()
    return True


def build(results: Path, out: Path, png: Path | None, quick: bool = False) -> str:
    r = Results(results, quick)
    rows = variant_rows(r)
    drew = pareto_png(rows, png) if png else False
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    text = ("# Benchmarks\n\nGenerated by `bench/make_benchmarks_doc.py` from the saved results in `bench/results/` "
            f"(repository at {rev or '?'}, {time.strftime('%Y-%m-%d %H:%M')} UTC). Rerun everything with "
            "`scripts/bench` (add `--quick` for a smoke run of a few minutes that leaves these results alone); each "
            "row names the command that produced it, the machine and the date. Anchors are the papers' published "
            "numbers on their own models and data sets (CIFAR-10, MNIST); ours are on Fashion-MNIST on this "
            "machine, so they compare the shape of the trade-off, not the same task.\n\n")
    for part in (deep_compression, quantization, speed, structured, distillation, engine, serving, scaling, gpu):
        text += part(r) + "\n"
    text += "## Accuracy against size: every variant the benchmarks made\n\n"
    if drew:
        rel = os.path.relpath(png, out.parent)
        text += (f"![Pareto front]({rel})\n\n{len(rows)} variants from the saved results (the Compare page's figure, "
                 "`core.viz.compare.tradeoff_chart`: a point per variant coloured by the step that made it, a line "
                 "to its parent, the Pareto front dashed), rendered by headless Chromium. Variants under 50% "
                 "(channel cuts before their recovery) are below the visible range.\n")
    else:
        text += ("_No figure: " + ("no saved result lists variants with accuracy and size._\n" if not rows
                                   else f"no Chromium at {CHROMIUM} (or --no-png)._\n"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=str(REPO / "bench" / "results"))
    ap.add_argument("--out", default=str(REPO / "docs" / "BENCHMARKS.md"))
    ap.add_argument("--png", default=None, help="default: pareto.png beside --out")
    ap.add_argument("--no-png", action="store_true")
    ap.add_argument("--quick", action="store_true", help="prefer <stem>_quick results (what scripts/bench --quick saves)")
    a = ap.parse_args()
    out = Path(a.out)
    png = None if a.no_png else Path(a.png) if a.png else out.parent / "pareto.png"
    build(Path(a.results), out, png, a.quick)
    print(f"wrote {out}" + (f" and {png}" if png and png.exists() else ""))


if __name__ == "__main__":
    main()
