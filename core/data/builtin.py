"""The built-in datasets from disk: Fashion-MNIST and MNIST (IDX files: a local data dir, Debian's
`dataset-fashion-mnist` package, torchvision's layout), CIFAR-10 (torchvision), and scikit-learn's
bundled digits, which stand in when the asked-for dataset is not available (and the dataset says so)."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from core.data.types import (
    DATASETS,
    DEBIAN_FASHION_DIR,
    SPLIT_SEED,
    VAL_SIZE,
    Dataset,
    DatasetInfo,
    DatasetUnavailable,
    Split,
    data_dir,
)


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally .gz), the format of (Fashion-)MNIST."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated")
    return data.reshape(dims)


def _find_idx(dirs: list[Path], stem: str) -> Path | None:
    for d in dirs:
        for name in (stem, stem + ".gz"):
            if (d / name).is_file():
                return d / name
    return None


def _load_idx_dataset(dirs: list[Path]) -> tuple[tuple[np.ndarray, ...], Path] | None:
    stems = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    paths = [_find_idx(dirs, s) for s in stems]
    if any(p is None for p in paths):
        return None
    return tuple(_read_idx(p) for p in paths), paths[0].parent


def _mnist_like(name: str, local_dirs: list[Path], tv_class: str, download: bool) -> tuple[tuple[np.ndarray, ...], str]:
    found = _load_idx_dataset(local_dirs)
    if found:
        arrays, where = found
        return arrays, f"IDX files in {where}"
    # torchvision keeps its own layout: <root>/<ClassName>/raw/*.gz
    root = data_dir()
    raw_dir = root / tv_class / "raw"
    found = _load_idx_dataset([raw_dir])
    if found is None and download:
        import torchvision  # slow to import: only when a download is needed

        try:
            getattr(torchvision.datasets, tv_class)(str(root), train=True, download=True)
            getattr(torchvision.datasets, tv_class)(str(root), train=False, download=True)
        except Exception as e:  # offline: fall through to the caller's fallback
            raise DatasetUnavailable(f"{name}: not on disk and the download failed ({type(e).__name__})") from e
        found = _load_idx_dataset([raw_dir])
    if found is None:
        raise DatasetUnavailable(f"{name}: not found in {', '.join(map(str, local_dirs + [raw_dir]))}")
    arrays, where = found
    return arrays, f"torchvision files in {where}"


def _cifar10(download: bool) -> tuple[tuple[np.ndarray, ...], str]:
    import torchvision

    root = data_dir()
    try:
        tr = torchvision.datasets.CIFAR10(str(root), train=True, download=download)
        te = torchvision.datasets.CIFAR10(str(root), train=False, download=download)
    except Exception as e:
        raise DatasetUnavailable(f"cifar10: not on disk in {root} and the download failed ({type(e).__name__})") from e
    # HWC uint8 -> CHW
    arrays = (tr.data.transpose(0, 3, 1, 2), np.array(tr.targets), te.data.transpose(0, 3, 1, 2), np.array(te.targets))
    return arrays, f"torchvision CIFAR-10 in {root}"


def _digits() -> tuple[tuple[np.ndarray, ...], str]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # (N,1,8,8) in [0,1]
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    n_test = 360
    te, tr = order[:n_test], order[n_test:]
    return (x[tr], y[tr], x[te], y[te]), "scikit-learn load_digits (bundled)"


def _to_split(images: np.ndarray, labels: np.ndarray, info: DatasetInfo) -> Split:
    x = torch.from_numpy(np.array(images, dtype=np.uint8))  # copy: the IDX buffer is read-only
    if x.ndim == 3:
        x = x.unsqueeze(1)
    return Split(x, torch.from_numpy(np.array(labels, dtype=np.int64)), info.mean, info.std)



def load_builtin(name: str, *, subset: int | None = None, download: bool = True, allow_fallback: bool = True,
                 val_size: int | None = None) -> Dataset:
    """Load built-in dataset `name` into memory (see `core.data.datasets.load_dataset`)."""
    info = DATASETS[name]
    notice = ""
    try:
        if name == "fashion-mnist":
            arrays, source = _mnist_like(name, [data_dir() / "fashion-mnist", DEBIAN_FASHION_DIR], "FashionMNIST", download)
        elif name == "mnist":
            arrays, source = _mnist_like(name, [data_dir() / "mnist"], "MNIST", download)
        elif name == "cifar10":
            arrays, source = _cifar10(download)
        else:
            arrays, source = _digits()
    except DatasetUnavailable as e:
        if not allow_fallback:
            raise
        notice = (f"{info.title} is not available ({e}). Using scikit-learn's bundled digits instead "
                  "(upsampled to 28x28). Install it with: apt-get install -y dataset-fashion-mnist")
        info = DATASETS["digits"]
        arrays, source = _digits()
    x_train, y_train, x_test, y_test = arrays
    n_val = val_size if val_size is not None else min(VAL_SIZE, len(y_train) // 10)
    perm = np.random.default_rng(SPLIT_SEED).permutation(len(y_train))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    train = _to_split(x_train[train_idx], y_train[train_idx], info).subset(subset, seed=0)
    return Dataset(info, train, _to_split(x_train[val_idx], y_train[val_idx], info),
                   _to_split(x_test, y_test, info), source, notice)
