"""One-time updates of what older versions stored in a workspace: latency figures from before
the measurement lane are retired (kept aside, re-measured when the machine is quiet)."""
from __future__ import annotations

import contextlib

from core.measure.speed import legacy_latency_update

LANE_MARKER = ".latency-lane-migrated"


def retire_legacy_latency(ws) -> int:
    """Retire every variant's pre-lane latency figures (once per workspace); returns how many."""
    marker = ws.root / LANE_MARKER
    if marker.exists():
        return 0
    n = 0
    for v in ws.list_variants():
        update = legacy_latency_update(v.metrics)
        if update:
            ws.update_variant(v.id, metrics=update)
            n += 1
    with contextlib.suppress(OSError):
        marker.write_text(f"{n}\n")   # a lost marker only means one more (harmless) pass
    return n
