"""core.measure.pareto (the front, the comparison rows with ratios only where allowed, the CSV) and the
figures of core.viz.compare, on hand-made variants (no models needed)."""
from __future__ import annotations

import csv
import io
import random

import pytest

from core.measure.pareto import compare_rows, front_ids, method_of, pareto_front, rows_csv, tree_order
from core.store.workspace import Variant
from core.viz.compare import lineage_tree, method_colors, tradeoff_chart

CPU = "cpu: x86_64, 2 threads"
GPU = "cuda: NVIDIA H200"


def variant(vid, parent=None, *, step="train", acc=0.9, size=1000, b1=1.0, b64=10.0, device=CPU, kind=None, t=0.0,
            **step_kw):
    metrics = {"accuracy": acc, "params": 1000, "nonzero_params": 400 if kind == "masked" else 1000,
               "size_bytes": size, "dense_size_bytes": 4000, "latency_ms_b1": b1, "latency_ms_b64": b64,
               "macs": 5000, "device": device}
    flags = {"masked": kind == "masked", "shrunk": kind == "shrunk", "quantized": kind == "quantized",
             "simulated": False}
    return Variant(vid, f"v-{vid}", parent, "fashion-mnist", {"name": "lenet5"}, [{"step": step, **step_kw}],
                   metrics, flags, f"variants/{vid}/weights.safetensors", "dense", created_at=t)


def brute_front(points):
    out = []
    for i, (c, a) in enumerate(points):
        beaten = any((c2 <= c and a2 >= a) and (c2 < c or a2 > a) for j, (c2, a2) in enumerate(points) if j != i)
        if not beaten:
            out.append(i)
    return out


def test_pareto_front_keeps_exactly_the_points_nothing_beats():
    pts = [(100, 0.90), (50, 0.85), (200, 0.92), (150, 0.88), (50, 0.80), (300, 0.91)]
    assert pareto_front(pts) == [1, 0, 2]          # ordered by cost
    assert pareto_front([]) == []
    assert pareto_front([(1, 0.5)]) == [0]
    assert pareto_front([(1, 0.5), (1, 0.5)]) == [0, 1]   # an exact tie: neither beats the other
    rng = random.Random(0)
    for _ in range(200):
        pts = [(rng.choice([1, 2, 3, 5, 8]), rng.choice([0.5, 0.6, 0.7, 0.8])) for _ in range(rng.randint(1, 9))]
        assert sorted(pareto_front(pts)) == brute_front(pts), pts


def test_rows_have_the_metrics_ratios_to_root_only_on_the_same_device_and_the_flags():
    root = variant("r", acc=0.90, size=4000, b1=2.0, b64=20.0, t=0)
    masked = variant("m", "r", step="prune", method="l1", acc=0.88, size=1000, b1=2.0, b64=20.0, kind="masked", t=1)
    shrunk = variant("s", "r", step="prune", method="channel", acc=0.86, size=2000, b1=1.0, b64=5.0, kind="shrunk",
                     device=GPU, t=2)
    quant = variant("q", "m", step="quantize", mode="static-int8", acc=0.87, size=500, b1=0.5, b64=4.0,
                    kind="quantized", t=3)
    rows = {r["id"]: r for r in compare_rows([quant, shrunk, masked, root])}
    assert [r["id"] for r in compare_rows([quant, shrunk, masked, root])] == ["r", "m", "q", "s"]   # tree order
    assert rows["m"]["smaller_than_root"] == pytest.approx(4.0)
    assert rows["m"]["faster_than_root_b1"] == pytest.approx(1.0)
    assert rows["m"]["accuracy_vs_root_pp"] == pytest.approx(-2.0)
    assert rows["m"]["masked"] is True and rows["m"]["kind"] == "masked"
    assert rows["q"]["root_id"] == "r" and rows["q"]["depth"] == 2
    assert rows["q"]["faster_than_root_b64"] == pytest.approx(5.0)
    # measured on another device: its size ratio is shown, its latency ratios are not
    assert rows["s"]["smaller_than_root"] == pytest.approx(2.0)
    assert rows["s"]["faster_than_root_b1"] is None and rows["s"]["faster_than_root_b64"] is None
    assert "different devices" in rows["s"]["latency_vs_root_b1"]
    assert rows["r"]["smaller_than_root"] is None and rows["r"]["latency_vs_root_b1"] == "this is the root"
    assert {r["method"] for r in rows.values()} == {"trained", "prune: l1", "prune: channels", "quantize: static-int8"}
    assert front_ids(list(rows.values()), "size_bytes") == ["q", "m", "r"]


