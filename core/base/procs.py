"""Processes as the kernel sees them (/proc): a pid's start time, so a reused pid is never
mistaken for the worker that had it, and its state (a zombie is dead)."""
from __future__ import annotations

from pathlib import Path


def _stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/<pid>/stat, or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself contain spaces or parentheses
    return stat[stat.rfind(")") + 2:].split()


def proc_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat), or None when unknown.
    A pid with another start time is another process that reused the number."""
    rest = _stat_fields(pid)
    return rest[19] if rest is not None and len(rest) > 19 else None


def proc_state(pid: int) -> str | None:
    """The state letter of `pid` (R, S, Z, ...), or None when there is no such process."""
    rest = _stat_fields(pid)
    return rest[0] if rest else None
