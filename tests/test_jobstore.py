"""The hardened job store, the runner seam and the variant table's transactions."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest
import torch.nn as nn

from core import jobs
from core import workspace as workspace_mod
from core.jobstore import UPDATABLE
from core.models import create_model
from core.runners import LocalRunner, Runner, get_runner
from core.worker import CollectingChannel, StoreChannel, execute_job, finish
from core.workspace import VariantNotFound, Workspace

ARCH = {"name": "lenet300", "kwargs": {}, "edits": {}}
TINY = {"model": "lenet5-small", "subset": 128, "train": {"epochs": 1, "batch_size": 64, "log_every": 1,
                                                          "device": "cpu"}}


def _add(ws, name, parent=None, vid=None):
    return ws.add_variant(nn.Linear(4, 2), name=name, dataset="fashion-mnist", arch=ARCH, recipe=[],
                          metrics={"accuracy": 0.5}, parent_id=parent, variant_id=vid)


# ---------------------------------------------------------------- the claim race

class RecordingRunner(Runner):
    """Starts nothing; records what a worker would have read when it started."""

    name = "recording"

    def __init__(self, root):
        self.root, self.seen = root, []

    def start(self, workspace, job):
        # a worker is another process: it reads the job through its own connection
        self.seen.append(Workspace(self.root, seed_baselines=False).jobs.get(job.id).state)

    def is_alive(self, job):
        return True

    def exit_status(self, job):
        return None

    def stop(self, job):
        return "stopped"


def test_a_worker_starts_only_after_its_claim_is_committed(workspace, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "2")
    for i in range(3):
        workspace.jobs.create("train", TINY, f"job {i}")
    runner = RecordingRunner(workspace.root)
    started = jobs.dispatch(workspace, runner)
    # today's code spawned the worker inside the claiming transaction: it would read 'queued'
    assert runner.seen == ["running", "running"] and len(started) == 2
    states = sorted(workspace.jobs.get(j).state for j in [j.id for j in workspace.jobs.list()])
    assert states == ["queued", "running", "running"]
    assert {workspace.jobs.get(j).runner for j in started} == {"recording"}


def test_a_worker_that_cannot_start_fails_its_job_with_the_reason(workspace):
    class Broken(RecordingRunner):
        def start(self, workspace, job):
            raise OSError("no processes left")

    job = workspace.jobs.create("train", TINY)
    assert jobs.dispatch(workspace, Broken(workspace.root)) == []
    job = workspace.jobs.get(job.id)
    assert job.state == "failed" and job.error == "could not start a worker: OSError: no processes left"


def test_claim_next_respects_the_limit_and_the_order(workspace):
    a = workspace.jobs.create("train", TINY)
    time.sleep(0.01)
    b = workspace.jobs.create("train", TINY)
    assert workspace.jobs.claim_next(1, "local").id == a.id
    assert workspace.jobs.claim_next(1, "local") is None          # one already runs
    assert workspace.jobs.claim_next(2, "local").id == b.id
    assert workspace.jobs.claim_next(5, "local") is None          # nothing queued


# ---------------------------------------------------------------- only known columns

@pytest.mark.parametrize("hostile", ["state = 'done', error", "log", "config", "id", "kind; DROP TABLE jobs"])
def test_update_accepts_only_known_columns(workspace, hostile):
    job = workspace.jobs.create("train", TINY, "t")
    with pytest.raises(ValueError, match="cannot set job column"):
        workspace.jobs.update(job.id, **{hostile: "x"})
    again = workspace.jobs.get(job.id)
    assert again.state == "queued" and again.error is None and again.config == TINY
    assert "log" not in UPDATABLE and "config" not in UPDATABLE
    with pytest.raises(ValueError, match="unknown job state 'exploded'"):
        workspace.jobs.update(job.id, state="exploded")


def test_an_older_workspace_database_gains_the_new_job_columns(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    conn = sqlite3.connect(root / "workbench.db")   # the jobs table as the first release made it
    conn.executescript("""CREATE TABLE jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL, title TEXT NOT NULL DEFAULT '',
        config TEXT NOT NULL, state TEXT NOT NULL, progress REAL NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '',
        error TEXT, device TEXT, pid INTEGER, pid_start TEXT, variant_id TEXT,
        cancel_requested INTEGER NOT NULL DEFAULT 0, log TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL,
        started_at REAL, finished_at REAL, heartbeat_at REAL);
        INSERT INTO jobs (id, kind, config, state, created_at) VALUES ('j1', 'train', '{}', 'done', 1.0);""")
    conn.commit()
    conn.close()
    ws = Workspace(root, seed_baselines=False)
    job = ws.jobs.get("j1")
    assert job.state == "done" and job.result is None and job.runner is None
    ws.jobs.update("j1", result={"ok": True}, runner="local")
    assert ws.jobs.get("j1").result == {"ok": True}


def test_an_unknown_runner_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNNER", "carrier-pigeon")
    with pytest.raises(ValueError, match="unknown runner 'carrier-pigeon'"):
        get_runner()
    monkeypatch.delenv("WORKBENCH_RUNNER")
    assert isinstance(get_runner(), LocalRunner) and get_runner() is get_runner()


# ---------------------------------------------------------------- variant references and transactions

def test_variant_references_are_literal_and_never_empty(workspace):
    a = _add(workspace, "first", vid="ab12cd34")
    for wild in ("%", "_", ""):
        with pytest.raises(VariantNotFound):
            workspace.get_variant(wild)                 # today each of these returns the only variant
    _add(workspace, "100%_done", vid="ef56ab78")
    for wild in ("%", "_", "__", "a%", "%2", "", "   "):
        with pytest.raises(VariantNotFound):
            workspace.get_variant(wild)                 # today: '%' and '_' matched by LIKE, '' matched all
    assert workspace.get_variant("ab1").id == a.id      # a real prefix still works
    assert workspace.get_variant("100%_done").name == "100%_done"   # and a name with those characters
    with pytest.raises(VariantNotFound, match="no variant given"):
        workspace.get_variant("")


def test_a_parent_deleted_while_a_child_is_added_never_leaves_an_orphan(workspace, monkeypatch):
    parent = _add(workspace, "parent")
    other = Workspace(workspace.root, seed_baselines=False)   # another session or process
    real = workspace_mod.write_temp

    def write_then_delete_parent(path, data):
        tmp = real(path, data)
        other.delete_variant(parent.id)   # lands between today's parent check and its insert
        return tmp

    monkeypatch.setattr(workspace_mod, "write_temp", write_then_delete_parent)
    with pytest.raises(VariantNotFound, match="the parent"):
        _add(workspace, "child", parent=parent.id)
    assert workspace.list_variants() == []
    assert not any(p.name.endswith(".tmp") for p in workspace.variants_dir.rglob("*"))   # no stray file


def test_adding_an_existing_id_never_overwrites_its_file(workspace):
    a = _add(workspace, "a", vid="same-id")
    before = workspace.weights_path(a).read_bytes()
    with pytest.raises(sqlite3.IntegrityError):
        workspace.add_variant(create_model("lenet300"), name="b", dataset="fashion-mnist", arch=ARCH, recipe=[],
                              metrics={}, variant_id="same-id")
    assert workspace.weights_path(a).read_bytes() == before


def test_concurrent_deletes_and_child_adds_never_orphan_a_child(workspace):
    for round_ in range(15):
        parent = _add(workspace, f"p{round_}")
        barrier = threading.Barrier(2)

        def add_child(parent_id=parent.id, r=round_):
            barrier.wait()
            try:
                _add(Workspace(workspace.root, seed_baselines=False), f"c{r}", parent=parent_id)
            except VariantNotFound:
                pass

        def delete_parent(parent_id=parent.id):
            barrier.wait()
            try:
                Workspace(workspace.root, seed_baselines=False).delete_variant(parent_id)
            except Exception:
                pass   # refused: it has a child now

        threads = [threading.Thread(target=add_child), threading.Thread(target=delete_parent)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ids = {v.id for v in workspace.list_variants()}
    assert all(v.parent_id is None or v.parent_id in ids for v in workspace.list_variants())


def test_concurrent_metric_updates_never_lose_a_key(workspace):
    v = _add(workspace, "m")

    def write(prefix):
        ws = Workspace(workspace.root, seed_baselines=False)
        for i in range(25):
            ws.update_variant(v.id, metrics={f"{prefix}{i}": i})

    threads = [threading.Thread(target=write, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics = workspace.get_variant(v.id).metrics
    assert {f"{p}{i}" for p in "ab" for i in range(25)} <= set(metrics) and metrics["accuracy"] == 0.5


# ---------------------------------------------------------------- events and results through a channel

def test_a_job_run_through_a_collecting_channel_reports_like_a_local_one(workspace):
    """What a Ray worker does: it cannot write the database, so its reports travel as messages
    that the server applies; the job ends with the same events, progress, log and variant."""
    job = workspace.jobs.create("train", TINY, "remote")
    claimed = workspace.jobs.claim_next(1, "test-remote")
    assert claimed.id == job.id
    channel = CollectingChannel()
    saved = []

    def save_variant(draft):   # the draft's bytes would travel back; the server stores them
        saved.append(draft)
        return draft.store(workspace)

    outcome = execute_job(claimed, channel, workspace, save_variant=save_variant)
    messages = channel.drain()
    assert workspace.jobs.events(job.id) == []            # nothing was written by the worker itself
    workspace.jobs.apply(job.id, messages)
    finish(workspace.jobs, job.id, outcome)
    done = workspace.jobs.get(job.id)
    assert done.state == "done" and done.progress == 1.0
    v = workspace.get_variant(done.variant_id)
    assert len(saved) == 1 and saved[0].weights == workspace.weights_path(v).read_bytes()
    kinds = [e["kind"] for e in workspace.jobs.events(job.id)]
    assert kinds[0] == "start" and "epoch_end" in kinds and kinds[-1] == "end"
    assert f"saved variant {v.id}" in done.log and done.device.startswith("cpu")


def test_a_cancel_reaches_a_channel_worker(workspace):
    job = workspace.jobs.create("train", {**TINY, "train": {**TINY["train"], "epochs": 50}})
    claimed = workspace.jobs.claim_next(1, "test-remote")
    channel = CollectingChannel()
    channel.cancel()                                        # the server forwards a cancel
    outcome = execute_job(claimed, channel, workspace)
    finish(workspace.jobs, job.id, outcome)
    assert workspace.jobs.get(job.id).state == "cancelled" and workspace.list_variants() == []


def test_the_store_channel_batches_and_flushes_on_close(workspace):
    job = workspace.jobs.create("train", TINY)
    workspace.jobs.claim_next(1, "local")
    ch = StoreChannel(workspace.jobs, job.id, echo=False)
    for i in range(5):
        ch.on_event({"kind": "batch_end", "i": i})
    ch.on_progress(0.4, "almost")
    ch.close()
    got = workspace.jobs.get(job.id)
    assert [e["i"] for e in workspace.jobs.events(job.id)] == list(range(5))
    assert got.progress == 0.4 and got.message == "almost"
