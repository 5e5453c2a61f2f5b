"""Ratios between two variants' measured metrics, whether they may be shown at all, and the words
that say them.

A latency ratio compares two timings. It is fair when both were timed in one call, alternately
(a child's `reference_latency_ms_b*` is its parent timed that way, a distilled student's
`teacher_latency_ms_b*` its teacher): whatever else ran slowed both alike. Timed separately, it
is acceptable, and labelled as separate runs, only on the same `device` with neither figure taken
under load; otherwise it is not shown and the UI says why. A figure taken while other processes
were busy (`latency_busy`) is flagged wherever it appears, since on a 2-core machine a background
job can slow a forward pass several-fold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Runtime:
    """A runtime latency is measured in, and where its figures live in a variant's metrics."""

    key: str
    prefix: str              # of the metric keys: '<prefix>latency_ms_b1'
    title: str
    device_key: str          # the metric naming the device its figures belong to


RUNTIMES = {"torch": Runtime("torch", "", "PyTorch eager", "device"),
            "onnxruntime": Runtime("onnxruntime", "ort_", "ONNX Runtime", "ort_device"),
            "openvino": Runtime("openvino", "ov_", "OpenVINO", "ov_device")}
GRAPH_RUNTIMES = ("onnxruntime", "openvino")   # run the exported ONNX graph (their `<prefix>model`, `<prefix>unavailable`)


@dataclass(frozen=True)
class Ratio:
    value: float | None      # other / this: > 1 means this one is faster (or smaller)
    basis: str               # how the two figures were obtained, or why there is no ratio
    low: float | None = None     # its 95% interval, where the figures had one
    high: float | None = None

    @property
    def reason(self) -> str:
        """Why there is no ratio ('' when there is one)."""
        return "" if self.shown else self.basis

    def interval_words(self) -> str:
        """'95% interval 1.52x-1.68x', or '' without one."""
        if self.low is None or self.high is None:
            return ""
        return f"95% interval {self.low:.2f}x-{self.high:.2f}x"

    @property
    def shown(self) -> bool:
        return self.value is not None


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 else None


# Two timings within this factor of each other are the same speed: less is timing noise on a
# loaded 2-core machine, and a quantized kernel that gains less is no real speed-up (speed_verdict).
SAME_SPEED_RATIO = 1.1
PAIRED_WITH = {"reference": "its parent", "teacher": "its teacher"}   # who a paired timing was taken with


def _ci(metrics: dict, key: str) -> tuple[float, float] | None:
    ci = metrics.get(key)
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(x) for x in ci):
        return float(ci[0]), float(ci[1])
    return None


def latency_ratio(metrics: dict, other: dict | None, *, batch: int = 1, paired: str | None = None,
                  runtime: str = "torch") -> Ratio:
    """How many times faster `metrics` ran than `other` at `batch` in `runtime` (`other` /
    `metrics`), when the two compare. `paired` names the timing of `other` taken alternately with
    this one in the same call and stored in `metrics` as `<paired>_<prefix>latency_ms_b<batch>`
    ("reference" for a parent, "teacher" for a distilled student's teacher): it is used first."""
    rt = RUNTIMES[runtime]
    key = f"{rt.prefix}latency_ms_b{batch}"
    own = _num(metrics.get(key))
    if other is None:
        return Ratio(None, "nothing to compare with")
    if own is None:
        return Ratio(None, metrics.get(f"{rt.prefix}latency_unmeasured") or metrics.get(f"{rt.prefix}unavailable")
                     or f"no {rt.title} latency measured")
    together = _num(metrics.get(f"{paired}_{key}")) if paired else None
    if together is not None:
        ci = _ci(metrics, f"{key}_vs_{paired}_ci")
        return Ratio(together / own, f"timed together with {PAIRED_WITH.get(paired, paired)}, alternately, "
                                     f"in one call, in {rt.title}", *(ci or (None, None)))
    theirs = _num(other.get(key))
    if theirs is None:
        return Ratio(None, f"the other variant has no {rt.title} latency measured")
    why = timings_differ({"this one": metrics, "the other": other}, runtime)
    if why:
        return Ratio(None, f"not compared: {why}")
    mine_ci, their_ci = _ci(metrics, f"{key}_ci"), _ci(other, f"{key}_ci")
    low = high = None
    if mine_ci and their_ci:   # two separate intervals: the widest ratio they allow
        low, high = their_ci[0] / mine_ci[1], their_ci[1] / mine_ci[0]
    return Ratio(theirs / own, f"separate runs on the same device ({metrics.get(rt.device_key)}), in {rt.title}",
                 low, high)


