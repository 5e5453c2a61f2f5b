"""Reading an uploaded class-folder zip safely: the archive is checked before anything is read
(size, member count, central directory, paths, symlinks, the class-folder layout, declared sizes,
images per class) and every member is read through a bounded stream whose declared size is not
trusted. Part of `core.data.uploaded`, which turns the members into a dataset."""
from __future__ import annotations

import io
import re
import stat
import struct
import zipfile
import zlib

from core.base import limits
from core.data.types import ImageError

READ_CHUNK = 1 << 16              # bytes asked of a zip member per read
IGNORED_FILES = {"thumbs.db", "desktop.ini"}  # litter that file managers add to folders
ALLOWED_COMPRESSION = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
MAX_BAD_LISTED = 20               # undecodable images (or short classes) named in one message; the rest counted


class DatasetUploadError(ValueError):
    """An uploaded dataset that is refused; the message says why and what to fix."""


def _central_directory(data: bytes) -> tuple[int, int]:
    """(entries, central directory bytes) from the end-of-central-directory record, read before
    zipfile parses the directory: a few bytes must not make it build millions of entries."""
    at = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 65535))
    if at < 0 or len(data) < at + 22:
        raise DatasetUploadError("the upload is not a zip archive (no end-of-archive record); "
                                 "zip the class folders and upload the .zip file")
    _, _, _, entries, cd_bytes, _, _ = struct.unpack("<HHHHIIH", data[at + 4:at + 22])
    return entries, cd_bytes


def _open_archive(data: bytes) -> zipfile.ZipFile:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise DatasetUploadError(f"the upload must be bytes, not {type(data).__name__}")
    if len(data) == 0:
        raise DatasetUploadError("the upload is empty")
    if len(data) > limits.MAX_ZIP_BYTES:
        raise DatasetUploadError(f"the zip is {len(data) / 1e6:.1f} MB; the limit is {limits.MAX_ZIP_BYTES / 1e6:.0f} MB")
    entries, cd_bytes = _central_directory(bytes(data[-(22 + 65535):]))
    # 0xFFFF / 0xFFFFFFFF mean "see the zip64 record": only archives far past these limits need it
    if entries > limits.MAX_ZIP_MEMBERS:
        raise DatasetUploadError(f"the zip declares {entries:,} entries or more; the limit is {limits.MAX_ZIP_MEMBERS:,}")
    if cd_bytes > limits.MAX_ZIP_CENTRAL_DIR_BYTES:
        raise DatasetUploadError(f"the zip's directory is {cd_bytes:,} bytes; the limit is "
                                 f"{limits.MAX_ZIP_CENTRAL_DIR_BYTES:,} (too many or too long entries)")
    try:
        zf = zipfile.ZipFile(io.BytesIO(bytes(data)))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, ValueError,
            EOFError, struct.error) as e:
        raise DatasetUploadError(f"the upload is not a readable zip archive ({str(e)[:150]})") from None
    if len(zf.infolist()) > limits.MAX_ZIP_MEMBERS:
        raise DatasetUploadError(f"the zip holds {len(zf.infolist()):,} entries; the limit is {limits.MAX_ZIP_MEMBERS:,}")
    return zf


def _parts(info: zipfile.ZipInfo) -> list[str]:
    """The path components of a member, refused when the path or the entry type is unsafe."""
    raw = info.orig_filename
    shown = raw[:200]
    if "\x00" in raw:
        raise DatasetUploadError(f"{shown!r}: a NUL byte in a file name")
    name = raw.replace("\\", "/")   # a Windows separator is a separator here, never part of a name
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise DatasetUploadError(f"{shown}: an absolute path; the zip may only hold relative class-folder paths")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DatasetUploadError(f"{shown}: a path with '..'; the zip may only hold paths inside its class folders")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise DatasetUploadError(f"{shown}: a symbolic link; the zip may only hold image files and folders")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise DatasetUploadError(f"{shown}: a special file (mode {oct(mode)}); the zip may only hold image files and folders")
    if info.flag_bits & 0x1:
        raise DatasetUploadError(f"{shown}: an encrypted member; upload a zip without a password")
    if not parts:
        raise DatasetUploadError(f"{shown!r}: an empty member name")
    return parts


def _ignored(parts: list[str]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1].lower() in IGNORED_FILES


