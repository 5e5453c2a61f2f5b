"""Every dataset by name: the built-ins (`core.data.builtin`) and those made from uploaded zips
(`core.data.uploaded`, under `<workspace>/datasets/<name>/`), listed, described, loaded and
memoised per process.

Fashion-MNIST is the default. It is looked for in a local data dir, then in Debian's
`dataset-fashion-mnist` package, then downloaded by torchvision when online. When none of those
works, scikit-learn's bundled digits (upsampled to 28x28) stand in, and the dataset says so in
`notice`. Images stay uint8 (N, C, H, W) until a batch is drawn, which keeps a copy per worker
process small and lets the whole split live on the GPU.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import torch

from core.data.builtin import load_builtin
from core.data.types import DATASETS, DEFAULT_DATASET, Dataset, DatasetInfo, DatasetUnavailable, Split
from core.data.uploaded import list_uploaded, load_uploaded, uploaded_info, uploaded_stamp


def list_datasets(workspace_root: str | os.PathLike | None = None) -> list[DatasetInfo]:
    """The built-ins, then the workspace's uploaded datasets (by name)."""
    return list(DATASETS.values()) + list_uploaded(workspace_root)


def get_info(name: str, workspace_root: str | os.PathLike | None = None) -> DatasetInfo:
    if name in DATASETS:
        return DATASETS[name]
    info = uploaded_info(name, workspace_root, strict=True)
    if info is None:
        names = [d.name for d in list_datasets(workspace_root)]
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(names)}")
    return info


def load_dataset(name: str = DEFAULT_DATASET, *, subset: int | None = None, download: bool = True,
                 allow_fallback: bool = True, val_size: int | None = None,
                 workspace_root: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset into memory. `subset` caps the train split (val and test stay whole).
    An uploaded dataset keeps the train/val/test split it was stored with (`val_size` is ignored)."""
    info = get_info(name, workspace_root)
    if info.uploaded:
        return load_uploaded(name, workspace_root, subset=subset)
    return load_builtin(name, subset=subset, download=download, allow_fallback=allow_fallback, val_size=val_size)


def dataset_available(name: str) -> bool:
    """True when the dataset can be loaded without a download."""
    try:
        load_dataset(name, download=False, allow_fallback=False)
        return True
    except (DatasetUnavailable, ValueError):
        return False


@functools.lru_cache(maxsize=4)
def _cached(name: str, subset: int | None, root: str | None, stamp: tuple | None) -> Dataset:
    return load_dataset(name, subset=subset, workspace_root=root)


def cached_dataset(name: str = DEFAULT_DATASET, subset: int | None = None,
                   workspace_root: str | os.PathLike | None = None) -> Dataset:
    """`load_dataset` memoised per process; callers must not modify the returned tensors.
    An uploaded dataset is looked for in `workspace_root` (default: WORKBENCH_HOME, as
    core.store.workspace) and keyed by that root and its stored file too, so another workspace or a
    re-imported dataset of the same name is not served stale."""
    if name in DATASETS:
        return _cached(name, subset, None, None)
    stamp = uploaded_stamp(name, workspace_root)  # (resolved root, file stamps), or None: no such dataset
    return _cached(name, subset, stamp[0] if stamp else (os.fspath(workspace_root) if workspace_root else None), stamp)


cached_dataset.cache_clear = _cached.cache_clear  # type: ignore[attr-defined]


def sample_grid(dataset: Dataset | str, per_class: int = 4, *, split: str = "train", seed: int = 0,
                root: str | os.PathLike | None = None) -> list[tuple[str, np.ndarray]]:
    """A few images per class for a preview grid: [(class name, uint8 (k, H, W) for greyscale or
    (k, H, W, 3) for colour)], k <= per_class, chosen with a fixed seed. The images are the stored
    ones, i.e. what the model will see (resized, greyscale images possibly inverted)."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, workspace_root=root)
    part: Split = getattr(ds, split)
    labels = part.labels.cpu().numpy()
    rng = np.random.default_rng(seed)
    out = []
    for c, cls in enumerate(ds.info.class_names):
        idx = np.flatnonzero(labels == c)
        pick = np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False)) if len(idx) else idx
        x = part.images[torch.from_numpy(pick)].cpu().numpy() if len(pick) else \
            np.zeros((0, *ds.info.input_shape), dtype=np.uint8)
        out.append((cls, x[:, 0] if ds.info.in_channels == 1 else x.transpose(0, 2, 3, 1)))
    return out