def test_method_of_names_the_last_step():
    assert method_of(variant("a", step="prune_recover", prune={"method": "channel"})) == "prune + recover: channels"
    assert method_of(variant("a", step="quantize", mode="weight-only", bits=4)) == "quantize: weight-only 4-bit"
    assert method_of(variant("a", step="distill", ablation=True)) == "scratch (distill ablation)"
    assert method_of(variant("a", step="upload")) == "uploaded"


def test_csv_has_every_variant_with_exact_metric_names():
    rows = compare_rows([variant("r"), variant("c", "r", step="prune", method="l1", size=500, b1=None, t=1)])
    data = list(csv.DictReader(io.StringIO(rows_csv(rows).decode())))
    assert [d["id"] for d in data] == ["r", "c"]
    for col in ("accuracy", "params", "nonzero_params", "size_bytes", "dense_size_bytes", "latency_ms_b1",
                "latency_ms_b64", "macs", "device", "masked", "shrunk", "quantized", "simulated", "smaller_than_root"):
        assert col in data[0]
    assert data[1]["size_bytes"] == "500.0" and data[1]["latency_ms_b1"] == ""   # not measured: empty, not 0
    assert data[1]["smaller_than_root"] == "2.0"


def test_tradeoff_chart_points_front_links_and_active_ring():
    vs = [variant("r", acc=0.9, size=4000, t=0), variant("m", "r", step="prune", method="l1", acc=0.85, size=1000, t=1),
          variant("x", "r", step="prune", method="l1", acc=0.80, size=3000, t=2)]
    rows = compare_rows(vs)
    fig = tradeoff_chart(rows, "size_bytes", active_id="m")
    names = [tr.name for tr in fig.data]
    assert "Pareto front" in names and "parent → child" in names and "active variant" in names
    front = next(tr for tr in fig.data if tr.name == "Pareto front")
    assert list(front.x) == [1000, 4000] and front.line.shape == "hv"
    marks = [tr for tr in fig.data if tr.mode == "markers" and tr.name != "active variant"]
    ids = [cd[0] for tr in marks for cd in tr.customdata]
    assert sorted(ids) == ["m", "r", "x"]
    links = next(tr for tr in fig.data if tr.name == "parent → child")
    assert list(links.x).count(None) == 2                         # two parent-child pairs
    assert fig.layout.xaxis.type == "log"
    lat = tradeoff_chart(rows, "latency_ms_b64")
    assert "batch 64" in lat.layout.xaxis.title.text
    with pytest.raises(ValueError, match="cost must be one of"):
        tradeoff_chart(rows, "accuracy")


def test_a_point_without_the_cost_is_left_out_and_busy_latencies_are_marked():
    busy = variant("b", "r", step="prune", method="l1", t=1)
    busy.metrics["latency_busy"] = True
    rows = compare_rows([variant("r"), busy, variant("n", "r", step="prune", method="l1", b1=None, t=2)])
    fig = tradeoff_chart(rows, "latency_ms_b1")
    marks = [tr for tr in fig.data if tr.mode == "markers"]
    ids = {cd[0]: sym for tr in marks for cd, sym in zip(tr.customdata, tr.marker.symbol, strict=True)}
    assert set(ids) == {"r", "b"} and ids["b"] == "x" and ids["r"] == "circle"


def test_lineage_tree_places_children_under_their_parents():
    vs = [variant("r", t=0), variant("a", "r", step="prune", method="l1", t=1),
          variant("b", "a", step="finetune", t=2), variant("c", "r", step="quantize", mode="fp16", t=3),
          variant("z", t=4)]
    order = [v.id for v in tree_order(vs)]
    assert order == ["r", "a", "b", "c", "z"]
    fig = lineage_tree(compare_rows(vs), active_id="b")
    pos = {cd[0]: (x, y) for tr in fig.data if tr.customdata is not None
           for cd, x, y in zip(tr.customdata, tr.x, tr.y, strict=True)}
    assert pos["r"][0] == 0 and pos["a"][0] == 1 and pos["b"][0] == 2 and pos["z"][0] == 0
    assert pos["r"][1] > pos["a"][1] > pos["b"][1] > pos["c"][1] > pos["z"][1]
    assert method_colors(["trained", "fine-tune"])["trained"] == method_colors(["trained"])["trained"]


