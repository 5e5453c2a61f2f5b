"""Small helpers shared by the browser tests (imported by name: pytest puts this folder on sys.path)."""
from __future__ import annotations

from job_helpers import wait_for  # noqa: F401  (one polling helper for every test: tests/ is on sys.path)


def metric_value(page, label: str) -> str:
    m = page.get_by_test_id("stMetric").filter(has_text=label).first
    return m.get_by_test_id("stMetricValue").inner_text()
