"""The worker side of a job: run one claimed task and report what happens.

A worker reports through a `JobChannel`: events (batched), progress, log lines, and it asks the
channel whether a cancel was requested. `StoreChannel` writes straight into the job store (a local
worker, which can open the workspace database); `CollectingChannel` only collects messages, which
the server side applies with `JobStore.apply` (a worker on another machine, e.g. a Ray cluster,
that cannot write the local SQLite file). `execute_job` is the same for both.

    python -m core.worker --workspace DIR run JOB_ID     (started by LocalRunner)
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from .jobstore import Job, JobStore

EVENT_FLUSH_S = 0.5        # batch events and progress: at most ~2 database writes a second
CANCEL_POLL_S = 0.3        # how often a worker looks at cancel_requested
HEARTBEAT_S = 2.0          # a running worker touches heartbeat_at this often
FLUSH_NOW = ("start", "epoch_end", "end", "stage", "result")  # event kinds written at once, not batched


def stamp() -> str:
    return time.strftime("%H:%M:%S")


class JobChannel(ABC):
    """How a running task reports: the TaskContext callbacks of a job."""

    terminated: str | None = None    # set when the worker was told to stop by a signal ("SIGTERM")

    @abstractmethod
    def on_event(self, event: dict) -> None: ...

    @abstractmethod
    def on_progress(self, progress: float, message: str) -> None: ...

    @abstractmethod
    def log(self, line: str) -> None: ...

    @abstractmethod
    def should_stop(self) -> bool:
        """Was a cancel requested? Cheap: the training loop asks at every step."""

    def heartbeat(self) -> None:  # noqa: B027 - optional: a channel may beat on its own
        """Say the worker is alive though it reports nothing else (a long evaluation)."""

    def start(self) -> None:  # noqa: B027 - optional hook: most channels need no thread
        """Begin watching for cancellation (a background thread, where needed)."""

    def close(self) -> None:  # noqa: B027 - optional hook: most channels buffer nothing
        """Flush what is buffered."""


class StoreChannel(JobChannel):
    """Writes into the job store: batches events and progress, heartbeats, and watches for
    cancellation from a background thread so `should_stop()` costs nothing in the training loop."""

    def __init__(self, store: JobStore, job_id: str, echo: bool = True, flush_s: float = EVENT_FLUSH_S):
        self.store, self.job_id, self.echo, self.flush_s = store, job_id, echo, flush_s
        self._lock = threading.Lock()
        self._events: list[dict] = []
        self._progress: tuple[float, str] | None = None
        self._device: str | None = None
        self._last_flush = 0.0
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="job-watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.flush()

    def _watch(self) -> None:
        last_beat = 0.0
        while not self._done.wait(CANCEL_POLL_S):
            try:
                if self.store.cancel_requested(self.job_id):
                    self._stop.set()
                now = time.time()
                if now - self._last_flush >= self.flush_s:
                    self.flush()
                if now - last_beat >= HEARTBEAT_S:
                    self.heartbeat()
                    last_beat = now
            except Exception as e:  # a locked or vanished database must not kill the job silently
                print(f"job watcher: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def terminate(self, reason: str) -> None:
        """From a signal handler: stop at the next batch and say why."""
        self.terminated = reason
        self._stop.set()

    def heartbeat(self) -> None:
        self.store.update(self.job_id, only_if_state=("running",), heartbeat_at=time.time())

    def on_event(self, event: dict) -> None:
        with self._lock:
            self._events.append(event)
            if event.get("device"):
                self._device = event["device"]
        if event.get("kind") in FLUSH_NOW:
            self.flush()

    def on_progress(self, progress: float, message: str) -> None:
        with self._lock:
            self._progress = (min(max(float(progress), 0.0), 1.0), message)
        if time.time() - self._last_flush >= self.flush_s:
            self.flush()

    def log(self, line: str) -> None:
        if self.echo:
            print(line, flush=True)  # also in worker.log
        self.store.append_log(self.job_id, f"{stamp()} {line.rstrip()}\n")

    def flush(self) -> None:
        with self._lock:
            events, self._events = self._events, []
            progress, self._progress = self._progress, None
            device, self._device = self._device, None
            self._last_flush = time.time()
        self.store.apply(self.job_id, ([("events", events)] if events else [])
                         + ([("progress", *progress)] if progress else []) + ([("device", device)] if device else []))


class CollectingChannel(JobChannel):
    """Collects every report as a message instead of writing it anywhere; the server drains them
    (`drain()`) and applies them with `JobStore.apply`. Cancellation comes in by `cancel()`."""

    def __init__(self) -> None:
        self._messages: list[tuple] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def _put(self, message: tuple) -> None:
        with self._lock:
            self._messages.append(message)

    def on_event(self, event: dict) -> None:
        self._put(("events", [event]))
        if event.get("device"):
            self._put(("device", event["device"]))

    def on_progress(self, progress: float, message: str) -> None:
        self._put(("progress", min(max(float(progress), 0.0), 1.0), message))

    def log(self, line: str) -> None:
        self._put(("log", f"{stamp()} {line.rstrip()}\n"))

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def heartbeat(self) -> None:
        self._put(("heartbeat",))

    def cancel(self) -> None:
        self._stop.set()

    def terminate(self, reason: str) -> None:
        self.terminated = reason
        self._stop.set()

    def drain(self) -> list[tuple]:
        with self._lock:
            out, self._messages = self._messages, []
        return out


@dataclass
class JobOutcome:
    state: str                       # done | failed | cancelled | interrupted (a signal)
    columns: dict = field(default_factory=dict)

    def exit_code(self) -> int:
        return 0 if self.state in ("done", "cancelled", "interrupted") else 1


EXIT_CANNOT_WRITE = 75   # the worker could not record its end: reap reads this as "disk full or I/O error"
EXIT_NOT_CLAIMED = 2     # refused: the job was not claimed for this worker (it runs at most once)


def describe_failure(e: BaseException) -> str:
    """One line for a failed job; a full disk or an I/O error says so in words."""
    import errno
    import sqlite3

    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the workspace's disk ({e.strerror or e}{': ' + str(e.filename) if e.filename else ''})"
    if isinstance(e, OSError) and e.errno in (errno.EIO, errno.EROFS):
        return f"the workspace's disk could not be written ({e.strerror or e})"
    if isinstance(e, sqlite3.OperationalError) and "disk is full" in str(e):
        return f"no space left on the workspace's disk (the job database: {e})"
    return f"{type(e).__name__}: {e}".strip()


def execute_job(job: Job, channel: JobChannel, workspace, *, save_variant=None) -> JobOutcome:
    """Run `job`'s task with `channel` as its context; never raises: every end is an outcome."""
    from .cancel import Cancelled
    from .tasks import TaskContext, run_task

    ctx = TaskContext(workspace, on_event=channel.on_event, should_stop=channel.should_stop, log=channel.log,
                      on_progress=channel.on_progress, job_id=job.id, save_variant=save_variant)
    channel.start()
    try:
        out = run_task(job.kind, job.config, ctx)
        msg = f"done: variant {out.variant_id}" if out.variant_id else "done"
        return JobOutcome("done", {"progress": 1.0, "variant_id": out.variant_id, "result": out.result,
                                   "message": msg})
    except Cancelled as e:
        if channel.terminated:    # a signal, not a person: the job was interrupted, and says by what
            why = f"terminated ({channel.terminated})"
            _try_log(channel, f"{why}: {e}")
            return JobOutcome("interrupted", {"message": f"{why}, {e}", "error": why})
        _try_log(channel, f"cancelled: {e}")
        return JobOutcome("cancelled", {"message": str(e) or "cancelled"})   # "cancelled at step 7 of 6400"
    except BaseException as e:  # noqa: BLE001 - everything ends the job; record it and exit non-zero
        line = describe_failure(e)
        tb = traceback.format_exc()
        print(tb, file=sys.stderr, flush=True)
        _try_log(channel, f"FAILED {line}\n" + "\n".join(tb.splitlines()[-25:]))
        return JobOutcome("failed", {"error": line, "message": f"failed: {line}"[:300]})
    finally:
        try:
            channel.close()
        except Exception as e:   # e.g. the disk filled up: the outcome still says what happened
            print(f"closing the job channel failed: {describe_failure(e)}", file=sys.stderr, flush=True)


