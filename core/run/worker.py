"""The worker side of a local job: run one claimed task in this process and report what happens.

    python -m core.run.worker --workspace DIR run JOB_ID --claim TOKEN     (started by LocalRunner)

The claim token is checked and consumed in one transaction, so a job runs at most once; events go
through a `StoreChannel`; the end goes through `core.run.jobs.end_job`, as for every runner.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import time

from core.base.errors import describe_failure
from core.base.procs import proc_start_time
from core.measure.lane import device_label
from core.measure.metrics import resolve_device
from core.run import jobs
from core.run.channels import StoreChannel
from core.run.execute import EXIT_CANNOT_WRITE, EXIT_NOT_CLAIMED, execute_job, requested_device
from core.store.workspace import Workspace


def run_worker(workspace, job_id: str, claim: str | None = None, *, own_process: bool = False) -> int:
    """Run one claimed job to its end in this process (LocalRunner's worker). The claim token is
    checked and consumed in one transaction, so a job runs at most once, whatever starts a
    worker. In its `own_process` the worker also lowers its priority and answers SIGTERM.
    Returns the exit status."""

    store = workspace.jobs
    pid = os.getpid()
    job = store.get(job_id)
    try:
        device = device_label(resolve_device(requested_device(job.config)))
    except Exception as e:  # e.g. cuda asked for on a machine without one: the task reports it
        device = f"unavailable ({e})"
    if not store.take_claim(job_id, claim, pid=pid, pid_start=proc_start_time(pid), device=device,
                            node=socket.gethostname(), heartbeat_at=time.time(), message="worker started"):
        print(f"refused: job {job_id} is {store.get(job_id).state} and not waiting for this worker (no claim, "
              "a wrong one, or another worker already took it): a job runs at most once", file=sys.stderr, flush=True)
        return EXIT_NOT_CLAIMED
    channel = StoreChannel(store, job_id)
    how = ""
    if own_process:
        nice, threads = yield_to_the_server()
        for sig in (signal.SIGTERM, signal.SIGINT):   # stop at the next batch, and say why
            signal.signal(sig, lambda signum, frame: channel.terminate(signal.Signals(signum).name))
        how = f", nice {nice}, {threads} thread(s)"
    channel.log(f"worker {pid} started job {job_id} ({job.kind}) on {device}{how}")
    outcome = execute_job(job, channel, workspace)
    try:
        jobs.end_job(workspace, job_id, outcome)
    except Exception as e:   # the end cannot be recorded (disk full): a distinct status tells reap why
        print(f"could not record the job's end: {describe_failure(e)}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_WRITE
    return outcome.exit_code()


def yield_to_the_server() -> tuple[int, int]:
    """Run below the server's CPU priority (env WORKBENCH_WORKER_NICE, default 10) on a bounded
    number of threads (WORKBENCH_WORKER_THREADS, default all cores but one), so pages stay live
    while a job trains. Returns (niceness, threads)."""
    import torch

    try:
        nice = os.nice(max(0, int(os.environ.get("WORKBENCH_WORKER_NICE", "10"))))
    except (ValueError, OSError):
        nice = os.nice(0)
    try:
        threads = int(os.environ.get("WORKBENCH_WORKER_THREADS", "0"))
    except ValueError:
        threads = 0
    threads = threads if threads > 0 else max(1, (os.cpu_count() or 2) - 1)
    torch.set_num_threads(threads)
    return nice, threads


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.run.worker", description="run one claimed job")
    p.add_argument("--workspace", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("run", help="run one claimed job (started by a runner, with the job's claim token)")
    sp.add_argument("job_id")
    sp.add_argument("--claim", default=None, help="the claim token the runner was given")
    args = p.parse_args(argv)
    return run_worker(Workspace(args.workspace, seed_baselines=False), args.job_id, args.claim, own_process=True)


if __name__ == "__main__":
    sys.exit(main())
