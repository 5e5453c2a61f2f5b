"""The worker side of a job: channels, and a job whose reports travel back as messages (what a
worker that cannot write the workspace database, e.g. on a Ray cluster, does)."""
from __future__ import annotations

import re

import pytest

from core.run.channels import CollectingChannel, StoreChannel
from core.run.execute import execute_job
from core.run.jobs import finish
from core.run.worker import run_worker

TINY = {"model": "lenet5-small", "subset": 128, "train": {"epochs": 1, "batch_size": 64, "log_every": 1,
                                                          "device": "cpu"}}
TIMING_KEYS = ("seq", "t", "samples_per_s", "elapsed_s")   # differ between any two runs


def run_local(ws, kind: str, config: dict):
    """A job run by the code a LocalRunner worker process runs, here in this process."""
    job = ws.jobs.create(kind, config, "local")
    claimed = ws.jobs.claim_next(1, "local")
    assert claimed.id == job.id
    assert run_worker(ws, job.id, claimed.claim_token) == 0
    return ws.jobs.get(job.id)


def run_collected(ws, kind: str, config: dict):
    """The same job run through a CollectingChannel: nothing is written until the server applies
    the drained messages and records the outcome."""
    job = ws.jobs.create(kind, config, "collected")
    claimed = ws.jobs.claim_next(1, "test-remote")
    assert claimed.id == job.id
    channel = CollectingChannel()
    outcome = execute_job(claimed, channel, ws)
    messages = channel.drain()
    assert messages and ws.jobs.events(job.id) == [] and ws.jobs.get(job.id).log == ""
    ws.jobs.apply(job.id, messages)
    finish(ws.jobs, job.id, outcome)
    return ws.jobs.get(job.id)


def comparable_events(ws, job, keep_numbers: bool) -> list[dict]:
    out = []
    for e in ws.jobs.events(job.id):
        e = {k: v for k, v in e.items() if k not in TIMING_KEYS}
        if not keep_numbers:   # training losses need not repeat bit for bit between two runs
            e = {k: v for k, v in e.items() if not isinstance(v, float)}
        out.append(e)
    return out


def comparable_log(job, variant_ids: list[str]) -> list[str]:
    lines = []
    for line in job.log.splitlines():
        line = re.sub(r"^\d\d:\d\d:\d\d ", "", line)
        for vid in filter(None, variant_ids):
            line = line.replace(vid, "<variant>")
        lines.append(re.sub(r"\d+(\.\d+)?", "#", line))
    return [ln for ln in lines if not ln.startswith("worker # started job")]   # the local worker's own line


def test_a_job_through_a_collecting_channel_ends_like_a_local_one(workspace):
    local_train = run_local(workspace, "train", TINY)
    remote_train = run_collected(workspace, "train", TINY)
    for job in (local_train, remote_train):
        assert job.state == "done", job.log
        assert job.progress == 1.0 and job.device.startswith("cpu") and job.result is None
        assert f"saved variant {job.variant_id}" in job.log
    assert remote_train.variant_id != local_train.variant_id
    assert workspace.get_variant(remote_train.variant_id).recipe == workspace.get_variant(local_train.variant_id).recipe
    assert comparable_events(workspace, remote_train, False) == comparable_events(workspace, local_train, False)
    kinds = [e["kind"] for e in workspace.jobs.events(remote_train.id)]
    assert kinds[0] == "start" and "epoch_end" in kinds and kinds[-1] == "end"
    ids = [local_train.variant_id, remote_train.variant_id]
    assert comparable_log(remote_train, ids) == comparable_log(local_train, ids)
    assert remote_train.message == f"done: variant {remote_train.variant_id}"

    # a task with a result (and no variant): the result lands in the job's result column
    scan = {"variant": local_train.variant_id, "amounts": [0.5], "val_subset": 50}
    local_scan = run_local(workspace, "sensitivity", scan)
    remote_scan = run_collected(workspace, "sensitivity", scan)
    assert local_scan.state == remote_scan.state == "done"
    assert remote_scan.result == local_scan.result and remote_scan.result["layers"]
    assert remote_scan.variant_id is None and remote_scan.progress == 1.0
    assert comparable_events(workspace, remote_scan, True) == comparable_events(workspace, local_scan, True)
    assert comparable_log(remote_scan, []) == comparable_log(local_scan, [])


def test_a_cancel_reaches_a_channel_worker(workspace):
    job = workspace.jobs.create("train", {**TINY, "train": {**TINY["train"], "epochs": 50}})
    claimed = workspace.jobs.claim_next(1, "test-remote")
    channel = CollectingChannel()
    channel.cancel()                                        # the server forwards a cancel
    outcome = execute_job(claimed, channel, workspace)
    workspace.jobs.apply(job.id, channel.drain())
    finish(workspace.jobs, job.id, outcome)
    done = workspace.jobs.get(job.id)
    assert done.state == "cancelled" and "cancelled" in done.message and "cancelled" in done.log
    assert workspace.list_variants() == []


def test_a_failing_channel_job_records_its_error_and_traceback(workspace):
    job = workspace.jobs.create("sensitivity", {"variant": "no-such-variant", "amounts": [0.5]})
    claimed = workspace.jobs.claim_next(1, "test-remote")
    channel = CollectingChannel()
    outcome = execute_job(claimed, channel, workspace)
    workspace.jobs.apply(job.id, channel.drain())
    finish(workspace.jobs, job.id, outcome)
    failed = workspace.jobs.get(job.id)
    assert failed.state == "failed" and "no-such-variant" in failed.error
    assert "FAILED" in failed.log and "Traceback" in failed.log and outcome.exit_code() == 1


def test_the_store_channel_batches_and_flushes_on_close(workspace):
    job = workspace.jobs.create("train", TINY)
    workspace.jobs.claim_next(1, "local")
    ch = StoreChannel(workspace.jobs, job.id, echo=False, flush_s=3600)   # no timer: a loaded machine can't flush early
    ch.on_progress(0.1, "starting")                         # the first report is written at once
    for i in range(5):
        ch.on_event({"kind": "batch_end", "i": i})
    ch.on_progress(0.4, "almost")
    assert workspace.jobs.events(job.id) == []              # batched: at most ~2 writes a second
    ch.close()
    got = workspace.jobs.get(job.id)
    assert [e["i"] for e in workspace.jobs.events(job.id)] == list(range(5))
    assert got.progress == 0.4 and got.message == "almost"


def test_applied_messages_are_one_batch_and_an_unknown_one_writes_nothing(workspace):
    job = workspace.jobs.create("train", TINY)
    workspace.jobs.claim_next(1, "test-remote")
    with pytest.raises(ValueError, match="unknown job message 'teleport'"):
        workspace.jobs.apply(job.id, [("events", [{"kind": "start"}]), ("log", "a line\n"), ("teleport",)])
    assert workspace.jobs.events(job.id) == [] and workspace.jobs.get(job.id).log == ""
    before = workspace.jobs.get(job.id).heartbeat_at
    channel = CollectingChannel()
    channel.heartbeat()
    workspace.jobs.apply(job.id, channel.drain())
    assert workspace.jobs.get(job.id).heartbeat_at > before
    # progress reported after the job ended (cancelled meanwhile) does not bring it back to life
    workspace.jobs.update(job.id, state="cancelled")
    workspace.jobs.apply(job.id, [("progress", 0.9, "late")])
    assert workspace.jobs.get(job.id).message != "late"
