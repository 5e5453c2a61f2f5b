"""One image, from whatever a person uploads to the input a model was trained on.

The dataset's own construction, replayed on a photo:

- **Fashion-MNIST-like greyscale datasets** (`OBJECT_FRAMES`): the product photos behind
  Fashion-MNIST were trimmed to the object, scaled so that the longest side is 28 pixels,
  inverted (a light background becomes the black background) and centred in a 28x28 frame.
  `prepare` does the same to a phone photo: greyscale, a light background turned dark (decided
  from the border pixels), the background level (a plane fitted to the border, so uneven
  lighting is taken out) subtracted, the object cropped to its bounding box (a threshold
  relative to the background's noise and to the object's contrast, measured on a smoothed copy
  so that sensor noise and specks do not widen the box), the contrast stretched so the object's
  brightest part is white, scaled to fit keeping the aspect ratio and centred in the frame.
- **Colour datasets** (CIFAR-10): scaled so the shorter side fits, then the centre cropped.
- **Uploaded datasets** were stored through `core.data.preprocess.image_array` (a square resize, a light
  background inverted), so their predictions go through that same conversion.

Any mode is accepted: transparency is laid over white (a cut-out product photo), palette and
1-bit images are expanded, 16-bit and 32-bit greyscale are scaled to 8 bits by their range,
CMYK and others are converted to RGB. EXIF orientation is applied by `core.data.images.open_image`.

`prepare` returns the model's input and, when asked, the named intermediate images, so a page
can show what the model receives next to the original.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from core.data.types import DatasetInfo, ImageError

WORK_SIDE = 512        # a big photo is shrunk to this longest side first: plenty for a 28-pixel input
MASK_SIDE = 96         # the object is located on a copy this small: averaging is the noise filter
WHITE_QUANTILE = 0.995  # of the cropped object: becomes 255, as the dataset's brightest pixels
FLOOR_SIGMAS = 2.5      # background noise below this many sigmas becomes 0, as the dataset's background
REL_THRESHOLD = 0.08    # object pixels: this fraction of the object's contrast above the background
                        # (Zalando trimmed edges within 5 % of the corner colour; a photo's noise needs a bit more)
SPECK_FRACTION = 0.05   # a part of the mask smaller than this share of its largest part is a speck
BORDER_FRACTION = 0.04  # the border ring that tells the background, as a fraction of the shorter side


@dataclass(frozen=True)
class ObjectFrame:
    """How a greyscale dataset framed its objects: the object's longest side scaled to
    `object_size` pixels, placed in a `frame` x `frame` image at its bounding box's centre
    ("box", Fashion-MNIST) or its centre of mass ("mass", MNIST)."""

    frame: int
    object_size: int
    centre: str = "box"


# Fashion-MNIST: longest side 28 in 28 (measured on the test split: median 28, 5th percentile 27);
# MNIST: digits fitted in 20x20, centred by mass in 28x28 (LeCun et al.); scikit-learn's 8x8 digits,
# upsampled to 28x28, fill the frame (measured: longest side 28 at the 5 % threshold for 95 % of them).
OBJECT_FRAMES: dict[str, ObjectFrame] = {
    "fashion-mnist": ObjectFrame(28, 28, "box"),
    "mnist": ObjectFrame(28, 20, "mass"),
    "digits": ObjectFrame(28, 28, "box"),
}


@dataclass
class Prepared:
    """A model input made from one image. `pixels` is uint8 (C, H, W) as the dataset stores its
    images; `tensor` the normalised (1, C, H, W) float input; `steps` the named intermediate
    images (PIL), original first, when asked for; `notes` one line per decision taken."""

    pixels: np.ndarray
    tensor: torch.Tensor
    steps: list[tuple[str, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    inverted: bool = False
    # (left, top, right, bottom) of the object in the decoded image's pixels (a big JPEG is decoded
    # at a reduced scale: see core.data.images.prepare_image)
    box: tuple[int, int, int, int] | None = None


# ---------------------------------------------------------------- modes

def standard_mode(img, in_channels: int, *, filename: str = "image"):
    """Any PIL image -> "L" (in_channels 1) or "RGB": transparency over white, palette and 1-bit
    expanded, 16/32-bit greyscale and float scaled to 8 bits by their range, CMYK, YCbCr, LAB, HSV
    converted. An image PIL cannot convert is an ImageError naming `filename`."""
    from PIL import Image

    want = "L" if in_channels == 1 else "RGB"
    try:
        mode = img.mode
        if mode == want:
            return img
        if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
            a = np.asarray(img, dtype=np.float64)
            hi = 65535.0 if mode.startswith("I;16") else None
            if hi is None:   # 32-bit: a 16-bit PNG opens as "I"; scale by what the values can reach
                lo, top = float(a.min()), float(a.max())
                if lo >= 0 and top <= 255:
                    hi = 255.0
                elif lo >= 0 and top <= 65535:
                    hi = 65535.0
                else:
                    a, hi = a - lo, max(top - lo, 1e-12)
            a = np.clip(np.nan_to_num(a) / hi * 255.0, 0, 255)
            grey = Image.fromarray(np.round(a).astype(np.uint8), "L")
            return grey if want == "L" else grey.convert("RGB")
        if mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
            mode = img.mode
        if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba).convert("RGB")
        elif mode not in ("L", "RGB", "1"):
            img = img.convert("RGB")          # CMYK, YCbCr, LAB, HSV, ...
        return img.convert(want)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001 - an exotic mode PIL cannot convert
        raise ImageError(f"{filename or 'image'}: the image cannot be converted from mode {img.mode} "
                         f"({type(e).__name__}: {str(e)[:120]})") from None


# ---------------------------------------------------------------- the greyscale object pipeline

def _border(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    k = max(1, int(round(BORDER_FRACTION * min(h, w))))
    return np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[k:-k or None, :k].ravel(), a[k:-k or None, -k:].ravel()])


def _border_plane(a: np.ndarray) -> np.ndarray:
    """The background as a plane a + b*x + c*y fitted to the border ring (a photo lit from one side
    has a sloped background), robustly: parts of the object touching the border are left out."""
    h, w = a.shape
    k = max(1, int(round(BORDER_FRACTION * min(h, w))))
    ring = np.zeros((h, w), bool)
    ring[:k], ring[-k:], ring[:, :k], ring[:, -k:] = True, True, True, True
    ys, xs = np.nonzero(ring)
    z = a[ys, xs]
    if z.size > 4000:   # a regular sample of the ring is as good a fit, and much quicker
        step = z.size // 4000 + 1
        ys, xs, z = ys[::step], xs[::step], z[::step]
    if h < 4 or w < 4 or z.size < 12:
        return np.full_like(a, float(np.median(z)))
    A = np.stack([np.ones_like(xs, dtype=np.float64), xs / w, ys / h], axis=1)
    # the object is brighter than the background (it was turned dark first), so where it touches
    # the border it sits above the plane: start from the darker half, then keep what fits
    keep = z <= np.median(z)
    for _ in range(3):
        coef, *_ = np.linalg.lstsq(A[keep], z[keep], rcond=None)
        resid = z - A @ coef
        sigma = 1.4826 * float(np.median(np.abs(resid[keep]))) + 0.5
        keep = resid < 3.0 * sigma
        if keep.sum() < 3:
            break
    yy, xx = np.ogrid[0:h, 0:w]
    return coef[0] + coef[1] * (xx / w) + coef[2] * (yy / h)


def _shrink(a: np.ndarray, side: int) -> np.ndarray:
    """Area-average a float image so its longest side is at most `side`."""
    from PIL import Image

    h, w = a.shape
    s = side / max(h, w)
    if s >= 1:
        return a
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(a.astype(np.float32), "F").resize(size, Image.Resampling.BOX), dtype=np.float64)


def _profile_span(counts: np.ndarray, min_count: float) -> tuple[int, int] | None:
    """First and last index whose count reaches `min_count`."""
    idx = np.nonzero(counts >= min_count)[0]
    return (int(idx[0]), int(idx[-1]) + 1) if idx.size else None


def _components(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Label the 8-connected components of a small boolean mask: (labels, sizes); label k + 1 has
    sizes[k] pixels. A flood fill over the set pixels (the mask is at most MASK_SIDE square)."""
    h, w = mask.shape
    labels = np.zeros((h, w), np.int32)
    sizes: list[int] = []
    for y0, x0 in zip(*np.nonzero(mask), strict=True):
        if labels[y0, x0]:
            continue
        sizes.append(0)
        lab = len(sizes)
        labels[y0, x0] = lab
        stack = [(int(y0), int(x0))]
        while stack:
            y, x = stack.pop()
            sizes[-1] += 1
            for yy in (y - 1, y, y + 1):
                if 0 <= yy < h:
                    for xx in (x - 1, x, x + 1):
                        if 0 <= xx < w and mask[yy, xx] and not labels[yy, xx]:
                            labels[yy, xx] = lab
                            stack.append((yy, xx))
    return labels, sizes


