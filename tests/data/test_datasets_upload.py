"""Uploaded zips of class folders become workspace datasets; hostile or broken zips write nothing."""
from __future__ import annotations

import io
import stat
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from core.base import limits
from core.data import datasets as data_mod
from core.data import uploaded as up
from core.data.datasets import cached_dataset, get_info, list_datasets, load_dataset, sample_grid
from core.data.uploaded import DatasetUploadError, delete_uploaded, import_image_zip, list_uploaded


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def digit_pngs() -> dict[str, list[bytes]]:
    """scikit-learn's digits 0..3, 8 per class, as 8x8 greyscale PNGs (dark digit on white)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    out: dict[str, list[bytes]] = {}
    for img, t in zip(d.images, d.target, strict=True):
        if t < 4 and len(out.setdefault(str(t), [])) < 8:
            out[str(t)].append(_png((255 - img * 15).astype(np.uint8)))
    return out


def _zip(entries: dict[str, bytes], **kw) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, **kw) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _class_entries(pngs: dict[str, list[bytes]], prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}{c}/{i:03d}.png": b for c, items in pngs.items() for i, b in enumerate(items)}


@pytest.fixture
def ws(tmp_path, monkeypatch):
    root = tmp_path / "ws"
    root.mkdir()
    monkeypatch.setenv("WORKBENCH_HOME", str(root))
    return root


def _tree(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _refused(ws, data: bytes, match: str, name: str = "mine", **kw) -> str:
    """Import must fail with `match` and leave the workspace and its parent exactly as they were."""
    before, around = _tree(ws), _tree(ws.parent)
    with pytest.raises(DatasetUploadError, match=match) as e:
        import_image_zip(ws, data, name, **kw)
    assert _tree(ws) == before and _tree(ws.parent) == around
    return str(e.value)


# ---------------------------------------------------------------- a valid zip

def test_valid_zip_becomes_a_listed_loadable_dataset(ws, digit_pngs):
    data = _zip({**_class_entries(digit_pngs, "digits/"), "__MACOSX/digits/._0": b"junk", "digits/0/.DS_Store": b"x"})
    calls = []
    info = import_image_zip(ws, data, "my-digits", filename="/home/me/digits.zip",
                            progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (32, 32) and len(calls) == 32
    assert info.uploaded and info.name == "my-digits"
    assert info.class_names == ("0", "1", "2", "3") and info.input_shape == (1, 28, 28)
    assert sorted(p.name for p in (ws / "datasets" / "my-digits").iterdir()) == ["data.safetensors", "dataset.json"]
    assert [p.name for p in (ws / "datasets").iterdir()] == ["my-digits"]   # no temp folder left

    assert "my-digits" in [d.name for d in list_datasets()]           # WORKBENCH_HOME's workspace
    assert [d.name for d in list_uploaded(ws)] == ["my-digits"]
    assert get_info("my-digits") == info
    ds = load_dataset("my-digits")
    # 8 per class: 1 val (round(1.2)), 1 test, 6 train; every class in every split
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 4, 4)
    for split in (ds.train, ds.val, ds.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (1, 28, 28)
        assert sorted(set(split.labels.tolist())) == [0, 1, 2, 3]
    # light background inverted, as preprocess_image does: dark corners, bright strokes
    assert float(ds.train.images[:, 0, 0, 0].float().mean()) < 10 and int(ds.train.images.max()) > 200
    x, _ = next(ds.train.batches(64))
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 0.05   # mean/std from the train split
    m = ds.extra["manifest"]
    assert m["source"]["filename"] == "digits.zip" and len(m["source"]["sha256"]) == 64
    assert m["source"]["ignored_files"] == 2 and m["counts"]["val"] == {"0": 1, "1": 1, "2": 1, "3": 1}

    again = load_dataset("my-digits")
    assert torch.equal(again.train.images, ds.train.images) and torch.equal(again.test.labels, ds.test.labels)
    cached = cached_dataset("my-digits")
    assert cached is cached_dataset("my-digits") and torch.equal(cached.val.images, ds.val.images)
    assert len(cached_dataset("my-digits", 10).train) == 10
    assert data_mod.dataset_available("my-digits")

    grid = sample_grid("my-digits", per_class=3)
    assert [c for c, _ in grid] == ["0", "1", "2", "3"]
    assert all(a.shape == (3, 28, 28) and a.dtype == np.uint8 for _, a in grid)


def test_split_is_deterministic_and_rgb_option(ws, digit_pngs, tmp_path):
    data = _zip(_class_entries(digit_pngs))
    a = import_image_zip(ws, data, "a", in_channels=3, image_size=32)
    import_image_zip(ws, data, "b", in_channels=3, image_size=32)
    assert a.input_shape == (3, 32, 32) and len(a.mean) == 3
    da, db = load_dataset("a"), load_dataset("b")
    assert torch.equal(da.test.images, db.test.images) and torch.equal(da.train.labels, db.train.labels)
    grid = sample_grid(da, per_class=2, split="val")
    assert all(arr.shape == (1, 32, 32, 3) for _, arr in grid)   # one val image per class
    # another workspace does not see them, and the cache does not serve them there
    other = tmp_path / "other"
    other.mkdir()
    assert list_uploaded(other) == []
    with pytest.raises(ValueError, match="unknown dataset 'a'"):
        get_info("a", other)
    with pytest.raises(ValueError, match="unknown dataset 'a'"):
        cached_dataset("a", workspace_root=other)
    # an explicit workspace (a worker started with --workspace) finds them without WORKBENCH_HOME
    assert cached_dataset("a", workspace_root=ws).info == a


def test_photos_are_decoded_small_and_converted_like_predictions(ws):
    from core.data.images import open_image
    from core.data.preprocess import image_array

    rng = np.random.default_rng(0)
    entries = {}
    for c, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        for i in range(5):
            arr = np.clip(np.array(colour) + rng.normal(0, 10, (480, 640, 3)), 0, 255).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=90)
            entries[f"{c}/{i}.jpg"] = buf.getvalue()
    info = import_image_zip(ws, _zip(entries), "colours", in_channels=3, image_size=32)
    assert info.class_names == ("blue", "red")
    ds = load_dataset("colours")
    red = ds.train.images[ds.train.labels == 1].float().mean(dim=(0, 2, 3))
    assert red[0] > 150 and red[2] < 80
    # the reduced-scale JPEG decode stays close to the full decode that a prediction uses
    full = image_array(open_image(entries["red/0.jpg"]), 3, 32).astype(float)
    small = image_array(open_image(entries["red/0.jpg"], draft=("RGB", 32)), 3, 32).astype(float)
    assert np.abs(full - small).mean() < 3


def test_delete_uploaded(ws, digit_pngs):
    import_image_zip(ws, _zip(_class_entries(digit_pngs)), "gone")
    assert cached_dataset("gone").info.name == "gone"
    delete_uploaded("gone")
    assert list_uploaded() == [] and list((ws / "datasets").iterdir()) == []
    with pytest.raises(ValueError, match="unknown dataset 'gone'"):
        cached_dataset("gone")
    with pytest.raises(DatasetUploadError, match="no uploaded dataset 'gone'"):
        delete_uploaded("gone")
    with pytest.raises(DatasetUploadError, match="no uploaded dataset 'digits'"):
        delete_uploaded("digits")


# ---------------------------------------------------------------- refusals: nothing written

def test_paths_outside_the_folders_are_refused(ws, digit_pngs):
    good = _class_entries(digit_pngs)
    _refused(ws, _zip({**good, "../evil.png": b"x"}), r"'\.\.'")
    _refused(ws, _zip({**good, "0/../../evil.png": b"x"}), r"'\.\.'")
    _refused(ws, _zip({**good, "/etc/evil.png": b"x"}), "absolute path")
    _refused(ws, _zip({**good, "C:/evil.png": b"x"}), "absolute path")
    _refused(ws, _zip({**good, "0\\..\\..\\evil.png": b"x"}), r"'\.\.'")
    _refused(ws, _zip({**good, "stray.png": good["0/000.png"]}), "not inside a class folder")
    _refused(ws, _zip({**good, "0/deeper/x.png": good["0/000.png"]}), "not inside a class folder")


def test_symlink_member_is_refused(ws, digit_pngs):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, b in _class_entries(digit_pngs).items():
            zf.writestr(n, b)
        link = zipfile.ZipInfo("1/link.png")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
    _refused(ws, buf.getvalue(), "symbolic link")


def _zeros_member(zf: zipfile.ZipFile, name: str, mb: int) -> None:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        chunk = bytes(1 << 20)
        for _ in range(mb):
            f.write(chunk)


def _bomb(digit_pngs, mb: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, b in _class_entries(digit_pngs).items():
            zf.writestr(n, b)
        _zeros_member(zf, "2/bomb.png", mb)
    return buf.getvalue()


def _lie_about_size(data: bytes, member: str, size: int) -> bytes:
    """Rewrite the uncompressed size in a member's local and central headers (zip64 extra too)."""
    buf = bytearray(data)
    name = member.encode()
    for sig, size_at, name_len_at, extra_len_at, header in ((b"PK\x03\x04", 22, 26, 28, 30),
                                                             (b"PK\x01\x02", 24, 28, 30, 46)):
        at = buf.find(sig)
        while at >= 0:
            n_len, = struct.unpack_from("<H", buf, at + name_len_at)
            e_len, = struct.unpack_from("<H", buf, at + extra_len_at)
            if bytes(buf[at + header:at + header + n_len]) == name:
                struct.pack_into("<I", buf, at + size_at, size)
                e = at + header + n_len
                while e < at + header + n_len + e_len:       # zip64 extra: sizes live there
                    tag, ln = struct.unpack_from("<HH", buf, e)
                    if tag == 1:
                        struct.pack_into("<Q", buf, e + 4, size)
                        struct.pack_into("<I", buf, at + size_at, 0xFFFFFFFF)
                    e += 4 + ln
            at = buf.find(sig, at + 4)
    return bytes(buf)


