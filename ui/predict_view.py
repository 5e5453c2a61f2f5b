"""How the Predict page draws: the variant picker, the image sources (uploads, test-split samples),
and one card per image with the original, the input the model receives and the top-k predictions
of every chosen variant side by side (disagreements highlighted, a bar chart of the probabilities).
Preprocessing is core.data.preprocess (through core.data.images.prepare_image); models and predictions come
from ui.resources (shared, read-only, no_grad, eval mode, on the CPU)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.data.preprocess import OBJECT_FRAMES
from core.data.types import DatasetInfo
from core.store.workspace import Variant
from ui import resources
from ui.widgets import variant_label

K = "predict-"
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif"]
MAX_SHOWN = 12            # images drawn at once: each is a card with a chart
MAX_VARIANTS = 4          # side by side stays readable
SOURCE_UPLOAD, SOURCE_SAMPLES = "Upload images", "Samples from the test split"
INVERT_CHOICES = {"Detect from the border": None, "Light background: turn it dark": True,
                  "Dark background: keep it": False}
COLOURS = ["#2f6fde", "#e4572e", "#29a36a", "#9b59b6"]


@dataclass
class Item:
    """One image to predict on: a decoded input (pixels, tensor) or the error that stopped it."""

    name: str
    key: str                                   # names the input in caches: content digest + settings
    pixels: np.ndarray | None = None           # uint8 (C, H, W): what the model receives, unnormalised
    tensor: object = None                      # (1, C, H, W) normalised
    original: object = None                    # a PIL thumbnail of what was uploaded (upright)
    steps: list = field(default_factory=list)  # (name, PIL thumbnail) of the preprocessing
    notes: list = field(default_factory=list)
    true_label: int | None = None
    error: str | None = None
    detail: str = ""                           # e.g. "3024 x 4032 JPEG, RGB"


# ---------------------------------------------------------------- controls

def default_variants(v: Variant, candidates: list[Variant]) -> list[str]:
    """The active variant, its parent and its root; when that is the active one alone (a baseline),
    its newest child, else another baseline of the dataset: two answers side by side from the start."""
    from ui.resources import children, lineage

    by_id = {c.id: c for c in candidates}
    chain = lineage(v.id)
    want = [v.id]
    if len(chain) >= 2:
        want.append(chain[-2].id)     # the parent
    if chain:
        want.append(chain[0].id)      # the root
    out = list(dict.fromkeys(vid for vid in want if vid in by_id))
    if len(out) == 1:
        kids = sorted((c for c in children(v.id) if c.id in by_id), key=lambda c: c.created_at)
        roots = [c for c in candidates if not c.parent_id and c.id != v.id]
        extra = kids[-1:] or roots[:1]
        out += [c.id for c in extra]
    return out[:MAX_VARIANTS]


def variant_picker(v: Variant) -> list[Variant]:
    """Variants of the active one's dataset to run side by side (default: it, its parent, its root)."""
    candidates = [c for c in resources.variants() if c.dataset == v.dataset]
    by_id = {c.id: c for c in candidates}
    chosen = st.multiselect(
        "Variants to compare", list(by_id), default=default_variants(v, candidates),
        format_func=lambda vid: variant_label(by_id[vid]), max_selections=MAX_VARIANTS,
        key=f"{K}variants-{v.id}",   # a new active variant starts from its own defaults
        help=f"Every chosen variant classifies the same inputs; up to {MAX_VARIANTS}, all on {v.dataset}. "
             "The default is the active variant, its parent and its root, so you see what compression changed.")
    return [by_id[c] for c in chosen if c in by_id]


