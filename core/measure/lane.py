"""The one measurement lane: every latency on this machine (pages, jobs, the CLI, benchmarks) is
timed through `timed_lane`, which

- takes a machine-wide lock (`fcntl.flock` on one file in the temporary directory), so two
  timings never overlap, whichever process or workspace asks;
- runs on a fixed, recorded number of threads (`timing_threads`: half the usable cores, at least
  one; one on a 2-core machine), so the app, the CLI and every job time on the same footing and
  name the same device (`device_label`: CPU model, the instruction sets its kernels use, threads);
- keeps only clean samples: a pass whose thread CPU time falls short of its wall time
  (`CLEAN_CPU_FRACTION`) was preempted by another process, and is dropped;
- repeats until every median and every ratio has a 95% interval within +/-10%
  (`TARGET_HALF_WIDTH`, bootstrap of the clean samples) or the time budget is spent. A figure
  that did not settle is reported as not measurable, with the reason, never as a number.

Why: on a 2-core shared server a background job can slow a forward pass several-fold, and a
figure taken then is not the model's speed. Clean samples are: the pass ran on its core,
uninterrupted. The calling thread's priority is raised for the timing where the OS allows it
(root or CAP_SYS_NICE), so passes are preempted less often; the clean-sample rule is what makes a
figure hold, the priority only makes it settle sooner.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from core.base.ratios import Ratio, speed_words

CLEAN_CPU_FRACTION = 0.9      # a pass whose thread CPU time is under this share of its wall time was preempted
TARGET_HALF_WIDTH = 0.10      # a median or a ratio is shown when its 95% interval is within +/-10%
BUSY_OTHER_CORES = 0.25       # other processes using more than this many cores while timing: the machine was busy
LANE_NICE = -10               # niceness of the timing thread, where the OS lets us raise it
BOOTSTRAP = 400
MIN_CLEAN = 8                 # fewer clean passes than this: no interval is trusted


# ---------------------------------------------------------------- the device a figure belongs to

def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def timing_threads() -> int:
    """Threads every CPU timing on this machine uses: env WORKBENCH_TIMING_THREADS, else half the
    usable cores (at least 1, at most 8), leaving the rest to the server and to jobs."""
    try:
        n = int(os.environ.get("WORKBENCH_TIMING_THREADS", "0"))
    except ValueError:
        n = 0
    return n if n > 0 else max(1, min(8, usable_cores() // 2))


_ISA_EXTRAS = (("amx_tile", "AMX"), ("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI"))


@functools.cache
def cpu_identity() -> str:
    """'AMD EPYC 7B13, AVX512 kernels + AVX-512 VNNI': the CPU model and the instruction sets its
    kernels use (PyTorch's dispatch level, plus the int8/bf16 extensions int8 kernels rely on).
    Two machines that both call themselves 'AMD EPYC' but differ in VNNI are told apart."""
    model, flags = "", set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "model name" and not model:
                model = " ".join(val.split())
            elif key.strip() == "flags" and not flags:
                flags = set(val.split())
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    kernels = torch.backends.cpu.get_cpu_capability()
    extras = [label for flag, label in _ISA_EXTRAS if flag in flags]
    return f"{model}, {kernels} kernels" + (" + " + ", ".join(extras) if extras else "")


def device_label(device: torch.device | str = "cpu", threads: int | None = None) -> str:
    """The `device` metric: hardware and timing threads, the same string for the app, the CLI and
    every job on one machine ('cpu: AMD EPYC, AVX512 kernels + AVX-512 VNNI, 1 thread',
    'cuda: NVIDIA H100 80GB HBM3'). The runtime is named by the metric (see `RUNTIMES`).
    `threads`: for work that is not timed in the lane (training), the threads it really uses."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(dev)}"
    n = threads or timing_threads()
    return f"cpu: {cpu_identity()}, {n} thread{'s' if n != 1 else ''}"


def is_lane_device(device: str | None) -> bool:
    """Whether a stored `device` string was written by this lane (older ones were 'cpu: x86_64, 2
    threads', which named neither the CPU nor its instruction sets)."""
    return bool(device) and (device.startswith("cuda:") or " kernels" in device)


def default_budget_s() -> float:
    """Seconds a latency measurement may take: per runtime for a variant, and for any `run_lane`
    call given no budget (env WORKBENCH_LATENCY_BUDGET_S, default 10). The lane stops as soon as
    the figures settle (about 1 s for LeNet-5 on a quiet machine); on a busy one it gives up after
    this long and the figure is "not measurable now"."""
    try:
        return max(0.5, float(os.environ.get("WORKBENCH_LATENCY_BUDGET_S", "10")))
    except ValueError:
        return 10.0


# ---------------------------------------------------------------- the machine-wide lock

class LaneBusy(RuntimeError):
    """Another measurement held the lane for longer than the caller would wait."""


def lock_path() -> Path:
    return Path(os.environ.get("WORKBENCH_TIMING_LOCK") or Path(tempfile.gettempdir()) / "compression-workbench-timing.lock")


@contextlib.contextmanager
def _raised_priority() -> Iterator[bool]:
    """The calling thread at LANE_NICE for the block where the OS allows it; yields whether it did."""
    tid = threading.get_native_id()
    try:
        before = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(before, LANE_NICE))
        raised = True
    except (OSError, AttributeError):
        before, raised = None, False
    try:
        yield raised
    finally:
        if raised:
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, before)


