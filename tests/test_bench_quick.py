"""The benchmark scripts in their quick mode, so they cannot rot: each writes its table and json to a
temporary folder (the measured results in bench/results/ are never touched)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], timeout: int = 300) -> str:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    return p.stdout


def md_rows(md: str, first_col: str) -> dict[str, dict[str, str]]:
    """The rows of the markdown table whose first column is `first_col`, by that column's value."""
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    head = next(i for i, line in enumerate(lines) if line.split(" | ")[0] == f"| {first_col}")
    cols = [c.strip() for c in lines[head].strip("|").split("|")]
    rows = [dict(zip(cols, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[head + 1:]]
    return {r[first_col]: r for r in rows}


@pytest.mark.slow
def test_structured_bench_quick(tmp_path):
    run(["bench/structured_bench.py", "--quick", "--subset", "500", "--results", str(tmp_path)])
    j = json.loads((tmp_path / "structured_bench_quick.json").read_text())
    stages = [r["stage"] for r in j["rows"]]
    assert stages == ["pruned", "recovered", "recovered+int8"]
    rec = j["rows"][1]
    assert rec["macs_ratio"] > 1.5 and rec["params_ratio"] > 1.5          # 50% of the channels: about 4x
    assert rec["speedup_b64"] > 0 and 0 <= rec["acc"] <= 1
    assert j["rows"][2]["size_bytes"] < rec["size_bytes"]                  # int8 on top is smaller again
    assert j["anchor"]["macs_ratio"] == 2.57 and j["load_before"] and j["variants"]
    md = (tmp_path / "structured_bench_quick.md").read_text()
    assert "DepGraph" in md and "| channel 50% + fine-tune 1 ep |" in md
    # every figure is what its row measured and stored, and the table prints the same figures (no speed is
    # asserted: a speed-up is a ratio of two latencies timed now, whatever the machine's load)
    variants = {v["id"]: v for v in j["variants"]}
    parent = variants["base-resnet-small"]
    table = md_rows(md, "variant")
    assert list(table) == [r["variant"] for r in j["rows"]]
    for r in j["rows"]:
        for b in (1, 64):
            p_ms, c_ms = r[f"parent_b{b}_ms"], r[f"child_b{b}_ms"]
            assert all(math.isfinite(x) and x > 0 for x in (p_ms, c_ms)), r
            assert r[f"speedup_b{b}"] == pytest.approx(p_ms / c_ms, rel=1e-9)   # parent / child, same call
        v = variants[r["id"]]                                                     # the stored child
        assert r["size_bytes"] == v["size_bytes"] and r["acc"] == v["accuracy"] and r["parent_acc"] == parent["accuracy"]
        assert r["size_ratio"] == pytest.approx(parent["size_bytes"] / v["size_bytes"], rel=1e-9)
        assert r["params_ratio"] == pytest.approx(parent["params"] / r["params"], rel=1e-9)
        assert r["macs_ratio"] == pytest.approx(parent["macs"] / r["macs"], rel=1e-9)
        assert r["acc_change_pt"] == pytest.approx(100 * (r["acc"] - r["parent_acc"]), abs=1e-9)
        printed = table[r["variant"]]
        for col in ("macs_ratio", "params_ratio", "size_ratio", "parent_b1_ms", "child_b1_ms", "speedup_b1",
                    "parent_b64_ms", "child_b64_ms", "speedup_b64", "acc", "acc_change_pt"):
            assert printed[col] == f"{r[col]:.3f}", (col, printed[col], r[col])
    ids = [r["id"] for r in j["rows"]]                                           # pruned <- recovered <- int8
    assert [variants[i]["parent_id"] for i in ids] == ["base-resnet-small", *ids[:-1]]


@pytest.mark.slow
def test_deep_compression_bench_quick(tmp_path):
    out = run(["bench/deep_compression.py", "--quick", "--subset", "300", "--out", str(tmp_path)], timeout=600)
    j = json.loads((tmp_path / "deep_compression_quick.json").read_text())
    stages = [r["stage"] for r in j["stages"]]
    assert stages == ["float32 dense (base-lenet5)", "pruned + retrained", "+ weight sharing (6/4 bit)",
                      "+ Huffman coding"]
    ratios = [r["ratio"] for r in j["stages"]]
    assert ratios == sorted(ratios) and ratios[-1] > 30             # every stage shrinks the file
    final = j["stages"][-1]
    assert j["stages"][2]["accuracy"] == final["accuracy"]          # Huffman coding is lossless
    rc = j["reload_check"]                                          # the loader, in a fresh process, full test split
    assert rc["test_images"] == 10_000 and rc["file_bytes"] == final["bytes"]
    assert abs(rc["fresh_process_accuracy"] - final["accuracy"]) < 1e-3
    assert "Where the bytes went" in (tmp_path / "deep_compression_quick.md").read_text() and "reloaded" in out


def test_engine_bench_preview_quick(tmp_path):
    run(["bench/engine_bench.py", "--quick", "--no-app", "--repeats", "1", "--results", str(tmp_path)])
    j = json.loads((tmp_path / "engine_bench_quick.json").read_text())
    models = {r["model"] for r in j["preview"]}
    assert {"base-lenet5", "base-lenet300", "base-resnet-small"} <= models
    assert all(r["median_s"] > 0 for r in j["preview"]) and j["app_start"] == []
    # one timed call each (--repeats 1): its median is that call, and "under 1 s" is read off it
    table = md_rows((tmp_path / "engine_bench_quick.md").read_text(), "model")
    assert set(table) == models
    for r in j["preview"]:
        assert r["calls"] == 1 and math.isfinite(r["median_s"]) and r["median_s"] == r["max_s"]
        assert r["under_1s"] == (r["max_s"] < 1.0)
        printed = table[r["model"]]
        assert (printed["setting"], printed["calls"], printed["median_s"], printed["under_1s"]) == (
            r["setting"], "1", f"{r['median_s']:.3f}", str(r["under_1s"]))
    assert j["summary"] == {"preview_median_s_max": max(r["median_s"] for r in j["preview"]),
                            "preview_max_s": max(r["max_s"] for r in j["preview"])}


def test_make_benchmarks_doc(tmp_path):
    """The document from the saved results, a missing result named by its command, and the figure."""
    results = tmp_path / "results"
    results.mkdir()
    for p in (REPO / "bench" / "results").glob("*"):
        if p.is_file() and p.stem in ("quant_bench", "distill_bench", "train_overhead_cpu", "serve_bench",
                                          "ray_scaling"):
            (results / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "docs" / "BENCHMARKS.md"
    chromium = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium")).exists()
    run(["bench/make_benchmarks_doc.py", "--results", str(results), "--out", str(out)]
        + ([] if chromium else ["--no-png"]), timeout=120)
    text = out.read_text()
    for area in ("Deep Compression", "Quantization", "Structured pruning", "Distillation", "Engine", "Serving",
                 "Scale-out with Ray", "GPU"):
        assert f"## {area}" in text
    if (results / "ray_scaling.md").exists():
        assert "### Measured" in text and "| sweep | ray-2 |" in text and "### Expected with N workers" in text
    assert "2.57x" in text and "39x" in text and "91%" in text                 # the anchors
    assert "bench/structured_bench.py" in text and "Not measured yet" in text  # no structured result here: the command
    if (results / "quant_bench.json").exists():
        assert "| lenet5: size / float" in text
    if chromium and (results / "quant_bench.json").exists():
        png = out.parent / "pareto.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow
def test_scripts_bench_quick_runs_the_other_scripts_and_leaves_the_results_alone():
    """`scripts/bench --quick` with the scripts the tests above do not run: each finishes, its
    outputs go to bench/results/quick/, and the measured results in bench/results/ are unchanged."""
    names = "train_overhead,quant_bench,prune_bench,distill_bench,serve_bench"
    results = REPO / "bench" / "results"
    before = {p.name: p.read_bytes() for p in results.glob("*") if p.is_file()}
    # a smoke run: its timings are not measurements, so the lane may give up on each after half a second
    p = subprocess.run(["scripts/bench", "--quick", "--only", names], cwd=REPO, capture_output=True, text=True,
                       timeout=900, env={**os.environ, "WORKBENCH_LATENCY_BUDGET_S": "0.5"})
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "scripts/bench: done" in p.stdout
    for name in names.split(","):
        assert f"== {name}: " in p.stdout and f"{name}: not there yet" not in p.stdout
    quick = results / "quick"
    assert (quick / "BENCHMARKS.md").exists() and any(quick.glob("*.json"))
    after = {p.name: p.read_bytes() for p in results.glob("*") if p.is_file()}
    assert after == before


def test_ray_scaling_tables_from_runs():
    """The scaling tables come from the runs: medians, speed-ups against local, whether every
    configuration computed the same numbers, and wall = overhead + ceil(tasks / N) x per task."""
    sys.path.insert(0, str(REPO / "bench"))
    import ray_scaling as rs

    def run_(config, wall, fp=1, task_s=None):
        return {"workload": "sweep", "config": config, "wall_s": wall, "ray_init_s": 2.0, "tasks": 4,
                "task_s": task_s, "fingerprint": {"a": fp}, "device": "cpu"}

    raw = [run_("local", 20.0), run_("local", 22.0), run_("ray-1", 34.0, task_s=[7.0, 7.0, 7.0, 7.0]),
           run_("ray-2", 25.0), run_("ray-2", 20.0, fp=2)]
    rows = {r["configuration"]: r for r in rs.summary(raw)}
    assert rows["local"]["wall s (median)"] == "21.0" and rows["local"]["spread s"] == "20.0-22.0"
    assert rows["ray-2"]["speed-up vs local"] == "0.93x" and rows["ray-2"]["same numbers"] == "NO"
    model = {(m["tasks"], m["workers"]): m for m in rs.expected(raw)}
    assert model[(4, 1)]["overhead s"] == "6.0" and model[(4, 2)]["expected wall s"] == "20.0"
    assert model[(16, 16)]["expected wall s"] == "13.0" and model[(16, 16)]["expected speed-up vs 1 worker"] == "9.08x"