def explainer(info: DatasetInfo) -> None:
    frame = OBJECT_FRAMES.get(info.name) if not info.uploaded else None
    with st.expander("What am I looking at?", icon=":material/help:"):
        if frame is not None:
            how = (f"{info.title} images are {frame.frame}x{frame.frame} greyscale pictures of one object, light on a "
                   f"black background, scaled so the object's longest side is {frame.object_size} pixels and centred. "
                   "So your image goes through the same steps: greyscale; a light background (decided from the "
                   "border pixels) turned dark; the object found and cropped to its bounding box; its contrast "
                   "stretched; scaled to fit, keeping its shape; centred. A phone photo of a shoe on a table then "
                   "looks like a Fashion-MNIST shoe.")
        elif info.uploaded:
            how = (f"{info.title} was made from uploaded pictures, each resized to {info.image_size}x{info.image_size}"
                   + (" greyscale (a light background inverted)" if info.in_channels == 1 else " colour")
                   + "; your image goes through that same conversion.")
        elif info.in_channels == 3:
            how = (f"{info.title} images are {info.image_size}x{info.image_size} colour pictures: your image's shorter "
                   f"side is scaled to {info.image_size} and the centre cropped.")
        else:
            how = f"Your image is converted to greyscale and resized to {info.image_size}x{info.image_size}."
        st.markdown(
            f"**Left:** the image as uploaded (turned upright if the camera recorded an orientation). "
            f"**Next to it:** the input the model actually receives, enlarged. {how}\n\n"
            "**Right:** each chosen variant's top predictions with their probabilities (softmax of its outputs), "
            "computed on the CPU in evaluation mode. When the variants' first choices differ, the card says so "
            "in orange: that is where compression changed an answer. For test-split samples the true label is "
            "known, and each first choice is marked right or wrong.\n\n"
            "A file that cannot be used (not an image, truncated, empty, too many pixels) gets its own message; "
            "the other images are still classified.")


# ---------------------------------------------------------------- items: uploads and samples

def _thumb(img, side: int = 320):
    from PIL import Image

    t = img.copy()
    if t.mode not in ("L", "RGB", "RGBA"):
        from core.data.preprocess import standard_mode

        t = standard_mode(t, 3)
    t.thumbnail((side, side), Image.Resampling.LANCZOS)
    return t


def _describe(data: bytes, upright) -> str:
    """"3024 x 4032 JPEG, RGB": the file's own size (a big JPEG is decoded at a reduced scale) as shown."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:   # the header only: already decoded once
            w, h, fmt, mode = *im.size, im.format, im.mode
    except Exception:  # noqa: BLE001
        return ""
    if (w > h) != (upright.width > upright.height):
        w, h = h, w                                  # turned upright from its EXIF orientation
    return f"{w} x {h} {fmt or 'image'}, {mode}"


@st.cache_data(show_spinner=False, max_entries=128)
def _prepare(_data: bytes, digest: str, name: str, dataset: str, root: str, invert: bool | None) -> dict:
    """Decode and preprocess one upload (cached by content digest and settings; pickled copies:
    thumbnails only, never the full-size photo)."""
    from core.data.datasets import get_info
    from core.data.images import prepare_image
    from core.data.types import ImageError

    info = get_info(dataset, root)
    try:
        p = prepare_image(_data, info, invert, filename=name, keep_steps=True)
    except ImageError as e:
        return {"error": str(e)}
    original = p.steps[0][1]
    detail = _describe(_data, original)
    return {"pixels": p.pixels, "tensor": p.tensor, "original": _thumb(original), "notes": p.notes,
            "steps": [(n, _thumb(im, 160)) for n, im in p.steps[1:-1]], "detail": detail}


def upload_items(files, info: DatasetInfo, invert: bool | None) -> list[Item]:
    root = str(resources.workspace().root)
    items = []
    for f in files:
        data = f.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        r = _prepare(data, digest, f.name, info.name, root, invert)
        key = f"{digest[:16]}-{invert}"
        if "error" in r:
            items.append(Item(f.name, key, error=r["error"]))
        else:
            items.append(Item(f.name, key, r["pixels"], r["tensor"], r["original"], r["steps"], r["notes"],
                              detail=r["detail"]))
    return items


def sample_items(dataset_name: str, n: int, seed: int) -> list[Item]:
    """`n` random test images (drawn with `seed`) with their true labels: already the model's input.
    LookupError when the dataset's test split is not on this machine."""
    from core.data.preprocess import input_image

    ds = resources.dataset(dataset_name)
    if ds.info.name != dataset_name:      # not on this machine: a fallback dataset was loaded instead
        raise LookupError(f"The test split of {dataset_name} is not on this machine ({ds.notice or 'not found'}). "
                          "Upload images instead.")
    split = ds.test
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(split), size=min(n, len(split)), replace=False))
    images = split.images[idx].cpu()
    x = split.normalize(images)
    items = []
    for j, i in enumerate(idx):
        px = images[j].numpy()
        items.append(Item(f"test image #{int(i)}", f"{ds.info.name}-test-{int(i)}", px, x[j:j + 1],
                          input_image(px, 1), true_label=int(split.labels[i])))
    return items