@contextlib.contextmanager
def timed_lane(wait_s: float = 30.0) -> Iterator[dict]:
    """Hold the machine's measurement lane for the block: the lock, `timing_threads()` threads and
    a raised priority. Raises LaneBusy when another measurement holds it for more than `wait_s`.
    Yields a dict with `waited_s` and `priority_raised`."""
    path = lock_path()
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o666)
    t0 = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() - t0 >= wait_s:
                    raise LaneBusy(f"another latency measurement held the lane for {wait_s:.0f} s") from None
                time.sleep(0.02)
        threads = torch.get_num_threads()
        torch.set_num_threads(timing_threads())
        try:
            with _raised_priority() as raised:
                yield {"waited_s": time.monotonic() - t0, "priority_raised": raised}
        finally:
            torch.set_num_threads(threads)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- clean samples and intervals

def _boot_medians(ms: np.ndarray) -> np.ndarray:
    """BOOTSTRAP medians of resamples of `ms` (a fixed seed: the same samples give the same interval)."""
    return np.median(np.random.default_rng(0).choice(ms, size=(BOOTSTRAP, len(ms)), replace=True), axis=1)


@dataclass
class Timing:
    """Milliseconds of one forward pass: the median of the clean passes, its 95% interval
    (`low_ms`..`high_ms`), and how many passes were kept and dropped as preempted."""

    median_ms: float
    iqr_ms: float
    runs: int
    dropped: int = 0
    low_ms: float = float("nan")
    high_ms: float = float("nan")
    samples: list[float] = field(default_factory=list, repr=False)   # clean passes, ms, in the order timed
    drift: float = 0.0          # how far the median of the later half of the passes moved from the earlier half's

    @classmethod
    def of(cls, seconds: list[float], dropped: int = 0) -> Timing:
        timed = [t * 1000 for t in seconds]
        ms = sorted(timed)
        if not ms:
            return cls(float("nan"), float("nan"), 0, dropped)
        q = statistics.quantiles(ms, n=4) if len(ms) >= 2 else [ms[0], ms[0], ms[0]]
        low = high = float("nan")
        if len(ms) >= MIN_CLEAN:
            lo, hi = np.percentile(_boot_medians(np.asarray(ms)), [2.5, 97.5])
            low, high = float(lo), float(hi)
        return cls(float(statistics.median(ms)), float(q[2] - q[0]), len(ms), dropped, low, high, timed,
                   _drift(timed))

    @property
    def half_width(self) -> float:
        """Half the 95% interval relative to the median (inf when there is none)."""
        if not (self.runs >= MIN_CLEAN and self.median_ms > 0 and np.isfinite(self.low_ms)):
            return float("inf")
        return (self.high_ms - self.low_ms) / 2 / self.median_ms

    @property
    def settled(self) -> bool:
        """Its interval is within +/-10% and it held still while it was measured."""
        return self.half_width <= TARGET_HALF_WIDTH and self.drift <= TARGET_HALF_WIDTH


def _drift(timed: list[float]) -> float:
    """Relative change between the medians of the first and second half of passes in time order.
    A narrow interval can hide a machine whose speed changed midway (a neighbour on the host, a
    memory state): such a figure did not settle either."""
    if len(timed) < 2 * MIN_CLEAN:
        return 0.0
    half = len(timed) // 2
    a, b = statistics.median(timed[:half]), statistics.median(timed[half:])
    return abs(b / a - 1) if a > 0 else 0.0


PAIRED = "timed together, alternately, in one call"