LANE = "cpu: AMD EPYC, AVX512 kernels + AVX-512 VNNI, 1 thread"


def test_rows_of_one_runtime_carry_its_figures_intervals_device_and_why_one_is_missing():
    root = variant("r", b1=2.0, device=LANE)
    root.metrics.update({"latency_ms_b1_ci": [1.9, 2.1], "ort_latency_ms_b1": 1.0, "ort_latency_ms_b1_ci": [0.95, 1.05],
                         "ort_latency_ms_b64": 8.0, "ort_device": LANE, "ort_unavailable": ""})
    child = variant("c", "r", step="quantize", mode="static-int8", b1=1.0, device=LANE, t=1)
    child.metrics.update({"reference_latency_ms_b1": 2.2, "latency_ms_b1_vs_reference_ci": [2.0, 2.4],
                          "ort_latency_ms_b1": float("nan"), "ort_latency_ms_b64": 2.0, "ort_device": LANE,
                          "ort_latency_unmeasured": "not measurable now: other processes are using 1.8 of 2 cores "
                                                    "(batch 1)", "ort_unavailable": ""})
    gone = variant("g", "r", step="prune", method="l1", device=LANE, t=2)
    gone.metrics["ort_unavailable"] = "ONNX Runtime cannot run this model: ..."
    torch_rows = {r["id"]: r for r in compare_rows([root, child, gone])}
    c = torch_rows["c"]
    assert c["runtime"] == "torch" and c["device"] == LANE and c["latency_ms_b1"] == 1.0
    # a child of the root was timed together with it: that pairing, with its interval, is the ratio to both
    assert c["faster_than_parent_b1"] == pytest.approx(2.2) and c["faster_than_root_b1"] == pytest.approx(2.2)
    assert (c["faster_than_parent_b1_low"], c["faster_than_parent_b1_high"]) == (2.0, 2.4)
    assert "timed together" in c["latency_vs_root_b1"]
    assert torch_rows["r"]["latency_ms_b1_low"] == 1.9 and torch_rows["r"]["latency_missing_b1"] == ""
    ort = {r["id"]: r for r in compare_rows([root, child, gone], runtime="onnxruntime")}
    assert ort["r"]["latency_ms_b1"] == 1.0 and ort["r"]["latency_ms_b64"] == 8.0 and ort["r"]["device"] == LANE
    assert ort["c"]["latency_ms_b1"] is None and ort["c"]["latency_ms_b64"] == 2.0
    assert ort["c"]["latency_missing_b1"].startswith("not measurable now: other processes")
    assert ort["c"]["faster_than_root_b1"] is None and ort["c"]["faster_than_root_b64"] == pytest.approx(4.0)
    assert ort["g"]["latency_missing_b1"] == "no ONNX Runtime figure: ONNX Runtime cannot run this model: ..."
    assert compare_rows([variant("x")], runtime="onnxruntime")[0]["latency_missing_b1"] == "not measured in ONNX Runtime"
    data = list(csv.DictReader(io.StringIO(rows_csv(list(ort.values())).decode())))
    assert data[0]["runtime"] == "onnxruntime" and data[0]["latency_ms_b1_low"] == "0.95"
    assert data[1]["latency_ms_b1"] == "" and data[1]["latency_missing_b1"].startswith("not measurable now")
    fig = tradeoff_chart(list(ort.values()), "latency_ms_b1")
    assert "ONNX Runtime" in fig.layout.xaxis.title.text
    marks = [tr for tr in fig.data if tr.mode == "markers"]
    assert [cd[0] for tr in marks for cd in tr.customdata] == ["r"]        # no dot for a missing figure
    assert marks[0].error_x.array == pytest.approx((0.05,)) and marks[0].error_x.arrayminus == pytest.approx((0.05,))
    assert "95% interval 0.950-1.050 ms" in marks[0].hovertext[0] and f"in ONNX Runtime on {LANE}" in marks[0].hovertext[0]
    torch_fig = tradeoff_chart(list(torch_rows.values()), "latency_ms_b1")
    hover = next(h for tr in torch_fig.data if tr.mode == "markers" for cd, h in zip(tr.customdata, tr.hovertext,
                                                                                       strict=True) if cd[0] == "c")
    assert "2.20x faster than its parent (95% interval 2.00x-2.40x)" in hover
