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
class Ratio:
    value: float | None      # other / this: > 1 means this one is faster (or smaller)
    basis: str               # how the two figures were obtained, or why there is no ratio

    @property
    def shown(self) -> bool:
        return self.value is not None


def _num(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0 else None


# Two timings within this factor of each other are the same speed: less is timing noise on a
# loaded 2-core machine, and a quantized kernel that gains less is no real speed-up (speed_verdict).
SAME_SPEED_RATIO = 1.1
PAIRED_WITH = {"reference": "its parent", "teacher": "its teacher"}   # who a paired timing was taken with


def latency_ratio(metrics: dict, other: dict | None, *, batch: int = 1, paired: str | None = None) -> Ratio:
    """How many times faster `metrics` ran than `other` at `batch` (`other` / `metrics`), when the
    two compare. `paired` names the timing of `other` taken alternately with this one in the same
    call and stored in `metrics` as `<paired>_latency_ms_b<batch>` ("reference" for a parent,
    "teacher" for a distilled student's teacher): it is used first."""
    key = f"latency_ms_b{batch}"
    own = _num(metrics.get(key))
    if other is None or own is None:
        return Ratio(None, "no latency measured")
    together = _num(metrics.get(f"{paired}_{key}")) if paired else None
    if together is not None:
        return Ratio(together / own, f"timed together with {PAIRED_WITH.get(paired, paired)}, alternately, "
                                     "in one call")
    theirs = _num(other.get(key))
    if theirs is None:
        return Ratio(None, "the other variant has no latency measured")
    why = timings_differ({"this one": metrics, "the other": other})
    if why:
        return Ratio(None, f"not compared: {why}")
    return Ratio(theirs / own, f"separate runs on the same device ({metrics.get('device')})")


def timings_differ(timed: dict[str, dict]) -> str:
    """Why latencies timed in separate runs do not compare ('' when they do): taken on different
    devices, or some while the machine was busy (an interval too wide to be shown as a fact).
    `timed`: each variant's metrics by the name the sentence gives it."""
    devices: dict[str, list[str]] = {}
    for name, m in timed.items():
        devices.setdefault(m.get("device") or "an unknown device", []).append(name)
    why = []
    if len(devices) > 1:
        why.append("measured on different devices ("
                   + "; ".join(f"{' and '.join(names)} on {d}" for d, names in devices.items()) + ")")
    busy = [name for name, m in timed.items() if busy_warning(m)]
    if busy:
        why.append(f"{' and '.join(busy)} timed while other work was running")
    return ", and ".join(why)


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
