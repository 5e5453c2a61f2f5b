"""The job runner without Streamlit: real worker processes running real (tiny) training tasks."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from core.base.paths import REPO_ROOT
from core.base.procs import proc_start_time
from core.run import jobs
from core.store.workspace import Workspace

TINY = {"model": "lenet5-small", "subset": 256, "train": {"epochs": 1, "batch_size": 64, "log_every": 1}}
# long enough to still be training when the test acts on it (cancelled or killed after a few steps)
LONG = {"model": "lenet5-small", "subset": 512, "train": {"epochs": 200, "batch_size": 16, "log_every": 4}}


def wait_for(predicate, timeout: float, what: str, every: float = 0.2):
    end = time.time() + timeout
    while time.time() < end:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def training_started(ws: Workspace, job_id: str):
    """True once the worker has emitted training events (it is inside the training loop)."""
    return ws.jobs.get(job_id).state == "running" and any(e.get("kind") == "batch_end" for e in ws.jobs.events(job_id))


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as f:  # a zombie counts as gone
        return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")


@pytest.fixture
def limit_one(monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")


@pytest.fixture(autouse=True)
def stop_leftover_workers(workspace):
    """Never leave a worker running after a test, whatever it asserted."""
    yield
    for job in workspace.jobs.list(states=("running", "queued")):
        if job.pid != os.getpid():  # the reap test borrows this process's pid for a fake worker
            jobs.cancel(workspace, job.id, grace_s=0.5)


REPO = str(REPO_ROOT)
def test_a_job_outlives_the_process_that_submitted_it_and_ends_with_a_variant(workspace, limit_one):
    # submitted by another process that exits at once, as a server that is restarted would
    out = subprocess.run([sys.executable, "-c", "import json, sys; from core.run import jobs; "
                          "from core.store.workspace import Workspace; ws = Workspace(sys.argv[1], seed_baselines=False); "
                          "print(jobs.submit(ws, 'train', json.loads(sys.argv[2]), title='tiny run'))",
                          str(workspace.root), json.dumps(TINY)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    job_id = out.stdout.strip()
    assert workspace.jobs.get(job_id).state in ("queued", "running")
    job = wait_for(lambda: (j := workspace.jobs.get(job_id)).is_final and j, 180, "the job to finish")
    assert job.state == "done", job.log
    assert job.progress == 1.0 and job.title == "tiny run"
    assert job.pid and job.pid != os.getpid() and job.device.startswith(("cpu", "cuda"))
    assert job.started_at <= job.finished_at
    v = workspace.get_variant(job.variant_id)
    assert v.recipe[0]["step"] == "train" and v.recipe[0]["model"] == "lenet5-small"
    from core.data.datasets import cached_dataset
    from core.measure.metrics import accuracy

    # measured on the full test split, on the model decoded from the very file the worker wrote
    assert v.metrics["accuracy"] == accuracy(workspace.load_model(v), cached_dataset("fashion-mnist").test)
    events = workspace.jobs.events(job_id)
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and "batch_end" in kinds and "epoch_end" in kinds and kinds[-1] == "end"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert f"saved variant {v.id}" in job.log
    # a second Workspace object, and a second process, see the same job and variant
    assert Workspace(workspace.root, seed_baselines=False).jobs.get(job_id).variant_id == v.id
    out = subprocess.run([sys.executable, "-c", "import sys; from core.store.workspace import Workspace; "
                          "j = Workspace(sys.argv[1], seed_baselines=False).jobs.get(sys.argv[2]); "
                          "print(j.state, j.variant_id)", str(workspace.root), job_id],
                         capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split() == ["done", v.id]
    assert jobs.reap(workspace) == [] and workspace.jobs.get(job_id).state == "done"


@pytest.mark.parametrize("kind, config, match", [
    ("train", {"model": "no-such-model"}, "unknown model"),
    ("train", {"model": "lenet5", "dataset": "imagenet-22k"}, "unknown dataset"),
    ("train", {"model": "lenet5", "train": {"epochs": 0}}, "epochs must be a whole number from 1"),
    ("train", {"model": "lenet5", "subset": -5}, "subset must be a positive"),
    ("teleport", {}, "unknown job kind"),
])
def test_bad_config_is_rejected_and_nothing_is_queued(workspace, kind, config, match):
    with pytest.raises(ValueError, match=match):
        jobs.submit(workspace, kind, config)
    assert workspace.jobs.list() == []


def test_cancel_stops_a_running_worker_within_seconds(workspace, limit_one):
    job_id = jobs.submit(workspace, "train", LONG)
    wait_for(lambda: training_started(workspace, job_id), 120, "training to start")
    pid = workspace.jobs.get(job_id).pid
    t0 = time.time()
    job = jobs.cancel(workspace, job_id)
    assert time.time() - t0 < 4.0
    assert job.state == "cancelled" and "cancel" in job.message
    assert job.variant_id is None and workspace.list_variants() == []
    wait_for(lambda: (jobs.reap(workspace), process_gone(pid))[1], 10, "the worker to exit")
    assert jobs.cancel(workspace, job_id).state == "cancelled"  # cancelling a final job changes nothing


def test_a_killed_worker_is_marked_failed_with_the_reason(workspace, limit_one):
    job_id = jobs.submit(workspace, "train", LONG)
    wait_for(lambda: training_started(workspace, job_id), 120, "training to start")
    pid = workspace.jobs.get(job_id).pid
    os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    wait_for(lambda: jobs.reap(workspace) or workspace.jobs.get(job_id).is_final, 10, "reap to notice the dead worker")
    assert time.time() - t0 < 5
    job = workspace.jobs.get(job_id)
    assert job.state == "failed", job.error
    assert job.error == f"worker process {pid} died unexpectedly: killed by signal 9 (SIGKILL)"
    assert job.variant_id is None and workspace.list_variants() == []
    assert not list(workspace.variants_dir.iterdir())  # no half-written variant files either


def test_queue_runs_one_job_at_a_time_and_moves_on(workspace, limit_one):
    first = jobs.submit(workspace, "train", LONG)
    second = jobs.submit(workspace, "train", TINY)
    third = jobs.submit(workspace, "train", TINY)
    wait_for(lambda: training_started(workspace, first), 120, "the first job to train")
    jobs.reap(workspace)
    assert [workspace.jobs.get(j).state for j in (first, second, third)] == ["running", "queued", "queued"]
    assert workspace.jobs.get(second).pid is None
    # a queued job is cancelled at once, without ever starting a worker
    assert jobs.cancel(workspace, third).state == "cancelled" and workspace.jobs.get(third).pid is None
    # when the first ends, the queue moves on by itself (the ending worker dispatches the next)
    jobs.cancel(workspace, first)
    job = wait_for(lambda: (j := workspace.jobs.get(second)).is_final and j, 180, "the second job to run and finish")
    assert job.state == "done" and job.started_at >= workspace.jobs.get(first).finished_at - 1
    assert workspace.jobs.get(third).state == "cancelled"
    # every worker this process started was collected: no zombie left behind
    jobs.reap(workspace)
    assert process_gone(workspace.jobs.get(first).pid)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU to make the task fail")
def test_a_failing_task_records_its_error_and_traceback(workspace, limit_one):
    job_id = jobs.submit(workspace, "train", {**TINY, "train": {**TINY["train"], "device": "cuda"}})
    job = wait_for(lambda: (j := workspace.jobs.get(job_id)).is_final and j, 120, "the job to fail")
    assert job.state == "failed"
    assert job.error == "ValueError: CUDA was asked for but no GPU is available"
    assert "Traceback" in job.log and "FAILED" in job.log
    assert workspace.list_variants() == []


def test_reap_tells_a_vanished_worker_from_a_reused_pid(workspace):
    """Workers that are not this process's children: no exit status, so 'interrupted'."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()  # a pid that no longer exists, and whose status someone else collected
    gone = workspace.jobs.create("train", TINY, "vanished")
    workspace.jobs.update(gone.id, state="running", pid=done.pid, pid_start="1", started_at=time.time())
    # a live pid that belongs to another process than the worker (pid reuse): start times differ
    reused = workspace.jobs.create("train", TINY, "pid reused")
    workspace.jobs.update(reused.id, state="running", pid=os.getpid(), pid_start="0", started_at=time.time())
    alive = workspace.jobs.create("train", TINY, "still running")
    workspace.jobs.update(alive.id, state="running", pid=os.getpid(), pid_start=proc_start_time(os.getpid()),
                         started_at=time.time())
    assert sorted(jobs.reap(workspace)) == sorted([gone.id, reused.id])
    for jid in (gone.id, reused.id):
        job = workspace.jobs.get(jid)
        assert job.state == "interrupted" and "exit status is unknown" in job.error and job.finished_at
    assert workspace.jobs.get(alive.id).state == "running"
    workspace.jobs.update(alive.id, state="cancelled")


def test_max_jobs_reads_the_environment(monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "3")
    assert jobs.max_jobs() == 3
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "zero")
    assert jobs.max_jobs() == 1
    monkeypatch.delenv("WORKBENCH_MAX_JOBS")
    assert jobs.max_jobs() == 1
