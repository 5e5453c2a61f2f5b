import multiprocessing as mp
import os
import sqlite3
import threading

import pytest
import torch
import torch.nn as nn

from core.models.registry import create_model
from core.store.variants import base_arch, measure_and_store
from core.store.workspace import VariantHasChildren, VariantNotFound, Workspace

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


# ---------------------------------------------------------------- references and transactions

def test_variant_references_are_literal_and_never_empty(workspace):
    a = workspace.add_variant(nn.Linear(4, 2), name="first", dataset="fashion-mnist", arch=ARCH, recipe=[],
                              metrics={}, variant_id="ab12cd34")
    workspace.add_variant(nn.Linear(4, 2), name="100%_done", dataset="fashion-mnist", arch=ARCH, recipe=[],
                          metrics={}, variant_id="ef56ab78")
    for wild in ("%", "_", "__", "a%", "%2", "a_1"):
        with pytest.raises(VariantNotFound, match="no variant"):
            workspace.get_variant(wild)                 # LIKE would read these as wildcards
    for blank in ("", "   ", None):
        with pytest.raises(VariantNotFound, match="no variant given"):
            workspace.get_variant(blank)
    assert workspace.get_variant("ab1").id == a.id      # a real prefix still works
    assert workspace.get_variant("100%_done").id == "ef56ab78"   # and a name with those characters


def race(ws: Workspace, statements: list[tuple[str, tuple]], action):
    """Run `action()` in a thread while another connection holds the write lock with `statements`
    done but not committed; commit once the action has done its reads and started its own write
    transaction (its BEGIN IMMEDIATE, seen through SQLite's statement trace), which cannot get the
    lock before that commit. So the commit lands between its read and its write on every run: the
    window of a check-then-act race. Returns (value, exception) of the action."""
    conn = ws.db.connect()
    conn.execute("BEGIN IMMEDIATE")
    for sql, args in statements:
        conn.execute(sql, args)
    out: dict = {}
    waiting = threading.Event()       # the action is at its write transaction, after all its reads
    connect = ws.db.connect

    def traced_connect():
        c = connect()
        if threading.current_thread() is t:
            c.set_trace_callback(lambda sql: waiting.set() if sql.strip().upper().startswith("BEGIN IMMEDIATE")
                                 else None)
        return c

    def run():
        try:
            out["value"] = action()
        except Exception as e:
            out["error"] = e

    t = threading.Thread(target=run)
    ws.db.connect = traced_connect
    try:
        t.start()
        assert waiting.wait(60), "the action never began its write transaction"
        assert t.is_alive() and not out, out   # it holds no lock, so it cannot have finished
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")            # a failed check above: let the action go
        conn.close()
        t.join(60)
        del ws.db.connect
    assert not t.is_alive()
    return out.get("value"), out.get("error")


def _row(vid: str, parent: str | None) -> tuple[str, tuple]:
    return ("INSERT INTO variants (id, name, parent_id, dataset, arch, recipe, metrics, kind, weights_file, format,"
            " created_at) VALUES (?, ?, ?, 'fashion-mnist', '{}', '[]', '{}', '{}', 'none', 'dense', 0)",
            (vid, vid, parent))


def _orphans(ws: Workspace) -> list[str]:
    ids = {v.id for v in ws.list_variants()}
    return [v.id for v in ws.list_variants() if v.parent_id is not None and v.parent_id not in ids]


def test_a_parent_deleted_meanwhile_refuses_the_child(workspace):
    parent = _add(workspace, "parent")
    _, error = race(workspace, [("DELETE FROM variants WHERE id = ?", (parent.id,))],
                    lambda: _add(workspace, "child", parent.id))
    assert isinstance(error, VariantNotFound) and "the parent" in str(error)
    assert workspace.list_variants() == []
    # the child left no weights file and no temp file (the parent's own file was not ours to remove)
    assert [p.name for p in workspace.variants_dir.iterdir()] == [parent.id]
    assert sorted(p.name for p in (workspace.variants_dir / parent.id).iterdir()) == ["variant.json",
                                                                                   "weights.safetensors"]


def test_a_child_added_meanwhile_stops_the_delete(workspace):
    parent = _add(workspace, "parent")
    _, error = race(workspace, [_row("kid00000", parent.id)], lambda: workspace.delete_variant(parent.id))
    assert isinstance(error, VariantHasChildren) and "kid00000" in str(error)
    assert _orphans(workspace) == [] and workspace.get_variant(parent.id).id == parent.id


def test_metrics_written_meanwhile_are_merged_not_lost(workspace):
    v = _add(workspace, "m")
    value, error = race(workspace, [("UPDATE variants SET metrics = ? WHERE id = ?",
                                     ('{"accuracy": 0.5, "latency_ms_b1": 1.5}', v.id))],
                        lambda: workspace.update_variant(v.id, metrics={"macs": 7}))
    assert error is None
    assert {"accuracy": 0.5, "latency_ms_b1": 1.5, "macs": 7}.items() <= value.metrics.items()
    assert workspace.get_variant(v.id).metrics == value.metrics


def test_adding_an_existing_id_never_overwrites_its_file(workspace):
    a = workspace.add_variant(nn.Linear(4, 2), name="a", dataset="fashion-mnist", arch=ARCH, recipe=[], metrics={},
                              variant_id="same-id")
    before = workspace.weights_path(a).read_bytes()
    with pytest.raises(sqlite3.IntegrityError):
        workspace.add_variant(create_model("lenet300"), name="b", dataset="fashion-mnist", arch=ARCH, recipe=[],
                              metrics={}, variant_id="same-id")
    assert workspace.weights_path(a).read_bytes() == before
    assert not any(p.name.endswith(".tmp") for p in workspace.variants_dir.rglob("*"))


def test_concurrent_deletes_and_child_adds_never_orphan_a_child(workspace):
    for round_ in range(10):
        parent = workspace.add_variant(nn.Linear(4, 2), name=f"p{round_}", dataset="fashion-mnist", arch=ARCH,
                                       recipe=[], metrics={})
        barrier = threading.Barrier(2)

        def add_child(parent_id=parent.id, r=round_, barrier=barrier):
            barrier.wait()
            try:
                Workspace(workspace.root, seed_baselines=False).add_variant(
                    nn.Linear(4, 2), name=f"c{r}", dataset="fashion-mnist", arch=ARCH, recipe=[], metrics={},
                    parent_id=parent_id)
            except VariantNotFound:
                pass

        def delete_parent(parent_id=parent.id, barrier=barrier):
            barrier.wait()
            try:
                Workspace(workspace.root, seed_baselines=False).delete_variant(parent_id)
            except VariantHasChildren:
                pass

        threads = [threading.Thread(target=add_child), threading.Thread(target=delete_parent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert _orphans(workspace) == []


def test_concurrent_metric_updates_never_lose_a_key(workspace):
    v = _add(workspace, "m")

    def write(prefix):
        ws = Workspace(workspace.root, seed_baselines=False)
        for i in range(20):
            ws.update_variant(v.id, metrics={f"{prefix}{i}": i})

    threads = [threading.Thread(target=write, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics = workspace.get_variant(v.id).metrics
    assert {f"{p}{i}" for p in "ab" for i in range(20)} <= set(metrics) and metrics["accuracy"] == 0.5


# ---------------------------------------------------------------- several processes

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
    from core.store.workspace import BASELINES_DIR

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