@pytest.fixture(scope="module")
def bomb200(digit_pngs) -> bytes:
    data = _bomb(digit_pngs, 200)       # 200 MB of zeros in a ~200 KB zip
    assert len(data) < 1_000_000
    return data


def test_zip_bomb_is_refused_from_its_declared_size(ws, bomb200):
    data = bomb200
    _refused(ws, data, "declares 209,715,200 bytes unpacked")


def test_zip_bomb_with_a_lying_header_is_stopped_while_reading(ws, bomb200):
    data = _lie_about_size(bomb200, "2/bomb.png", 1000)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.getinfo("2/bomb.png").file_size == 1000    # the header now lies
    msg = _refused(ws, data, "not usable images")
    assert "2/bomb.png: the zip member is corrupt" in msg and "1 of 33 files" in msg


def test_bounded_reader_stops_at_its_limit_whatever_the_header_says(digit_pngs, monkeypatch):
    zf = zipfile.ZipFile(io.BytesIO(_bomb(digit_pngs, 50)))
    info = zf.getinfo("2/bomb.png")
    info.file_size = 10**12          # no help from zipfile's own truncation at the declared size
    produced = []
    real_read = zipfile.ZipExtFile.read

    def spy(self, n=-1):
        out = real_read(self, n)
        produced.append(len(out))
        return out

    monkeypatch.setattr(zipfile.ZipExtFile, "read", spy)
    with pytest.raises(DatasetUploadError, match="inflates to more than 1,000,000 bytes"):
        up.read_member(zf, info, 1_000_000)
    assert sum(produced) <= 1_000_000 + up.READ_CHUNK        # stopped at the limit, not at 50 MB


