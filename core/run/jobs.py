"""The job queue: long work (training, sweeps, fine-tuning) as jobs that a Runner executes.

A job is a row of the workspace's job store (`ws.jobs`), so every process that opens the
workspace (each browser session of the app, a second server, the CLI, a test) sees the same jobs:

    submit() -> queued --dispatch()--> running --worker--> done | failed | cancelled
                  |                       |
                  +--cancel()--> cancelled +--reap(): worker gone--> failed | interrupted

`dispatch` claims queued jobs, oldest first, while fewer than `max_jobs()` run (env
WORKBENCH_MAX_JOBS, default 1: one GPU/CPU job at a time). Each claim is committed before the
runner starts the worker (`JobStore.claim_next`), so a worker never reads an uncommitted claim,
and two processes dispatching at once never start the same job twice nor exceed the limit. A
worker that ends calls `dispatch`, so the queue moves on with no browser open. `reap` marks jobs
whose worker died without reporting: failed when the exit status is known, else interrupted. The
variant a job produces is written atomically, so a dead worker never leaves a half-written one.
"""
from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import time

from core.base.errors import is_disk_full
from core.models.registry import list_models
from core.run import local as _local  # noqa: F401  (registers the 'local' runner)
from core.run import runners
from core.run.execute import EXIT_CANNOT_WRITE, JobOutcome
from core.run.ray import runner as _ray_runner  # noqa: F401  (registers the 'ray' runner; Ray itself loads on first use)
from core.run.runners import Runner, runner_name, started_runners
from core.store.jobstore import FINAL_JOB_STATES, Job, variant_keys
from core.store.workspace import Workspace
from core.tasks import job_title, parse_config

__all__ = ["submit", "dispatch", "cancel", "reap", "active_jobs", "max_jobs", "describe", "get_runner", "runner_name",
           "end_job", "finish", "FINAL_JOB_STATES"]

DEFAULT_MAX_JOBS = 1
CANCEL_GRACE_S = 3.0       # a worker that has not stopped this long after a cancel is stopped by force
NO_PID_GRACE_S = 60.0      # a claimed job whose worker never recorded a pid is given up after this
LOG_TAIL_LINES = 30        # lines of worker.log copied into a failed job's log


def max_jobs() -> int:
    """How many jobs may run at once: env WORKBENCH_MAX_JOBS, default 1."""
    try:
        return max(1, int(os.environ.get("WORKBENCH_MAX_JOBS", DEFAULT_MAX_JOBS)))
    except ValueError:
        return DEFAULT_MAX_JOBS


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


def get_runner(name: str | None = None) -> Runner:
    """The runner named `name` (default: env WORKBENCH_RUNNER, else 'local'), one per process,
    holding this module's end-of-job protocol (`end_job`)."""
    return runners.get_runner(name, end_job=end_job)


def finish(store, job_id: str, outcome: JobOutcome) -> None:
    """Record a job's end, unless someone else marked it final meanwhile (a cancel that timed
    out): then keep what it made findable and say so in the log."""
    if store.update(job_id, only_if_state=("running",), state=outcome.state, finished_at=time.time(),
                    **outcome.columns):
        return
    if outcome.columns.get("variant_id"):
        store.update(job_id, variant_id=outcome.columns["variant_id"])
    store.append_log(job_id, f"{_stamp()} worker finished as {outcome.state} after the job was already "
                             f"{store.get(job_id).state}\n")


def end_job(ws: Workspace, job_id: str, outcome: JobOutcome) -> None:
    """The end of every job, whichever runner ran it, written once: a job stopped by a signal after
    someone asked to cancel it counts as cancelled; its end is recorded (`finish`: raises when it
    cannot be, e.g. a full disk, and then the queue does not move); the next queued job starts, so
    the queue moves on with no browser open."""
    if outcome.state == "interrupted" and ws.jobs.get(job_id).cancel_requested:
        outcome = JobOutcome("cancelled", {"message": f"cancelled: {outcome.columns['message']}"})
    finish(ws.jobs, job_id, outcome)
    try:
        dispatch(ws)
    except Exception as e:
        print(f"dispatch after job {job_id} failed: {e}", file=sys.stderr, flush=True)


def describe(kind: str, config, ws: Workspace | None = None) -> str:
    """A job's title for people, from its task's config (variant ids shown by name when `ws` is given)."""
    return job_title(kind, config, ws)


def submit(ws: Workspace, kind: str, config, title: str = "") -> str:
    """Validate `config` (a dict or the task's config object) for task `kind`, queue a job titled
    for people and start it when a slot is free. Raises ValueError for a bad config (nothing is
    queued)."""
    cfg = parse_config(kind, config)
    cfg_dict = _with_variant_ids(ws, cfg.to_dict())
    job = ws.jobs.create(kind, cfg_dict, title or describe(kind, cfg, ws))
    dispatch(ws)
    return job.id


MODEL_OR_VARIANT = ("student", "source")   # config keys naming a variant or a registered model (built fresh)


def _with_variant_ids(ws: Workspace, config: dict) -> dict:
    """The config with every variant it names (by id, prefix or name) resolved to its id: a missing
    variant is refused now, not at 92%, and `JobStore.jobs_using` can find the job by id."""
    models = {s.name for s in list_models()}   # a distill `student` or a transfer `source` may be a model name
    return {k: (ws.get_variant(v).id if k in variant_keys(config) and not (k in MODEL_OR_VARIANT and v in models)
                else v) for k, v in config.items()}


