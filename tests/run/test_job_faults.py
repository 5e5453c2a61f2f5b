"""Jobs under faults: a job runs at most once whatever starts a worker, SIGTERM ends it with the
true reason, a full disk is named, a variant in use cannot be deleted, workers yield the CPU."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

import pytest
from job_helpers import LONG, wait_for

from core.base.paths import REPO_ROOT
from core.run import jobs
from core.run import runners as runners_mod
from core.run.channels import StoreChannel
from core.run.execute import EXIT_CANNOT_WRITE, execute_job
from core.run.runners import Runner
from core.run.worker import run_worker
from core.store.workspace import VariantInUse
from core.tasks import TaskContext, run_task

REPO = str(REPO_ROOT)
def training(ws, job_id):
    return ws.jobs.get(job_id).state == "running" and any(e.get("kind") == "batch_end" for e in ws.jobs.events(job_id))


@pytest.fixture
def one_at_a_time(monkeypatch, workspace):
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "1")
    yield
    for job in workspace.jobs.list(states=("running", "queued")):
        jobs.cancel(workspace, job.id, grace_s=0.5)


def _worker(ws, *args):
    return subprocess.run([sys.executable, "-m", "core.run.worker", "--workspace", str(ws.root), "run", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)


def test_a_running_job_is_never_run_twice(workspace, one_at_a_time):
    job_id = jobs.submit(workspace, "train", LONG)
    wait_for(lambda: training(workspace, job_id), 120, "training to start")
    first = workspace.jobs.get(job_id)
    for attempt in ([job_id], [job_id, "--claim", "guessed-token"]):      # today: a second run of the same job
        out = _worker(workspace, *attempt)
        assert out.returncode == 2 and "runs at most once" in out.stderr
    again = workspace.jobs.get(job_id)
    assert (again.pid, again.state, again.claim_token) == (first.pid, "running", None)
    jobs.cancel(workspace, job_id)
    assert workspace.list_variants() == []


def test_sigterm_ends_the_job_with_the_true_reason_and_no_half_variant(workspace, one_at_a_time):
    job_id = jobs.submit(workspace, "train", LONG)
    wait_for(lambda: training(workspace, job_id), 120, "training to start")
    pid = workspace.jobs.get(job_id).pid
    os.kill(pid, signal.SIGTERM)
    job = wait_for(lambda: (j := workspace.jobs.get(job_id)).is_final and j, 30, "the worker to stop")
    assert job.state == "interrupted" and job.error == "terminated (SIGTERM)"
    assert job.message.startswith("terminated (SIGTERM), cancelled at step")
    assert workspace.list_variants() == [] and not any(workspace.variants_dir.iterdir())
    wait_for(lambda: jobs.reap(workspace) is not None and not get_alive(workspace, job_id), 10, "the process to end")
    assert workspace.jobs.get(job_id).state == "interrupted"     # reap did not overwrite the true reason


def get_alive(ws, job_id) -> bool:
    return runners_mod.get_runner().is_alive(ws.jobs.get(job_id))


def test_workers_run_below_the_servers_priority(workspace, one_at_a_time):
    job_id = jobs.submit(workspace, "train", LONG)
    wait_for(lambda: training(workspace, job_id), 120, "training to start")
    pid = workspace.jobs.get(job_id).pid
    assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 10
    threads = max(1, (os.cpu_count() or 2) - 1)
    assert f"nice {os.getpriority(os.PRIO_PROCESS, pid)}, {threads} thread(s)" in workspace.jobs.get(job_id).log


def test_a_full_disk_is_the_reason_a_job_failed(workspace, one_at_a_time, monkeypatch):
    monkeypatch.setenv("WORKBENCH_TASK_MODULES", "tests.plugins.faulty_task")
    job_id = jobs.submit(workspace, "fill_disk", {})
    job = wait_for(lambda: (j := workspace.jobs.get(job_id)).is_final and j, 120, "the job to end")
    assert job.state == "failed"
    assert job.error == "no space left on the workspace's disk (No space left on device: weights.safetensors)"


def test_a_worker_that_cannot_record_its_end_says_why(workspace, monkeypatch):
    import importlib

    importlib.import_module("tests.plugins.faulty_task")
    job = workspace.jobs.create("fill_disk", {}, "t")
    claimed = workspace.jobs.claim_next(1, "local")

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr("core.run.jobs.finish", full)
    assert run_worker(workspace, job.id, claimed.claim_token) == EXIT_CANNOT_WRITE

    class Ended(Runner):     # a runner whose worker ended with that status
        name = "ended"

        def start(self, workspace, job):
            pass

        def is_alive(self, job):
            return False

        def exit_status(self, job):
            return EXIT_CANNOT_WRITE

        def stop(self, job):
            return ""

    monkeypatch.setitem(runners_mod.RUNNERS, "ended", Ended)
    workspace.jobs.update(job.id, runner="ended", pid=4242)
    assert jobs.reap(workspace) == [job.id]
    assert "could not write the workspace: its disk is full" in workspace.jobs.get(job.id).error


def test_a_failing_event_write_ends_the_job_with_the_reason(workspace, monkeypatch):
    job = workspace.jobs.create("train", {**LONG, "train": {**LONG["train"], "epochs": 1}}, "t")
    claimed = workspace.jobs.claim_next(1, "local")
    channel = StoreChannel(workspace.jobs, job.id, echo=False)

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(workspace.jobs, "apply", full)
    outcome = execute_job(claimed, channel, workspace)
    assert outcome.state == "failed" and outcome.columns["error"].startswith("no space left on the workspace's disk")


def test_a_variant_used_by_a_job_cannot_be_deleted(workspace, monkeypatch):
    ctx = TaskContext(workspace)
    base = run_task("train", {"model": "lenet5-small", "subset": 128, "train": {"epochs": 1, "device": "cpu"}},
                    ctx).variant_id
    name = workspace.get_variant(base).name
    job = workspace.jobs.create("prune", {"variant": base, "prune": {"amount": 0.5}}, "Prune it")
    assert [j.id for j in workspace.jobs.jobs_using(base)] == [job.id]
    with pytest.raises(VariantInUse, match=f"is used by 1 queued or running job.*Prune it \\({job.id}\\)"):
        workspace.delete_variant(base)
    workspace.jobs.update(job.id, state="done")
    assert workspace.jobs.jobs_using(base) == []
    # a job submitted by name or prefix records the id, so it is found too (kept queued: no worker)
    monkeypatch.setattr(jobs, "dispatch", lambda ws, runner=None: [])
    queued = jobs.submit(workspace, "prune", {"variant": name, "prune": {"amount": 0.5}}, title="by name")
    assert workspace.jobs.get(queued).config["variant"] == base
    with pytest.raises(VariantInUse, match="by name"):
        workspace.delete_variant(base)
    jobs.cancel(workspace, queued, grace_s=0.5)
    assert workspace.delete_variant(base) == [base]
