"""Datasets held in memory as uint8 tensors, with a fast batch iterator.

Fashion-MNIST is the default. It is looked for in a local data dir, then in Debian's
`dataset-fashion-mnist` package, then downloaded by torchvision when online. When none of those
works, scikit-learn's bundled digits (upsampled to 28x28) stand in, and the dataset says so in
`notice`. Images stay uint8 (N, C, H, W) until a batch is drawn, which keeps a copy per worker
process small and lets the whole split live on the GPU.

Besides the built-ins in DATASETS, a workspace holds datasets made from uploaded zips of class
folders (core.datasets_upload): `list_datasets`, `get_info`, `load_dataset` and `cached_dataset`
find them by name under `<workspace>/datasets/<name>/` (the workspace of `core.workspace.workspace_dir`).
"""
from __future__ import annotations

import functools
import gzip
import io
import os
import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_DATASET = "fashion-mnist"
VAL_SIZE = 5000  # held out from the train split; fixed seed so every run sees the same one
SPLIT_SEED = 1234

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
DIGIT_CLASSES = [str(i) for i in range(10)]


class DatasetUnavailable(RuntimeError):
    """The dataset is neither on disk nor downloadable."""


def data_dir() -> Path:
    """Local data dir: env WORKBENCH_DATA, else ./data."""
    return Path(os.environ.get("WORKBENCH_DATA", "data"))


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    title: str
    class_names: tuple[str, ...]
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    uploaded: bool = False  # made from an uploaded zip, stored in the workspace

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.image_size, self.image_size)


