"""What the lesson experiments share: the shipped variant a lesson runs on, its model and
validation subset loaded once per process (SHARED: never change them, copy), recorded results
(lessons/recorded/*.json, labelled with their date and device), the lesson charts' look, and the
prune-and-recover fine-tuning lessons 6 and 7 both run. Experiments import this module and
core.lessons.registry, never each other."""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import math

import plotly.graph_objects as go
import torch.nn as nn

from core.base import paths
from core.compress.pruning.masks import attach_masks_from_zeros_, remove_masks_
from core.compress.pruning.preview import PREVIEW_VAL_SAMPLES, preview_subset
from core.data.datasets import cached_dataset
from core.data.types import Split
from core.measure.metrics import accuracy, channels_last_
from core.measure.training import TrainConfig, train_
from core.store.workspace import Variant, VariantNotFound, Workspace

LESSON_VARIANT = "base-lenet5"
RECORD_SCRIPT = ".venv/bin/python scripts/record_lessons.py"
KEPT_COLOR, PRUNED_COLOR, BEFORE_COLOR, LIVE_COLOR = "#4f8bf9", "#e4572e", "#9aa5b1", "#2a9d8f"
RECOVERY_LR = 0.01
LIVE_SUBSET = 2_000          # training images of the live epoch: about a second on a 2-core CPU


# ---------------------------------------------------------------- the variant, its model, its validation subset

def lesson_variant(ws, variant_id: str = LESSON_VARIANT) -> Variant:
    """The shipped variant a lesson runs on; a clear ValueError when the workspace lacks it."""
    try:
        return ws.get_variant(variant_id)
    except VariantNotFound:
        raise ValueError(f"this lesson needs the shipped baseline {variant_id!r}, which is not in the workspace "
                         f"{ws.root}: restore it on the Model page (\"Restore the shipped baselines\") or run "
                         "`python -m core restore-baselines`") from None


@functools.lru_cache(maxsize=8)
def cached_model(root: str, variant_id: str, created_at: float) -> nn.Module:
    """A variant's model, loaded once per process (keyed by when it was stored). Shared: never
    change it; experiments prune and fine-tune copies."""
    return Workspace(root, seed_baselines=False).load_model(variant_id).eval()


def lesson_model(ws, variant_id: str = LESSON_VARIANT) -> tuple[Variant, nn.Module]:
    """(variant, model), the model loaded once per process and SHARED: never change it (copy it)."""
    v = lesson_variant(ws, variant_id)
    return v, cached_model(str(ws.root), v.id, v.created_at)


@functools.lru_cache(maxsize=4)
def lesson_val(dataset: str, n: int = PREVIEW_VAL_SAMPLES) -> Split:
    """The fixed validation subset of the Prune page's preview (same images every time)."""
    return preview_subset(cached_dataset(dataset).val, n)


def val_note(val: Split) -> str:
    return (f"Accuracy is measured on a fixed {len(val):,}-image validation subset (the Prune page's preview "
            "subset), not the full test set, so that each answer comes within about a second.")


@functools.lru_cache(maxsize=8)
def fast_copy(root: str, variant_id: str, created_at: float) -> nn.Module:
    """A private channels-last copy of the shared model: what the pruned copies are timed and
    measured in, so a comparison never mixes memory layouts. Read-only too."""
    return channels_last_(copy.deepcopy(cached_model(root, variant_id, created_at)))


@functools.lru_cache(maxsize=8)
def dense_accuracy(root: str, variant_id: str, created_at: float, dataset: str) -> float:
    """The unpruned model's accuracy on `lesson_val(dataset)`."""
    return accuracy(fast_copy(root, variant_id, created_at), lesson_val(dataset))


def number(params: dict, key: str, lo: float, hi: float, default: float) -> float:
    """The control value `params[key]` as a float in [lo, hi], or a ValueError naming the control."""
    v = params.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        raise ValueError(f"{key} must be a number from {lo:g} to {hi:g}, got {v!r}")
    return float(v)


# ---------------------------------------------------------------- recorded results (lessons/recorded/*.json)

def recorded_dir():
    """lessons/recorded/: small JSON files written by scripts/record_lessons.py, committed."""
    return paths.LESSONS_DIR / "recorded"


def load_recording(name: str) -> dict | None:
    """A recorded result (`name` like "sensitivity-base-lenet5.json"), or None when not recorded yet."""
    path = recorded_dir() / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"recorded result {path.name} is not valid JSON ({e}); re-record it with "
                         f"`python scripts/record_lessons.py --only {path.name}`") from e


def recorded(name: str) -> dict:
    """A shipped recording lessons/recorded/<name>, or a ValueError that says how to make it."""
    rec = load_recording(name)
    if rec is None:
        raise ValueError(f"the recorded result lessons/recorded/{name} is missing: record it with "
                         f"`{RECORD_SCRIPT} --only {name}`")
    return rec


def recorded_note(rec: dict, what: str) -> str:
    """The label every recorded result carries: what, when, on which device, and how to redo it."""
    return (f"**Recorded**: {what} was measured on {rec.get('recorded_at', '?')} on {rec.get('device', '?')}, "
            f"not now; re-record with `{rec.get('command', 'python scripts/record_lessons.py')}`.")


def weights_digest(ws, variant) -> str:
    """sha256 of a variant's weights file: a recording made on other weights is not shown as theirs."""
    return hashlib.sha256(ws.weights_path(variant).read_bytes()).hexdigest()


# ---------------------------------------------------------------- charts

def tidy(fig: go.Figure, height: int = 380) -> go.Figure:
    """Margins and a legend below the axis title: the page shows two charts a row, in presenter
    mode with larger type, so nothing may rely on a wide chart."""
    fig.update_layout(height=height, margin={"l": 50, "r": 20, "t": 70, "b": 40},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.3, "x": 0})
    return fig


# ---------------------------------------------------------------- prune and recover (lessons 6 and 7)

def recovery_train_config(epochs: int, seed: int = 0) -> TrainConfig:
    """The Prune page's prune-and-recover fine-tuning (SGD, cosine decay), on the CPU."""
    return TrainConfig(epochs=epochs, lr=RECOVERY_LR, optimizer="sgd", schedule="cosine", seed=seed, device="cpu")


def finetune_epochs(pruned: nn.Module, names: list[str], data, epochs: int, *, masks: bool,
                    on_epoch=lambda epoch, model, val_accuracy: None) -> tuple[nn.Module, float]:
    """Fine-tune a private copy of `pruned`, the pruned weights held at zero by masks (or not);
    `on_epoch(epoch, model, val_accuracy)` after each epoch (accuracy on `data.val`, masks still on).
    Returns (the copy with its masks made permanent, its accuracy on `data.val`)."""
    model = copy.deepcopy(pruned)
    if masks:
        attach_masks_from_zeros_(model, names)
    result = train_(model, data, recovery_train_config(epochs),
                    on_event=lambda e: on_epoch(e.epoch, model, e.val_accuracy) if e.kind == "epoch_end" else None)
    return remove_masks_(model).cpu().eval(), result.val_accuracy


@functools.lru_cache(maxsize=4)
def live_train_subset(dataset: str) -> Split:
    """The fixed LIVE_SUBSET training images every live fine-tuning epoch uses."""
    return cached_dataset(dataset).train.subset(LIVE_SUBSET, seed=0)


@functools.lru_cache(maxsize=4)
def dense_val_accuracy(root: str, variant_id: str, created_at: float, dataset: str) -> float:
    return accuracy(cached_model(root, variant_id, created_at), lesson_val(dataset))
