"""The worker side of a Ray job: what runs inside the Ray actor, on whichever node Ray picked.

Such a worker never reads the server's disk: it gets a parcel (`core.store.parcel`) and answers the
task's workspace calls from it with a `ParcelWorkspace`, which keeps what the task saves in memory;
the actor's result hands those variants (bytes + measured metrics) back, and the server stores them.
Progress, events and log lines go through a `CollectingChannel` that the server drains through the
actor. The task's context carries a `RayFanout`, so a scan or a sweep in it spreads over the cluster.

Ray itself is imported only inside functions: the server decides when to load it.
"""
from __future__ import annotations

import contextlib
import os
import socket

from core.base.errors import describe_failure
from core.measure.lane import device_label
from core.measure.metrics import resolve_device
from core.run.channels import CollectingChannel
from core.run.execute import execute_job, requested_device
from core.run.ray.fanout import RayFanout
from core.store.jobstore import Job
from core.store.parcel import ParcelWorkspace


def where_am_i(config: dict) -> dict:
    """pid, node and device of this worker, for the Jobs page."""
    try:
        device = device_label(resolve_device(requested_device(config)))
    except Exception as e:   # e.g. cuda asked for where there is none: the task itself reports it
        device = f"unavailable ({e})"
    node = socket.gethostname()
    with contextlib.suppress(Exception):
        import ray

        node = f"{node} (Ray node {ray.get_runtime_context().get_node_id()[:8]})"
    return {"pid": os.getpid(), "node": node, "device": device}


class RayJobWorker:
    """The body of the Ray actor that runs one job (wrapped by `ray.remote` on the server side).
    A threaded actor: `drain` and `cancel` are answered while `run` works."""

    def __init__(self) -> None:
        self.channel = CollectingChannel()
        self.where: dict | None = None

    def run(self, parcel: dict) -> dict:
        job = Job(**{**parcel["job"], "log": "", "claim_token": None})
        self.where = where_am_i(job.config)
        ws = ParcelWorkspace(parcel)
        try:
            self.channel.log(f"Ray worker {self.where['pid']} on {self.where['node']} started job {job.id} "
                             f"({job.kind}) on {self.where['device']}")
            # scans and sweeps in this job may fan out into Ray tasks
            outcome = execute_job(job, self.channel, ws, save_variant=ws.store, fanout=RayFanout())
            return {"state": outcome.state, "columns": outcome.columns, "saved": ws.saved, "updates": ws.updates}
        except BaseException as e:  # noqa: BLE001 - execute_job never raises; a parcel that cannot be read might
            line = describe_failure(e)
            return {"state": "failed", "columns": {"error": line, "message": f"failed: {line}"[:300]},
                    "saved": [], "updates": []}
        finally:
            ws.close()

    def drain(self) -> dict:
        return {"messages": self.channel.drain(), "where": self.where}

    def cancel(self) -> None:
        self.channel.cancel()
