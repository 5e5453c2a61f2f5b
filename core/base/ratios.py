"""Ratios between two variants' measured metrics, and whether they may be shown at all.

A latency ratio compares two timings. It is fair when both were timed in one call, alternately
(a child's `reference_latency_ms_b*` is its parent timed that way); acceptable, and labelled as
separate runs, when both were timed on the same `device`; and not shown otherwise: the UI says
why. A figure taken while other processes were busy (`latency_busy`) is flagged wherever it
appears, since on a 2-core machine a background job can slow a forward pass several-fold.
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


def latency_ratio(metrics: dict, other: dict | None, *, batch: int = 1, other_is_parent: bool = False) -> Ratio:
    """How many times faster `metrics` ran than `other` at `batch` (`other` / `metrics`)."""
    key = f"latency_ms_b{batch}"
    own = _num(metrics.get(key))
    if other is None or own is None:
        return Ratio(None, "no latency measured")
    paired = _num(metrics.get(f"reference_{key}")) if other_is_parent else None
    if paired is not None:
        return Ratio(paired / own, "timed together with its parent, alternately, in one call")
    theirs = _num(other.get(key))
    if theirs is None:
        return Ratio(None, "the other variant has no latency measured")
    if metrics.get("device") != other.get("device"):
        return Ratio(None, f"not compared: measured on different devices ({metrics.get('device')} and "
                           f"{other.get('device')})")
    basis = f"separate runs on the same device ({metrics.get('device')})"
    if busy_warning(metrics) or busy_warning(other):
        basis += "; at least one was measured while the machine was busy"
    return Ratio(theirs / own, basis)


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