def ratio_of(slow: Timing, fast: Timing) -> Ratio:
    """How many times faster `fast` ran than `slow`, with a bootstrap 95% interval of the ratio of
    medians; withheld (value None) when either has too few clean passes or the interval is wider
    than +/-TARGET_HALF_WIDTH."""
    if min(slow.runs, fast.runs) < MIN_CLEAN:
        return Ratio(None, "too few undisturbed passes")
    r = _boot_medians(np.asarray(slow.samples)) / _boot_medians(np.asarray(fast.samples))
    lo, hi = (float(x) for x in np.percentile(r, [2.5, 97.5]))
    value = slow.median_ms / fast.median_ms
    if (hi - lo) / 2 / value > TARGET_HALF_WIDTH:
        return Ratio(None, f"the interval {lo:.2f}x..{hi:.2f}x is wider than +/-10%", lo, hi)
    moved = _ratio_drift(slow.samples, fast.samples)
    if moved > TARGET_HALF_WIDTH:
        return Ratio(None, f"the ratio moved by {moved:.0%} while it was measured", lo, hi)
    return Ratio(value, PAIRED, lo, hi)


def _ratio_drift(slow: list[float], fast: list[float]) -> float:
    """How far the ratio of the later halves moved from the ratio of the earlier halves."""
    if min(len(slow), len(fast)) < 2 * MIN_CLEAN:
        return 0.0
    hs, hf = len(slow) // 2, len(fast) // 2
    early = statistics.median(slow[:hs]) / statistics.median(fast[:hf])
    late = statistics.median(slow[hs:]) / statistics.median(fast[hf:])
    return abs(late / early - 1)


@dataclass
class LatencyReport:
    """Timings of one or more models measured in ONE call of the lane, pass by pass alternately.
    `other_cores`: CPU other processes used meanwhile; `reason` says why figures did not settle."""

    timings: dict[str, dict[int, Timing]]      # label -> batch size -> timing
    device: str
    other_cores: float | None = None
    busy: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    lane_busy: str = ""                         # set when the lane was held by another measurement
    seconds_waited: float = 0.0                 # for the lane, before timing began

    def ms(self, label: str, batch: int) -> float:
        return self.timings[label][batch].median_ms

    def settled(self, label: str, batch: int) -> bool:
        t = self.timings.get(label, {}).get(batch)
        return bool(t and t.settled)

    def shown_ms(self, label: str, batch: int) -> float | None:
        """The median, or None when it did not settle (not measurable now)."""
        return self.ms(label, batch) if self.settled(label, batch) else None

    def all_settled(self) -> bool:
        """Every figure of this report settled: it may be kept and shown as measured."""
        return not self.lane_busy and all(t.settled for by_batch in self.timings.values() for t in by_batch.values())

    def ratio(self, slow: str, fast: str, batch: int) -> float:
        """How many times faster `fast` ran than `slow` (point estimate; see `ratio_figure`)."""
        return self.ms(slow, batch) / self.ms(fast, batch)

    def ratio_figure(self, slow: str, fast: str, batch: int) -> Ratio:
        if self.lane_busy:
            return Ratio(None, self.unmeasurable_reason())
        f = ratio_of(self.timings[slow][batch], self.timings[fast][batch])
        return f if f.shown else Ratio(None, self.unmeasurable_reason(), f.low, f.high)

    def unmeasurable_reason(self) -> str:
        """'not measurable now: ...': why a figure was withheld."""
        if self.lane_busy:
            return f"not measurable now: {self.lane_busy}"
        if self.other_cores is not None and self.other_cores > BUSY_OTHER_CORES:
            return (f"not measurable now: other processes are using {self.other_cores:.1f} of "
                    f"{usable_cores()} cores")
        return "not measurable now: the timings were too spread to give a figure within +/-10%"

    def busy_note(self) -> str:
        if self.other_cores is None or not self.busy:
            return ""
        return (f"Measured while other processes used {self.other_cores:.1f} CPU cores; only undisturbed passes "
                "were kept.")


class CpuWatch:
    """CPU time used by OTHER processes during a block, in cores (Linux /proc/stat; None elsewhere)."""

    def __enter__(self) -> CpuWatch:
        self.other_cores: float | None = None
        self._start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        end = self._sample()
        if self._start is None or end is None:
            return
        (busy0, own0, t0), (busy1, own1, t1) = self._start, end
        if t1 - t0 > 0:
            self.other_cores = max(0.0, ((busy1 - busy0) - (own1 - own0)) / (t1 - t0))

    @staticmethod
    def _sample() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as f:
                fields_ = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = sum(fields_[:3]) + sum(fields_[5:8])   # user nice system irq softirq steal
        t = os.times()
        return busy / hz, t.user + t.system, time.monotonic()


def other_cores_now(seconds: float = 0.3) -> float | None:
    """CPU cores other processes use right now (a short look): to tell whether the machine is quiet."""
    with CpuWatch() as w:
        time.sleep(seconds)
    return w.other_cores


