"""Predict: run variants on your own images (or test-split samples), see the input each model
actually receives next to the original, and the top-k predictions of several variants side by side
(disagreements highlighted). The input is core.data.images' (the dataset's own preprocessing), the
probabilities core.measure.metrics.class_probabilities' (shared eval-mode models, no_grad, on the
CPU), the chart core.viz.predict's."""
import hashlib
from dataclasses import dataclass, field

import numpy as np
import streamlit as st

from core.base.limits import MAX_IMAGE_BYTES
from core.data.datasets import get_info
from core.data.images import draw_samples, upload_input
from core.data.preprocess import OBJECT_FRAMES, input_image
from core.measure.metrics import class_probabilities
from core.viz.predict import pct, topk_chart
from ui import nav, resources, state
from ui.widgets import variant_label

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = "predict-"
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif"]
MAX_SHOWN = 12            # images drawn at once: each is a card with a chart
MAX_VARIANTS = 4          # side by side stays readable
SOURCE_UPLOAD, SOURCE_SAMPLES = "Upload images", "Samples from the test split"
INVERT_CHOICES = {"Detect from the border": None, "Light background: turn it dark": True,
                  "Dark background: keep it": False}


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

def default_variants(v, candidates: list) -> list[str]:
    """The active variant, its parent and its root; when that is the active one alone (a baseline),
    its newest child, else another baseline of the dataset: two answers side by side from the start."""
    by_id = {c.id: c for c in candidates}
    chain = resources.lineage(v.id)
    want = [v.id]
    if len(chain) >= 2:
        want.append(chain[-2].id)     # the parent
    if chain:
        want.append(chain[0].id)      # the root
    out = list(dict.fromkeys(vid for vid in want if vid in by_id))
    if len(out) == 1:
        kids = sorted((c for c in resources.children(v.id) if c.id in by_id), key=lambda c: c.created_at)
        roots = [c for c in candidates if not c.parent_id and c.id != v.id]
        extra = kids[-1:] or roots[:1]
        out += [c.id for c in extra]
    return out[:MAX_VARIANTS]


def variant_picker(v) -> list:
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


def explainer(info) -> None:
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

@st.cache_data(show_spinner=False, max_entries=128)
def _prepare(_data: bytes, digest: str, name: str, dataset: str, root: str, invert: bool | None) -> dict:
    """Decode and preprocess one upload (cached by content digest and settings; pickled copies:
    thumbnails only, never the full-size photo)."""
    return upload_input(_data, get_info(dataset, root), invert, filename=name)


def upload_items(files, info, invert: bool | None) -> list[Item]:
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
    ds = resources.dataset(dataset_name)
    if ds.info.name != dataset_name:      # not on this machine: a fallback dataset was loaded instead
        raise LookupError(f"The test split of {dataset_name} is not on this machine ({ds.notice or 'not found'}). "
                          "Upload images instead.")
    return [Item(f"test image #{s['index']}", f"{ds.info.name}-test-{s['index']}", s["pixels"], s["tensor"],
                 s["image"], true_label=s["label"]) for s in draw_samples(ds.test, n, seed)]


# ---------------------------------------------------------------- predictions

@st.cache_data(show_spinner=False, max_entries=256)
def _probabilities(root: str, variant_id: str, created_at: float, key: str, _variant, _x) -> np.ndarray:
    return class_probabilities(resources.model(_variant), _x.cpu()).numpy()


def predict(variants: list, items: list[Item]) -> dict[str, np.ndarray | str]:
    """variant id -> probabilities (N, classes) for the usable items, or an error message. Each
    variant runs on a set of inputs (named by their content digests) once; every session shares it."""
    import torch

    ok = [it for it in items if it.error is None]
    if not ok:
        return {}
    x = torch.cat([it.tensor for it in ok])
    key = "|".join(it.key for it in ok)
    root = str(resources.workspace().root)
    out: dict[str, np.ndarray | str] = {}
    for v in variants:
        try:
            out[v.id] = _probabilities(root, v.id, v.created_at, key, v, x)
        except Exception as e:  # noqa: BLE001 - one variant that cannot run does not stop the others
            out[v.id] = f"{v.name} could not run on these inputs: {type(e).__name__}: {str(e)[:200]}"
    return out


def verdict(top1: dict[str, int], info, names: dict[str, str]) -> tuple[bool, str]:
    """(the variants agree, one line saying what each first choice is when they do not)."""
    if len(set(top1.values())) <= 1:
        return True, ""
    parts = [f"{names[vid]}: **{info.class_names[c]}**" for vid, c in top1.items()]
    return False, "The variants disagree. " + "; ".join(parts)


