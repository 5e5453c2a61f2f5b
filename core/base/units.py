"""Human-readable numbers, shared by the CLI and the UI so both say the same thing."""
from __future__ import annotations

import math


def human_bytes(n: float | None) -> str:
    """1234567 -> '1.2 MB' (decimal units, as file managers and downloads show them)."""
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def human_count(n: float | None) -> str:
    """431080 -> '431.1 K'."""
    if n is None:
        return "–"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}" if abs(n) < 10 * div else f"{n / div:.1f} {unit}"
    return f"{n:.0f}"


def fmt_sparsity(x: float | None) -> str:
    """The one format for a sparsity everywhere (Prune and Model pages, CLI): one decimal."""
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1%}"
