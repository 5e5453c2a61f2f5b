import functools
import gzip
import struct

import numpy as np
import pytest
import torch

from core.data import builtin
from core.data import datasets as data_mod
from core.data.datasets import get_info, list_datasets, load_dataset


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
    monkeypatch.setattr(builtin, "DEBIAN_FASHION_DIR", tmp_path / "nothing")
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
        builtin._read_idx(p)


# ---------------------------------------------------------------- uploaded images

def _encode(img, fmt="PNG", **kw) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@functools.lru_cache(maxsize=1)
def _image_cases() -> dict:
    import random

    from PIL import Image

    good = _encode(Image.radial_gradient("L").resize((64, 64)))
    photo = _encode(Image.effect_noise((300, 300), 60).convert("RGB"), "JPEG", quality=90)
    return {
        # 144 million pixels in ~140 KB: over PIL's own warning threshold (its warning made an error)
        "bomb.png": (_encode(Image.new("1", (12000, 12000))), r"bomb.png: a decompression bomb \(Image size \(144000000"),
        # 36 million pixels: under PIL's threshold, over the workbench's explicit limit
        "big.png": (_encode(Image.new("1", (6000, 6000))), r"big.png: 6,000 x 6,000 pixels, a decompression bomb "
                                                            r"\(the limit is 25,000,000 pixels\)"),
        "cut.png": (good[: len(good) // 2], r"cut.png: the image cannot be decoded \(the file is truncated\)"),
        "cut.jpg": (photo[:4000], r"cut.jpg: the image cannot be decoded \(the file is truncated\)"),
        "empty.png": (b"", "empty.png: the file is empty"),
        "noise.png": (random.Random(0).randbytes(5000), r"noise.png: not an image \(readable formats: PNG, JPEG"),
        "notes.txt": (b"just some text, no pixels\n" * 20, "notes.txt: not an image"),
        "logo.svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>',
                     "logo.svg: an SVG/XML drawing, not a raster image"),
        "drawing.png": (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>',
                        "drawing.png: an SVG/XML drawing"),
        "huge.bmp": (bytes(21_000_000), r"huge.bmp: the file is 21.0 MB; the limit is 20 MB"),
        "ghost.eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", "ghost.eps: not an image"),
    }


@pytest.mark.parametrize("name", list(_image_cases()))
def test_every_decoder_error_is_one_clear_image_error_naming_the_file(name):
    import time

    from core.data.datasets import get_info
    from core.data.images import preprocess_image
    from core.data.types import ImageError

    data, match = _image_cases()[name]
    t = time.perf_counter()
    with pytest.raises(ImageError, match=match) as e:
        preprocess_image(data, get_info("fashion-mnist"), filename=name)
    assert time.perf_counter() - t < 1.0
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_the_pixel_limit_is_checked_before_decoding():
    import tracemalloc

    from PIL import Image

    from core.data.datasets import get_info
    from core.data.images import preprocess_image
    from core.data.types import ImageError

    data = _encode(Image.new("L", (5500, 5500)))   # 30 MB of pixels once decoded
    tracemalloc.start()
    with pytest.raises(ImageError, match="a decompression bomb"):
        preprocess_image(data, get_info("fashion-mnist"), filename="x.png")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 5_000_000


def test_an_animated_gif_uses_its_first_frame():
    from PIL import Image

    from core.data.datasets import get_info
    from core.data.images import preprocess_image

    frames = [Image.radial_gradient("L").resize((40, 40)), Image.new("L", (40, 40), 255), Image.new("L", (40, 40), 90)]
    gif = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    info = get_info("fashion-mnist")
    got = preprocess_image(gif, info, filename="anim.gif")
    assert torch.equal(got, preprocess_image(_encode(frames[0], "GIF"), info))
    assert not torch.equal(got, preprocess_image(_encode(frames[1]), info))
    rgb = preprocess_image(gif, get_info("cifar10"), filename="anim.gif")
    assert rgb.shape == (1, 3, 32, 32)


def test_good_images_keep_their_greyscale_conversion_and_inversion():
    from PIL import Image

    from core.data.datasets import get_info
    from core.data.images import preprocess_image

    info = get_info("fashion-mnist")
    dark = Image.new("L", (56, 56), 0)
    dark.paste(200, (14, 14, 42, 42))                    # light object on a dark background, like the dataset
    light = Image.new("RGB", (56, 56), (255, 255, 255))
    light.paste((55, 55, 55), (14, 14, 42, 42))          # a photo: dark object on a light background
    x_dark, x_light = preprocess_image(_encode(dark), info), preprocess_image(_encode(light, "JPEG"), info)
    assert x_dark.shape == x_light.shape == (1, 1, 28, 28)
    centre = (slice(None), slice(None), slice(10, 18), slice(10, 18))
    assert torch.allclose(x_dark[centre], x_light[centre], atol=0.05)   # inverted to look the same
    assert torch.allclose(preprocess_image(_encode(light), info, invert=False)[0, 0, 0, 0],
                          torch.tensor((1.0 - info.mean[0]) / info.std[0]))