# ---------------------------------------------------------------- predictions

@st.cache_data(show_spinner=False, max_entries=256)
def _probabilities(root: str, variant_id: str, created_at: float, key: str, _variant: Variant, _x) -> np.ndarray:
    import copy

    import torch

    m = resources.model(_variant)        # shared, eval mode, on the CPU (quantized variants run there)
    if m.training:                       # never switch the shared model in place
        m = copy.deepcopy(m).eval()
    with torch.no_grad():
        logits = m(_x.cpu())
    return torch.softmax(logits.float(), dim=1).numpy()


def probabilities(v: Variant, x, key: str) -> np.ndarray:
    """Softmax probabilities (N, classes) of `v` on inputs `x` (normalised), computed with no_grad on
    the shared eval-mode model; `key` names the inputs (content digests), so each variant runs on a
    set of inputs once and every session shares the result."""
    return _probabilities(str(resources.workspace().root), v.id, v.created_at, key, v, x)


def predict(variants: list[Variant], items: list[Item]) -> dict[str, np.ndarray | str]:
    """variant id -> probabilities (N, classes) for the usable items, or an error message."""
    import torch

    ok = [it for it in items if it.error is None]
    if not ok:
        return {}
    x = torch.cat([it.tensor for it in ok])
    key = "|".join(it.key for it in ok)
    out: dict[str, np.ndarray | str] = {}
    for v in variants:
        try:
            out[v.id] = probabilities(v, x, key)
        except Exception as e:  # noqa: BLE001 - one variant that cannot run does not stop the others
            out[v.id] = f"{v.name} could not run on these inputs: {type(e).__name__}: {str(e)[:200]}"
    return out


def _pct(p: float) -> str:
    return f"{p:.1%}" if p >= 0.001 else "<0.1%"


def verdict(top1: dict[str, int], info: DatasetInfo, names: dict[str, str]) -> tuple[bool, str]:
    """(the variants agree, one line saying what each first choice is when they do not)."""
    if len(set(top1.values())) <= 1:
        return True, ""
    parts = [f"{names[vid]}: **{info.class_names[c]}**" for vid, c in top1.items()]
    return False, "The variants disagree. " + "; ".join(parts)


def chart(item: Item, probs: dict[str, np.ndarray], row: int, info: DatasetInfo, names: dict[str, str],
          k: int) -> go.Figure:
    """Horizontal bars: the classes in any variant's top-k, one bar per variant."""
    classes: list[int] = []
    for p in probs.values():
        for c in np.argsort(-p[row])[:k]:
            if int(c) not in classes:
                classes.append(int(c))
    if item.true_label is not None and item.true_label not in classes:
        classes.append(item.true_label)
    first = next(iter(probs.values()))[row]
    classes.sort(key=lambda c: -first[c])
    labels = [info.class_names[c] + (" (true)" if c == item.true_label else "") for c in classes]
    fig = go.Figure()
    for j, (vid, p) in enumerate(probs.items()):
        fig.add_bar(y=labels, x=[float(p[row][c]) for c in classes], orientation="h", name=names[vid],
                    marker_color=COLOURS[j % len(COLOURS)],
                    text=[_pct(float(p[row][c])) for c in classes], textposition="outside", cliponaxis=False)
    fig.update_layout(barmode="group", height=70 + 16 * len(classes) * max(1, len(probs)),
                      margin=dict(l=10, r=40, t=30, b=10), bargap=0.25,
                      legend=dict(orientation="h", y=1.02, x=0, yanchor="bottom"),
                      xaxis=dict(range=[0, 1.15], tickformat=".0%", title=None), yaxis=dict(autorange="reversed"),
                      title=dict(text=f"Top-{k} probabilities of each variant", font=dict(size=13), x=0, y=0.99,
                                 yanchor="top"))
    return fig


