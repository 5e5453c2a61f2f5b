"""Fashion-MNIST test images re-rendered as a person would photograph them.

    .venv/bin/python scripts/make_photo_testset.py --out /tmp/photos --n 300 [--seed 0] [--size 256]
    .venv/bin/python scripts/make_photo_testset.py --evaluate base-lenet5 --n 300   # accuracy, both ways

Each photo is RGB, `size` x `size` pixels or larger: a light, slightly tinted background lit
unevenly (a gradient), the item dark on it (Fashion-MNIST's pixels are the products' photos
inverted: a bright dataset pixel is a dark part of the item), smoothly enlarged to 35-70 % of
the frame, placed off-centre with margins, then a mild blur, sensor noise and a brightness
change. Everything is drawn from one seeded generator, so the same arguments give the same
images. `photo_testset` returns arrays (for tests); `--out` writes PNGs named
`<index>_<label>.png` and a labels.csv.

`--evaluate VARIANT` measures a workspace variant (default workspace: ./workspace, seeded with
the shipped baselines) on the original test images and on their photos, through
`core.data.images.preprocess_image` (the Predict page's and the REST service's path).
"""
from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


@dataclass
class PhotoSet:
    photos: list[np.ndarray]     # uint8 (H, W, 3)
    labels: np.ndarray           # int64 (N,)
    indices: np.ndarray          # which test images (into the dataset's test split)
    originals: np.ndarray        # uint8 (N, 28, 28): the test images themselves


def render_photo(item: np.ndarray, rng: np.random.Generator, size: int = 256) -> np.ndarray:
    """One 28x28 Fashion-MNIST image (uint8, bright object on black) -> an RGB photo (uint8,
    size' x size' with size' in [size, 1.25 size]) of the dark item on a light background."""
    from PIL import Image, ImageFilter

    side = int(rng.integers(size, int(size * 1.25) + 1))
    h = w = side
    # the item: enlarged smoothly to 35..70 % of the frame
    obj_side = int(side * rng.uniform(0.35, 0.70))
    obj = Image.fromarray(item, "L").resize((obj_side, obj_side), Image.Resampling.BICUBIC)
    alpha = np.asarray(obj, dtype=np.float32) / 255.0            # 1 = darkest part of the item
    # off-centre with margins: at least 6 % of the frame on each side
    margin = int(0.06 * side)
    top = int(rng.integers(margin, h - obj_side - margin + 1))
    left = int(rng.integers(margin, w - obj_side - margin + 1))
    coverage = np.zeros((h, w), np.float32)
    coverage[top:top + obj_side, left:left + obj_side] = np.clip(alpha, 0, 1)
    # the background: light paper or a table top, slightly tinted, lit from one side
    base = rng.uniform(195, 245)
    tint = rng.uniform(-8, 8, size=3)
    yy, xx = np.ogrid[0:h, 0:w]
    angle = rng.uniform(0, 2 * np.pi)
    slope = rng.uniform(-14, 14) * 2 / side
    bg = (base + slope * (np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2))).astype(np.float32)
    # the item's colour: dark, tinted; its darkest part at 10..45 % of the background's level
    dark = base * rng.uniform(0.10, 0.45)
    item_tint = rng.uniform(-12, 12, size=3)
    photo = np.empty((h, w, 3), np.float32)
    for c in range(3):
        photo[..., c] = (bg + tint[c]) * (1 - coverage) + (dark + item_tint[c]) * coverage
    # the camera: a little out of focus, brightness off, sensor noise
    img = Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8), "RGB")
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.6)))
    arr = np.asarray(img, dtype=np.float32) * np.float32(rng.uniform(0.85, 1.10))
    arr += rng.standard_normal(size=arr.shape, dtype=np.float32) * np.float32(rng.uniform(1.5, 5.0))
    return np.clip(np.round(arr), 0, 255).astype(np.uint8)


def photo_testset(n: int = 300, seed: int = 0, size: int = 256, split=None) -> PhotoSet:
    """`n` test images (drawn with `seed`, the same for every call) and their photos."""
    if split is None:
        from core.data.datasets import cached_dataset

        split = cached_dataset("fashion-mnist").test
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(split), size=min(n, len(split)), replace=False))
    originals = split.images[idx, 0].cpu().numpy()
    photos = [render_photo(originals[k], rng, size) for k in range(len(idx))]
    return PhotoSet(photos, split.labels[idx].cpu().numpy(), idx, originals)


def png_bytes(photo: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(photo, "RGB").save(buf, "PNG", compress_level=0)
    return buf.getvalue()


def accuracies(model, ps: PhotoSet, info) -> tuple[float, float]:
    """(accuracy on the original test images, accuracy on their photos through preprocess_image)."""
    import torch

    from core.data.images import preprocess_image

    mean = torch.tensor(info.mean).view(1, -1, 1, 1)
    std = torch.tensor(info.std).view(1, -1, 1, 1)
    x_orig = (torch.from_numpy(ps.originals).unsqueeze(1).float() / 255.0 - mean) / std
    x_photo = torch.cat([preprocess_image(png_bytes(p), info, filename=f"photo{k}.png")
                         for k, p in enumerate(ps.photos)])
    y = torch.from_numpy(ps.labels)
    model.eval()
    with torch.no_grad():
        a = (model(x_orig).argmax(1) == y).float().mean().item()
        b = (model(x_photo).argmax(1) == y).float().mean().item()
    return a, b


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300, help="how many test images (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, help="smallest photo side in pixels (default 256)")
    ap.add_argument("--out", help="write the photos here as PNGs, with labels.csv")
    ap.add_argument("--evaluate", metavar="VARIANT", help="measure a variant on originals and photos")
    ap.add_argument("--workspace", help="workspace for --evaluate (default: $WORKBENCH_HOME or ./workspace)")
    a = ap.parse_args()
    if a.size < 64:
        ap.error("--size must be at least 64")
    ps = photo_testset(a.n, a.seed, a.size)
    if a.out:
        from core.data.types import FASHION_CLASSES

        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        lines = ["file,label,class,test_index"]
        for k, (p, y, i) in enumerate(zip(ps.photos, ps.labels, ps.indices, strict=True)):
            name = f"{k:04d}_{int(y)}.png"
            (out / name).write_bytes(png_bytes(p))
            lines.append(f"{name},{int(y)},{FASHION_CLASSES[int(y)]},{int(i)}")
        (out / "labels.csv").write_text("\n".join(lines) + "\n")
        print(f"wrote {len(ps.photos)} photos to {out}")
    if a.evaluate:
        from core.data.datasets import get_info
        from core.store.workspace import Workspace

        ws = Workspace(a.workspace)
        v = ws.get_variant(a.evaluate)
        orig, photo = accuracies(ws.load_model(v.id), ps, get_info(v.dataset))
        print(f"{v.id} on {len(ps.photos)} test images: original {orig:.2%}, photographed {photo:.2%} "
              f"({(photo - orig) * 100:+.1f} points)")
    if not a.out and not a.evaluate:
        print(f"made {len(ps.photos)} photos in memory; pass --out DIR to write them or --evaluate VARIANT")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
