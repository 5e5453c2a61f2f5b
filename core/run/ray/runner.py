"""RayRunner: jobs run on a Ray cluster (WORKBENCH_RUNNER=ray).

WORKBENCH_RAY_ADDRESS says which cluster: `auto` (the one `ray start --head` started on this
machine), `ray://host:port` (Ray Client) or `host:port` (a cluster's GCS), or unset for a local
Ray started on demand. The server shares nothing with the workers but that address: the `core`
package travels as a Ray runtime env (py_modules), a job's parent variants travel as bytes in its
parcel (`core.store.parcel`), and datasets are loaded on the worker by name.

Each job is one Ray actor (`RayJobWorker`) running the same registered task handler with the same
config; it asks Ray for a GPU when its config's device wants CUDA. A drain thread in the server
moves the actors' messages into the job store, forwards a cancel, and, when an actor ends, stores
the variants it hands back and records the job's end. The actors belong to this server process:
when it exits they end with it, their jobs stop heartbeating, and `reap` in any process marks them
interrupted, as it does for a local worker that vanished.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

from core.base.errors import describe_failure
from core.run.execute import JobOutcome
from core.run.ray.cluster import ADDRESS_ENV, NAMESPACE, check_address, runtime_env, wants_gpu
from core.run.ray.worker import RayJobWorker
from core.run.runners import Runner, register_runner
from core.store.jobstore import Job
from core.store.parcel import make_parcel
from core.tasks.common import unique_name

DRAIN_S = 0.5              # how often the server drains its actors' messages
STALE_S = 30.0             # a Ray job not heartbeating this long, and not ours, has lost its server
# jobs that mostly wait on the Ray tasks they fan out: their actor holds no CPU, so a 2-CPU
# cluster runs two layer tasks or trials at once rather than one
FANOUT_KINDS = ("sensitivity", "sweep")


@dataclass
class _Handle:
    """One job this server sent to Ray."""

    job_id: str
    workspace: object
    actor: object
    ref: object                       # the ObjectRef of actor.run(parcel)
    started: float = field(default_factory=time.time)
    where: dict | None = None
    cancel_sent: bool = False
    killed: str | None = None         # why this server killed the actor (a forced cancel)
    last_beat: float = 0.0
    drain_ref: object = None          # a drain call in flight


@register_runner("ray")
class RayRunner(Runner):
    name = "ray"

    def __init__(self, address: str | None = None) -> None:
        self._address = address
        self._handles: dict[str, _Handle] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ connecting

    def address(self) -> str | None:
        return self._address if self._address is not None else os.environ.get(ADDRESS_ENV)

    def _ray(self):
        """The ray module, connected: reuses a connection this process already has."""
        try:
            import ray
        except ImportError:
            raise RuntimeError("the Ray runner needs the `ray` package: pip install -r requirements.txt") from None
        if not ray.is_initialized():
            address = check_address(self.address())
            try:
                ray.init(address=address, namespace=NAMESPACE, include_dashboard=False if address is None else None,
                         runtime_env=runtime_env(), logging_level="WARNING")
            except Exception as e:   # ConnectionError, a version mismatch, ...
                where = f"the Ray cluster at {address}" if address else "a local Ray"
                raise ConnectionError(f"cannot connect to {where} ({ADDRESS_ENV}): {type(e).__name__}: "
                                      f"{str(e).splitlines()[0] if str(e) else ''}") from None
        return ray

    def node(self) -> str:
        address = self.address()
        return f"Ray cluster at {address}" if address else "local Ray"

    # ------------------------------------------------------------ the Runner seam

    def start(self, workspace, job: Job) -> None:
        ray = self._ray()
        # consume the claim here: no other worker (a local one included) can take this job now
        if not workspace.jobs.take_claim(job.id, job.claim_token, message="sent to Ray: waiting for a worker",
                                         heartbeat_at=time.time()):
            raise RuntimeError(f"job {job.id} is no longer waiting for a worker (its claim was taken)")
        gpus = 1 if wants_gpu(job.config, ray.cluster_resources().get("GPU", 0)) else 0
        cpus = 0 if job.kind in FANOUT_KINDS else 1
        actor = ray.remote(RayJobWorker).options(num_cpus=cpus, num_gpus=0 if cpus == 0 else gpus, max_concurrency=4,
                                                 max_restarts=0).remote()
        ref = actor.run.remote(make_parcel(workspace, job))
        with self._lock:
            self._handles[job.id] = _Handle(job.id, workspace, actor, ref)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._drain_loop, name="ray-drain", daemon=True)
                self._thread.start()

    def is_alive(self, job: Job) -> bool:
        with self._lock:
            if job.id in self._handles:
                return True    # this server finishes it (its drain thread records the end)
        # started by another server process: alive while that server keeps its heartbeat fresh
        return job.state == "running" and job.heartbeat_at is not None and time.time() - job.heartbeat_at < STALE_S

    def exit_status(self, job: Job) -> int | None:
        return None   # an actor has no exit status; this server records how each of its jobs ended

    def stop(self, job: Job) -> str:
        """Ray's forced cancel of an actor: ray.kill."""
        with self._lock:
            handle = self._handles.get(job.id)
        if handle is None:
            return "its Ray worker belongs to another server process, which stops it when it sees the cancel"
        handle.killed = "killed by the server after the cancel timed out"
        import ray

        ray.kill(handle.actor, no_restart=True)
        return "its Ray actor was killed (ray.kill)"

    # ------------------------------------------------------------ the drain thread

    def _drain_loop(self) -> None:
        import ray

        while True:
            with self._lock:
                handles = list(self._handles.values())
                if not handles:
                    self._thread = None
                    return
            if not ray.is_initialized():   # ray.shutdown() in this process: its actors are gone
                self._lost(handles, "this server disconnected from Ray (ray.shutdown) while the job ran")
                continue
            for h in handles:
                try:
                    self._poll(h)
                except Exception as e:   # one bad job must not stop the others' reports
                    print(f"ray runner: job {h.job_id}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            time.sleep(DRAIN_S)

    def _lost(self, handles: list[_Handle], reason: str) -> None:
        for h in handles:
            h.workspace.jobs.update(h.job_id, only_if_state=("running",), state="interrupted", error=reason,
                                    message=reason, finished_at=time.time())
            with self._lock:
                self._handles.pop(h.job_id, None)

    def _poll(self, h: _Handle) -> None:
        """One look at a job: forward a cancel, apply what its actor said, record its end. Never
        blocks on a busy or still unscheduled actor: a drain call stays in flight until answered."""
        import ray

        store = h.workspace.jobs
        job = store.get(h.job_id)
        if job.is_final and not h.killed:   # another process cancelled it for good: free the worker
            h.killed = f"the job was already {job.state}"
            ray.kill(h.actor, no_restart=True)
        elif job.cancel_requested and not h.cancel_sent:
            h.actor.cancel.remote()   # cooperative first: the task stops at its next step
            h.cancel_sent = True
        if time.time() - h.last_beat >= 2.0:   # the server vouches for its actor: reap elsewhere sees it alive
            store.apply(h.job_id, [("heartbeat",)])
            h.last_beat = time.time()
        ended = bool(ray.wait([h.ref], timeout=0)[0])
        if h.drain_ref is None:
            h.drain_ref = h.actor.drain.remote()
        if ended:
            self._collect(h, ray, timeout=10)       # the drain in flight first, so events keep their order
            h.drain_ref = h.actor.drain.remote()
            self._collect(h, ray, timeout=10)       # then what the task said last
            self._finish(h, ray)
        elif ray.wait([h.drain_ref], timeout=0)[0]:
            self._collect(h, ray, timeout=10)

    def _collect(self, h: _Handle, ray, timeout: float) -> None:
        ref, h.drain_ref = h.drain_ref, None
        try:
            got = ray.get(ref, timeout=timeout)
        except Exception:   # a dead actor has nothing more to say; its run's error tells why
            return
        store = h.workspace.jobs
        if got["where"] and h.where is None:
            h.where = got["where"]
            store.update(h.job_id, only_if_state=("running",), pid=h.where["pid"], node=h.where["node"],
                         device=h.where["device"], message=f"running on {h.where['node']}")
        store.apply(h.job_id, got["messages"])

    def _finish(self, h: _Handle, ray) -> None:
        store = h.workspace.jobs
        try:
            result = ray.get(h.ref)
            outcome = JobOutcome(result["state"], result["columns"])
            try:
                store_results(h.workspace, result)
            except Exception as e:   # e.g. a full disk, or the parent deleted meanwhile
                line = describe_failure(e)
                store.append_log(h.job_id, f"{time.strftime('%H:%M:%S')} FAILED storing the result: {line}\n")
                outcome = JobOutcome("failed", {"error": line, "message": f"failed: {line}"[:300], "variant_id": None})
        except Exception as e:   # the actor died: killed, out of memory, its node lost
            outcome = JobOutcome(*died(h, e))
            store.append_log(h.job_id, f"{time.strftime('%H:%M:%S')} {outcome.columns['error']}\n")
        ray.kill(h.actor, no_restart=True)   # frees its CPU/GPU before the next job is dispatched
        try:
            if self.end_job is None:
                raise RuntimeError("the Ray runner was not started through core.run.jobs (no end-of-job protocol)")
            self.end_job(h.workspace, h.job_id, outcome)   # record the end, start the next job
        except Exception as e:
            print(f"ray runner: recording the end of job {h.job_id} failed: {describe_failure(e)}",
                  file=sys.stderr, flush=True)
        finally:
            with self._lock:
                self._handles.pop(h.job_id, None)


def died(h: _Handle, e: BaseException) -> tuple[str, dict]:
    """(state, columns) of a job whose actor ended without a result."""
    if h.killed:
        return "cancelled", {"message": f"cancelled: {h.killed}"}
    where = f"Ray worker process {h.where['pid']} on {h.where['node']}" if h.where else "its Ray worker"
    cause = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
    reason = f"{where} died unexpectedly ({type(e).__name__}): {cause}"[:500]
    return "failed", {"error": reason, "message": reason[:300]}


def store_results(ws, result: dict) -> None:
    """Store the variants a Ray worker saved (parents first) under the ids the worker gave them,
    and apply its metric updates. A name taken meanwhile gets a ` (2)` suffix, as locally."""
    for d in result["saved"]:
        ws.add_variant({}, name=unique_name(ws, d["name"]), dataset=d["dataset"], arch=d["arch"], recipe=d["recipe"],
                       metrics=d["metrics"], kind=d["kind"], parent_id=d["parent_id"], notes=d["notes"],
                       variant_id=d["id"], weights=d["weights"], fmt=d["format"])
    for u in result["updates"]:
        ws.update_variant(u["variant_id"], name=u["name"], metrics=u["metrics"], notes=u["notes"])
