"""Cached resources shared by every session: the workspace, datasets, loaded models.

`st.cache_resource` hands the *same object* to every session and rerun, so nothing returned here
may be changed in place: `model_copy()` gives a private copy for any work that changes a model.
Cache keys include the workspace root, so tests (and a changed WORKBENCH_HOME) never see another
workspace's objects.
"""
from __future__ import annotations

import copy
import functools
import gc
import json
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import streamlit as st
import torch
import torch.nn as nn

from core.base.cache import MemoryBoundedCache
from core.base.paths import workspace_dir
from core.data.datasets import cached_dataset
from core.data.types import Dataset
from core.measure.lane import device_label
from core.measure.metrics import layer_stats, resolve_device
from core.run import jobs
from core.store.jobstore import Job
from core.store.workspace import Variant, Workspace
from core.tasks import prune as prune_task
from core.tasks import quantize as quantize_task

REAP_EVERY_S = 1.0
_last_reap: dict[str, float] = {}


_frozen = threading.Lock()


def freeze_imported_objects() -> None:
    """Take what the imports built out of the garbage collector's sight, once per process (app.py
    calls it; later calls do nothing).

    Streamlit runs a full collection after every script run (`runner.postScriptGC`, to keep
    memory from building up), and a full collection walks every container object alive: with
    torch, plotly and pandas imported that is about 275,000 objects and 0.13 s holding the GIL,
    on every page run and every second of every job card's polling, for every session. Modules,
    classes and functions live as long as the process, so `gc.freeze()` after importing what
    the pages use moves them to the permanent generation; later collections only walk what was
    created since (session state, caches, per-run garbage), which they still free."""
    if not _frozen.acquire(blocking=False):
        return
    import pandas  # noqa: F401  (what the pages import, so that it is frozen too)
    import plotly.graph_objects  # noqa: F401
    import pyarrow  # noqa: F401

    import core.tasks  # noqa: F401
    import core.viz.charts  # noqa: F401

    gc.collect()
    gc.freeze()


@st.cache_resource(show_spinner=False)
def _workspace(root: str) -> Workspace:
    return Workspace(root)


@functools.lru_cache(maxsize=8)
def _resolved_root(home: str | None, cwd: str) -> str:
    return str(workspace_dir(home).resolve())   # realpath: a few system calls, asked many times a run


def workspace() -> Workspace:
    """The workspace of $WORKBENCH_HOME (default ./workspace), created and seeded on first use."""
    return _workspace(_resolved_root(os.environ.get("WORKBENCH_HOME"), os.getcwd()))


# ---------------------------------------------------------------- the index, read once per change

SNAPSHOTS_KEPT = 8   # recent versions of the variant list and job lists (sessions may lag a version)


@st.cache_resource(show_spinner=False, max_entries=SNAPSHOTS_KEPT, ttl=300)
def _variants(root: str, version: tuple) -> tuple[Variant, ...]:
    return tuple(_workspace(root).list_variants())


@st.cache_resource(show_spinner=False, max_entries=SNAPSHOTS_KEPT + 4, ttl=300)   # a job holds up to 20 kB of log
def _jobs(root: str, version: tuple, states: tuple[str, ...] | None, limit: int) -> tuple[Job, ...]:
    return tuple(_workspace(root).jobs.list(states=states, limit=limit))


def variants() -> tuple[Variant, ...]:
    """Every variant of the workspace, oldest first: read once per change of the database and
    shared by every session and rerun (the sidebar, the pages and the job cards all ask).
    Read-only: never change a returned Variant."""
    ws = workspace()
    version = ws.change_token()
    return _variants(str(ws.root), version) if version is not None else tuple(ws.list_variants())


def variant(variant_id: str) -> Variant | None:
    """The variant with exactly this id, or None (shared, read-only)."""
    return next((v for v in variants() if v.id == variant_id), None)


def children(variant_id: str) -> list[Variant]:
    return [v for v in variants() if v.parent_id == variant_id]


def lineage(variant_id: str) -> list[Variant]:
    """The variant and its ancestors, root first (as Workspace.lineage)."""
    by_id = {v.id: v for v in variants()}
    chain, seen, v = [], set(), by_id.get(variant_id)
    while v is not None and v.id not in seen:
        chain.append(v)
        seen.add(v.id)
        v = by_id.get(v.parent_id) if v.parent_id else None
    return chain[::-1]


def job_list(states: tuple[str, ...] | None = None, limit: int = 200) -> tuple[Job, ...]:
    """Jobs, newest first, as JobStore.list: read once per change of the database and shared.
    While a job runs its worker commits about once a second, so this is read about once a second
    however many sessions poll. Read-only."""
    ws = workspace()
    version = ws.change_token()
    if version is None:
        return tuple(ws.jobs.list(states=states, limit=limit))
    return _jobs(str(ws.root), version, tuple(states) if states else None, limit)


