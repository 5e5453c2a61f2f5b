"""The job runner: long work (training, sweeps, fine-tuning) in spawned worker processes.

A job is a row in the workspace database (see `Workspace.create_job`), so every process that
opens the workspace (each browser session of the app, a second server, the CLI, a test) sees the
same jobs. The life of a job:

    submit() -> queued --dispatch()--> running --worker--> done | failed | cancelled
                  |                       |
                  +--cancel()--> cancelled +--reap(): process gone--> failed | interrupted

`dispatch` claims queued jobs, oldest first, under the database's write lock while fewer than
`max_jobs()` run (env WORKBENCH_MAX_JOBS, default 1: one GPU/CPU job at a time) and starts each as
a fresh interpreter in its own session (`python -m core.jobs --workspace ROOT run JOB_ID`), so
it survives page reloads and even a restart of the server that started it. The worker runs
`tasks.TASKS[kind]`, streams events and progress into the database (batched, at most a few
writes a second), polls for cancellation, and calls `dispatch` when it ends so the queue moves
on with no browser open.

`reap` notices workers that died without reporting (killed, out of memory, power cut): it checks
the pid and its start time in /proc (so a reused pid is not mistaken for the worker), collects the
exit status when the caller is the worker's parent, and marks the job failed (exit status known)
or interrupted (unknown). The variant a job produces is written atomically by the workspace, so a
dead worker never leaves a half-written variant.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

from .workspace import FINAL_JOB_STATES, Job, Workspace

__all__ = ["submit", "dispatch", "cancel", "reap", "active_jobs", "worker_alive", "max_jobs", "describe",
           "run_worker", "FINAL_JOB_STATES"]

DEFAULT_MAX_JOBS = 1
EVENT_FLUSH_S = 0.5        # batch events and progress: at most ~2 database writes a second
CANCEL_POLL_S = 0.3        # how often a worker looks at cancel_requested
HEARTBEAT_S = 2.0          # a running worker touches heartbeat_at this often
CANCEL_GRACE_S = 3.0       # a worker that has not stopped this long after a cancel is signalled
NO_PID_GRACE_S = 60.0      # a claimed job whose worker never recorded a pid is given up after this
LOG_TAIL_LINES = 30        # lines of worker.log copied into a failed job's log
FLUSH_NOW = ("start", "epoch_end", "end", "stage")  # event kinds written at once, not batched

# Workers this process started: pid -> Popen. Kept (never garbage collected) so that `reap` can
# collect their exit status, and so that no zombie outlives a finished worker.
_CHILDREN: dict[int, subprocess.Popen] = {}
# pid -> (exit status, when collected): kept a while for `reap`, then forgotten (pids get reused)
_EXIT_STATUS: dict[int, tuple[int, float]] = {}
EXIT_STATUS_TTL_S = 600.0
_lock = threading.Lock()


def max_jobs() -> int:
    """How many jobs may run at once: env WORKBENCH_MAX_JOBS, default 1."""
    try:
        return max(1, int(os.environ.get("WORKBENCH_MAX_JOBS", DEFAULT_MAX_JOBS)))
    except ValueError:
        return DEFAULT_MAX_JOBS


def describe(kind: str, config: dict) -> str:
    """A one-line title for a job, e.g. 'train lenet5 on fashion-mnist, 3 epochs'."""
    parts = [kind]
    if config.get("model"):
        parts.append(str(config["model"]))
    if config.get("variant"):
        parts.append(str(config["variant"]))
    if config.get("dataset"):
        parts.append(f"on {config['dataset']}")
    title = " ".join(parts)
    epochs = (config.get("train") or {}).get("epochs") if isinstance(config.get("train"), dict) else None
    if epochs:
        title += f", {epochs} epoch{'s' if epochs != 1 else ''}"
    if config.get("subset"):
        title += f", {config['subset']} samples"
    if config.get("name"):
        title += f" → {config['name']}"
    return title


# ---------------------------------------------------------------- processes

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


def _describe_status(pid: int, status: int) -> str:
    if status < 0:  # Popen's convention: -N means killed by signal N
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"worker process {pid} died unexpectedly: killed by signal {-status} ({name})"
    return f"worker process {pid} died unexpectedly: exited with status {status} without reporting a result"


def _collect(pid: int) -> int | None:
    """Exit status of `pid` when it is a finished child of this process, else None."""
    with _lock:
        now = time.time()
        for old in [p for p, (_, t) in _EXIT_STATUS.items() if now - t > EXIT_STATUS_TTL_S]:
            del _EXIT_STATUS[old]
        if pid in _EXIT_STATUS:
            return _EXIT_STATUS[pid][0]
        proc = _CHILDREN.get(pid)
        if proc is not None:
            rc = proc.poll()
            if rc is not None:
                _CHILDREN.pop(pid, None)
                _EXIT_STATUS[pid] = (rc, now)
            return rc
    try:  # a child started by another Popen in this process (rare): ask the kernel directly
        wpid, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if wpid == 0:
        return None
    rc = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    with _lock:
        _EXIT_STATUS[pid] = (rc, time.time())
    return rc


def _collect_finished_children() -> None:
    """Wait for children that ended (their jobs already reported), so none stays a zombie."""
    with _lock:
        pids = list(_CHILDREN)
    for pid in pids:
        _collect(pid)


def worker_alive(job: Job) -> bool:
    """Is the worker process of `job` still running (and still the same process)?"""
    if job.pid is None:
        return False
    if _collect(job.pid) is not None:
        return False
    with _lock:
        ours = job.pid in _CHILDREN
    if ours:
        # our own child: alive until waitpid says otherwise. (Its /proc state can read Z while its
        # other threads are still exiting, before an exit status can be collected.)
        return True
    try:
        os.kill(job.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: compare start times below
    state = _proc_state(job.pid)
    if state in ("Z", "X"):  # a zombie: dead, waiting for a parent that is not us
        return False
    if job.pid_start is not None:
        start = proc_start_time(job.pid)
        if start is not None and start != job.pid_start:
            return False  # the pid was reused by another process
    return True


def _spawn(ws: Workspace, job_id: str) -> subprocess.Popen:
    log_dir = ws.jobs_dir / job_id
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # the worker imports `core` from this checkout, whatever the caller's working directory
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(log_dir / "worker.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "core.jobs", "--workspace", str(ws.root), "run", job_id],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=repo, env=env,
                                start_new_session=True, close_fds=True)
    with _lock:
        _CHILDREN[proc.pid] = proc
        _EXIT_STATUS.pop(proc.pid, None)  # a reused pid: forget the old process's status
    return proc


# ---------------------------------------------------------------- the public verbs

def submit(ws: Workspace, kind: str, config: dict, title: str = "") -> str:
    """Validate `config` for task `kind`, queue a job and start it when a slot is free.
    Raises ValueError for a bad config (nothing is queued)."""
    from .tasks import validate_config

    config = validate_config(kind, config)
    job = ws.create_job(kind, config, title or describe(kind, config))
    dispatch(ws)
    return job.id


def dispatch(ws: Workspace) -> list[str]:
    """Start queued jobs, oldest first, while fewer than `max_jobs()` run. Returns the started ids.

    The claim (queued -> running) and the spawn happen inside one write transaction, so two
    processes dispatching at once never start the same job twice nor exceed the limit."""
    with ws._read() as conn:  # cheap check first: most calls find nothing to do
        if not conn.execute("SELECT 1 FROM jobs WHERE state = 'queued' LIMIT 1").fetchone():
            return []
    limit = max_jobs()
    started: list[str] = []
    with ws._write() as conn:
        running = conn.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running'").fetchone()[0]
        while running < limit:
            row = conn.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at, rowid LIMIT 1"
                               ).fetchone()
            if row is None:
                break
            job_id, now = row["id"], time.time()
            try:
                proc = _spawn(ws, job_id)
            except OSError as e:
                conn.execute("UPDATE jobs SET state = 'failed', error = ?, message = ?, finished_at = ? WHERE id = ?",
                             (f"could not start a worker process: {e}", "failed to start", now, job_id))
                continue
            conn.execute("UPDATE jobs SET state = 'running', started_at = ?, heartbeat_at = ?, pid = ?, pid_start = ?,"
                         " message = 'starting worker' WHERE id = ?",
                         (now, now, proc.pid, proc_start_time(proc.pid), job_id))
            started.append(job_id)
            running += 1
    return started


def cancel(ws: Workspace, job_id: str, grace_s: float = CANCEL_GRACE_S) -> Job:
    """Cancel a job. A queued one is cancelled at once; a running one is asked to stop and, if
    its worker has not ended within `grace_s` seconds, terminated (SIGTERM, then SIGKILL).
    Returns the job as it is afterwards."""
    now = time.time()
    if ws.update_job(job_id, only_if_state=("queued",), state="cancelled", finished_at=now,
                     message="cancelled before it started"):
        return ws.get_job(job_id)
    if not ws.update_job(job_id, only_if_state=("running",), cancel_requested=1):
        return ws.get_job(job_id)  # already final
    deadline = time.time() + grace_s
    while time.time() < deadline:
        job = ws.get_job(job_id)
        if job.is_final:
            return job
        if job.pid is not None and not worker_alive(job):
            break
        time.sleep(0.1)
    job = ws.get_job(job_id)
    if job.is_final:
        return job
    how = "it had already exited"
    if job.pid is not None and worker_alive(job):
        how = _terminate(job)
    ws.update_job(job_id, only_if_state=("running",), state="cancelled", finished_at=time.time(),
                  message=f"cancelled: the worker did not stop within {grace_s:.0f} s, {how}")
    ws.append_job_log(job_id, f"{_stamp()} cancel: worker did not stop within {grace_s:.0f} s; {how}\n")
    dispatch(ws)
    return ws.get_job(job_id)


def _terminate(job: Job) -> str:
    """SIGTERM the worker's process group, then SIGKILL after a second. Returns what happened."""
    assert job.pid is not None
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
            if not worker_alive(job):
                return f"stopped with {sig.name}"
            time.sleep(0.05)
    return "SIGKILL sent"