def card(item: Item, row: int, probs: dict[str, np.ndarray | str], info, variants: list, k: int, index: int) -> None:
    """One image: its name, the original, the model's input and every variant's top-k."""
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
                    r[f"#{rank}"] = f"{info.class_names[int(c)]} {pct(float(p[row][c]))}"
                rows.append(r)
            topk_table(rows, agree, key=f"{K}table-{index}")
            if not agree:
                st.markdown(f":orange-badge[:material/call_split: disagreement] {line}")
            elif len(ok) > 1:
                st.caption(f"All {len(ok)} variants agree: **{info.class_names[next(iter(top1.values()))]}**.")
            st.plotly_chart(topk_chart(ok, row, info.class_names, names, k, item.true_label), key=f"{K}chart-{index}",
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


def topk_table(rows: list[dict], agree: bool, *, key: str) -> None:
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


# ---------------------------------------------------------------- guard

ws = resources.workspace()
v = state.active_variant(ws)
st.title("Predict")
st.caption("Classify your own pictures, or samples of the test split, with several variants at once. Each image "
           "is turned into the kind of input the dataset's models were trained on; you see that input next to "
           "the original, and each variant's top predictions side by side.")
if v is None:
    st.info("No variant yet: train a baseline or upload a checkpoint on the Model page.", icon=":material/info:")
    st.stop()
info = get_info(v.dataset, ws.root)
explainer(info)

# ---------------------------------------------------------------- controls

chosen = variant_picker(v)
c_src, c_k, c_inv = st.columns([2, 1, 1.3])
source = c_src.radio("Images", [SOURCE_UPLOAD, SOURCE_SAMPLES], horizontal=True, key=K + "source",
                     help="Your own files, or random images of the test split with their true labels")
k = c_k.slider("Top-k", 1, max(2, min(5, info.num_classes)), min(3, info.num_classes), key=K + "k",
               help="How many of each variant's most likely classes to list")
invert = None
if info.in_channels == 1 and source == SOURCE_UPLOAD:
    invert = INVERT_CHOICES[c_inv.selectbox(
        "Background", list(INVERT_CHOICES), key=K + "invert",
        help="The dataset's objects are light on black. A photo's light background is turned dark; "
             "override the detection when it guesses wrong")]

if not chosen:
    st.info("Choose at least one variant above.", icon=":material/info:")
    st.stop()

# ---------------------------------------------------------------- images -> inputs

if source == SOURCE_UPLOAD:
    files = st.file_uploader(
        "Images to classify", type=UPLOAD_TYPES, accept_multiple_files=True, key=K + "upload",
        max_upload_size=MAX_IMAGE_BYTES // 1_000_000,
        help="PNG, JPEG, WebP, BMP or GIF (its first frame), any size up to 25 megapixels; phone photos are "
             "turned upright from their EXIF orientation")
    if not files:
        st.info(f"Drop one or more pictures above (a photo of one {info.title} object on a plain background works "
                f"best), or choose **{SOURCE_SAMPLES}**.", icon=":material/upload:")
        st.stop()
    if len(files) > MAX_SHOWN:
        st.caption(f"Showing the first {MAX_SHOWN} of {len(files)} files.")
    with st.spinner("Reading the images…"):
        items = upload_items(files[:MAX_SHOWN], info, invert)
else:
    c_n, c_new = st.columns([3, 1], vertical_alignment="bottom")
    n = c_n.slider("Samples", 1, MAX_SHOWN, 4, key=K + "n", help="How many random test images to show")
    seed_key = K + "seed"
    if c_new.button("Draw other samples", key=K + "redraw", icon=":material/casino:",
                    help="Pick a new random set of test images"):
        st.session_state[seed_key] = st.session_state.get(seed_key, 0) + 1
    try:
        items = sample_items(v.dataset, n, st.session_state.get(seed_key, 0))
    except LookupError as e:
        st.info(str(e), icon=":material/info:")
        st.stop()

# ---------------------------------------------------------------- predictions, one card per image

with st.spinner(f"Running {len(chosen)} variant{'s' if len(chosen) > 1 else ''} on the CPU…"):
    probs = predict(chosen, items)
bad = sum(it.error is not None for it in items)
if bad:
    st.warning(f"{bad} of {len(items)} file{'s' if len(items) > 1 else ''} could not be used (the message is on "
               "its card); the others are classified.", icon=":material/warning:")
row = 0
for i, item in enumerate(items):
    if item.error is None:
        card(item, row, probs, info, chosen, k, i)
        row += 1
    else:
        card(item, -1, {}, info, chosen, k, i)