def _layout(zf: zipfile.ZipFile) -> tuple[list[str], dict[str, list[zipfile.ZipInfo]], int]:
    """(sorted class names, class -> its members sorted by path, entries ignored), with every
    path, type, declared size and count checked."""
    files: list[tuple[list[str], zipfile.ZipInfo]] = []
    ignored = 0
    declared_total = 0
    seen: set[str] = set()
    for info in zf.infolist():
        parts = _parts(info)                      # every entry, ignored ones too, must be safe
        if info.is_dir() or _ignored(parts):
            ignored += not info.is_dir()
            continue
        key = "/".join(parts)
        if key in seen:
            raise DatasetUploadError(f"{key}: appears twice in the zip")
        seen.add(key)
        if info.compress_type not in ALLOWED_COMPRESSION:
            raise DatasetUploadError(f"{key}: compression method {info.compress_type} is not supported "
                                     "(use a plain zip: stored or deflate)")
        if info.file_size > limits.MAX_DATASET_IMAGE_BYTES:
            raise DatasetUploadError(f"{key}: declares {info.file_size:,} bytes unpacked; the limit for one image "
                                     f"is {limits.MAX_DATASET_IMAGE_BYTES:,}")
        declared_total += info.file_size
        if declared_total > limits.MAX_ZIP_UNCOMPRESSED:
            raise DatasetUploadError(f"the zip declares more than {limits.MAX_ZIP_UNCOMPRESSED / 1e6:,.0f} MB unpacked "
                                     "in all (a zip bomb, or too big a dataset)")
        files.append((parts, info))
    if not files:
        raise DatasetUploadError("the zip holds no files; expected one folder per class with images inside")
    # one optional top-level folder wrapping the class folders
    if all(len(p) == 3 for p, _ in files) and len({p[0] for p, _ in files}) == 1:
        files = [(p[1:], i) for p, i in files]
    for parts, _ in files:
        if len(parts) != 2:
            raise DatasetUploadError(f"{'/'.join(parts)}: not inside a class folder; the zip must hold "
                                     "CLASS/IMAGE files (optionally all inside one top-level folder), nothing else")
    classes: dict[str, list[zipfile.ZipInfo]] = {}
    for (cls, _), info in files:
        if len(cls) > 100 or any(ord(ch) < 32 or ord(ch) == 127 for ch in cls):
            raise DatasetUploadError(f"{cls[:100]!r}: not a usable class name (at most 100 printable characters)")
        classes.setdefault(cls, []).append(info)
    names = sorted(classes)   # as torchvision's ImageFolder: class index = position in sorted order
    if len(names) < 2:
        raise DatasetUploadError(f"the zip holds one class ({names[0]!r}); a dataset needs at least two class folders")
    few = [f"{c!r} has {len(classes[c])}" for c in names if len(classes[c]) < limits.MIN_IMAGES_PER_CLASS]
    if few:
        raise DatasetUploadError(f"every class needs at least {limits.MIN_IMAGES_PER_CLASS} images (one for validation, "
                                 f"one for test, the rest for training): {', '.join(few[:MAX_BAD_LISTED])}"
                                 + (f" and {len(few) - MAX_BAD_LISTED} more" if len(few) > MAX_BAD_LISTED else ""))
    for c in names:
        classes[c].sort(key=lambda i: i.orig_filename)
    return names, classes, ignored


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, *, what: str = "") -> bytes:
    """A member's bytes, read in chunks and refused as soon as it inflates past `limit` bytes
    (whatever its header says), or when it does not match its header. Raises DatasetUploadError
    for a member that is too big, ImageError (naming it) for one that is corrupt."""
    what = what or info.filename
    out = bytearray()
    try:
        with zf.open(info) as f:
            while True:
                piece = f.read(min(READ_CHUNK, limit + 1 - len(out)))
                if not piece:
                    break
                out += piece
                if len(out) > limit:
                    raise DatasetUploadError(f"{what}: inflates to more than {limit:,} bytes (its header says "
                                             f"{info.file_size:,}); refused as a zip bomb")
    except DatasetUploadError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError) as e:
        raise ImageError(f"{what}: the zip member is corrupt ({str(e)[:120]})") from None
    if len(out) != info.file_size:
        raise ImageError(f"{what}: holds {len(out):,} bytes but its header says {info.file_size:,}; the zip is corrupt")
    return bytes(out)