def _drop_specks(mask: np.ndarray) -> np.ndarray:
    """Keep the object's parts: components at least SPECK_FRACTION of the largest one (dust, a
    crumb, a sensor's hot pixel are far smaller than any part of a shoe's outline)."""
    if not mask.any():
        return mask
    labels, sizes = _components(mask)
    big = max(sizes)
    keep = [k + 1 for k, n in enumerate(sizes) if n >= max(1, SPECK_FRACTION * big)]
    return np.isin(labels, keep)


def locate_object(d: np.ndarray) -> tuple[tuple[int, int, int, int] | None, float]:
    """The bounding box (left, top, right, bottom) of the object in `d`, a background-subtracted
    image where the object is brighter than zero, and the threshold used. None: nothing stands out.

    Found on a copy shrunk to MASK_SIDE by area averaging (noise averages out, specks fade), with a
    threshold above the border's own noise and relative to the object's contrast; parts of the mask
    much smaller than the object's main part (specks of dust) do not widen the box."""
    h, w = d.shape
    small = _shrink(d, MASK_SIDE)
    sh, sw = small.shape
    border = _border(small)
    noise = 1.4826 * float(np.median(np.abs(border - np.median(border))))   # robust sigma of the background
    peak = float(np.quantile(small, 0.995))
    thr = max(4.0 * noise + 2.0, REL_THRESHOLD * peak)
    if peak < 8.0 or peak <= 4.0 * noise + 2.0:
        return None, thr
    mask = _drop_specks(small > thr)
    rows = _profile_span(mask.sum(1), 1)
    cols = _profile_span(mask.sum(0), 1)
    if rows is None or cols is None:
        return None, thr
    sy, sx = h / sh, w / sw          # back to the full image: one small pixel covers sy x sx
    top, bottom = int(np.floor(rows[0] * sy)), int(np.ceil(rows[1] * sy))
    left, right = int(np.floor(cols[0] * sx)), int(np.ceil(cols[1] * sx))
    # refine on the full-resolution rows/columns inside (and one small pixel around) the coarse box
    pad_y, pad_x = int(np.ceil(sy)), int(np.ceil(sx))
    t0, b0 = max(0, top - pad_y), min(h, bottom + pad_y)
    l0, r0 = max(0, left - pad_x), min(w, right + pad_x)
    fine = d[t0:b0, l0:r0] > thr
    fr = _profile_span(fine.sum(1), max(1.0, 0.02 * (r0 - l0)))
    fc = _profile_span(fine.sum(0), max(1.0, 0.02 * (b0 - t0)))
    if fr is not None and fc is not None:
        top, bottom, left, right = t0 + fr[0], t0 + fr[1], l0 + fc[0], l0 + fc[1]
    return (left, top, right, bottom), thr


