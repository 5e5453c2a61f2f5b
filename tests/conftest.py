"""Shared fixtures: tiny real data, fresh workspaces. Tests never download anything."""
from __future__ import annotations

import dataclasses

import pytest
import torch

torch.set_num_threads(2)


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
