"""Small helpers shared by the job tests (local and Ray runners); pytest puts tests/ on sys.path."""
from __future__ import annotations

import time

# a training job that runs long enough to be cancelled or killed while it trains
LONG = {"model": "lenet5-small", "subset": 512, "train": {"epochs": 200, "batch_size": 16, "log_every": 4,
                                                          "device": "cpu"}}


def wait_for(predicate, timeout: float, what: str):
    """Poll `predicate` every 0.2 s until it returns something truthy; return that value."""
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
