import gzip
import struct

import numpy as np
import pytest
import torch

from core import data as data_mod
from core.data import get_info, list_datasets, load_dataset


def test_fashion_mnist_default_has_full_splits(fashion):
    if fashion.info.name != "fashion-mnist":
        pytest.skip(f"Fashion-MNIST is not installed here ({fashion.notice})")
    assert len(fashion.train) + len(fashion.val) == 60000
    assert len(fashion.test) == 10000
    assert fashion.info.class_names[0] == "T-shirt/top"
    assert fashion.notice == ""
    assert fashion.train.images.dtype == torch.uint8
    assert fashion.train.images.shape[1:] == (1, 28, 28)
    assert int(fashion.train.labels.max()) == 9


def test_batches_normalise_and_cover_every_sample(tiny_data):
    seen = 0
    for x, y in tiny_data.val.batches(128):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        seen += len(y)
    assert seen == len(tiny_data.val)
    x = torch.cat([b for b, _ in tiny_data.train.batches(512)])
    # normalised with the dataset's own mean/std: roughly zero mean, unit std
    assert abs(float(x.mean())) < 0.2 and 0.8 < float(x.std()) < 1.2


def test_shuffle_is_seeded(tiny_data):
    a = [y for _, y in tiny_data.train.batches(100, shuffle=True, generator=torch.Generator().manual_seed(5))]
    b = [y for _, y in tiny_data.train.batches(100, shuffle=True, generator=torch.Generator().manual_seed(5))]
    c = [y for _, y in tiny_data.train.batches(100, shuffle=True, generator=torch.Generator().manual_seed(6))]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=False))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=False))


def test_subset_caps_only_the_train_split():
    d = load_dataset("fashion-mnist", subset=300)
    assert len(d.train) == 300
    assert len(d.test) >= 360


def test_falls_back_to_digits_with_a_notice(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "DEBIAN_FASHION_DIR", tmp_path / "nothing")
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))
    d = load_dataset("fashion-mnist", download=False)
    assert d.info.name == "digits"
    assert "dataset-fashion-mnist" in d.notice
    assert d.train.images.shape[1:] == (1, 28, 28)
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    with pytest.raises(data_mod.DatasetUnavailable):
        load_dataset("fashion-mnist", download=False, allow_fallback=False)


def _write_idx(path, array: np.ndarray):
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_local_data_dir_is_read_first(monkeypatch, tmp_path):
    d = tmp_path / "data" / "fashion-mnist"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_idx(d / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (200, 28, 28)))
    _write_idx(d / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, (200,)))
    _write_idx(d / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (50, 28, 28)))
    _write_idx(d / "t10k-labels-idx1-ubyte.gz", rng.integers(0, 10, (50,)))
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "data"))
    ds = load_dataset("fashion-mnist", download=False)
    assert str(d) in ds.source
    assert len(ds.train) + len(ds.val) == 200 and len(ds.test) == 50


def test_registry_lists_datasets_and_rejects_unknown():
    assert {"fashion-mnist", "mnist", "cifar10", "digits"} <= {d.name for d in list_datasets()}
    assert get_info("cifar10").input_shape == (3, 32, 32)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        get_info("imagenet")


def test_truncated_idx_file_is_rejected(tmp_path):
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 10, 28, 28) + b"\x00" * 100)
    with pytest.raises(ValueError, match="truncated"):
        data_mod._read_idx(p)
