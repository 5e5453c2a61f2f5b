"""Dataset widgets: the pickers (built-in datasets for a new baseline or a checkpoint, the Model
page; built-in and uploaded ones for transfer learning, the Fine-tune page), a dataset's stored
images per class, and uploading a zip of class folders (checked whole before anything is stored)
with the list of uploads and their Delete buttons. The work is core.data.uploaded's."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.base import limits
from core.base.paths import slug
from core.data.datasets import get_info, list_datasets
from core.data.uploaded import (
    CHANNEL_CHOICES,
    MIN_IMAGE_SIZE,
    DatasetUploadError,
    delete_uploaded,
    import_image_zip,
    list_uploaded,
)
from core.store.workspace import Variant, Workspace
from core.viz.finetune import sample_grid_figure
from ui import resources, state

PENDING = "pending-dataset"    # set after an import: selected before the dataset select is drawn
UPLOADER_RUN = "uploader-run"  # bumped after an import: a fresh, empty file uploader


def dataset_select(key: str, label: str = "Dataset", default: str = "fashion-mnist") -> str:
    """One of the datasets a new baseline trains on, or a checkpoint was trained on."""
    infos = list_datasets()
    names = [d.name for d in infos]
    titles = {d.name: d.title for d in infos}
    return st.selectbox(label, names, index=names.index(default) if default in names else 0, key=key,
                        format_func=lambda n: titles[n],
                        help="; ".join(f"{d.title}: {d.description}" for d in infos))


def workspace_dataset_select(ws: Workspace, k: str, default: str | None = None) -> str:
    """Built-in and uploaded datasets (uploaded ones by name), one of them chosen: the one just
    uploaded, else the newest upload, else `default`. Widget keys start with `k`."""
    infos = list_datasets(ws.root)
    names = [d.name for d in infos]
    by = {d.name: d for d in infos}
    key = k + "dataset"
    pending = st.session_state.pop(k + PENDING, None)
    if pending in names:
        st.session_state[key] = pending
    if st.session_state.get(key) not in names:
        st.session_state.pop(key, None)
        uploaded = [d.name for d in infos if d.uploaded]
        st.session_state[key] = uploaded[-1] if uploaded else (default if default in names else names[0])
    return st.selectbox("Dataset", names, key=key,
                        format_func=lambda n: f"{by[n].title} ({'uploaded, ' if by[n].uploaded else ''}"
                                              f"{by[n].num_classes} classes, {by[n].in_channels}x{by[n].image_size}"
                                              f"x{by[n].image_size})",
                        help="The dataset to train on: a built-in one, or a zip of class folders uploaded below "
                             "(it then appears in every page's dataset list).")


def sample_grid(name: str, k: str) -> dict | None:
    """The stored images the model will see, a row per class, with the counts."""
    try:
        with st.spinner("Reading sample images…"):
            s = resources.dataset_samples(name)
    except Exception as e:  # noqa: BLE001  (an unreadable dataset is one box, not a traceback)
        st.error(f"Cannot read the dataset {name!r}: {e}", icon=":material/error:")
        return None
    info = s["info"]
    if s["notice"]:
        st.info(s["notice"], icon=":material/info:")
    sizes = s["sizes"]
    fig = resources.figure(("ft-grid", name, s["stamp"], info.name),
                           lambda: sample_grid_figure(
                               s["grid"], counts=s["counts"],
                               title=f"{info.name}: sample images per class"))
    st.plotly_chart(fig, key=k + "grid-chart", width="content", config={"displayModeBar": False})
    st.caption(f"{info.title}: {info.num_classes} classes (images per class in brackets), "
               f"{info.in_channels}x{info.image_size}x{info.image_size} "
               f"({'greyscale' if info.in_channels == 1 else 'colour'}); {sizes['train']:,} training, "
               f"{sizes['val']:,} validation and {sizes['test']:,} test images. These are the stored images, as the "
               "model sees them (resized; a greyscale photo with a light background is inverted).")
    return s


def upload_section(ws: Workspace, v: Variant | None, k: str) -> None:
    """The 'Upload a class-folder zip' expander: checks the zip and stores it under its name, then
    reruns with it selected in `workspace_dataset_select`. A refusal is one error box; the file and
    the settings stay as they were. Widget keys start with `k`."""
    run = st.session_state.get(k + UPLOADER_RUN, 0)
    shape = _info(ws, v.dataset) if v is not None else None
    with st.expander("Upload a class-folder zip", icon=":material/upload_file:",
                     expanded=bool(st.session_state.get(f"{k}zip-{run}"))):
        st.markdown("One folder per class with its images inside (the ImageFolder layout), zipped: "
                    "`cat/001.jpg`, `cat/002.png`, …, `dog/001.jpg`, … (optionally all inside one top-level folder). "
                    f"At least {limits.MIN_IMAGES_PER_CLASS} images per class; each class is split 70/15/15 into "
                    "training, validation and test images.")
        up = st.file_uploader("Class-folder zip", type=["zip"], key=f"{k}zip-{run}",
                              max_upload_size=limits.MAX_ZIP_BYTES // 1_000_000,
                              help=f"A .zip of class folders, up to {limits.MAX_ZIP_BYTES // 1_000_000} MB. The whole "
                                   "archive is checked before anything is stored.")
        c = st.columns(4)
        name = c[0].text_input("Dataset name", key=k + "zip-name", max_chars=40,
                               placeholder=slug(Path(up.name).stem) if up is not None else "e.g. cats-vs-dogs",
                               help="Lowercase letters, digits, '-' and '_' (up to 40); left empty, it is made from "
                                    "the file name. The dataset is stored in the workspace under this name.")
        channels = c[1].radio("Images", CHANNEL_CHOICES, key=k + "zip-channels", horizontal=True,
                              index=CHANNEL_CHOICES.index(shape.in_channels) if shape else 0,
                              format_func={1: "Greyscale", 3: "Colour"}.get,
                              help="Greyscale (1 channel) fits the Fashion-MNIST models; colour (3 channels) the "
                                   "CIFAR-10 ones. Transferring a variant needs its number of channels.")
        size = c[2].number_input("Image size (px)", MIN_IMAGE_SIZE, limits.MAX_DATASET_IMAGE_SIZE,
                                 shape.image_size if shape else 28, 1, key=k + "zip-size",
                                 help="Every image is resized to a square of this side: 28 for the Fashion-MNIST "
                                      "models, 32 for the CIFAR-10 ones.")
        invert = c[3].selectbox("Invert greyscale", ["auto", "always", "never"], key=k + "zip-invert",
                                disabled=channels != 1,
                                help="The Fashion-MNIST models expect a light object on a dark background: auto "
                                     "inverts an image whose border is light.")
        if shape is not None:
            st.caption(f"Defaults follow the active variant's input ({shape.in_channels}x{shape.image_size}x"
                       f"{shape.image_size}), so it can be transferred to the new dataset.")
        go = st.button("Check and store the dataset", key=k + "zip-import", icon=":material/upload:",
                       disabled=up is None, type="primary",
                       help="Validates the whole zip first; nothing is written unless every image is usable.")
        if not go or up is None:
            _uploaded_list(ws, k)
            return None
        data = up.getvalue()
        ds_name = (name or "").strip() or slug(Path(up.name).stem)
        bar = st.progress(0.0, text="Checking the zip…")

        def progress(done: int, total: int) -> None:
            if total and (done == total or done % 25 == 0):
                bar.progress(done / total, text=f"Decoding images: {done:,} of {total:,}")

        try:
            info = import_image_zip(ws.root, data, ds_name, in_channels=int(channels), image_size=int(size),
                                    invert={"auto": None, "always": True, "never": False}[invert],
                                    filename=up.name, progress=progress)
        except DatasetUploadError as e:
            bar.empty()
            st.error(f"Not stored: {e}", icon=":material/error:")
            _uploaded_list(ws, k)
            return None
        bar.empty()
        st.session_state[k + UPLOADER_RUN] = run + 1     # an empty uploader next time
        st.session_state.pop(k + "zip-name", None)
        state.set_flash(f"Stored the dataset **{info.name}**: {info.description}. It is selected below and listed "
                        "on every page that offers datasets.")
        st.session_state[k + PENDING] = info.name
        st.rerun()
    return None


def _info(ws: Workspace, name: str):
    try:
        return get_info(name, ws.root)
    except ValueError:
        return None


def _uploaded_list(ws: Workspace, k: str) -> None:
    ups = list_uploaded(ws.root)
    if not ups:
        st.caption("No uploaded datasets yet.")
        return
    st.markdown("**Uploaded datasets**")
    for d in ups:
        with st.container(horizontal=True, vertical_alignment="center", key=f"{k}up-{d.name}"):
            st.markdown(f"`{d.name}`: {d.description}")
            with st.popover("Delete", icon=":material/delete:", help=f"Remove the dataset {d.name} from the "
                                                                      "workspace"):
                st.markdown(f"Delete **{d.name}**? Variants trained on it keep their weights and metrics; measuring "
                            "them again needs the dataset back.")
                st.button(f"Delete {d.name}", key=f"{k}del-{d.name}", type="primary", on_click=_delete_dataset,
                          args=(str(ws.root), d.name, k), icon=":material/delete:",
                          help="Removes the stored images of this dataset; there is no undo.")


def _delete_dataset(root: str, name: str, k: str) -> None:
    try:
        delete_uploaded(name, root)
    except (DatasetUploadError, OSError) as e:
        state.set_flash(f"Could not delete {name}: {e}")
        return
    if st.session_state.get(k + "dataset") == name:
        st.session_state.pop(k + "dataset", None)
    state.set_flash(f"Deleted the dataset {name}.")
