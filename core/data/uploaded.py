"""Image datasets made from an uploaded zip of class folders (the ImageFolder layout).

    cats-vs-dogs.zip                      or, wrapped in one top-level folder:
        cat/001.jpg  cat/002.png ...          photos/cat/001.jpg ...
        dog/001.jpg  ...                      photos/dog/001.jpg ...

`import_image_zip` checks the whole archive before anything is written (size, member count,
paths, symlinks, layout, declared sizes, classes and images per class), then reads every member
through a bounded stream (its declared size is not trusted), decodes it within the image bounds,
converts it to the dataset's tensor form (uint8 C x S x S, through `image_array`, the conversion
`preprocess_image` applies to a prediction image; a big JPEG is decoded at a reduced scale
first), splits each class 70/15/15 with a fixed seed and stores the splits under
`<workspace>/datasets/<name>/`: `data.safetensors` (uint8 images, int64 labels) and
`dataset.json` (classes, counts, normalisation from the train split, source file and sha256).
The folder appears in one rename, so it is complete or absent. A refusal is one
`DatasetUploadError` (a ValueError) whose message says what to fix; nothing is written then.

`core.data.datasets.list_datasets / get_info / load_dataset / cached_dataset` find these datasets by name.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from core.base import limits
from core.base.paths import slug, workspace_dir  # noqa: F401  (slug: the CLI names an uploaded dataset with it)
from core.data.images import open_image
from core.data.preprocess import image_array
from core.data.types import DATASETS, SPLIT_SEED, Dataset, DatasetInfo, DatasetUnavailable, ImageError, Split
from core.data.upload_zip import (  # noqa: F401  (READ_CHUNK, read_member: part of this module's API)
    MAX_BAD_LISTED,
    READ_CHUNK,
    DatasetUploadError,
    _layout,
    _open_archive,
    _parts,
    read_member,
)

STORE_DIR = "datasets"            # under the workspace root
MANIFEST = "dataset.json"
ARRAYS = "data.safetensors"
FORMAT_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,38}[a-z0-9])?$")   # a slug: also a safe folder name
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)  # train / val / test, per class
CHANNEL_CHOICES = (1, 3)
MIN_IMAGE_SIZE = 8
MAX_MANIFEST_BYTES = 10_000_000


# ---------------------------------------------------------------- where datasets live

def _root(root: str | os.PathLike | None = None) -> Path:
    """The workspace root as core.store.workspace resolves it (argument, WORKBENCH_HOME, ./workspace)."""
    return workspace_dir(root).resolve()


def dataset_dir(name: str, root: str | os.PathLike | None = None) -> Path:
    if not NAME_RE.match(name or ""):
        raise DatasetUploadError(f"{name!r} is not a dataset name (lowercase letters, digits, '-' and '_', "
                                 "1 to 40 characters, starting and ending with a letter or digit)")
    return _root(root) / STORE_DIR / name


def check_name(name: str, root: str | os.PathLike | None = None) -> None:
    """Refuse a name that is not a slug, names a built-in dataset, or is already used."""
    path = dataset_dir(name, root)
    if name in DATASETS:
        raise DatasetUploadError(f"{name!r} is the name of a built-in dataset; choose another name")
    if path.exists():
        raise DatasetUploadError(f"a dataset named {name!r} already exists in {path.parent}; choose another name")


# ---------------------------------------------------------------- import

def _check_target(in_channels: int, image_size: int, invert: bool | None) -> None:
    if in_channels not in CHANNEL_CHOICES:
        raise DatasetUploadError(f"in_channels must be 1 (greyscale) or 3 (RGB), not {in_channels!r}")
    if type(image_size) is not int or not MIN_IMAGE_SIZE <= image_size <= limits.MAX_DATASET_IMAGE_SIZE:
        raise DatasetUploadError(f"image_size must be an integer from {MIN_IMAGE_SIZE} to "
                                 f"{limits.MAX_DATASET_IMAGE_SIZE}, not {image_size!r}")
    if invert not in (None, True, False):
        raise DatasetUploadError(f"invert must be None (automatic), True or False, not {invert!r}")


def split_indices(labels: np.ndarray, num_classes: int, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
    """Per class, a seeded 70/15/15 split with at least one image in val and in test when a class
    has three or more; each split then shuffled with the same generator. Indices into `labels`."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n = len(idx)
        n_val = max(1, round(n * SPLIT_FRACTIONS[1])) if n >= 3 else 0
        n_test = max(1, round(n * SPLIT_FRACTIONS[2])) if n >= 3 else 0
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val:n_val + n_test])
        parts["train"].append(idx[n_val + n_test:])
    out = {}
    for k, v in parts.items():
        cat = np.concatenate(v) if v else np.zeros(0, dtype=np.int64)
        out[k] = cat[rng.permutation(len(cat))]
    return out


