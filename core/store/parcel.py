"""The parcel a worker on another machine gets instead of the workspace (a Ray actor, a sweep
trial): the job, the records of every variant (JSON, for names and lineage) and the weights of the
variants the job reads, with their ancestors. `ParcelWorkspace` answers the few workspace calls a
task handler makes from that parcel and keeps what the task saves in memory, for the server to store.
"""
from __future__ import annotations

import socket
import tempfile
import uuid
from dataclasses import asdict
from pathlib import Path

from core.compress.quant.files import model_from_bytes
from core.formats import encoding as formats
from core.store.jobstore import Job, variant_keys
from core.store.workspace import Variant, VariantNotFound, lineage_of


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
        state, _ = formats.decode(self._bytes(variant if isinstance(variant, Variant) else self.get_variant(variant)))
        return state

    def load_model(self, variant: Variant | str):
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
