"""The measurement lane (core.measure.lane, core.measure.latency): one timing at a time on the
machine, a fixed thread count, preempted passes dropped, figures withheld when they do not settle."""
import multiprocessing as mp
import os
import threading
import time

import pytest
import torch
import torch.nn as nn

from core.measure.lane import (
    TARGET_HALF_WIDTH,
    CpuWatch,
    Timing,
    device_label,
    is_lane_device,
    ratio_of,
    run_lane,
    timed_lane,
    timing_threads,
)
from core.measure.latency import time_models


def _busy(seconds: float):
    def run():
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
    return run


def test_a_pass_that_was_off_its_core_is_dropped_and_one_that_ran_is_kept():
    # sleeping stands for being preempted: wall time passes, the thread's CPU time does not
    rep = run_lane({"preempted": {1: lambda: time.sleep(0.002)}, "ran": {1: _busy(0.001)}},
                   warmup=0, min_runs=10, min_seconds=0, budget_s=0.5)
    assert rep.timings["preempted"][1].runs == 0 and rep.timings["preempted"][1].dropped >= 10
    assert rep.timings["ran"][1].runs >= 10
    assert rep.shown_ms("preempted", 1) is None            # nothing clean: no figure
    assert not rep.ratio_figure("preempted", "ran", 1).shown


def test_a_ratio_is_shown_with_its_interval_only_when_it_settles():
    steady = Timing.of([0.010] * 30)
    twice = Timing.of([0.005] * 30)
    r = ratio_of(steady, twice)
    assert r.shown and r.value == pytest.approx(2.0) and r.low <= 2.0 <= r.high
    spread = Timing.of([0.001 * (1 + (i % 7) ** 2) for i in range(30)])   # 1..37 ms
    wide = ratio_of(spread, twice)
    assert not wide.shown and "wider than" in wide.reason
    assert not ratio_of(Timing.of([0.01] * 3), twice).shown           # too few passes


def test_two_timings_never_overlap_on_the_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_TIMING_LOCK", str(tmp_path / "lane.lock"))
    holding, release = threading.Event(), threading.Event()

    def hold():
        with timed_lane():
            holding.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert holding.wait(30)
        rep = run_lane({"m": {1: _busy(0.0005)}}, budget_s=1, wait_s=0.2)
    finally:
        release.set()
        t.join(30)
    assert rep.lane_busy and rep.shown_ms("m", 1) is None
    assert rep.unmeasurable_reason().startswith("not measurable now: another latency measurement")
    after = run_lane({"m": {1: _busy(0.0005)}}, budget_s=1, wait_s=5)   # released: the lane is free again
    assert not after.lane_busy and after.timings["m"][1].runs > 0


def test_the_lane_times_on_its_own_thread_count_and_restores_the_callers():
    torch.set_num_threads(2)
    seen = []
    # wait for the lane however long another test process holds it: this test is about the threads
    run_lane({"m": {1: lambda: seen.append(torch.get_num_threads())}}, warmup=0, min_runs=3, budget_s=0.2, wait_s=120)
    assert set(seen) == {timing_threads()} and torch.get_num_threads() == 2


def _label_in_child(q):
    torch.set_num_threads(1)           # a job's worker runs on its own thread count
    q.put(device_label("cpu"))


def test_one_device_per_machine_whatever_threads_the_process_runs():
    torch.set_num_threads(2)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_label_in_child, args=(q,))
    p.start()
    child = q.get(timeout=120)
    p.join(60)
    assert child == device_label("cpu") and is_lane_device(child)
    assert " kernels" in child and child.endswith(("thread", "threads"))
    assert not is_lane_device("cpu: x86_64, 2 threads")          # the old strings are told apart


def test_latency_is_a_positive_median_with_its_interval():
    rep = time_models({"m": nn.Linear(10, 10)}, (10,), batches=(4,), min_runs=5, min_seconds=0, budget_s=2)
    t = rep.timings["m"][4]
    assert t.runs + t.dropped >= 5 and 0 < t.median_ms < 100
    if t.settled:                      # on a quiet machine: the interval holds the median, within +/-10%
        assert t.low_ms <= t.median_ms <= t.high_ms and t.half_width <= TARGET_HALF_WIDTH
        assert rep.shown_ms("m", 4) == t.median_ms
    else:
        assert rep.shown_ms("m", 4) is None and rep.unmeasurable_reason().startswith("not measurable now")


def test_a_timing_is_the_median_and_interquartile_range_of_its_passes():
    t = Timing.of([0.004, 0.001, 0.003, 0.002])           # seconds, in the order they were timed
    assert (t.median_ms, t.iqr_ms, t.runs) == pytest.approx((2.5, 2.5, 4))   # quartiles 1.25 and 3.75 ms
    one = Timing.of([0.005])                                               # one pass: no spread, no interval
    assert (one.median_ms, one.iqr_ms, one.runs, one.settled) == (5.0, 0.0, 1, False)


def test_models_are_timed_alternately_with_spread_and_left_as_they_were():
    a, b = nn.Linear(64, 64), nn.Sequential(nn.Linear(64, 256), nn.Linear(256, 64))
    b.train()
    order = []
    a.register_forward_hook(lambda m, i, o: order.append("a"))
    b.register_forward_hook(lambda m, i, o: order.append("b"))
    rep = time_models({"a": a, "b": b}, (64,), batches=(8,), warmup=0, min_runs=6, min_seconds=0, budget_s=1)
    assert order[:6] == ["a", "b"] * 3            # one pass of each in turn, not all of a then all of b
    t = rep.timings
    assert t["a"][8].runs + t["a"][8].dropped == t["b"][8].runs + t["b"][8].dropped >= 6
    assert t["a"][8].iqr_ms >= 0
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
