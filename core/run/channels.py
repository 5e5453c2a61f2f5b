"""How a running job reports: events (batched), progress, log lines, and whether a cancel was asked.

`StoreChannel` writes straight into the job store (a local worker, which can open the workspace
database); `CollectingChannel` only collects messages, which the server side applies with
`JobStore.apply` (a worker on another machine, e.g. a Ray actor, that cannot write the local SQLite file).
"""
from __future__ import annotations

import sys
import threading
import time
from abc import ABC, abstractmethod

from core.store.jobstore import JobStore

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