def _try_log(channel: JobChannel, line: str) -> None:
    try:
        channel.log(line)
    except Exception as e:  # a full disk must not hide the job's real end
        print(f"could not log: {describe_failure(e)}", file=sys.stderr, flush=True)


def finish(store: JobStore, job_id: str, outcome: JobOutcome) -> None:
    """Record a job's end, unless someone else marked it final meanwhile (a cancel that timed
    out): then keep what it made findable and say so in the log."""
    if store.update(job_id, only_if_state=("running",), state=outcome.state, finished_at=time.time(),
                    **outcome.columns):
        return
    if outcome.columns.get("variant_id"):
        store.update(job_id, variant_id=outcome.columns["variant_id"])
    store.append_log(job_id, f"{stamp()} worker finished as {outcome.state} after the job was already "
                             f"{store.get(job_id).state}\n")


def _requested_device(config: dict) -> str:
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    return str(train.get("device") or config.get("device") or "auto")


def run_worker(workspace, job_id: str, claim: str | None = None, *, own_process: bool = False) -> int:
    """Run one claimed job to its end in this process (LocalRunner's worker). The claim token is
    checked and consumed in one transaction, so a job runs at most once, whatever starts a
    worker. In its `own_process` the worker also lowers its priority and answers SIGTERM.
    Returns the exit status."""
    from . import jobs
    from .metrics import device_name, resolve_device
    from .runners import proc_start_time

    store = workspace.jobs
    pid = os.getpid()
    job = store.get(job_id)
    try:
        device = device_name(resolve_device(_requested_device(job.config)))
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
        if outcome.state == "interrupted" and store.get(job_id).cancel_requested:
            outcome = JobOutcome("cancelled", {"message": f"cancelled: {outcome.columns['message']}"})
        finish(store, job_id, outcome)
    except Exception as e:   # the end cannot be recorded (disk full): a distinct status tells reap why
        print(f"could not record the job's end: {describe_failure(e)}", file=sys.stderr, flush=True)
        return EXIT_CANNOT_WRITE
    try:
        jobs.dispatch(workspace)  # the queue moves on even with no browser open
    except Exception as e:
        print(f"dispatch after job {job_id} failed: {e}", file=sys.stderr, flush=True)
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
    from .workspace import Workspace

    p = argparse.ArgumentParser(prog="python -m core.worker", description="run one claimed job")
    p.add_argument("--workspace", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("run", help="run one claimed job (started by a runner, with the job's claim token)")
    sp.add_argument("job_id")
    sp.add_argument("--claim", default=None, help="the claim token the runner was given")
    args = p.parse_args(argv)
    return run_worker(Workspace(args.workspace, seed_baselines=False), args.job_id, args.claim, own_process=True)


if __name__ == "__main__":
    sys.exit(main())