def _place(obj: np.ndarray, frame: ObjectFrame) -> np.ndarray:
    """Scale a cropped object (float, 0..255) so its longest side is frame.object_size and put it
    in a black frame x frame image at the box centre or the centre of mass."""
    from PIL import Image

    h, w = obj.shape
    s = frame.object_size / max(h, w)
    size = (min(frame.frame, max(1, round(w * s))), min(frame.frame, max(1, round(h * s))))
    scaled = np.asarray(Image.fromarray(obj.astype(np.float32), "F").resize(size, Image.Resampling.LANCZOS),
                        dtype=np.float64)
    out = np.zeros((frame.frame, frame.frame))
    nh, nw = scaled.shape
    top, left = (frame.frame - nh + 1) // 2, (frame.frame - nw + 1) // 2   # odd padding: one more before, as the dataset
    if frame.centre == "mass" and scaled.sum() > 0:
        yy, xx = np.mgrid[0:nh, 0:nw]
        cy, cx = (scaled * yy).sum() / scaled.sum(), (scaled * xx).sum() / scaled.sum()
        top = int(np.clip(round((frame.frame - 1) / 2 - cy), 0, frame.frame - nh))
        left = int(np.clip(round((frame.frame - 1) / 2 - cx), 0, frame.frame - nw))
    out[top:top + nh, left:left + nw] = scaled
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _grey_object(img, frame: ObjectFrame, invert: bool | None, keep_steps: bool, out: Prepared) -> np.ndarray:
    from PIL import Image

    work = img
    if max(work.size) > WORK_SIDE:
        work = work.copy()
        work.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
        out.notes.append(f"shrunk from {img.size[0]}x{img.size[1]} to {work.size[0]}x{work.size[1]} to work on")
    scale = img.size[0] / work.size[0]
    a = np.asarray(work, dtype=np.float64)
    if keep_steps:
        out.steps.append(("greyscale", work))
    border_level = float(np.median(_border(a)))
    if invert is None:
        invert = border_level > 127
        if invert:
            out.notes.append(f"light background (border median {border_level:.0f} of 255) turned dark, "
                             "as in the dataset")
    elif invert:
        out.notes.append("inverted (asked for)")
    if invert:
        a = 255.0 - a
    out.inverted = bool(invert)
    if keep_steps and invert:
        out.steps.append(("inverted", Image.fromarray(np.round(a).astype(np.uint8), "L")))
    background = _border_plane(a)
    if float(np.median(_border(background))) > 127:
        # no dark background to cut the object out of (e.g. inversion turned off for a light photo):
        # the whole image is the object, scaled to fit as it is
        out.notes.append("no dark background to crop against: the whole image is scaled to fit")
        return _place(a, frame)
    resid = a - background
    ring = _border(resid)
    noise = 1.4826 * float(np.median(np.abs(ring - np.median(ring))))   # the background's own grain
    d = np.clip(resid, 0, None)
    box, thr = locate_object(d)
    if box is None:
        out.notes.append("no object stands out from the background: the whole image is scaled to fit")
        return _place(d, frame)
    left, top, right, bottom = box
    out.box = tuple(int(round(v * scale)) for v in box)  # type: ignore[assignment]
    crop = d[top:bottom, left:right]
    # contrast as in the dataset: the object's brightest part (a high percentile, so one hot pixel
    # does not decide) becomes white, and the background's noise becomes the dataset's black
    white = float(np.quantile(crop, WHITE_QUANTILE))
    floor = min(FLOOR_SIGMAS * noise, 0.5 * white)
    crop = np.clip((crop - floor) / max(white - floor, 1e-6), 0, 1) * 255.0
    out.notes.append(f"object cropped to {right - left}x{bottom - top} pixels at ({left}, {top}) of the "
                     f"{work.size[0]}x{work.size[1]} image; scaled so its longest side is {frame.object_size} "
                     f"and centred in {frame.frame}x{frame.frame}")
    if keep_steps:
        out.steps.append(("cropped, contrast stretched", Image.fromarray(np.round(crop).astype(np.uint8), "L")))
    return _place(crop, frame)