def test_total_inflated_size_is_bounded(ws, digit_pngs, monkeypatch):
    monkeypatch.setattr(limits, "MAX_ZIP_UNCOMPRESSED", 2_000)
    _refused(ws, _zip(_class_entries(digit_pngs)), "more than 0 MB unpacked in all")


def test_too_many_members_and_too_large_upload(ws, digit_pngs, monkeypatch):
    monkeypatch.setattr(limits, "MAX_ZIP_MEMBERS", 10)
    good = _zip(_class_entries(digit_pngs))
    _refused(ws, good, "declares 32 entries or more; the limit is 10")
    lying = bytearray(good)                     # the end record says 1 entry; the directory holds 32
    at = lying.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", lying, at + 8, 1, 1)
    _refused(ws, bytes(lying), "holds 32 entries; the limit is 10")
    monkeypatch.setattr(limits, "MAX_ZIP_CENTRAL_DIR_BYTES", 100)
    _refused(ws, bytes(lying), r"the zip's directory is [\d,]+ bytes; the limit is 100")
    monkeypatch.setattr(limits, "MAX_ZIP_BYTES", 1000)
    _refused(ws, _zip(_class_entries(digit_pngs)), "the limit is 0 MB")


def test_class_count_and_images_per_class(ws, digit_pngs):
    _refused(ws, _zip(_class_entries({"0": digit_pngs["0"]})), "one class .'0'.; a dataset needs at least two")
    _refused(ws, _zip(_class_entries({"0": digit_pngs["0"]}, "top/")), "one class")
    few = {"0": digit_pngs["0"], "1": digit_pngs["1"][:4]}
    assert limits.MIN_IMAGES_PER_CLASS == 5
    _refused(ws, _zip(_class_entries(few)), "at least 5 images .*'1' has 4")
    _refused(ws, _zip({"a/": b"", "b/": b""}), "holds no files")