DATASETS: dict[str, DatasetInfo] = {
    "fashion-mnist": DatasetInfo("fashion-mnist", "Fashion-MNIST", tuple(FASHION_CLASSES), 1, 28,
                                 (0.2860,), (0.3530,), "70,000 28x28 greyscale clothing images, 10 classes"),
    "mnist": DatasetInfo("mnist", "MNIST", tuple(DIGIT_CLASSES), 1, 28, (0.1307,), (0.3081,),
                         "70,000 28x28 greyscale handwritten digits"),
    "cifar10": DatasetInfo("cifar10", "CIFAR-10", tuple(CIFAR10_CLASSES), 3, 32,
                           (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                           "60,000 32x32 colour images, 10 classes"),
    "digits": DatasetInfo("digits", "scikit-learn digits (upsampled)", tuple(DIGIT_CLASSES), 1, 28,
                          (0.1770,), (0.3130,),
                          "1,797 8x8 handwritten digits bundled with scikit-learn, upsampled to 28x28"),
}


def list_datasets(workspace_root: str | os.PathLike | None = None) -> list[DatasetInfo]:
    """The built-ins, then the workspace's uploaded datasets (by name)."""
    from .datasets_upload import list_uploaded  # lazy: it imports this module

    return list(DATASETS.values()) + list_uploaded(workspace_root)


def get_info(name: str, workspace_root: str | os.PathLike | None = None) -> DatasetInfo:
    if name in DATASETS:
        return DATASETS[name]
    from .datasets_upload import uploaded_info

    info = uploaded_info(name, workspace_root, strict=True)
    if info is None:
        names = [d.name for d in list_datasets(workspace_root)]
        raise ValueError(f"unknown dataset {name!r}; choose one of: {', '.join(names)}")
    return info


@dataclass
class Split:
    """One split in memory: uint8 images (N, C, H, W) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device), self.mean, self.std)

    def subset(self, n: int | None, seed: int = 0) -> Split:
        if n is None or n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].to(self.images.device)
        return Split(self.images[idx], self.labels[idx], self.mean, self.std)

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> normalised float32 on the same device."""
        c = images_u8.shape[1]
        mean = torch.tensor(self.mean, device=images_u8.device).view(1, c, 1, 1)
        std = torch.tensor(self.std, device=images_u8.device).view(1, c, 1, 1)
        return (images_u8.float().div_(255.0) - mean) / std

    def batches(self, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (x float32 normalised, y int64); slicing in-memory tensors, no per-sample Python."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else None
        if order is not None:
            order = order.to(self.images.device)
        for start in range(0, n, batch_size):
            if order is None:
                xb, yb = self.images[start:start + batch_size], self.labels[start:start + batch_size]
            else:
                idx = order[start:start + batch_size]
                xb, yb = self.images[idx], self.labels[idx]
            if device is not None:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            yield self.normalize(xb), yb

    def num_batches(self, batch_size: int) -> int:
        return (len(self) + batch_size - 1) // batch_size


@dataclass
class Dataset:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    source: str
    notice: str = ""  # non-empty when a fallback replaced what was asked for
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.info.name

    def summary(self) -> dict:
        return {"name": self.info.name, "title": self.info.title, "source": self.source,
                "train": len(self.train), "val": len(self.val), "test": len(self.test),
                "classes": self.info.num_classes, "input_shape": list(self.info.input_shape),
                "notice": self.notice}


# ---------------------------------------------------------------- readers

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


def load_dataset(name: str = DEFAULT_DATASET, *, subset: int | None = None, download: bool = True,
                 allow_fallback: bool = True, val_size: int | None = None,
                 workspace_root: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset into memory. `subset` caps the train split (val and test stay whole).
    An uploaded dataset keeps the train/val/test split it was stored with (`val_size` is ignored)."""
    info = get_info(name, workspace_root)
    if info.uploaded:
        from .datasets_upload import load_uploaded

        return load_uploaded(name, workspace_root, subset=subset)
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


def dataset_available(name: str) -> bool:
    """True when the dataset can be loaded without a download."""
    try:
        load_dataset(name, download=False, allow_fallback=False)
        return True
    except (DatasetUnavailable, ValueError):
        return False


# ---------------------------------------------------------------- single images

class ImageError(ValueError):
    """An uploaded image that cannot be used; the message names the file and the reason."""


# decoders an upload may reach: common raster formats only (PIL's EPS plugin, for one, runs Ghostscript)
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")


def open_image(image_bytes: bytes, filename: str = "image", *, max_bytes: int = MAX_IMAGE_BYTES,
               max_pixels: int = MAX_IMAGE_PIXELS, draft: tuple[str, int] | None = None):
    """Decode uploaded bytes into a loaded PIL image (the first frame of an animation), within
    bounds: at most `max_bytes`, and `max_pixels` checked from the header before the pixels are
    decoded. Any decoder error is one ImageError naming `filename` and the reason. The EXIF
    orientation a camera records is applied (a phone photo taken upright comes out upright).
    `draft=(mode, side)`: a JPEG may be decoded at a reduced scale (still at least side x side)
    in that mode, several times faster for a photo that is about to be shrunk anyway."""
    from PIL import Image, UnidentifiedImageError

    name = filename or "image"
    if not image_bytes:
        raise ImageError(f"{name}: the file is empty")
    if len(image_bytes) > max_bytes:
        raise ImageError(f"{name}: the file is {len(image_bytes) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    head = image_bytes[:1024].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg", b"<!doctype svg")) or b"<svg" in head:
        raise ImageError(f"{name}: an SVG/XML drawing, not a raster image; upload a PNG or JPEG")
    with warnings.catch_warnings():
        # PIL warns between its own limit and twice it: a bomb either way
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(image_bytes), formats=IMAGE_FORMATS)
            w, h = img.size
            if w * h > max_pixels:  # before any pixel is decoded
                raise ImageError(f"{name}: {w:,} x {h:,} pixels, a decompression bomb (the limit is "
                                 f"{max_pixels:,} pixels)")
            if w == 0 or h == 0:
                raise ImageError(f"{name}: the image has no pixels")
            img.seek(0)  # an animation: its first frame
            if draft is not None and img.format == "JPEG":
                img.draft(draft[0], (draft[1], draft[1]))
            img.load()
            img = _upright(img)
        except ImageError:
            raise
        except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
            size = str(e).split(" exceeds")[0]   # PIL: "Image size (144000000 pixels) exceeds limit ..."
            raise ImageError(f"{name}: a decompression bomb ({size[:60]}; the limit is {max_pixels:,} pixels)") from None
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not an image (readable formats: {', '.join(IMAGE_FORMATS)})") from None
        except (OSError, EOFError) as e:
            truncated = "truncat" in str(e).lower() or isinstance(e, EOFError)
            why = "the file is truncated" if truncated else str(e)[:150]
            raise ImageError(f"{name}: the image cannot be decoded ({why})") from None
        except Exception as e:  # noqa: BLE001 - PIL's decoders raise SyntaxError, ValueError, struct.error, ...
            raise ImageError(f"{name}: the image cannot be decoded ({type(e).__name__}: {str(e)[:150]})") from None
    return img


def _upright(img):
    """The image turned as its EXIF orientation says; unchanged when there is none or it is unreadable."""
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a corrupt EXIF block does not make the pixels unusable
        return img


def image_array(img, in_channels: int, image_size: int, invert: bool | None = None, *,
                filename: str = "image") -> np.ndarray:
    """A decoded PIL image -> uint8 (C, S, S): greyscale or RGB, resized to a square.

    Greyscale datasets show light objects on a dark background; photos are usually the reverse,
    so by default (`invert=None`) a light-background image is inverted (decided from the border
    pixels). Uploaded datasets are stored through this same function, so a prediction sees an
    image converted as the training images were. Any mode is accepted (core.preprocess.standard_mode:
    transparency over white, 16-bit scaled, CMYK converted)."""
    from .preprocess import standard_mode

    img = standard_mode(img, in_channels, filename=filename)
    try:
        img = img.resize((image_size, image_size))
    except Exception as e:  # noqa: BLE001 - a decoder failing late
        raise ImageError(f"{filename or 'image'}: the image cannot be converted ({type(e).__name__}: {e})") from None
    arr = np.asarray(img, dtype=np.uint8)
    if in_channels == 1:
        if invert is None:
            border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
            invert = border.mean() > 127
        if invert:
            arr = 255 - arr
        return arr[None].copy()  # writable: asarray of a PIL image is read-only
    return arr.transpose(2, 0, 1).copy()


def prepare_image(image_bytes: bytes, info: DatasetInfo, invert: bool | None = None, *,
                  filename: str = "image", keep_steps: bool = False):
    """Decode uploaded bytes and make the input `info`'s models take, the way the dataset's own
    images were made (core.preprocess.prepare: for Fashion-MNIST greyscale, a light background
    turned dark, the object cropped, scaled to fit and centred in 28x28). Returns a
    core.preprocess.Prepared (`.tensor` (1, C, H, W) normalised, `.pixels`, and with `keep_steps`
    the intermediate images). A file that is not a usable image is one ImageError naming `filename`."""
    from .preprocess import prepare

    side = max(info.image_size * 4, 512)   # a JPEG far bigger than needed is decoded at a reduced scale
    img = open_image(image_bytes, filename, draft=("L" if info.in_channels == 1 else "RGB", side))
    return prepare(img, info, invert, filename=filename, keep_steps=keep_steps)


def preprocess_image(image_bytes: bytes, info: DatasetInfo, invert: bool | None = None, *,
                     filename: str = "image") -> torch.Tensor:
    """Decode an uploaded image into a normalised (1, C, H, W) tensor for `info`'s models
    (see `prepare_image`). A file that is not a usable image is an ImageError naming `filename`
    (see `open_image`)."""
    return prepare_image(image_bytes, info, invert, filename=filename).tensor


@functools.lru_cache(maxsize=4)
def _cached(name: str, subset: int | None, root: str | None, stamp: tuple | None) -> Dataset:
    return load_dataset(name, subset=subset, workspace_root=root)


def cached_dataset(name: str = DEFAULT_DATASET, subset: int | None = None,
                   workspace_root: str | os.PathLike | None = None) -> Dataset:
    """`load_dataset` memoised per process; callers must not modify the returned tensors.
    An uploaded dataset is looked for in `workspace_root` (default: WORKBENCH_HOME, as
    core.workspace) and keyed by that root and its stored file too, so another workspace or a
    re-imported dataset of the same name is not served stale."""
    if name in DATASETS:
        return _cached(name, subset, None, None)
    from .datasets_upload import uploaded_stamp

    stamp = uploaded_stamp(name, workspace_root)  # (resolved root, file stamps), or None: no such dataset
    return _cached(name, subset, stamp[0] if stamp else (os.fspath(workspace_root) if workspace_root else None), stamp)


cached_dataset.cache_clear = _cached.cache_clear  # type: ignore[attr-defined]