def dispatch(ws: Workspace, runner: Runner | None = None) -> list[str]:
    """Start queued jobs, oldest first, while fewer than `max_jobs()` run. Returns the started ids."""
    if not ws.jobs.has_queued():  # cheap check first: most calls find nothing to do
        return []
    runner = runner or get_runner()
    started: list[str] = []
    while (job := ws.jobs.claim_next(max_jobs(), runner.name, runner.node())) is not None:
        try:
            runner.start(ws, job)   # the claim is committed: the worker will find it running
        except Exception as e:
            ws.jobs.update(job.id, only_if_state=("running",), state="failed", finished_at=time.time(),
                           error=f"could not start a worker: {type(e).__name__}: {e}", message="failed to start")
            continue
        started.append(job.id)
    return started


def cancel(ws: Workspace, job_id: str, grace_s: float = CANCEL_GRACE_S) -> Job:
    """Cancel a job. A queued one is cancelled at once; a running one is asked to stop and, if
    its worker has not ended within `grace_s` seconds, stopped by its runner (SIGTERM, then
    SIGKILL for a local worker). Returns the job as it is afterwards."""
    store = ws.jobs
    if store.update(job_id, only_if_state=("queued",), state="cancelled", finished_at=time.time(),
                    message="cancelled before it started"):
        return store.get(job_id)
    if not store.update(job_id, only_if_state=("running",), cancel_requested=1):
        return store.get(job_id)  # already final
    runner = _runner_of(store.get(job_id))
    deadline = time.time() + grace_s
    while time.time() < deadline:
        job = store.get(job_id)
        if job.is_final:
            return job
        if job.pid is not None and not runner.is_alive(job):
            break
        time.sleep(0.1)
    job = store.get(job_id)
    if job.is_final:
        return job
    how = runner.stop(job) if runner.is_alive(job) else "it had already exited"
    store.update(job_id, only_if_state=("running",), state="cancelled", finished_at=time.time(),
                 message=f"cancelled: the worker did not stop within {grace_s:.0f} s, {how}")
    store.append_log(job_id, f"{_stamp()} cancel: worker did not stop within {grace_s:.0f} s; {how}\n")
    dispatch(ws)
    return store.get(job_id)


def _runner_of(job: Job) -> Runner:
    try:
        return get_runner(job.runner) if job.runner else get_runner()
    except ValueError:
        return get_runner()


def _describe_status(pid: int, status: int) -> str:
    if status == EXIT_CANNOT_WRITE:
        return (f"worker process {pid} could not write the workspace: its disk is full or it had an I/O error "
                "(free some space, then start the job again)")
    if status < 0:  # Popen's convention: -N means killed by signal N
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"worker process {pid} died unexpectedly: killed by signal {-status} ({name})"
    return f"worker process {pid} died unexpectedly: exited with status {status} without reporting a result"


def reap(ws: Workspace) -> list[str]:
    """Mark running jobs whose worker is gone as failed (exit status known) or interrupted
    (unknown), then dispatch the queue. Cheap when nothing runs. Returns the reaped ids."""
    store = ws.jobs
    for started in started_runners():
        started.collect_finished()
    reaped = []
    for job in store.list(states=("running",)):
        runner = _runner_of(job)
        if runner.is_alive(job):
            continue
        if job.pid is None and time.time() - (job.started_at or 0) < NO_PID_GRACE_S:
            continue
        if store.get(job.id).state != "running":  # it may have finished between the two reads
            continue
        status = runner.exit_status(job)
        if job.pid is None:
            state, reason = "interrupted", "the worker process never started"
        elif status is not None:
            state, reason = "failed", _describe_status(job.pid, status)
        else:
            state, reason = "interrupted", (f"worker process {job.pid} is gone and its exit status is unknown "
                                            "(killed, or the machine or server restarted)")
        try:
            if store.update(job.id, only_if_state=("running",), state=state, error=reason, message=reason,
                            finished_at=time.time()):
                tail = _worker_log_tail(store, job.id)
                store.append_log(job.id, f"{_stamp()} {reason}\n"
                                 + (f"--- worker.log (tail) ---\n{tail}" if tail else ""))
                reaped.append(job.id)
        except (OSError, sqlite3.OperationalError) as e:
            if not is_disk_full(e):
                raise
            return reaped   # a full disk: the reason is recorded when it can be; reading pages keep working
    dispatch(ws)
    return reaped


def active_jobs(ws: Workspace) -> list[Job]:
    """Queued and running jobs, after a reap (so a dead worker's job is not shown as running)."""
    reap(ws)
    return ws.jobs.list(states=("queued", "running"))


def _worker_log_tail(store, job_id: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = (store.jobs_dir / job_id / "worker.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.run.jobs", description="job queue tools "
                                "(a worker runs with python -m core.run.worker)")
    p.add_argument("--workspace", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("reap", help="mark jobs whose worker died, then start queued jobs")
    args = p.parse_args(argv)
    ws = Workspace(args.workspace, seed_baselines=False)
    print("\n".join(reap(ws)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