@st.cache_resource(show_spinner=False, max_entries=4 * SNAPSHOTS_KEPT, ttl=300)
def _jobs_for(root: str, version: tuple, kind: str, ids: tuple[str, ...], key: str, made: bool) -> tuple[Job, ...]:
    return tuple(_workspace(root).jobs.for_variant(kind, ids, key=key, made=made))


def jobs_for(kind: str, variant_ids: str | Iterable[str], *, key: str = "variant", made: bool = False) -> tuple[Job, ...]:
    """Jobs of `kind` for a variant (or several), newest first: `JobStore.for_variant`, read once
    per change of the database and shared. Read-only."""
    ws = workspace()
    ids = (variant_ids,) if isinstance(variant_ids, str) else tuple(variant_ids)
    version = ws.change_token()
    if version is None:
        return tuple(ws.jobs.for_variant(kind, ids, key=key, made=made))
    return _jobs_for(str(ws.root), version, kind, ids, key, made)


@st.cache_resource(show_spinner="Loading the dataset…")
def dataset(name: str) -> Dataset:
    """A whole dataset in memory (read-only: never modify its tensors)."""
    return cached_dataset(name)


@st.cache_resource(show_spinner=False, max_entries=16)
def _model(root: str, variant_id: str, created_at: float) -> nn.Module:
    return Workspace(root, seed_baselines=False).load_model(variant_id)


def model(variant: Variant) -> nn.Module:
    """The variant's model, shared and read-only (eval mode, CPU). Use `model_copy` to change it."""
    return _model(str(workspace().root), variant.id, variant.created_at)


def model_copy(variant: Variant) -> nn.Module:
    """A private copy of the variant's model, safe to prune, quantize or train."""
    return copy.deepcopy(model(variant))


@st.cache_resource(show_spinner=False, max_entries=64)
def layer_table(root: str, variant_id: str, created_at: float) -> list[dict]:
    """Per-layer rows (name, type, shape, params, non-zero, sparsity) of a variant. Shared by
    every session, read-only (st.cache_data would unpickle a private copy on every run)."""
    m = _model(root, variant_id, created_at)
    return [s.to_dict() for s in layer_stats(m)]


@st.cache_resource(show_spinner=False)
def device() -> str:
    """Where jobs and measurements run: the GPU's name, or the CPU."""
    return device_label(resolve_device("auto"))


def reap_jobs() -> None:
    """Notice dead workers and move the queue; throttled, so every status read may call it."""
    ws = workspace()
    key = str(ws.root)
    now = time.time()
    if now - _last_reap.get(key, 0.0) >= REAP_EVERY_S:
        _last_reap[key] = now
        jobs.reap(ws)


@st.cache_resource(show_spinner=False, max_entries=32)
def registry_summary(model_name: str, dataset_name: str) -> dict:
    """Parameters, MACs, dense size and layers of a registry model built for a dataset (untrained).
    Shared by every session, read-only."""
    from core.data.datasets import get_info
    from core.formats.encoding import encode_dense
    from core.measure.metrics import count_macs, count_params
    from core.models.registry import create_model

    info = get_info(dataset_name)
    m = create_model(model_name, num_classes=info.num_classes, in_channels=info.in_channels,
                     image_size=info.image_size).eval()
    params, _ = count_params(m)
    return {"params": params, "macs": count_macs(m, info.input_shape),
            "dense_size_bytes": len(encode_dense(m.state_dict())), "layers": [s.to_dict() for s in layer_stats(m)]}


# ---------------------------------------------------------------- previews (prune, quantize)

PREVIEW_CACHE_MB = int(os.environ.get("WORKBENCH_PREVIEW_CACHE_MB", "512"))   # both kinds together


@st.cache_resource(show_spinner=False, max_entries=4)
def val_subset(dataset_name: str):
    """The fixed validation subset every preview is measured on (same images every time)."""
    from core.compress.pruning.preview import preview_subset

    return preview_subset(dataset(dataset_name).val)


@st.cache_data(show_spinner=False, max_entries=64)
def _reference_accuracy(root: str, variant_id: str, created_at: float, dataset_name: str) -> float:
    from core.measure.metrics import accuracy, channels_last_

    m = channels_last_(copy.deepcopy(_model(root, variant_id, created_at)))   # the preview's own layout
    return accuracy(m, val_subset(dataset_name))


