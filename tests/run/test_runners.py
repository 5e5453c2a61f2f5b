"""The runner seam: `core.run.jobs` moves the queue through the Runner interface only, and a runner
starts a worker only after the job's claim is committed."""
from __future__ import annotations

import pytest

from core.run import jobs
from core.run.local import LocalRunner
from core.run.runners import Runner, get_runner, started_runners
from core.store.workspace import Workspace

TINY = {"model": "lenet5-small", "subset": 128, "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}}


class RecordingRunner(Runner):
    """Starts nothing; records what a worker would have read when it started."""

    name = "recording"

    def __init__(self, root):
        self.root, self.seen, self.collected = root, [], 0

    def start(self, workspace, job):
        # a worker is another process: it reads the job through its own connection
        self.seen.append(Workspace(self.root, seed_baselines=False).jobs.get(job.id).state)

    def is_alive(self, job):
        return True

    def exit_status(self, job):
        return None

    def stop(self, job):
        return "stopped"

    def collect_finished(self):
        self.collected += 1


def test_a_worker_starts_only_after_its_claim_is_committed(workspace, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_JOBS", "2")
    for i in range(3):
        workspace.jobs.create("train", TINY, f"job {i}")
    runner = RecordingRunner(workspace.root)
    started = jobs.dispatch(workspace, runner)
    # a worker started inside the claiming transaction would read 'queued' here
    assert runner.seen == ["running", "running"] and len(started) == 2
    assert sorted(j.state for j in workspace.jobs.list()) == ["queued", "running", "running"]
    for jid in started:
        job = workspace.jobs.get(jid)
        assert job.runner == "recording" and job.started_at and job.message.startswith("claimed")
    assert jobs.dispatch(workspace, runner) == [] and len(runner.seen) == 2   # the limit holds


def test_a_worker_that_cannot_start_fails_its_job_with_the_reason(workspace):
    class Broken(RecordingRunner):
        def start(self, workspace, job):
            raise OSError("no processes left")

    job = workspace.jobs.create("train", TINY)
    assert jobs.dispatch(workspace, Broken(workspace.root)) == []
    job = workspace.jobs.get(job.id)
    assert job.state == "failed" and job.error == "could not start a worker: OSError: no processes left"
    assert job.finished_at is not None


def test_reap_asks_every_started_runner_to_collect_its_workers(workspace, monkeypatch):
    recording = RecordingRunner(workspace.root)
    monkeypatch.setattr(jobs, "started_runners", lambda: [recording])
    jobs.reap(workspace)
    assert recording.collected == 1
    assert all(isinstance(r, Runner) for r in started_runners())


def test_get_runner_reads_the_environment_and_names_an_unknown_runner(monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNNER", "carrier-pigeon")
    with pytest.raises(ValueError, match="unknown runner 'carrier-pigeon'.*available: local"):
        jobs.get_runner()
    monkeypatch.setenv("WORKBENCH_RUNNER", "local")
    assert isinstance(jobs.get_runner(), LocalRunner)
    monkeypatch.delenv("WORKBENCH_RUNNER")
    assert get_runner() is get_runner() and get_runner().name == "local"


def test_describe_titles_a_job_from_its_task_config():
    assert jobs.describe("train", TINY) == "Train lenet5-small on Fashion-MNIST, 1 epoch (128 samples)"
    with pytest.raises(ValueError, match="unknown job kind"):
        jobs.describe("teleport", {})