def _mean_std(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) in [0, 1] units (as DatasetInfo's built-ins)."""
    x = torch.from_numpy(images).double().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), unbiased=False).clamp_min(1e-3)   # a constant channel must not divide by 0
    return tuple(round(float(m), 6) for m in mean), tuple(round(float(s), 6) for s in std)


def import_image_zip(workspace_root: str | os.PathLike | None, data: bytes, name: str, *,
                     in_channels: int = 1, image_size: int = 28, invert: bool | None = None,
                     title: str | None = None, filename: str = "upload.zip", seed: int = SPLIT_SEED,
                     progress: Callable[[int, int], None] | None = None) -> DatasetInfo:
    """Make the zip of class folders `data` the workspace dataset `name` and return its info.

    The default form, greyscale 28x28, is that of Fashion-MNIST, so the shipped lenet5 can be
    fine-tuned on it; `in_channels=3, image_size=32` matches CIFAR-10 models. A greyscale image
    with a light background is inverted (`invert=None`; force with True/False), as
    `preprocess_image` does for predictions. `progress(done, total)` is called while decoding.
    Everything is checked before anything is written; a refusal is a DatasetUploadError."""
    _check_target(in_channels, image_size, invert)
    check_name(name, workspace_root)
    root = _root(workspace_root)
    zf = _open_archive(data)
    class_names, members, ignored = _layout(zf)
    total = sum(len(m) for m in members.values())
    array_bytes = total * in_channels * image_size * image_size
    if array_bytes > limits.MAX_DATASET_ARRAY_BYTES:
        raise DatasetUploadError(f"{total:,} images of {in_channels}x{image_size}x{image_size} would take "
                                 f"{array_bytes / 1e6:,.0f} MB; the limit is {limits.MAX_DATASET_ARRAY_BYTES / 1e6:,.0f} MB "
                                 "(use fewer images or a smaller image size)")

    images = np.empty((total, in_channels, image_size, image_size), dtype=np.uint8)
    labels = np.empty(total, dtype=np.int64)
    bad: list[str] = []
    inflated = 0
    k = 0
    for label, cls in enumerate(class_names):
        for info in members[cls]:
            where = "/".join(_parts(info))
            left = limits.MAX_ZIP_UNCOMPRESSED - inflated
            try:
                raw = read_member(zf, info, min(limits.MAX_DATASET_IMAGE_BYTES, left), what=where)
                inflated += len(raw)
                img = open_image(raw, where, max_bytes=limits.MAX_DATASET_IMAGE_BYTES,
                                 max_pixels=limits.MAX_DATASET_IMAGE_PIXELS,
                                 draft=("L" if in_channels == 1 else "RGB", image_size))
                images[k] = image_array(img, in_channels, image_size, invert, filename=where)
                labels[k] = label
                k += 1
            except ImageError as e:
                bad.append(str(e))
            if progress is not None:
                progress(k + len(bad), total)
    if bad:
        listed = "\n".join(f"  {b}" for b in bad[:MAX_BAD_LISTED])
        more = f"\n  ... and {len(bad) - MAX_BAD_LISTED} more" if len(bad) > MAX_BAD_LISTED else ""
        raise DatasetUploadError(f"{len(bad)} of {total} files are not usable images; remove or fix them and "
                                 f"upload again:\n{listed}{more}")

    splits = split_indices(labels, len(class_names), seed)
    mean, std = _mean_std(images[splits["train"]])
    counts = {s: {c: int((labels[idx] == i).sum()) for i, c in enumerate(class_names)} for s, idx in splits.items()}
    manifest = {
        "format": FORMAT_VERSION, "name": name, "title": title or name, "class_names": class_names,
        "in_channels": in_channels, "image_size": image_size, "mean": list(mean), "std": list(std),
        "invert": {None: "auto", True: "always", False: "never"}[invert],
        "split_seed": seed, "split_fractions": list(SPLIT_FRACTIONS),
        "sizes": {s: len(idx) for s, idx in splits.items()}, "counts": counts,
        "source": {"filename": os.path.basename(filename or "upload.zip")[:200], "bytes": len(data),
                   "sha256": hashlib.sha256(data).hexdigest(), "images": total, "ignored_files": ignored},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    arrays = {}
    for s, idx in splits.items():
        arrays[f"{s}_images"] = np.ascontiguousarray(images[idx])
        arrays[f"{s}_labels"] = np.ascontiguousarray(labels[idx])
    _write_atomic(root, name, arrays, manifest)
    return _info_from_manifest(manifest)


def _write_atomic(root: Path, name: str, arrays: dict[str, np.ndarray], manifest: dict) -> None:
    """Write into a hidden temp folder beside the target, then rename it into place: a reader
    sees the whole dataset or none of it, and a failure leaves nothing behind."""
    from safetensors.numpy import save_file

    store = root / STORE_DIR
    final = store / name
    made = []            # folders this call creates (store first): removed again if it fails
    p = store
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    tmp = None
    try:
        store.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{name}-", dir=store))
        save_file(arrays, str(tmp / ARRAYS))
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for f in (tmp / ARRAYS, tmp / MANIFEST):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():   # taken while we were decoding
            raise FileExistsError(f"a dataset named {name!r} already exists")
        os.rename(tmp, final)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for d in made:
            try:
                d.rmdir()
            except OSError:
                break
        if isinstance(e, OSError):
            raise DatasetUploadError(f"cannot write the dataset {name!r} into {store}: {e}") from None
        raise


# ---------------------------------------------------------------- listing and loading

def _info_from_manifest(m: dict) -> DatasetInfo:
    c, s = m["in_channels"], m["image_size"]
    kind = "greyscale" if c == 1 else "colour"
    n = m["source"]["images"]
    desc = (f"{n:,} uploaded {s}x{s} {kind} images, {len(m['class_names'])} classes "
            f"(from {m['source']['filename']})")
    return DatasetInfo(m["name"], m["title"], tuple(m["class_names"]), c, s, tuple(m["mean"]), tuple(m["std"]),
                       desc, uploaded=True)


def read_manifest(name: str, root: str | os.PathLike | None = None) -> dict:
    """The stored `dataset.json` of an uploaded dataset, checked; DatasetUnavailable when it is
    missing or malformed."""
    try:
        path = dataset_dir(name, root) / MANIFEST
    except DatasetUploadError as e:
        raise DatasetUnavailable(str(e)) from None
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise DatasetUnavailable(f"{path}: larger than {MAX_MANIFEST_BYTES:,} bytes")
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetUnavailable(f"no uploaded dataset {name!r} in {path.parent.parent}") from None
    except (OSError, ValueError) as e:
        raise DatasetUnavailable(f"{path}: unreadable ({str(e)[:150]})") from None
    try:
        ok = (isinstance(m, dict) and m.get("format") == FORMAT_VERSION and m.get("name") == name
              and isinstance(m.get("title"), str)
              and isinstance(m.get("class_names"), list) and len(m["class_names"]) >= 2
              and all(isinstance(c, str) for c in m["class_names"])
              and m.get("in_channels") in CHANNEL_CHOICES
              and type(m.get("image_size")) is int
              and MIN_IMAGE_SIZE <= m["image_size"] <= limits.MAX_DATASET_IMAGE_SIZE
              and all(isinstance(m.get(k), list) and len(m[k]) == m["in_channels"]
                      and all(isinstance(v, (int, float)) for v in m[k]) for k in ("mean", "std"))
              and all(v > 0 for v in m["std"])
              and isinstance(m.get("sizes"), dict) and isinstance(m.get("source"), dict)
              and all(type(m["sizes"].get(s)) is int for s in ("train", "val", "test")))
    except TypeError:
        ok = False
    if not ok:
        raise DatasetUnavailable(f"{path}: not a dataset description this version can read")
    return m


def uploaded_info(name: str, root: str | os.PathLike | None = None, *, strict: bool = False) -> DatasetInfo | None:
    """The DatasetInfo of the uploaded dataset `name`; None when there is no usable one, or with
    `strict`, None only when there is no such folder and a ValueError saying why it is unusable."""
    if not NAME_RE.match(name or "") or name in DATASETS:
        return None
    try:
        return _info_from_manifest(read_manifest(name, root))
    except DatasetUnavailable as e:
        if strict and (_root(root) / STORE_DIR / name).is_dir():
            raise ValueError(f"uploaded dataset {name!r} cannot be used: {e}") from None
        return None


def list_uploaded(root: str | os.PathLike | None = None) -> list[DatasetInfo]:
    """The workspace's uploaded datasets, by name (a folder with an unreadable description is left out)."""
    store = _root(root) / STORE_DIR
    if not store.is_dir():
        return []
    out = []
    for d in sorted(store.iterdir()):
        if d.is_dir() and NAME_RE.match(d.name):
            info = uploaded_info(d.name, root)
            if info is not None:
                out.append(info)
    return out


def uploaded_stamp(name: str, root: str | os.PathLike | None = None) -> tuple | None:
    """(workspace root, file stamps) identifying the stored dataset `name`: a cache key that
    changes with the workspace or with a re-import. None when there is no such dataset."""
    if not NAME_RE.match(name or ""):
        return None
    d = _root(root) / STORE_DIR / name
    try:
        a, m = (d / ARRAYS).stat(), (d / MANIFEST).stat()
    except OSError:
        return None
    return (str(_root(root)), (a.st_mtime_ns, a.st_size, a.st_ino, m.st_mtime_ns, m.st_size))


def load_uploaded(name: str, root: str | os.PathLike | None = None, *, subset: int | None = None) -> Dataset:
    """Load an uploaded dataset with the split it was stored with; `subset` caps the train split."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    m = read_manifest(name, root)
    info = _info_from_manifest(m)
    path = dataset_dir(name, root) / ARRAYS
    try:
        arrays = load_file(str(path))
    except (OSError, SafetensorError) as e:
        raise DatasetUnavailable(f"{path}: unreadable ({str(e)[:150]})") from None
    splits = {}
    for s in ("train", "val", "test"):
        x, y = arrays.get(f"{s}_images"), arrays.get(f"{s}_labels")
        n = m["sizes"][s]
        if (x is None or y is None or x.dtype != np.uint8 or y.dtype != np.int64
                or x.shape != (n, *info.input_shape) or y.shape != (n,)
                or (n and (int(y.min()) < 0 or int(y.max()) >= info.num_classes))):
            raise DatasetUnavailable(f"{path}: the {s} split does not match {MANIFEST}")
        splits[s] = Split(torch.from_numpy(x), torch.from_numpy(y), info.mean, info.std)
    return Dataset(info, splits["train"].subset(subset, seed=0), splits["val"], splits["test"],
                   source=f"uploaded {m['source'].get('filename', '?')} in {path.parent}", extra={"manifest": m})


def delete_uploaded(name: str, root: str | os.PathLike | None = None) -> None:
    """Remove the uploaded dataset `name` (moved aside in one rename, then deleted). Variants
    trained on it keep their weights and metrics; re-measuring them needs the dataset back."""
    d = dataset_dir(name, root)
    if name in DATASETS or not (d / MANIFEST).is_file():
        raise DatasetUploadError(f"there is no uploaded dataset {name!r} in {d.parent}")
    trash = Path(tempfile.mkdtemp(prefix=f".del-{name}-", dir=d.parent))
    os.rename(d, trash / name)
    shutil.rmtree(trash, ignore_errors=True)