def reap(ws: Workspace) -> list[str]:
    """Mark running jobs whose worker process is gone as failed (exit status known) or
    interrupted (unknown), then dispatch the queue. Cheap when nothing runs. Returns reaped ids."""
    _collect_finished_children()
    reaped = []
    for job in ws.list_jobs(states=("running",)):
        if worker_alive(job):
            continue
        if job.pid is None and time.time() - (job.started_at or 0) < NO_PID_GRACE_S:
            continue
        fresh = ws.get_job(job.id)  # it may have finished between the two reads
        if fresh.state != "running":
            continue
        status = _collect(job.pid) if job.pid is not None else None
        if job.pid is None:
            state, reason = "interrupted", "the worker process never started"
        elif status is not None:
            state, reason = "failed", _describe_status(job.pid, status)
        else:
            state, reason = "interrupted", (f"worker process {job.pid} is gone and its exit status is unknown "
                                            "(killed, or the machine or server restarted)")
        if ws.update_job(job.id, only_if_state=("running",), state=state, error=reason, message=reason,
                         finished_at=time.time()):
            tail = _worker_log_tail(ws, job.id)
            ws.append_job_log(job.id, f"{_stamp()} {reason}\n" + (f"--- worker.log (tail) ---\n{tail}" if tail else ""))
            reaped.append(job.id)
    dispatch(ws)
    return reaped