def test_undecodable_images_are_all_named(ws, digit_pngs):
    entries = _class_entries(digit_pngs)
    entries["1/notes.txt"] = b"not an image"
    entries["2/broken.png"] = entries["2/000.png"][:40]
    entries["3/empty.png"] = b""
    msg = _refused(ws, _zip(entries), "3 of 35 files are not usable images")
    assert "1/notes.txt: not an image" in msg and "2/broken.png" in msg and "3/empty.png: the file is empty" in msg


def test_image_pixel_limit(ws, digit_pngs, monkeypatch):
    monkeypatch.setattr(limits, "MAX_DATASET_IMAGE_PIXELS", 63)     # the digits are 8x8 = 64
    msg = _refused(ws, _zip(_class_entries(digit_pngs)), "32 of 32 files")
    assert "decompression bomb" in msg and "and 12 more" in msg    # 20 listed, the rest counted


def test_not_a_zip_and_other_bad_input(ws, digit_pngs):
    _refused(ws, b"PK\x03\x04 this is not really a zip" * 10, "not a zip archive")
    _refused(ws, _png(np.zeros((8, 8), np.uint8)), "not a zip archive")
    _refused(ws, b"", "empty")
    good = _zip(_class_entries(digit_pngs))
    _refused(ws, good, "in_channels must be 1", in_channels=2)
    _refused(ws, good, "image_size must be", image_size=100_000)


@pytest.mark.parametrize("name", ["", "My Digits", "../x", "a/b", "-x", "x" * 41, ".hidden", "Digits"])
def test_bad_names_are_refused(ws, digit_pngs, name):
    _refused(ws, _zip(_class_entries(digit_pngs)), "not a dataset name", name=name)


def test_builtin_and_used_names_are_refused(ws, digit_pngs):
    good = _zip(_class_entries(digit_pngs))
    _refused(ws, good, "built-in dataset", name="fashion-mnist")
    import_image_zip(ws, good, "taken")
    _refused(ws, good, "already exists", name="taken")


def test_a_failed_write_leaves_nothing(tmp_path, digit_pngs, monkeypatch):
    import safetensors.numpy

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.numpy, "save_file", full_disk)
    root = tmp_path / "new-ws"                       # not there yet: created, then removed again
    with pytest.raises(DatasetUploadError, match="cannot write the dataset 'x' .*No space left"):
        import_image_zip(root, _zip(_class_entries(digit_pngs)), "x")
    assert not root.exists()


def test_a_damaged_stored_dataset_is_named(ws, digit_pngs):
    import_image_zip(ws, _zip(_class_entries(digit_pngs)), "dmg")
    (ws / "datasets" / "dmg" / "dataset.json").write_text("{not json")
    assert list_uploaded() == []
    with pytest.raises(ValueError, match="uploaded dataset 'dmg' cannot be used: .*unreadable"):
        load_dataset("dmg")
    assert not data_mod.dataset_available("dmg")
    import_image_zip(ws, _zip(_class_entries(digit_pngs)), "cut")
    arrays = ws / "datasets" / "cut" / "data.safetensors"
    arrays.write_bytes(arrays.read_bytes()[:500])
    with pytest.raises(data_mod.DatasetUnavailable, match="data.safetensors: unreadable"):
        load_dataset("cut")


def test_unknown_names_do_not_reach_the_file_system(ws):
    for name in ("../../etc", "nope"):
        with pytest.raises(ValueError, match="unknown dataset"):
            load_dataset(name)
        assert not data_mod.dataset_available(name)