def reference_accuracy(variant: Variant) -> float:
    """The unpruned variant's accuracy on the preview's validation subset (measured once)."""
    return _reference_accuracy(str(workspace().root), variant.id, variant.created_at, variant.dataset)


@st.cache_resource(show_spinner=False)
def _previews(root: str) -> MemoryBoundedCache:
    return MemoryBoundedCache(PREVIEW_CACHE_MB * 1_000_000)


# Previews computed at once, server-wide. Ten sessions moving their sliders together would
# otherwise share the cores ten ways and all finish late; one preview per core at a time serves
# them first come, first served, so most finish sooner and none later (the same total work).
PREVIEW_SLOTS = threading.BoundedSemaphore(max(1, int(os.environ.get("WORKBENCH_PREVIEW_SLOTS",
                                                                     os.cpu_count() or 1))))


def preview_key(kind: str, variant: Variant, config) -> tuple:
    """Names one preview: its kind, the workspace, the variant as stored, the settings."""
    return (kind, str(workspace().root), variant.id, variant.created_at, json.dumps(config.to_dict(), sort_keys=True))


def _preview(kind: str, variant: Variant, config, compute: Callable[[], Any]):
    """The preview of `config` on `variant`, shared and read-only (it holds the changed copy of the
    model): kept in one cache bounded by the memory its models hold, computed once however many
    sessions ask at the same moment (a class told "now try 90%"), one per core at a time."""
    cache, key = _previews(str(workspace().root)), preview_key(kind, variant, config)
    p = cache.get_or_compute(key, compute, slots=PREVIEW_SLOTS)
    lat = getattr(p, "latency", None)
    if lat is not None and not lat.all_settled():
        cache.discard(key)   # a timing that did not settle is shown as such once, never kept as truth
    return p


def prune_preview(variant: Variant, config):
    """The pruning preview of `config` on `variant` (core PreviewResult; shared, read-only)."""
    return _preview("prune", variant, config, lambda: prune_task.preview_child(
        workspace(), variant, model(variant), config, val_subset(variant.dataset)))


# ---------------------------------------------------------------- figures

FIGURES_KEPT = 96   # built plotly figures shared by every session; a heatmap's is the largest (~0.3 MB)


@st.cache_resource(show_spinner=False, max_entries=FIGURES_KEPT)
def _figure(key: str, _build: Callable[[], Any]) -> Any:
    return _build()


def figure(key: Sequence, build: Callable[[], Any]) -> Any:
    """The figure `build()` makes, built once per `key` and then shared by every session and rerun.

    Building a plotly figure (a block-reduced heatmap, bars over every layer, training curves)
    takes 15-40 ms of the server's time; st.plotly_chart only reads the figure (it serializes a
    copy), so one built figure can serve everyone. `key` must name everything the figure shows
    (the variant and its created_at, the settings, the layer, the job's last event...): nothing
    else is looked at (the workspace root is added here). Never change a returned figure."""
    return _figure(json.dumps([str(workspace().root), *key], sort_keys=True, default=str), build)


# ---------------------------------------------------------------- job events

EVENT_JOBS_KEPT = 32   # jobs whose events stay in memory (a long training run logs a few thousand)


class _EventLog:
    """Every job's events, read once and then only the new ones: a running job's card is redrawn
    every second in every session that shows it, and rereading (and JSON-decoding) all of its
    events each time grows with the run. Events are append-only (numbered by `seq`), so what was
    read stays valid. Thread-safe; the least recently used jobs are dropped past EVENT_JOBS_KEPT."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, tuple[dict, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def events(self, ws: Workspace, job_id: str) -> tuple[dict, ...]:
        with self._lock:
            have = self._jobs.get(job_id, ())
        new = ws.jobs.events(job_id, after_seq=have[-1]["seq"] if have else 0)
        with self._lock:
            now = self._jobs.get(job_id, ())
            if new and len(now) == len(have):          # nobody added these meanwhile
                now = have + tuple(new)
            self._jobs[job_id] = now
            self._jobs.move_to_end(job_id)
            while len(self._jobs) > EVENT_JOBS_KEPT:
                self._jobs.popitem(last=False)
        return now


@st.cache_resource(show_spinner=False)
def _event_log(root: str) -> _EventLog:
    return _EventLog()


def job_events(job_id: str) -> tuple[dict, ...]:
    """The job's events, oldest first, shared read-only by every session (never change one)."""
    ws = workspace()
    return _event_log(str(ws.root)).events(ws, job_id)


# ---------------------------------------------------------------- quantization preview

