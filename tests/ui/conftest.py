"""Fixtures for AppTest page tests: a small real workspace, and an app bound to it."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from unittest import mock

import pytest
import torch

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 90  # the first run imports torch and loads the dataset


def add_measured(ws, model, data, arch_name, *, name, variant_id=None, parent_id=None, kind=None, recipe=None):
    """Store a model as a variant with every metric really measured (on the fixture's test split)."""
    from core.measure.metrics import evaluate
    from core.store.variants import base_arch

    metrics = evaluate(model, data.test, data.info.input_shape, device="cpu").to_dict()
    return ws.add_variant(model, name=name, dataset=data.info.name, arch=base_arch(arch_name, data), metrics=metrics,
                          kind=kind, parent_id=parent_id, variant_id=variant_id,
                          recipe=recipe or [{"step": "train", "model": arch_name}])


@pytest.fixture(scope="session")
def ui_workspace(tmp_path_factory, tiny_data):
    """A workspace with the default baseline id (`base-lenet5`, briefly trained) and one masked child."""
    from core.measure.training import TrainConfig, train_
    from core.models.registry import create_model
    from core.store.workspace import Workspace

    root = tmp_path_factory.mktemp("ui-ws")
    ws = Workspace(root, seed_baselines=False)
    every_runtime = mock.patch.dict(os.environ, {"WORKBENCH_LATENCY_RUNTIMES": "torch,onnxruntime,openvino"})
    every_runtime.start()     # the two fixture variants carry figures in every runtime, as the app's do
    data = dataclasses.replace(tiny_data, train=tiny_data.train.subset(512, seed=4), val=tiny_data.val.subset(200))
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    train_(model, data, TrainConfig(epochs=1, device="cpu"))
    base = add_measured(ws, model, data, "lenet5", name="LeNet-5 test baseline", variant_id="base-lenet5")
    with torch.no_grad():  # a child with half of fc1 zeroed, so lineage and sparsity have something to show
        w = model.fc1.weight
        w[w.abs() < w.abs().median()] = 0
    add_measured(ws, model, data, "lenet5", name="LeNet-5 masked 50% fc1", parent_id=base.id, kind={"masked": True},
                 recipe=[*base.recipe, {"step": "prune", "amount": 0.5, "layers": ["fc1"]}])
    every_runtime.stop()
    return root


@pytest.fixture(autouse=True)
def no_legacy_pages_mode(monkeypatch):
    """AppTest resets Streamlit's legacy `pages/` folder detection before every run, so each run
    would start in the legacy mode that a real server leaves for good the first time app.py calls
    st.navigation (see ui/nav.py). Pin it off, so that every run goes through app.py as a real
    session's does."""
    from streamlit.runtime.pages_manager import PagesManager

    init = PagesManager.__init__

    def init_v2(self, *args, **kwargs):
        init(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init_v2)


@pytest.fixture
def app_env(ui_workspace, monkeypatch):
    """WORKBENCH_HOME pointing at the shared UI workspace; jobs created by a test are removed after it."""
    from core.run import jobs
    from core.store.workspace import Workspace

    monkeypatch.setenv("WORKBENCH_HOME", str(ui_workspace))
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    ws = Workspace(ui_workspace, seed_baselines=False)
    before = {j.id for j in ws.jobs.list()}
    yield ws
    for j in ws.jobs.list():
        if j.id not in before:
            if not j.is_final:
                jobs.cancel(ws, j.id, grace_s=0.5)
            ws.jobs.delete(j.id)


@pytest.fixture
def app(app_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at
