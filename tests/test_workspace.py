import multiprocessing as mp
import os

import pytest
import torch
import torch.nn as nn

from core.models import create_model
from core.variants import base_arch, measure_and_store
from core.workspace import VariantHasChildren, VariantNotFound, Workspace

ARCH = {"name": "lenet300", "kwargs": {}, "edits": {}}


def _add(ws, name, parent=None, model=None):
    model = model or create_model("lenet300")
    return ws.add_variant(model, name=name, dataset="fashion-mnist", arch=ARCH, recipe=[{"step": name}],
                          metrics={"accuracy": 0.5}, parent_id=parent)


def test_variant_round_trip(workspace):
    model = create_model("lenet300")
    v = _add(workspace, "root", model=model)
    assert v.metrics["size_bytes"] == workspace.weights_path(v).stat().st_size
    loaded = workspace.load_model(v.id)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))
    assert workspace.get_variant(v.id[:4]).id == v.id      # id prefix
    assert workspace.get_variant("root").id == v.id         # unique name
    with pytest.raises(VariantNotFound, match="no variant 'nope'"):
        workspace.get_variant("nope")


def test_lineage_and_children(workspace):
    a = _add(workspace, "a")
    b = _add(workspace, "b", a.id)
    c = _add(workspace, "c", b.id)
    assert [v.id for v in workspace.lineage(c.id)] == [a.id, b.id, c.id]
    assert [v.id for v in workspace.children(a.id)] == [b.id]
    assert {v.id for v in workspace.descendants(a.id)} == {b.id, c.id}
    with pytest.raises(VariantNotFound):
        _add(workspace, "orphan", parent="missing")


def test_delete_never_orphans_children_silently(workspace):
    a = _add(workspace, "a")
    b = _add(workspace, "b", a.id)
    c = _add(workspace, "c", b.id)
    with pytest.raises(VariantHasChildren, match="has 1 child"):
        workspace.delete_variant(b.id)
    assert workspace.delete_variant(b.id, reparent=True) == [b.id]
    assert workspace.get_variant(c.id).parent_id == a.id
    assert not (workspace.variants_dir / b.id).exists()
    deleted = workspace.delete_variant(a.id, cascade=True)
    assert set(deleted) == {a.id, c.id}
    assert workspace.list_variants() == []


def _writer(root: str, tag: str, n: int) -> None:
    torch.set_num_threads(1)
    ws = Workspace(root, seed_baselines=False)
    job = ws.jobs.create("train", {"tag": tag})
    for i in range(n):
        m = nn.Linear(8, 4)
        ws.add_variant(m, name=f"{tag}-{i}", dataset="fashion-mnist", arch=ARCH, recipe=[], metrics={"i": i})
        ws.jobs.add_events(job.id, [{"i": i}])
        ws.jobs.append_log(job.id, f"{tag} {i}\n")


def test_two_processes_writing_at_once(tmp_path):
    root = str(tmp_path / "ws")
    Workspace(root, seed_baselines=False)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(root, tag, 25)) for tag in ("p", "q")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    ws = Workspace(root, seed_baselines=False)
    variants = ws.list_variants()
    assert len(variants) == 50
    assert all(len(ws.load_state(v)) == 2 for v in variants)
    jobs = ws.jobs.list()
    assert len(jobs) == 2
    for j in jobs:
        events = ws.jobs.events(j.id)
        assert [e["i"] for e in events] == list(range(25))
        assert j.log.count("\n") == 25


def test_job_state_compare_and_set(workspace):
    job = workspace.jobs.create("train", {"model": "lenet5"}, title="t")
    assert job.state == "queued"
    assert workspace.jobs.update(job.id, only_if_state=("queued",), state="running", pid=os.getpid())
    assert not workspace.jobs.update(job.id, only_if_state=("queued",), state="running")
    assert workspace.jobs.get(job.id).state == "running"


def test_shipped_baselines_seed_a_new_workspace(tmp_path):
    from core.workspace import BASELINES_DIR

    shipped = sorted(p.stem for p in BASELINES_DIR.glob("*.safetensors"))
    if not shipped:
        pytest.skip("no shipped baselines")
    ws = Workspace(tmp_path / "fresh")
    origins = sorted(v.origin for v in ws.list_variants())
    assert origins == [f"baseline:{s}" for s in shipped]
    Workspace(tmp_path / "fresh")   # opening again adds nothing
    assert len(Workspace(tmp_path / "fresh").list_variants()) == len(shipped)
    lenet5 = ws.get_variant("base-lenet5")
    assert lenet5.metrics["params"] == 431_080 and lenet5.metrics["accuracy"] >= 0.90
    model = ws.load_model(lenet5)
    assert sum(p.numel() for p in model.parameters()) == 431_080


def test_measure_and_store_measures_the_stored_file(workspace, tiny_data):
    model = create_model("lenet5-small")
    v = measure_and_store(workspace, model, data=tiny_data, name="m", arch=base_arch("lenet5-small", tiny_data),
                          recipe=[{"step": "train"}], device="cpu")
    assert v.metrics["size_bytes"] == workspace.weights_path(v).stat().st_size
    assert v.metrics["params"] == 37_610 and v.arch["kwargs"]["num_classes"] == 10
