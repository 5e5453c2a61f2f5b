"""`LocalRunner`, the embedded default: each job is a fresh interpreter in its own session
(`python -m core.run.worker --workspace ROOT run JOB_ID`), so a job survives page reloads and even a
restart of the server that started it. Liveness checks the pid and its start time in /proc (a
reused pid is not mistaken for the worker) and collects the exit status when this process is the
worker's parent, so no zombie outlives a finished worker.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from core.base import paths
from core.base.procs import proc_start_time, proc_state
from core.run.runners import Runner, register_runner
from core.store.jobstore import Job

EXIT_STATUS_TTL_S = 600.0


@register_runner("local")
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
        repo = str(paths.REPO_ROOT)
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(log_dir / "worker.log", "ab") as log:
            # the claim token travels only on the worker's command line: a worker without it runs nothing
            cmd = [sys.executable, "-m", "core.run.worker", "--workspace", str(workspace.root), "run", job.id,
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
        if proc_state(job.pid) in ("Z", "X"):  # a zombie: dead, waiting for a parent that is not us
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