def active_jobs(ws: Workspace) -> list[Job]:
    """Queued and running jobs, after a reap (so a dead worker's job is not shown as running)."""
    reap(ws)
    return ws.list_jobs(states=("queued", "running"))


def _worker_log_tail(ws: Workspace, job_id: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = (ws.jobs_dir / job_id / "worker.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:]) + ("\n" if text else "")


def _stamp() -> str:
    return time.strftime("%H:%M:%S")


# ---------------------------------------------------------------- the worker (child process)

class _Reporter:
    """The worker's side of the database: batches events and progress, heartbeats, and watches
    for cancellation from a background thread so `should_stop()` costs nothing in the loop."""

    def __init__(self, ws: Workspace, job_id: str):
        self.ws, self.job_id = ws, job_id
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
        self._thread.join(timeout=5)
        self.flush()

    def _watch(self) -> None:
        last_beat = 0.0
        while not self._done.wait(CANCEL_POLL_S):
            try:
                with self.ws._read() as conn:
                    row = conn.execute("SELECT state, cancel_requested FROM jobs WHERE id = ?",
                                       (self.job_id,)).fetchone()
                if row is None or row["cancel_requested"] or row["state"] != "running":
                    self._stop.set()
                now = time.time()
                if now - self._last_flush >= EVENT_FLUSH_S:
                    self.flush()
                if now - last_beat >= HEARTBEAT_S:
                    self.ws.update_job(self.job_id, only_if_state=("running",), heartbeat_at=now)
                    last_beat = now
            except Exception as e:  # a locked or vanished database must not kill the job silently
                print(f"job watcher: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    # -- the TaskContext callbacks

    def should_stop(self) -> bool:
        return self._stop.is_set()

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
        if time.time() - self._last_flush >= EVENT_FLUSH_S:
            self.flush()

    def log(self, line: str) -> None:
        print(line, flush=True)  # also in worker.log
        self.ws.append_job_log(self.job_id, f"{_stamp()} {line.rstrip()}\n")

    def flush(self) -> None:
        with self._lock:
            events, self._events = self._events, []
            progress, self._progress = self._progress, None
            device, self._device = self._device, None
            self._last_flush = time.time()
        if events:
            self.ws.add_job_events(self.job_id, events)
        cols: dict = {}
        if progress is not None:
            cols.update(progress=progress[0], message=progress[1])
        if device:
            cols["device"] = device
        if cols:
            self.ws.update_job(self.job_id, only_if_state=("running",), heartbeat_at=time.time(), **cols)


def _requested_device(config: dict) -> str:
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    return str(train.get("device") or config.get("device") or "auto")


def run_worker(ws: Workspace, job_id: str) -> int:
    """Run one claimed job to its end in this process. Returns the process exit status."""
    pid = os.getpid()
    job = ws.get_job(job_id)
    if job.state != "running":
        print(f"job {job_id} is {job.state}, not claimed for running; nothing to do", flush=True)
        return 0
    try:
        from .metrics import device_name, resolve_device

        device = device_name(resolve_device(_requested_device(job.config)))
    except Exception as e:  # e.g. cuda asked for on a machine without one: the task reports it
        device = f"unavailable ({e})"
    if not ws.update_job(job_id, only_if_state=("running",), pid=pid, pid_start=proc_start_time(pid), device=device,
                         heartbeat_at=time.time(), message="worker started"):
        return 0  # cancelled while the worker was starting
    rep = _Reporter(ws, job_id)
    rep.log(f"worker {pid} started job {job_id} ({job.kind}) on {device}")
    rep.start()
    state, cols = "failed", {}
    try:
        from .tasks import TASKS, TaskContext
        from .training import Cancelled

        try:
            task = TASKS[job.kind]
        except KeyError:
            raise ValueError(f"unknown job kind {job.kind!r}; this worker knows: {', '.join(TASKS)}") from None
        ctx = TaskContext(ws, on_event=rep.on_event, should_stop=rep.should_stop, log=rep.log,
                          on_progress=rep.on_progress, job_id=job_id)
        try:
            variant_id = task(ctx, job.config)
        except Cancelled as e:
            state, cols = "cancelled", {"message": str(e) or "cancelled"}  # "cancelled at step 7 of 6400"
            rep.log(f"cancelled: {e}")
        else:
            state = "done"
            cols = {"progress": 1.0, "variant_id": variant_id,
                    "message": f"done: variant {variant_id}" if variant_id else "done"}
    except BaseException as e:  # noqa: BLE001 - everything ends the job; record it and exit non-zero
        state = "failed"
        line = f"{type(e).__name__}: {e}".strip()
        cols = {"error": line, "message": f"failed: {line}"[:300]}
        tb = traceback.format_exc()
        print(tb, flush=True)
        try:
            ws.append_job_log(job_id, f"{_stamp()} FAILED {line}\n" + "\n".join(tb.splitlines()[-25:]) + "\n")
        except Exception:
            pass
    finally:
        rep.close()
    if not ws.update_job(job_id, only_if_state=("running",), state=state, finished_at=time.time(), **cols):
        # marked final by someone else meanwhile (a cancel that timed out): keep what it made findable
        if cols.get("variant_id"):
            ws.update_job(job_id, variant_id=cols["variant_id"])
        ws.append_job_log(job_id, f"{_stamp()} worker finished as {state} after the job was already "
                                  f"{ws.get_job(job_id).state}\n")
    try:
        dispatch(ws)  # the queue moves on even with no browser open
    except Exception as e:
        print(f"dispatch after job {job_id} failed: {e}", file=sys.stderr, flush=True)
    return 0 if state in ("done", "cancelled") else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.jobs", description="job worker and queue tools")
    p.add_argument("--workspace", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    sp = sub.add_parser("run", help="run one claimed job (started by dispatch)")
    sp.add_argument("job_id")
    sub.add_parser("reap", help="mark jobs whose worker died, then start queued jobs")
    args = p.parse_args(argv)
    ws = Workspace(args.workspace, seed_baselines=False)
    if args.command == "run":
        return run_worker(ws, args.job_id)
    print("\n".join(reap(ws)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

