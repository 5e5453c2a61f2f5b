"""Predict: run variants on your own images (or test-split samples), see the input each model
actually receives next to the original, and the top-k predictions of several variants side by side."""
import streamlit as st

from core.base.limits import MAX_IMAGE_BYTES
from core.data.datasets import get_info
from ui import nav, resources, state
from ui import predict_view as view

nav.leave_legacy_mode()  # a direct link to this page right after a server start

K = view.K

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
view.explainer(info)

# ---------------------------------------------------------------- controls

chosen = view.variant_picker(v)
c_src, c_k, c_inv = st.columns([2, 1, 1.3])
source = c_src.radio("Images", [view.SOURCE_UPLOAD, view.SOURCE_SAMPLES], horizontal=True, key=K + "source",
                     help="Your own files, or random images of the test split with their true labels")
k = c_k.slider("Top-k", 1, max(2, min(5, info.num_classes)), min(3, info.num_classes), key=K + "k",
               help="How many of each variant's most likely classes to list")
invert = None
if info.in_channels == 1 and source == view.SOURCE_UPLOAD:
    invert = view.INVERT_CHOICES[c_inv.selectbox(
        "Background", list(view.INVERT_CHOICES), key=K + "invert",
        help="The dataset's objects are light on black. A photo's light background is turned dark; "
             "override the detection when it guesses wrong")]

if not chosen:
    st.info("Choose at least one variant above.", icon=":material/info:")
    st.stop()

# ---------------------------------------------------------------- images -> inputs

if source == view.SOURCE_UPLOAD:
    files = st.file_uploader(
        "Images to classify", type=view.UPLOAD_TYPES, accept_multiple_files=True, key=K + "upload",
        max_upload_size=MAX_IMAGE_BYTES // 1_000_000,
        help="PNG, JPEG, WebP, BMP or GIF (its first frame), any size up to 25 megapixels; phone photos are "
             "turned upright from their EXIF orientation")
    if not files:
        st.info(f"Drop one or more pictures above (a photo of one {info.title} object on a plain background works "
                f"best), or choose **{view.SOURCE_SAMPLES}**.", icon=":material/upload:")
        st.stop()
    if len(files) > view.MAX_SHOWN:
        st.caption(f"Showing the first {view.MAX_SHOWN} of {len(files)} files.")
    with st.spinner("Reading the images…"):
        items = view.upload_items(files[:view.MAX_SHOWN], info, invert)
else:
    c_n, c_new = st.columns([3, 1], vertical_alignment="bottom")
    n = c_n.slider("Samples", 1, view.MAX_SHOWN, 4, key=K + "n", help="How many random test images to show")
    seed_key = K + "seed"
    if c_new.button("Draw other samples", key=K + "redraw", icon=":material/casino:",
                    help="Pick a new random set of test images"):
        st.session_state[seed_key] = st.session_state.get(seed_key, 0) + 1
    try:
        items = view.sample_items(v.dataset, n, st.session_state.get(seed_key, 0))
    except LookupError as e:
        st.info(str(e), icon=":material/info:")
        st.stop()

# ---------------------------------------------------------------- predictions, one card per image

with st.spinner(f"Running {len(chosen)} variant{'s' if len(chosen) > 1 else ''} on the CPU…"):
    probs = view.predict(chosen, items)
bad = sum(it.error is not None for it in items)
if bad:
    st.warning(f"{bad} of {len(items)} file{'s' if len(items) > 1 else ''} could not be used (the message is on "
               "its card); the others are classified.", icon=":material/warning:")
row = 0
for i, item in enumerate(items):
    if item.error is None:
        view.card(item, row, probs, info, chosen, k, i)
        row += 1
    else:
        view.card(item, -1, {}, info, chosen, k, i)
