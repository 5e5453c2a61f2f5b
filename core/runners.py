"""Runners execute claimed jobs. `core.jobs` moves the queue and only talks to this interface,
so the same jobs can run in local processes (the embedded default) or on a Ray cluster
(`core.runner_ray`), whose workers cannot write the local SQLite file: such a worker reports
through a collecting channel (`core.worker.CollectingChannel`) whose messages the server applies
with `JobStore.apply`, and hands a finished variant back as bytes (`TaskContext.save_variant`).

`LocalRunner` starts each job as a fresh interpreter in its own session
(`python -m core.worker --workspace ROOT run JOB_ID`), so a job survives page reloads and even a
restart of the server that started it. Liveness checks the pid and its start time in /proc (a
reused pid is not mistaken for the worker) and collects the exit status when this process is the
worker's parent, so no zombie outlives a finished worker.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from .jobstore import Job

EXIT_STATUS_TTL_S = 600.0


class Runner(ABC):
    """How jobs execute. `start` is called after the job's claim is committed (state running)."""

    name: str = "runner"

    @abstractmethod
    def start(self, workspace, job: Job) -> None:
        """Begin executing `job`; its worker reports through the job store (or a channel)."""

    @abstractmethod
    def is_alive(self, job: Job) -> bool:
        """Is the worker of `job` still running?"""

    @abstractmethod
    def exit_status(self, job: Job) -> int | None:
        """The worker's exit status when it ended and the runner knows it, else None."""

    @abstractmethod
    def stop(self, job: Job) -> str:
        """Stop the worker by force (after a cooperative cancel timed out); says what happened."""

    def node(self) -> str:
        """Where this runner's workers run, for the Jobs page."""
        return socket.gethostname()

    def collect_finished(self) -> None:  # noqa: B027 - optional hook: most runners keep nothing to collect
        """Collect what ended workers left behind (a local runner waits for its children, so none
        stays a zombie; a remote runner would apply its workers' last messages here)."""


def proc_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat), or None when unknown.
    A pid with another start time is another process that reused the number."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) is in parentheses and may itself contain spaces or parentheses
    rest = stat[stat.rfind(")") + 2:].split()
    return rest[19] if len(rest) > 19 else None


def _proc_state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()[0]


class LocalRunner(Runner):
    name = "local"

    def __init__(self) -> None:
        # workers this process started: pid -> Popen, kept so their exit status can be collected
        self._children: dict[int, subprocess.Popen] = {}
        # pid -> (exit status, when collected): kept a while for reap, then forgotten (pids get reused)
        self._exit_status: dict[int, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def start(self, workspace, job: Job) -> None:
        log_dir = workspace.jobs.job_dir(job.id)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # the worker imports `core` from this checkout, whatever the caller's working directory
        repo = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(log_dir / "worker.log", "ab") as log:
            # the claim token travels only on the worker's command line: a worker without it runs nothing
            cmd = [sys.executable, "-m", "core.worker", "--workspace", str(workspace.root), "run", job.id,
                   "--claim", job.claim_token or ""]
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=repo,
                                    env=env, start_new_session=True, close_fds=True)
        with self._lock:
            self._children[proc.pid] = proc
            self._exit_status.pop(proc.pid, None)  # a reused pid: forget the old process's status
        workspace.jobs.update(job.id, only_if_state=("running",), pid=proc.pid, pid_start=proc_start_time(proc.pid),
                              message="starting worker")

    def exit_status(self, job: Job) -> int | None:
        return self._collect(job.pid) if job.pid is not None else None

    def _collect(self, pid: int) -> int | None:
        """Exit status of `pid` when it is a finished child of this process, else None."""
        with self._lock:
            now = time.time()
            for old in [p for p, (_, t) in self._exit_status.items() if now - t > EXIT_STATUS_TTL_S]:
                del self._exit_status[old]
            if pid in self._exit_status:
                return self._exit_status[pid][0]
            proc = self._children.get(pid)
            if proc is not None:
                rc = proc.poll()
                if rc is not None:
                    self._children.pop(pid, None)
                    self._exit_status[pid] = (rc, now)
                return rc
        try:  # a child started by another Popen in this process (rare): ask the kernel directly
            wpid, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if wpid == 0:
            return None
        rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        with self._lock:
            self._exit_status[pid] = (rc, time.time())
        return rc

    def collect_finished(self) -> None:
        """Wait for children that ended (their jobs already reported), so none stays a zombie."""
        with self._lock:
            pids = list(self._children)
        for pid in pids:
            self._collect(pid)

    def is_alive(self, job: Job) -> bool:
        if job.pid is None:
            return False
        if self._collect(job.pid) is not None:
            return False
        with self._lock:
            ours = job.pid in self._children
        if ours:
            # our own child: alive until waitpid says otherwise (its /proc state can read Z while its
            # other threads are still exiting, before an exit status can be collected)
            return True
        try:
            os.kill(job.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else: compare start times below
        if _proc_state(job.pid) in ("Z", "X"):  # a zombie: dead, waiting for a parent that is not us
            return False
        if job.pid_start is not None:
            start = proc_start_time(job.pid)
            if start is not None and start != job.pid_start:
                return False  # the pid was reused by another process
        return True

    def stop(self, job: Job) -> str:
        """SIGTERM the worker's process group, then SIGKILL after a second."""
        if job.pid is None:
            return "it had no worker process"
        if job.pid == os.getpid():
            return "not signalled: that pid is this very process"
        for sig, wait in ((signal.SIGTERM, 1.0), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(job.pid, sig)  # the worker leads its own session and process group
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(job.pid, sig)
                except ProcessLookupError:
                    return "it had already exited"
            end = time.time() + wait
            while time.time() < end:
                if not self.is_alive(job):
                    return f"stopped with {sig.name}"
                time.sleep(0.05)
        return "SIGKILL sent"


def _ray_runner() -> Runner:
    # imported on first use: Ray is heavy, and a local server never needs it
    from .runner_ray import RayRunner

    return RayRunner()


# each a Runner class, or a factory that imports one
RUNNERS: dict[str, Callable[[], Runner]] = {"local": LocalRunner, "ray": _ray_runner}
_instances: dict[str, Runner] = {}
_instances_lock = threading.Lock()


def started_runners() -> list[Runner]:
    """The runners this process has used, e.g. for `reap` to collect their finished workers."""
    with _instances_lock:
        return list(_instances.values())


def runner_name() -> str:
    """The runner new jobs go to: env WORKBENCH_RUNNER, else 'local' (read without starting one)."""
    return os.environ.get("WORKBENCH_RUNNER") or "local"


def get_runner(name: str | None = None) -> Runner:
    """The runner named `name` (default: `runner_name()`), one per process: 'local' (spawned
    processes) or 'ray' (a Ray cluster, see core.runner_ray)."""
    name = name or runner_name()
    cls = RUNNERS.get(name)
    if cls is None:
        raise ValueError(f"unknown runner {name!r} (WORKBENCH_RUNNER); available: {', '.join(RUNNERS)}")
    with _instances_lock:
        if name not in _instances:
            _instances[name] = cls()
        return _instances[name]