def card(item: Item, row: int, probs: dict[str, np.ndarray | str], info: DatasetInfo, variants: list[Variant],
         k: int, index: int) -> None:
    """One image: its name, the original, the model's input and every variant's top-k."""
    from core.data.preprocess import input_image

    with st.container(border=True, key=f"{K}card-{index}"):
        title = f"**{item.name}**"
        if item.true_label is not None:
            title += f" · true label: **{info.class_names[item.true_label]}**"
        if item.detail:
            title += f" · {item.detail}"
        st.markdown(title)
        if item.error is not None:
            st.error(item.error, icon=":material/broken_image:")
            return
        is_sample = item.true_label is not None and not item.steps
        if is_sample:           # a stored test image is already the model's input: shown once
            c_in, c_pred = st.columns([1, 4], vertical_alignment="top")
        else:
            c_img, c_in, c_pred = st.columns([1, 1, 4], vertical_alignment="top")
            c_img.image(item.original, caption="as uploaded", width=150)
        side = item.pixels.shape[-1]
        c_in.image(input_image(item.pixels, max(1, 150 // side)), width=150,
                   caption=f"the test image, {side}x{side}: already the model's input" if is_sample else
                   f"what the model receives ({side}x{item.pixels.shape[-2]})")
        names = {v.id: v.name for v in variants}
        ok = {vid: p for vid, p in probs.items() if not isinstance(p, str)}
        with c_pred:
            for p in probs.values():
                if isinstance(p, str):
                    st.error(p, icon=":material/error:")
            if not ok:
                return
            top1 = {vid: int(np.argmax(p[row])) for vid, p in ok.items()}
            agree, line = verdict(top1, info, names)
            rows = []
            for vid, p in ok.items():
                order = np.argsort(-p[row])[:k]
                r = {"variant": names[vid]}
                if item.true_label is not None:
                    r["right?"] = "yes" if top1[vid] == item.true_label else "no"
                for rank, c in enumerate(order, 1):
                    r[f"#{rank}"] = f"{info.class_names[int(c)]} {_pct(float(p[row][c]))}"
                rows.append(r)
            table(rows, agree, key=f"{K}table-{index}")
            if not agree:
                st.markdown(f":orange-badge[:material/call_split: disagreement] {line}")
            elif len(ok) > 1:
                st.caption(f"All {len(ok)} variants agree: **{info.class_names[next(iter(top1.values()))]}**.")
            st.plotly_chart(chart(item, ok, row, info, names, k), key=f"{K}chart-{index}",
                            config={"displayModeBar": False})
        if item.steps or item.notes:
            with st.expander("How this input was made"):
                if item.steps:
                    steps = [*item.steps, ("model input", input_image(item.pixels, max(1, 120 // side)))]
                    cols = st.columns(len(steps))
                    for j, (col, (n, im)) in enumerate(zip(cols, steps, strict=True), 1):
                        col.image(im, caption=f"{j}. {n}", width=120)
                for n in item.notes:
                    st.caption(n)


def table(rows: list[dict], agree: bool, *, key: str) -> None:
    """The top-k per variant; when they disagree, the first-choice cells are tinted orange."""
    import pandas as pd

    df = pd.DataFrame(rows)
    styler = df.style
    if not agree:
        styler = styler.map(lambda _: "background-color: #ffe2cc", subset=["#1"])
    if "right?" in df.columns:
        styler = styler.map(lambda s: "color: #1a7f37" if s == "yes" else "color: #c62828; font-weight: bold",
                            subset=["right?"])
    st.dataframe(styler, hide_index=True, width="stretch", key=key, column_config={
        "right?": st.column_config.TextColumn(width="small", help="Is the first choice the true label?")})