# ---------------------------------------------------------------- the entry point

def _normalise(pixels: np.ndarray, info: DatasetInfo) -> torch.Tensor:
    x = torch.from_numpy(pixels).unsqueeze(0).float().div_(255.0)
    c = x.shape[1]
    mean = torch.tensor(info.mean, dtype=torch.float32).view(1, c, 1, 1)
    std = torch.tensor(info.std, dtype=torch.float32).view(1, c, 1, 1)
    return (x - mean) / std


def prepare(img, info: DatasetInfo, invert: bool | None = None, *, filename: str = "image",
            keep_steps: bool = False) -> Prepared:
    """A decoded PIL image (see core.data.images.open_image) -> the input `info`'s models take.

    `invert` (greyscale only): None decides from the border whether the background is light and
    must be turned dark; True/False force it. With `keep_steps`, `Prepared.steps` holds the
    original and each intermediate image, ending with the model's input."""
    from PIL import Image, ImageOps

    out = Prepared(pixels=np.zeros(0, np.uint8), tensor=torch.zeros(0))
    if keep_steps:
        out.steps.append(("original", img))
    frame = OBJECT_FRAMES.get(info.name) if not info.uploaded else None
    if info.uploaded:
        pixels = image_array(img, info.in_channels, info.image_size, invert, filename=filename)
        out.notes.append(f"resized to {info.image_size}x{info.image_size} as the uploaded dataset's images were")
    elif info.in_channels == 1 and frame is not None and frame.frame == info.image_size:
        grey = standard_mode(img, 1, filename=filename)
        pixels = _grey_object(grey, frame, invert, keep_steps, out)[None]
    elif info.in_channels == 1:
        grey = standard_mode(img, 1, filename=filename)
        pixels = image_array(grey, 1, info.image_size, invert, filename=filename)
    else:
        rgb = standard_mode(img, 3, filename=filename)
        s = info.image_size
        fitted = ImageOps.fit(rgb, (s, s), Image.Resampling.LANCZOS)
        pixels = np.asarray(fitted, dtype=np.uint8).transpose(2, 0, 1).copy()
        out.notes.append(f"shorter side scaled to {s}, the centre cropped to {s}x{s}")
    out.pixels = np.ascontiguousarray(pixels)
    out.tensor = _normalise(out.pixels, info)
    if keep_steps:
        out.steps.append(("model input", input_image(out.pixels)))
    return out


def input_image(pixels: np.ndarray, scale: int = 1):
    """uint8 (C, H, W) -> a PIL image ("L" or "RGB"), enlarged `scale` times with sharp pixels."""
    from PIL import Image

    arr = pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)
    im = Image.fromarray(np.ascontiguousarray(arr), "L" if pixels.shape[0] == 1 else "RGB")
    return im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST) if scale > 1 else im


def image_array(img, in_channels: int, image_size: int, invert: bool | None = None, *,
                filename: str = "image") -> np.ndarray:
    """A decoded PIL image -> uint8 (C, S, S): greyscale or RGB, resized to a square.

    Greyscale datasets show light objects on a dark background; photos are usually the reverse,
    so by default (`invert=None`) a light-background image is inverted (decided from the border
    pixels). Uploaded datasets are stored through this same function, so a prediction sees an
    image converted as the training images were. Any mode is accepted (core.data.preprocess.standard_mode:
    transparency over white, 16-bit scaled, CMYK converted)."""
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
