"""Runners execute claimed jobs, and register by name as task plugins do (`@register_runner`).
`core.run.jobs` moves the queue and only talks to this interface, so the same jobs can run in local
processes (`core.run.local`, the embedded default) or on a Ray cluster (`core.run.ray.runner`),
whose workers cannot write the local SQLite file: such a worker reports through a collecting channel
(`core.run.channels.CollectingChannel`) whose messages the server applies with `JobStore.apply`, and
hands a finished variant back as bytes (`TaskContext.save_variant`).

A runner that records a job's end itself (a Ray actor ends inside the server) calls its `end_job`:
the one end-of-job protocol of `core.run.jobs`, handed to every runner it starts.
"""
from __future__ import annotations

import os
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

from core.store.jobstore import Job


class Runner(ABC):
    """How jobs execute. `start` is called after the job's claim is committed (state running)."""

    name: str = "runner"
    end_job: Callable | None = None   # (workspace, job_id, JobOutcome) -> None: core.run.jobs.end_job

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


RUNNERS: dict[str, Callable[[], Runner]] = {}   # name -> Runner class, filled by @register_runner
_instances: dict[str, Runner] = {}
_instances_lock = threading.Lock()


def register_runner(name: str):
    """Register a Runner class under `name` (the value of WORKBENCH_RUNNER that picks it)."""
    def deco(cls):
        RUNNERS[name] = cls
        return cls
    return deco


def started_runners() -> list[Runner]:
    """The runners this process has used, e.g. for `reap` to collect their finished workers."""
    with _instances_lock:
        return list(_instances.values())


def runner_name() -> str:
    """The runner new jobs go to: env WORKBENCH_RUNNER, else 'local' (read without starting one)."""
    return os.environ.get("WORKBENCH_RUNNER") or "local"


def get_runner(name: str | None = None, *, end_job: Callable | None = None) -> Runner:
    """The runner named `name` (default: `runner_name()`), one per process, holding `end_job`
    when given. `core.run.jobs.get_runner` is the usual way in: it registers the built-in runners
    ('local': spawned processes; 'ray': a Ray cluster) and hands them its end-of-job protocol."""
    name = name or runner_name()
    cls = RUNNERS.get(name)
    if cls is None:
        raise ValueError(f"unknown runner {name!r} (WORKBENCH_RUNNER); available: {', '.join(RUNNERS)}")
    with _instances_lock:
        if name not in _instances:
            _instances[name] = cls()
        if end_job is not None:
            _instances[name].end_job = end_job
        return _instances[name]
