"""Small helpers shared by the browser tests (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

import time


def wait_for(predicate, timeout: float, what: str):
    """Poll `predicate` every 0.25 s until it returns something truthy; return that value."""
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def metric_value(page, label: str) -> str:
    m = page.get_by_test_id("stMetric").filter(has_text=label).first
    return m.get_by_test_id("stMetricValue").inner_text()
