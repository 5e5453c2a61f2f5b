"""Cached resources shared by every session: the workspace, datasets, loaded models.

`st.cache_resource` hands the *same object* to every session and rerun, so nothing returned here
may be changed in place: `model_copy()` gives a private copy for any work that changes a model.
Cache keys include the workspace root, so tests (and a changed WORKBENCH_HOME) never see another
workspace's objects.
"""
from __future__ import annotations

import copy
import gc
import json
import os
import time

import streamlit as st
import torch.nn as nn

from core import jobs
from core.data import Dataset, cached_dataset
from core.metrics import device_name, layer_stats, resolve_device
from core.workspace import Variant, Workspace, workspace_dir
from ui.cache import MemoryBoundedCache

REAP_EVERY_S = 1.0
_last_reap: dict[str, float] = {}


def _freeze_imported_objects() -> None:
    """Take what the imports built out of the garbage collector's sight, once per process.

    Streamlit runs a full collection after every script run (`runner.postScriptGC`, to keep
    memory from building up), and a full collection walks every container object alive: with
    torch, plotly and pandas imported that is about 275,000 objects and 0.13 s holding the GIL,
    on every page run and every second of every job card's polling, for every session. Modules,
    classes and functions live as long as the process, so `gc.freeze()` after importing what
    the pages use moves them to the permanent generation; later collections only walk what was
    created since (session state, caches, per-run garbage), which they still free."""
    import pandas  # noqa: F401  (what the pages import, so that it is frozen too)
    import plotly.graph_objects  # noqa: F401

    import core.tasks  # noqa: F401
    import core.viz  # noqa: F401

    gc.collect()
    gc.freeze()


_freeze_imported_objects()


@st.cache_resource(show_spinner=False)
def _workspace(root: str) -> Workspace:
    return Workspace(root)


def workspace() -> Workspace:
    """The workspace of $WORKBENCH_HOME (default ./workspace), created and seeded on first use."""
    return _workspace(str(workspace_dir().resolve()))


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


@st.cache_data(show_spinner=False, max_entries=64)
def layer_table(root: str, variant_id: str, created_at: float) -> list[dict]:
    """Per-layer rows (name, type, shape, params, non-zero, sparsity) of a variant."""
    m = _model(root, variant_id, created_at)
    return [s.to_dict() for s in layer_stats(m)]


@st.cache_resource(show_spinner=False)
def device() -> str:
    """Where jobs and measurements run: the GPU's name, or the CPU."""
    return device_name(resolve_device("auto"))


def reap_jobs() -> None:
    """Notice dead workers and move the queue; throttled, so every status read may call it."""
    ws = workspace()
    key = str(ws.root)
    now = time.time()
    if now - _last_reap.get(key, 0.0) >= REAP_EVERY_S:
        _last_reap[key] = now
        jobs.reap(ws)


@st.cache_data(show_spinner=False, max_entries=32)
def registry_summary(model_name: str, dataset_name: str) -> dict:
    """Parameters, MACs, dense size and layers of a registry model built for a dataset (untrained)."""
    from core.data import get_info
    from core.formats import encode_dense
    from core.metrics import count_macs, count_params
    from core.models import create_model

    info = get_info(dataset_name)
    m = create_model(model_name, num_classes=info.num_classes, in_channels=info.in_channels,
                     image_size=info.image_size).eval()
    params, _ = count_params(m)
    return {"params": params, "macs": count_macs(m, info.input_shape),
            "dense_size_bytes": len(encode_dense(m.state_dict())), "layers": [s.to_dict() for s in layer_stats(m)]}


# ---------------------------------------------------------------- pruning preview

PREVIEW_CACHE_MB = int(os.environ.get("WORKBENCH_PREVIEW_CACHE_MB", "256"))


@st.cache_resource(show_spinner=False, max_entries=4)
def val_subset(dataset_name: str):
    """The fixed validation subset every preview is measured on (same images every time)."""
    from core.pruning_preview import preview_subset

    return preview_subset(dataset(dataset_name).val)


@st.cache_data(show_spinner=False, max_entries=64)
def _reference_accuracy(root: str, variant_id: str, created_at: float, dataset_name: str) -> float:
    from core.metrics import accuracy, channels_last_

    m = channels_last_(copy.deepcopy(_model(root, variant_id, created_at)))   # the preview's own layout
    return accuracy(m, val_subset(dataset_name))


def reference_accuracy(variant: Variant) -> float:
    """The unpruned variant's accuracy on the preview's validation subset (measured once)."""
    return _reference_accuracy(str(workspace().root), variant.id, variant.created_at, variant.dataset)


@st.cache_resource(show_spinner=False)
def _preview_cache(root: str) -> MemoryBoundedCache:
    return MemoryBoundedCache(PREVIEW_CACHE_MB * 1_000_000)


def prune_preview(variant: Variant, config):
    """The preview of `config` on `variant` (shared and read-only: it holds the pruned copy).
    Kept in a cache bounded by the memory its pruned models hold, not by a count of entries."""
    from core.tasks.prune import preview_child

    ws = workspace()
    key = (variant.id, variant.created_at, json.dumps(config.to_dict(), sort_keys=True))
    return _preview_cache(str(ws.root)).get_or_compute(
        key, lambda: preview_child(ws, variant, model(variant), config, val_subset(variant.dataset)))
