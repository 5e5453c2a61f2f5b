"""The job store: rows every process shares, only known columns written, claims in one transaction."""
from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from core.store.jobstore import LOG_TAIL_CHARS, UPDATABLE
from core.store.workspace import Workspace

TINY = {"model": "lenet5-small", "subset": 128, "train": {"epochs": 1}}


@pytest.mark.parametrize("hostile", ["state = 'done', error", "log", "config", "id", "kind; DROP TABLE jobs",
                                     "error = 'x' WHERE 1 --"])
def test_update_accepts_only_known_columns(workspace, hostile):
    job = workspace.jobs.create("train", TINY, "t")
    with pytest.raises(ValueError, match="cannot set job column"):
        workspace.jobs.update(job.id, **{hostile: "x"})
    with pytest.raises(ValueError, match="cannot set job column"):   # not even beside a known one
        workspace.jobs.update(job.id, message="ok", **{hostile: "x"})
    again = workspace.jobs.get(job.id)
    assert again.state == "queued" and again.error is None and again.message == "" and again.config == TINY
    assert "log" not in UPDATABLE and "config" not in UPDATABLE and "id" not in UPDATABLE
    with pytest.raises(ValueError, match="unknown job state 'exploded'"):
        workspace.jobs.update(job.id, state="exploded")
    assert workspace.jobs.update(job.id, message="fine", result={"a": [1, 2]})
    assert workspace.jobs.get(job.id).result == {"a": [1, 2]} and not workspace.jobs.update(job.id)


def test_claim_next_respects_the_limit_and_the_order(workspace):
    a = workspace.jobs.create("train", TINY)
    time.sleep(0.01)
    b = workspace.jobs.create("train", TINY)
    first = workspace.jobs.claim_next(1, "local", "node-1")
    assert first.id == a.id and first.state == "running" and first.runner == "local" and first.node == "node-1"
    assert workspace.jobs.claim_next(1, "local") is None          # one already runs
    assert workspace.jobs.claim_next(2, "local").id == b.id
    assert workspace.jobs.claim_next(5, "local") is None          # nothing queued


def test_concurrent_claims_never_exceed_the_limit_nor_share_a_job(workspace):
    for _ in range(6):
        workspace.jobs.create("train", TINY)
    claimed, barrier = [], threading.Barrier(4)

    def claim():
        store = Workspace(workspace.root, seed_baselines=False).jobs   # its own connections, as another process
        barrier.wait()
        while (job := store.claim_next(3, "local")) is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == len(set(claimed)) == 3
    assert len(workspace.jobs.list(states=("running",))) == 3


def test_events_are_numbered_and_the_log_keeps_its_tail(workspace):
    job = workspace.jobs.create("train", TINY)
    workspace.jobs.add_events(job.id, [{"kind": "start"}, {"kind": "batch_end", "step": 1}])
    workspace.jobs.add_events(job.id, [{"kind": "end"}])
    events = workspace.jobs.events(job.id)
    assert [(e["seq"], e["kind"]) for e in events] == [(1, "start"), (2, "batch_end"), (3, "end")]
    assert [e["kind"] for e in workspace.jobs.events(job.id, after_seq=2)] == ["end"]
    workspace.jobs.append_log(job.id, "x" * LOG_TAIL_CHARS)
    workspace.jobs.append_log(job.id, "the last line\n")
    log = workspace.jobs.get(job.id).log
    assert len(log) == LOG_TAIL_CHARS and log.endswith("the last line\n")
    workspace.jobs.delete(job.id)
    assert workspace.jobs.list() == [] and workspace.jobs.events(job.id) == []
    with pytest.raises(KeyError, match="no job"):
        workspace.jobs.get(job.id)


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
    assert ws.jobs.update("j1", result={"ok": True}, runner="local")
    assert ws.jobs.get("j1").result == {"ok": True}
    Workspace(root, seed_baselines=False)   # opening again changes nothing
    assert ws.jobs.get("j1").runner == "local"
