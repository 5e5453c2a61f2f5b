"""The worker side of a Ray job: what runs inside the Ray actor, on whichever node Ray picked.

Such a worker never reads the server's disk. The server hands it a *parcel* (`make_parcel`): the
job, the records of every variant (JSON, for names and lineage) and the weights of the variants
the job reads, with their ancestors. `ParcelWorkspace` answers the few workspace calls a task
handler makes from that parcel, and keeps what the task saves in memory; the actor's result hands
those variants (bytes + measured metrics) back, and the server stores them. Progress, events and
log lines go through a `CollectingChannel` that the server drains through the actor.

Ray itself is imported only by the server side (`core.runner_ray`): this module is plain Python.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

from .jobstore import Job, variant_keys
from .sensitivity_ray import mark_ray_job
from .worker import CollectingChannel, _requested_device, describe_failure, execute_job
from .workspace import Variant, VariantNotFound, lineage_of


def make_parcel(ws, job: Job) -> dict:
    """Everything a worker on another machine needs to run `job`, as picklable data."""
    fields = {k: v for k, v in job.to_dict().items() if k not in ("log", "claim_token")}
    return {"job": fields, **variants_parcel(ws, [job.config[k] for k in variant_keys(job.config)])}


def variants_parcel(ws, refs: list[str], data_root=None) -> dict:
    """The variant records (all of them: names and lineage) and the weights of `refs` with their
    ancestors. `data_root`: where uploaded datasets are (None on another machine: not there)."""
    records = [asdict(v) for v in ws.list_variants()]
    weights: dict[str, bytes] = {}
    for ref in refs:
        try:
            chain = ws.lineage(ref)
        except VariantNotFound:
            continue   # a registry model name (distill student, transfer source): built on the worker
        for v in chain:   # ancestors too: fine-tuning reads its root, a re-measure times the parent
            weights.setdefault(v.id, ws.weights_path(v).read_bytes())
    return {"variants": records, "weights": weights, "server": socket.gethostname(),
            "data_root": str(data_root) if data_root else None}


class ParcelWorkspace:
    """A workspace stand-in built from a parcel: reads what the server sent, collects what the
    task saves. It has no job store, so `TaskContext.load_context` reports no other jobs."""

    def __init__(self, parcel: dict):
        self._variants = {d["id"]: Variant(**d) for d in parcel["variants"]}
        self._weights: dict[str, bytes] = dict(parcel["weights"])
        self._tmp = tempfile.TemporaryDirectory(prefix="workbench-ray-")
        self._scratch = Path(self._tmp.name)
        # where tasks look for uploaded datasets: the server's workspace when it is on this machine (a
        # local sweep), else an empty folder: an uploaded dataset is not here, and the task says so
        self.root = Path(parcel["data_root"]) if parcel.get("data_root") else self._scratch
        self.saved: list[dict] = []        # variants the task stored, in order (parents before children)
        self.updates: list[dict] = []      # metric updates of existing variants (a re-measure)

    def close(self) -> None:
        self._tmp.cleanup()

    def get_variant(self, ref: str) -> Variant:
        if not isinstance(ref, str) or not ref.strip():
            raise VariantNotFound("no variant given: pass an id, an id prefix or a name")
        if ref in self._variants:
            return self._variants[ref]
        hits = [v for v in self._variants.values() if v.id.startswith(ref) or v.name == ref]
        if len(hits) > 1:
            raise VariantNotFound(f"{ref!r} matches {len(hits)} variants; use the id")
        if not hits:
            raise VariantNotFound(f"no variant {ref!r} in the server's workspace")
        return hits[0]

    def list_variants(self, dataset: str | None = None) -> list[Variant]:
        return sorted((v for v in self._variants.values() if dataset is None or v.dataset == dataset),
                      key=lambda v: v.created_at)

    def children(self, variant_id: str) -> list[Variant]:
        return [v for v in self.list_variants() if v.parent_id == variant_id]

    def lineage(self, variant_id: str) -> list[Variant]:
        return lineage_of(self.get_variant, variant_id)

    def _bytes(self, v: Variant) -> bytes:
        if v.id not in self._weights:
            raise VariantNotFound(f"the weights of variant {v.id} ({v.name}) were not sent to this Ray worker: "
                                  "only the variants a job's config names, and their ancestors, travel with it")
        return self._weights[v.id]

    def weights_path(self, variant: Variant | str) -> Path:
        v = variant if isinstance(variant, Variant) else self.get_variant(variant)
        path = self._scratch / v.id / "weights.safetensors"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(self._bytes(v))
        return path

    def load_state(self, variant: Variant | str):
        from . import formats

        state, _ = formats.decode(self._bytes(variant if isinstance(variant, Variant) else self.get_variant(variant)))
        return state

    def load_model(self, variant: Variant | str):
        from .quant_files import model_from_bytes

        v = variant if isinstance(variant, Variant) else self.get_variant(variant)
        return model_from_bytes(v.arch, self._bytes(v))

    def update_variant(self, variant_id: str, *, name: str | None = None, metrics: dict | None = None,
                       notes: str | None = None) -> Variant:
        """Record the change for the server to apply, and show it here at once."""
        v = self.get_variant(variant_id)
        self.updates.append({"variant_id": v.id, "name": name, "metrics": metrics, "notes": notes})
        v = Variant(**{**asdict(v), **({"name": name} if name else {}), "metrics": {**v.metrics, **(metrics or {})},
                       **({"notes": notes} if notes is not None else {})})
        self._variants[v.id] = v
        return v

    def store(self, draft) -> Variant:
        """`TaskContext.save_variant`: keep a measured VariantDraft for the server, under a new id
        the server will use too (so the task's log line names the stored variant)."""
        if draft.parent_id is not None and draft.parent_id not in self._variants:
            raise VariantNotFound(f"no variant {draft.parent_id!r} (the parent)")
        vid = uuid.uuid4().hex[:8]
        metrics = {**draft.metrics, "size_bytes": len(draft.weights)}   # as Workspace.add_variant does
        v = Variant(vid, draft.name, draft.parent_id, draft.dataset, draft.arch, draft.recipe, metrics,
                    draft.kind, f"variants/{vid}/weights.safetensors", draft.format or "dense", None, draft.notes)
        self._variants[vid] = v
        self._weights[vid] = draft.weights
        self.saved.append({"id": vid, "name": draft.name, "dataset": draft.dataset, "arch": draft.arch,
                           "recipe": draft.recipe, "metrics": draft.metrics, "kind": draft.kind,
                           "weights": draft.weights, "format": draft.format, "parent_id": draft.parent_id,
                           "notes": draft.notes})
        return v


def where_am_i(config: dict) -> dict:
    """pid, node and device of this worker, for the Jobs page."""
    from .metrics import device_name, resolve_device

    try:
        device = device_name(resolve_device(_requested_device(config)))
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
            mark_ray_job(True)   # a sensitivity scan in this job may fan out into Ray tasks
            outcome = execute_job(job, self.channel, ws, save_variant=ws.store)
            return {"state": outcome.state, "columns": outcome.columns, "saved": ws.saved, "updates": ws.updates}
        except BaseException as e:  # noqa: BLE001 - execute_job never raises; a parcel that cannot be read might
            line = describe_failure(e)
            return {"state": "failed", "columns": {"error": line, "message": f"failed: {line}"[:300]},
                    "saved": [], "updates": []}
        finally:
            mark_ray_job(False)
            ws.close()

    def drain(self) -> dict:
        return {"messages": self.channel.drain(), "where": self.where}

    def cancel(self) -> None:
        self.channel.cancel()
