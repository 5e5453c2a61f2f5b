"""What a dataset is: its info (classes, input shape, normalisation), its splits held in memory as
uint8 tensors with a fast batch iterator, the built-in datasets' infos, and the errors it can raise."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

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


class ImageError(ValueError):
    """An uploaded image that cannot be used; the message names the file and the reason."""


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
