import math
import multiprocessing as mp
import os
import time

import pytest
import torch
import torch.nn as nn

from core.formats.encoding import encode_dense
from core.measure.metrics import (
    METRIC_NAMES,
    CpuWatch,
    Timing,
    accuracy,
    count_macs,
    count_params,
    evaluate,
    layer_stats,
    measure_latency,
    time_models,
)


def _hand_built():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU(), nn.Linear(10, 10))
    with torch.no_grad():
        m[1].weight[:, :392] = 0        # 3,920 zeros
        m[3].bias.zero_()               # 10 zeros
    return m


def test_counts_match_a_hand_built_module():
    m = _hand_built()
    params, nonzero = count_params(m)
    assert params == 784 * 10 + 10 + 10 * 10 + 10
    assert nonzero == params - 3920 - 10
    assert count_macs(m, (1, 28, 28)) == 784 * 10 + 10 * 10
    rows = {r.name: r for r in layer_stats(m)}
    assert set(rows) == {"1", "3"}
    assert rows["1"].params == 7850 and rows["1"].nonzero == 7850 - 3920
    assert math.isclose(rows["1"].sparsity, 3920 / 7840)      # zeros among the weights, biases apart
    assert rows["3"].shape == (10, 10)


def test_conv_macs():
    m = nn.Conv2d(1, 4, 3)   # 26x26 outputs, 4 channels, 9 MACs each
    assert count_macs(m, (1, 28, 28)) == 26 * 26 * 4 * 9


def test_evaluate_reports_every_fixed_metric(tiny_data):
    m = _hand_built()
    metrics = evaluate(m, tiny_data.test, (1, 28, 28), device="cpu").to_dict()
    assert set(METRIC_NAMES) <= set(metrics)
    assert metrics["accuracy"] == accuracy(m, tiny_data.test)
    assert metrics["dense_size_bytes"] == len(encode_dense(m.state_dict()))
    assert metrics["size_bytes"] <= metrics["dense_size_bytes"]
    assert metrics["latency_ms_b1"] > 0 and metrics["latency_ms_b64"] > metrics["latency_ms_b1"] / 2
    assert metrics["device"].startswith("cpu")


def test_accuracy_counts_the_whole_split(tiny_data):
    class Oracle(nn.Module):  # predicts class 0 always
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 0] = 1
            return out
    metrics = evaluate(Oracle(), tiny_data.test, (1, 28, 28), device="cpu", latency=False)
    expected = int((tiny_data.test.labels == 0).sum()) / len(tiny_data.test)
    assert math.isclose(metrics.accuracy, expected)


def test_latency_is_a_positive_median():
    ms = measure_latency(nn.Linear(10, 10), (10,), batch=4, min_runs=5, min_seconds=0)
    assert 0 < ms < 100


def test_a_timing_is_the_median_and_interquartile_range_of_its_passes():
    t = Timing.of([0.004, 0.001, 0.003, 0.002])           # seconds, in the order they were timed
    assert (t.median_ms, t.iqr_ms, t.runs) == pytest.approx((2.5, 2.5, 4))   # quartiles 1.25 and 3.75 ms
    assert Timing.of([0.005]) == Timing(5.0, 0.0, 1)                      # one pass: no spread


def test_models_are_timed_alternately_with_spread_and_left_as_they_were():
    a, b = nn.Linear(64, 64), nn.Sequential(nn.Linear(64, 256), nn.Linear(256, 64))
    b.train()
    order = []
    a.register_forward_hook(lambda m, i, o: order.append("a"))
    b.register_forward_hook(lambda m, i, o: order.append("b"))
    rep = time_models({"a": a, "b": b}, (64,), batches=(8,), warmup=0, min_runs=6, min_seconds=0)
    assert order[:6] == ["a", "b"] * 3            # one pass of each in turn, not all of a then all of b
    t = rep.timings
    assert t["a"][8].runs == t["b"][8].runs == 6 and t["a"][8].iqr_ms >= 0
    assert rep.ratio("b", "a", 8) == pytest.approx(t["b"][8].median_ms / t["a"][8].median_ms)
    assert b.training and a.training              # each left in the mode it was in


def _spin(started, stop) -> None:
    """Keep one core busy from `started` until `stop` (events, not a wall-clock span)."""
    started.set()
    while not stop.is_set():
        pass


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields_ = f.read().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def test_cpu_watch_sees_another_process_using_the_cpu():
    if not os.path.exists("/proc/stat"):
        pytest.skip("needs Linux /proc/stat")
    ctx = mp.get_context("spawn")
    started, stop = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_spin, args=(started, stop))
    p.start()
    try:
        assert started.wait(120), "the child never started spinning"   # a deadline that only bounds a hang
        t0 = time.monotonic()
        with CpuWatch() as busy:
            c0 = _cpu_seconds(p.pid)
            while _cpu_seconds(p.pid) - c0 < 0.5:       # however loaded the machine: until the child used 0.5 s
                assert time.monotonic() - t0 < 120, "the child got no CPU"
                time.sleep(0.05)
            child = _cpu_seconds(p.pid) - c0
        wall = time.monotonic() - t0                     # at least the watched span
    finally:
        stop.set()
        p.join(60)
    assert p.exitcode == 0
    assert busy.other_cores > 0.6          # one core kept busy by the child (this process only slept)
    # and that core is counted: the other processes' CPU over the block includes all the child used in it
    # (less a few clock ticks of rounding)
    assert busy.other_cores * wall >= child - 0.05, (busy.other_cores, wall, child)


def test_cpu_watch_counts_the_cpu_of_other_processes_only(monkeypatch):
    """The arithmetic on scripted samples (all CPU busy time, this process's CPU time, wall clock)."""
    def watch(start, end):
        samples = iter([start, end])
        monkeypatch.setattr(CpuWatch, "_sample", staticmethod(lambda: next(samples)))
        with CpuWatch() as w:
            pass
        return w.other_cores

    assert watch((100.0, 5.0, 10.0), (103.0, 5.5, 12.0)) == pytest.approx(1.25)   # (3 - 0.5) s over 2 s
    assert watch((100.0, 5.0, 10.0), (101.0, 6.0, 12.0)) == 0.0                   # all of it was ours
    assert watch((100.0, 5.0, 10.0), (100.0, 5.0, 10.0)) is None                  # no time passed
    assert watch(None, (100.0, 5.0, 10.0)) is None                                # no /proc/stat
