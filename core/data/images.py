"""One uploaded image: decoded within bounds (bytes, pixels checked before decoding, formats a
raster decoder handles), turned upright, and made into the input a dataset's models take."""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from core.base.limits import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from core.data.preprocess import input_image, prepare, standard_mode
from core.data.types import DatasetInfo, ImageError, Split

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


def prepare_image(image_bytes: bytes, info: DatasetInfo, invert: bool | None = None, *,
                  filename: str = "image", keep_steps: bool = False):
    """Decode uploaded bytes and make the input `info`'s models take, the way the dataset's own
    images were made (core.data.preprocess.prepare: for Fashion-MNIST greyscale, a light background
    turned dark, the object cropped, scaled to fit and centred in 28x28). Returns a
    core.data.preprocess.Prepared (`.tensor` (1, C, H, W) normalised, `.pixels`, and with `keep_steps`
    the intermediate images). A file that is not a usable image is one ImageError naming `filename`."""
    side = max(info.image_size * 4, 512)   # a JPEG far bigger than needed is decoded at a reduced scale
    img = open_image(image_bytes, filename, draft=("L" if info.in_channels == 1 else "RGB", side))
    return prepare(img, info, invert, filename=filename, keep_steps=keep_steps)


def preprocess_image(image_bytes: bytes, info: DatasetInfo, invert: bool | None = None, *,
                     filename: str = "image") -> torch.Tensor:
    """Decode an uploaded image into a normalised (1, C, H, W) tensor for `info`'s models
    (see `prepare_image`). A file that is not a usable image is an ImageError naming `filename`
    (see `open_image`)."""
    return prepare_image(image_bytes, info, invert, filename=filename).tensor


# ---------------------------------------------------------------- what the Predict page shows of an input

def thumbnail(img, side: int = 320):
    """A copy of a PIL image at most `side` pixels on its longer side (L, RGB or RGBA)."""
    from PIL import Image

    t = img.copy() if img.mode in ("L", "RGB", "RGBA") else standard_mode(img, 3)
    t.thumbnail((side, side), Image.Resampling.LANCZOS)
    return t


def describe_file(image_bytes: bytes, upright) -> str:
    """'3024 x 4032 JPEG, RGB': the file's own size (a big JPEG is decoded at a reduced scale), as
    shown after `upright` (the decoded image) was turned from its EXIF orientation; '' if unreadable."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(image_bytes)) as im:   # the header only: already decoded once
            w, h, fmt, mode = *im.size, im.format, im.mode
    except Exception:  # noqa: BLE001
        return ""
    if (w > h) != (upright.width > upright.height):
        w, h = h, w                                  # turned upright from its EXIF orientation
    return f"{w} x {h} {fmt or 'image'}, {mode}"


def upload_input(image_bytes: bytes, info: DatasetInfo, invert: bool | None = None, *,
                 filename: str = "image") -> dict:
    """One upload made into `info`'s model input, with what a person checks it by: {"pixels" (uint8
    C, H, W), "tensor" (1, C, H, W) normalised, "original" (a thumbnail, upright), "steps" [(name,
    thumbnail)] of the preprocessing, "notes", "detail"}; or {"error"} for a file that is not a usable
    image. Thumbnails only: never the full-size photo."""
    try:
        p = prepare_image(image_bytes, info, invert, filename=filename, keep_steps=True)
    except ImageError as e:
        return {"error": str(e)}
    original = p.steps[0][1]
    return {"pixels": p.pixels, "tensor": p.tensor, "original": thumbnail(original), "notes": p.notes,
            "steps": [(n, thumbnail(im, 160)) for n, im in p.steps[1:-1]],
            "detail": describe_file(image_bytes, original)}


def draw_samples(split: Split, n: int, seed: int) -> list[dict]:
    """`n` random images of a split (drawn with `seed`, in index order), already the model's input:
    [{"index", "pixels" (uint8 C, H, W), "tensor" (1, C, H, W) normalised, "image" (PIL), "label"}]."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(split), size=min(n, len(split)), replace=False))
    images = split.images[idx].cpu()
    x = split.normalize(images)
    return [{"index": int(i), "pixels": images[j].numpy(), "tensor": x[j:j + 1],
             "image": input_image(images[j].numpy(), 1), "label": int(split.labels[i])} for j, i in enumerate(idx)]
