"""Compression Workbench engine: pure PyTorch, never imports Streamlit.

Public verbs and configs (see DESIGN.md): datasets, the model registry, the training loop,
metrics, the workspace of variants and the task layer (`core.tasks`) that the CLI, pages and jobs run.
"""
from .data import DatasetInfo, cached_dataset, get_info, list_datasets, load_dataset
from .metrics import METRIC_NAMES, Metrics, evaluate, layer_stats
from .models import build_from_arch, create_model, list_models
from .pruning import PruneConfig, PruneReport, prune
from .pruning_preview import preview
from .training import Cancelled, TrainConfig, TrainEvent, train_
from .variants import measure_and_store
from .workspace import Variant, Workspace

__all__ = [
    "DatasetInfo", "cached_dataset", "get_info", "list_datasets", "load_dataset",
    "METRIC_NAMES", "Metrics", "evaluate", "layer_stats",
    "build_from_arch", "create_model", "list_models",
    "PruneConfig", "PruneReport", "preview", "prune",
    "Cancelled", "TrainConfig", "TrainEvent", "train_",
    "measure_and_store", "Variant", "Workspace",
]
