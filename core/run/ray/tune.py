"""A sweep's trials run in parallel with Ray Tune (used when the sweep job itself runs on Ray).

Tune runs one trial per grid point (`tune.grid_search` over the trial numbers), at most
`max_concurrent` at a time, each asking Ray for one CPU (or a GPU). A trial is `core.tasks.sweep_grid.run_trial`,
the same function the local loop calls, so the numbers are the same. What a trial says while it
runs, and the bytes of the variant it made, go back through a small *collector* actor owned by the
sweep: nothing is written to a shared disk, so workers on other machines need nothing but Ray.
A cancel of the sweep stops every trial through a Tune `Stopper`.
"""
from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable

from ray import tune  # this module is imported only where Ray runs the sweep

from core.base.cancel import Cancelled
from core.tasks.sweep_grid import TrialResult, run_trial

DRAIN_S = 0.5          # how often the sweep forwards what its trials said
PROGRESS_EVERY_S = 1.0  # a trial sends progress at most this often


class TrialCollector:
    """Collects trial progress and results (a Ray actor). Messages are drained in order."""

    def __init__(self) -> None:
        self.messages: list[tuple] = []
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True

    def is_stopped(self) -> bool:
        return self.stopped

    def progress(self, trial: int, fraction: float, message: str) -> None:
        self.messages.append(("progress", trial, fraction, message))

    def done(self, trial: int, result: dict) -> None:
        self.messages.append(("done", trial, result))

    def drain(self) -> list[tuple]:
        out, self.messages = self.messages, []
        return out


# Tune pickles its run config (stopper, callbacks): they hold only a key into this table of the
# sweep's live callables (a job's channel holds locks, which do not pickle)
_LIVE: dict[str, dict] = {}


class _StopOnCancel(tune.Stopper):
    """Stops every trial once the sweep's job is cancelled (Tune asks at each of its steps)."""

    def __init__(self, key: str):
        self.key = key

    def __call__(self, trial_id, result):
        return False

    def stop_all(self):
        live = _LIVE.get(self.key)
        if live and live["should_stop"]():
            live["collector"].stop.remote()   # the running trials stop at their next step
            return True
        return False


class _Drain(tune.Callback):
    """Forwards what the trials said into the sweep's job, from Tune's own loop."""

    def __init__(self, key: str):
        self.key, self.last = key, 0.0

    def on_step_end(self, iteration, trials, **info):
        live = _LIVE.get(self.key)
        if live and time.time() - self.last >= DRAIN_S:
            self.last = time.time()
            live["forward"]()


def _trainable(config: dict, parcel=None, kind=None, configs=None, collector=None) -> None:
    """One Tune trial: run the trial's task, hand its result to the collector, report to Tune."""
    import socket
    import threading

    import ray

    trial = config["trial"]
    last = [0.0]
    stop = threading.Event()

    def watch() -> None:   # one remote call every half second, not one per training step
        while not stop.is_set():
            try:
                if ray.get(collector.is_stopped.remote(), timeout=5):
                    stop.set()
            except Exception:   # the sweep is gone: Tune ends this trial too
                return
            time.sleep(DRAIN_S)

    threading.Thread(target=watch, daemon=True).start()

    def on_progress(p: float, msg: str) -> None:
        if time.time() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.time()
            collector.progress.remote(trial, p, msg)

    try:
        result = run_trial(parcel, kind, configs[trial], on_progress=on_progress, should_stop=stop.is_set)
    finally:
        stop.set()
    result["node"] = f"{socket.gethostname()} (Ray node {ray.get_runtime_context().get_node_id()[:8]})"
    ray.get(collector.done.remote(trial, result))    # delivered before the trial ends
    tune.report({"val_accuracy": result["metrics"].get("val_accuracy", float("nan")),
                 "ok": int(result["state"] == "done")})


def tune_trials(parcel: dict, kind: str, configs: list[dict], *, max_concurrent: int | None = None, cpus: int = 1,
                gpus: float = 0,
                on_progress: Callable[[int, float, str], None] = lambda t, p, m: None,
                on_done: Callable[[TrialResult], None] = lambda r: None,
                should_stop: Callable[[], bool] = lambda: False) -> dict[int, TrialResult]:
    """Run trial `i` = task `kind` with `configs[i]` under Ray Tune; returns {i: TrialResult}
    of every trial that ended. Raises Cancelled when `should_stop` stopped the sweep."""
    import ray

    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")   # no TensorBoard/CSV files per trial
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")          # Tune may run off the main thread here
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    collector = ray.remote(TrialCollector).options(num_cpus=0).remote()
    results: dict[int, TrialResult] = {}

    def forward() -> None:
        for msg in ray.get(collector.drain.remote()):
            if msg[0] == "progress":
                on_progress(msg[1], msg[2], msg[3])
            else:
                r = msg[2]
                tr = TrialResult(msg[1], {}, r["state"], r["metrics"], round(r["seconds"], 3), r["node"], r["error"],
                                 r["saved"])
                results[msg[1]] = tr
                on_done(tr)

    key = uuid.uuid4().hex
    _LIVE[key] = {"forward": forward, "should_stop": should_stop, "collector": collector}
    trainable = tune.with_parameters(_trainable, parcel=parcel, kind=kind, configs=configs, collector=collector)
    resources = {"cpu": cpus, "gpu": gpus} if gpus else {"cpu": cpus}
    try:
        with tempfile.TemporaryDirectory(prefix="workbench-tune-") as storage:
            tuner = tune.Tuner(
                tune.with_resources(trainable, resources),
                param_space={"trial": tune.grid_search(list(range(len(configs))))},
                tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent or 0, reuse_actors=True),
                run_config=tune.RunConfig(name="sweep", storage_path=storage, verbose=0, stop=_StopOnCancel(key),
                                          callbacks=[_Drain(key)], failure_config=tune.FailureConfig(max_failures=0),
                                          log_to_file=False))
            tuner.fit()
    finally:
        _LIVE.pop(key, None)
    forward()
    ray.kill(collector)
    if should_stop():
        raise Cancelled(f"sweep cancelled with {len(results)} of {len(configs)} trials finished")
    return results
