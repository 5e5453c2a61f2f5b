"""Shared fixtures: tiny real data, fresh workspaces. Tests never download anything.

`scripts/test` runs the suite in two pytest-xdist workers (one file per worker at a time): on this
2-core machine each worker computes on one thread, and the processes it starts (job workers, the
app server, fresh-process checks) inherit that, so two workers never ask for four cores."""
from __future__ import annotations

import dataclasses
import os

import pytest

IN_XDIST_WORKER = bool(os.environ.get("PYTEST_XDIST_WORKER"))
if IN_XDIST_WORKER:
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"   # before torch reads them

# a variant's latency in tests: the lane stops once settled; on a busy test machine it gives up
# sooner than the app's 10 s and stores "not measurable now" (tests assert either, never a timing)
os.environ.setdefault("WORKBENCH_LATENCY_BUDGET_S", "2")
os.environ.setdefault("WORKBENCH_AUTO_MEASURE", "0")
# variants made by tests are timed in PyTorch eager only (the graph runtimes cost seconds per variant);
# the tests of ONNX Runtime and OpenVINO, and those that follow a variant through them, ask for all
os.environ.setdefault("WORKBENCH_LATENCY_RUNTIMES", "torch")   # pages measure stale variants by themselves: one test turns it on

import torch  # noqa: E402

torch.set_num_threads(1 if IN_XDIST_WORKER else 2)


def pytest_collection_modifyitems(config, items):
    """Real-browser tests count as slow (`scripts/test -m "not slow"` is the quick loop), and slow
    tests start first, so that in two workers the long files do not run alone at the end."""
    for item in items:
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)   # stable: file order kept otherwise


@pytest.fixture(scope="session")
def fashion():
    """The real Fashion-MNIST (or the digits fallback), loaded once per test session."""
    from core.data.datasets import cached_dataset

    return cached_dataset("fashion-mnist")


@pytest.fixture(scope="session")
def tiny_data(fashion):
    """2,000 training samples, 500 validation and 1,000 test samples of the real dataset."""
    return dataclasses.replace(fashion, train=fashion.train.subset(2000, seed=1), val=fashion.val.subset(500, seed=2),
                               test=fashion.test.subset(1000, seed=3))


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """An empty workspace (no shipped baselines) in a temp dir, also set as WORKBENCH_HOME."""
    from core.store.workspace import Workspace

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "ws"))
    return Workspace(tmp_path / "ws", seed_baselines=False)