Pass = Callable[[], object]        # one forward pass of one model at one batch size, finished when it returns


def run_lane(passes: dict[str, dict[int, Pass]], *, device: torch.device | str = "cpu", warmup: int = 3,
             min_runs: int = 15, min_seconds: float = 0.2, max_runs: int = 2000, budget_s: float | None = None,
             wait_s: float | None = None) -> LatencyReport:
    """Time `passes` (label -> batch -> pass) in the lane: per batch, warm-up, then one pass of
    each label in turn until every median and every ratio to the first label settles (+/-10%),
    with at least `min_runs` clean passes and `min_seconds`, or until `budget_s` is spent (shared
    over the batches; what is left of one goes to the next). On the CPU a preempted pass is dropped."""
    budget_s = default_budget_s() if budget_s is None else budget_s
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    labels = list(passes)
    batches = sorted({b for by_batch in passes.values() for b in by_batch})
    timings: dict[str, dict[int, Timing]] = {k: {} for k in labels}
    t_start = time.perf_counter()
    report = LatencyReport(timings, device_label(dev))
    try:
        with timed_lane(budget_s if wait_s is None else wait_s) as lane, CpuWatch() as watch:
            report.seconds_waited = lane["waited_s"]
            for i, batch in enumerate(batches):
                left = budget_s - (time.perf_counter() - t_start - lane["waited_s"])
                _time_batch(passes, labels, batch, timings, cuda=cuda, warmup=warmup, min_runs=min_runs,
                            min_seconds=min_seconds, max_runs=max_runs, budget_s=max(0.05, left / (len(batches) - i)))
        report.other_cores = watch.other_cores
    except LaneBusy as e:
        report.lane_busy = str(e)
        for label in labels:
            for batch in passes[label]:
                timings[label][batch] = Timing.of([])
    report.busy = report.other_cores is not None and report.other_cores > BUSY_OTHER_CORES
    report.seconds = time.perf_counter() - t_start
    return report


def _time_batch(passes, labels, batch, timings, *, cuda, warmup, min_runs, min_seconds, max_runs, budget_s) -> None:
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    todo = [k for k in labels if batch in passes[k]]
    for label in todo:
        for _ in range(warmup):
            passes[label][batch]()
    sync()
    clean: dict[str, list[float]] = {k: [] for k in todo}
    dropped = dict.fromkeys(todo, 0)
    t0 = time.perf_counter()
    rounds, next_check = 0, min_runs
    while True:
        for label in todo:
            c, t = time.thread_time(), time.perf_counter()
            passes[label][batch]()
            sync()
            wall, cpu = time.perf_counter() - t, time.thread_time() - c
            # the CPU waits on a GPU without burning its time: there, every pass counts
            if cuda or cpu >= CLEAN_CPU_FRACTION * wall:
                clean[label].append(wall)
            else:
                dropped[label] += 1
        rounds += 1
        spent = time.perf_counter() - t0
        if rounds >= max_runs or spent >= budget_s:
            break
        n = min(len(v) for v in clean.values())
        if n >= min_runs and spent >= min_seconds and rounds >= next_check:
            if _settled(clean):
                break
            next_check = max(rounds + 5, int(rounds * 1.25))   # the bootstrap costs: look less often as runs grow
    for label in todo:
        timings[label][batch] = Timing.of(clean[label], dropped[label])


def _settled(clean: dict[str, list[float]]) -> bool:
    ts = [Timing.of(v) for v in clean.values()]
    return all(t.settled for t in ts) and all(ratio_of(ts[0], t).shown for t in ts[1:])


def paired_note(rep: LatencyReport, before: str, after: str, *batches: int) -> str:
    """One sentence on a before/after pair timed together: 'timed now in PyTorch eager on cpu: ...,
    alternately: batch 64 11.42 ms -> 2.91 ms, 3.93x faster (95% interval 3.90x-3.97x)', or why
    there is no figure ('not measurable now: ...')."""
    parts = []
    for b in batches:
        r = rep.ratio_figure(before, after, b)
        if not r.shown:
            parts.append(f"batch {b} {r.reason}")
            continue
        words = speed_words(r.value)
        low, high = (1 / r.high, 1 / r.low) if words.endswith("slower") else (r.low, r.high)   # in the words' sense
        parts.append(f"batch {b} {rep.ms(before, b):.2f} ms -> {rep.ms(after, b):.2f} ms, {words} "
                     f"(95% interval {low:.2f}x-{high:.2f}x)")
    return f"timed now on {rep.device}, alternately: " + "; ".join(parts) + "."