def timings_differ(timed: dict[str, dict], runtime: str = "torch") -> str:
    """Why latencies timed in separate runs do not compare ('' when they do): taken on different
    devices, or some while the machine was busy (an interval too wide to be shown as a fact).
    `timed`: each variant's metrics by the name the sentence gives it."""
    device_key = RUNTIMES[runtime].device_key
    devices: dict[str, list[str]] = {}
    for name, m in timed.items():
        devices.setdefault(m.get(device_key) or "an unknown device", []).append(name)
    why = []
    if len(devices) > 1:
        why.append("measured on different devices ("
                   + "; ".join(f"{' and '.join(names)} on {d}" for d, names in devices.items()) + ")")
    busy = [name for name, m in timed.items() if busy_warning(m)]
    if busy:
        why.append(f"{' and '.join(busy)} timed while other work was running")
    return ", and ".join(why)


def runtime_verdict(metrics: dict, *, masked: bool = False, batch: int = 64) -> str:
    """Whether the variant is faster than its parent, saying where: '1.60x faster in ONNX Runtime,
    no real speed-up in PyTorch eager'. Only ratios timed together with the parent count. '' when
    no runtime has one."""
    parts = []
    for rt in RUNTIMES.values():
        r = latency_ratio(metrics, {}, batch=batch, paired="reference", runtime=rt.key)
        if _num(metrics.get(f"{rt.prefix}latency_ms_b{batch}")) is None and \
                str(metrics.get(f"{rt.prefix}latency_unmeasured") or "").startswith("not measurable now"):
            parts.append(f"not measurable now in {rt.title}")
            continue
        if not r.shown or not str(r.basis).startswith("timed together"):
            continue
        words = speed_words(r.value)
        parts.append(f"no real speed-up in {rt.title}" if words == "same speed" else f"{words} in {rt.title}")
    if not parts:
        return ""
    text = ", ".join(parts)
    if masked:
        text += " (masked weights are zeros in dense tensors: no runtime here skips them on the CPU)"
    return text[0].upper() + text[1:]


def speed_words(ratio: float) -> str:
    """A speed ratio (their time / this one's) in words: 2.0 -> '2.00x faster', 0.5 -> '2.00x
    slower', within SAME_SPEED_RATIO either way -> 'same speed'."""
    if ratio >= SAME_SPEED_RATIO:
        return f"{ratio:.2f}x faster"
    if ratio <= 1 / SAME_SPEED_RATIO:
        return f"{1 / ratio:.2f}x slower"
    return "same speed"


def speed_change(before_ms: float | None, after_ms: float | None) -> str | None:
    """How the second timing compares with the first, in words (None without two timings)."""
    before, after = _num(before_ms), _num(after_ms)
    return speed_words(before / after) if before and after else None


def size_ratio(metrics: dict, other: dict | None) -> Ratio:
    """How many times smaller the downloadable file is (bytes do not depend on the device)."""
    own = _num(metrics.get("size_bytes"))
    theirs = _num((other or {}).get("size_bytes"))
    if own is None or theirs is None:
        return Ratio(None, "no size measured")
    return Ratio(theirs / own, "bytes of the files you would download")


def busy_warning(metrics: dict) -> str:
    """A warning for a latency figure measured under load (other processes busy on the CPU, or
    other jobs running), or ''."""
    jobs = metrics.get("latency_other_jobs") or 0
    if not metrics.get("latency_busy") and not jobs:
        return ""
    cores = metrics.get("latency_other_cores")
    how = []
    if metrics.get("latency_busy"):
        how.append(f"other processes used {cores:.1f} CPU cores" if isinstance(cores, (int, float))
                   else "the machine was busy")
    if jobs:
        how.append(f"{jobs} other job{'s' if jobs > 1 else ''} {'were' if jobs > 1 else 'was'} running")
    return f"Latency measured while {' and '.join(how)}: it may be slower than on an idle machine."
