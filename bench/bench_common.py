"""What the benchmark scripts share: a markdown table of result rows, and a free local port.
Each script puts the repository root on sys.path and imports this as `bench.bench_common`."""
from __future__ import annotations

import socket
from collections.abc import Callable


def md_table(rows: list[dict], columns: list[str], fmt: Callable[[object], str] = str) -> str:
    """A markdown table: one header row, one row per dict (a missing key is an empty cell)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