@st.cache_resource(show_spinner=False, max_entries=8)
def calibration(dataset_name: str, n_batches: int) -> list:
    """The fixed calibration batches (64 training images each) of a dataset; shared, read-only."""
    from core.compress.quant.quantize import calibration_batches

    return calibration_batches(dataset(dataset_name).train, n_batches)


@st.cache_resource(show_spinner=False, max_entries=64)
def _quant_plan(root: str, variant_id: str, created_at: float, config_json: str) -> list:
    from core.compress.quant.quantize import QuantConfig, plan

    return plan(_model(root, variant_id, created_at), QuantConfig.from_dict(json.loads(config_json)))


def quant_plan(variant: Variant, config) -> list:
    """What `config` will do to each layer of the variant, before anything runs (shared, read-only)."""
    return _quant_plan(str(workspace().root), variant.id, variant.created_at,
                       json.dumps(config.to_dict(), sort_keys=True))


def cached_quant_preview(variant: Variant, config):
    """The preview of `config` on `variant` if some session computed it already, else None."""
    return _previews(str(workspace().root)).get(preview_key("quant", variant, config))


def quant_preview(variant: Variant, config):
    """Quantize a copy of the variant with `config` and measure it (core QuantPreview; shared and
    read-only: it holds the quantized copy), kept and computed as the pruning previews are."""
    return _preview("quant", variant, config, lambda: quantize_task.preview_child(
        workspace(), variant, model(variant), config, val_subset(variant.dataset),
        calibration(variant.dataset, config.calib_batches)))


# ---------------------------------------------------------------- fine-tune

@st.cache_data(show_spinner=False, max_entries=32)
def _val_accuracy(root: str, variant_id: str, created_at: float, dataset_name: str) -> float:
    from core.measure.metrics import accuracy

    m = copy.deepcopy(_model(root, variant_id, created_at))     # the shared model is never touched
    return accuracy(m, dataset(dataset_name).val)


def val_accuracy(variant: Variant) -> float:
    """The variant's accuracy on its dataset's whole validation split (the images a fine-tune job
    measures each epoch on), measured once per stored variant and shared."""
    return _val_accuracy(str(workspace().root), variant.id, variant.created_at, variant.dataset)


@st.cache_resource(show_spinner=False, max_entries=16)
def _dataset_samples(root: str, name: str, stamp: tuple | None, per_class: int) -> dict:
    import numpy as np

    from core.data.datasets import sample_grid

    ds = cached_dataset(name, workspace_root=root)
    labels = torch.cat([ds.train.labels, ds.val.labels, ds.test.labels]).cpu().numpy()
    counts = np.bincount(labels, minlength=ds.info.num_classes)
    return {"info": ds.info, "grid": sample_grid(ds, per_class), "notice": ds.notice, "stamp": stamp,
            "counts": {c: int(n) for c, n in zip(ds.info.class_names, counts, strict=True)},
            "sizes": {"train": len(ds.train), "val": len(ds.val), "test": len(ds.test)}}


def dataset_samples(name: str, per_class: int = 4) -> dict:
    """A few stored images per class of a dataset (built-in or uploaded) and its counts:
    {"info", "grid" (core.data.datasets.sample_grid), "counts" {class: images}, "sizes" per split,
    "notice", "stamp"}. Keyed by the stored file, so a re-imported dataset of the same name is read
    again. Shared, read-only."""
    from core.data.uploaded import uploaded_stamp

    root = str(workspace().root)
    return _dataset_samples(root, name, uploaded_stamp(name, root), per_class)


# ---------------------------------------------------------------- distillation

@st.cache_data(show_spinner=False, max_entries=128)
def _class_accuracy(root: str, variant_id: str, created_at: float) -> list:
    from core.tasks.distill import class_accuracies

    ws = _workspace(root)
    return class_accuracies(ws, [ws.get_variant(variant_id)])[variant_id]


def distill_class_accuracies(variants: Sequence[Variant]) -> dict[str, list]:
    """Per-class test accuracy (id -> list, None for a class without test images) of each variant,
    measured once per stored variant (a full test-split pass each) and then shared."""
    root = str(workspace().root)
    return {v.id: _class_accuracy(root, v.id, v.created_at) for v in variants}


# ---------------------------------------------------------------- export

_export_guard = threading.Lock()


@st.cache_resource(show_spinner=False)
def _export_locks(root: str) -> dict[str, threading.Lock]:
    return {}


def export_lock(variant_id: str) -> threading.Lock:
    """Held while a session exports and checks a variant's files: a second session asking at the
    same moment waits, then finds them in the workspace's export cache (core.io.export.pipeline)."""
    locks = _export_locks(str(workspace().root))
    with _export_guard:
        return locks.setdefault(variant_id, threading.Lock())
