"""The model card of a variant: one JSON-safe dict that says what the model is, how it was made,
what was measured (and where), and how to feed it an image. Exported beside every download
(`core.io.export.pipeline`) and served at `GET /model` (`core.io.serve.rest`).
"""
from __future__ import annotations

import datetime as _dt
import math
import platform
from importlib import metadata as _metadata

from core.base.kinds import KIND_FLAGS, kind_label
from core.data.datasets import get_info
from core.data.preprocess import OBJECT_FRAMES

CARD_VERSION = 1


def _json_safe(x):
    """Plain JSON values only: non-finite floats become None, tuples lists, anything else str."""
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return str(x)


def library_versions() -> dict[str, str | None]:
    """Versions of what loads the files (None: not installed here)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "torchvision", "safetensors", "numpy", "onnx", "onnxruntime"):
        try:
            out[dist] = _metadata.version(dist)
        except _metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _geometry_steps(info) -> list[str]:
    """How an image is framed for `info`'s models: the dataset's own construction (core.data.preprocess)."""
    c, s = info.in_channels, info.image_size
    frame = None if info.uploaded else OBJECT_FRAMES.get(info.name)
    if c == 1 and frame is not None and frame.frame == s:
        centre = "its bounding box centred" if frame.centre == "box" else "its centre of mass centred"
        return ["decode the image (EXIF orientation applied) and convert it to greyscale",
                "if its border is light, invert it: the dataset shows a light object on a black background",
                "subtract the background level (a plane fitted to the border pixels) and crop to the object's "
                "bounding box",
                "stretch the contrast so the object's brightest part is white",
                f"scale it so its longest side is {frame.object_size} pixels (aspect ratio kept) and place it, "
                f"{centre}, in a black {s}x{s} frame"]
    if c == 1:
        return ["decode the image and convert it to greyscale (PIL mode L)", f"resize it to {s}x{s} pixels",
                "if its border is light (mean above 127 of 255), invert it: the training images show a light object "
                "on a dark background"]
    if info.uploaded:
        return ["decode the image and convert it to RGB", f"resize it to {s}x{s} pixels"]
    return ["decode the image and convert it to RGB",
            f"scale it so its shorter side is {s} pixels and crop the centre {s}x{s}"]


def preprocessing(info) -> dict:
    """How an image becomes the model's input tensor, for `info` (a core.data.types.DatasetInfo)."""
    c, s = info.in_channels, info.image_size
    steps = [*_geometry_steps(info),
             "scale the uint8 pixels to [0, 1] (divide by 255)",
             f"normalise each channel: (x - mean) / std with mean={list(info.mean)}, std={list(info.std)}",
             f"feed a float32 tensor of shape (N, {c}, {s}, {s}); the output is (N, {info.num_classes}) logits, "
             "softmax gives probabilities in the order of class_names"]
    return {"input_shape": [c, s, s], "input_dtype": "float32", "layout": "NCHW", "pixel_scale": 1 / 255,
            "mean": list(info.mean), "std": list(info.std), "steps": steps,
            "description": "; ".join(steps) + ".",
            "reference": "core.data.images.preprocess_image(image_bytes, info) in this repository (the Predict page "
                         "and the REST/gRPC services use it)"}


def dataset_card(name: str, workspace_root=None) -> dict:
    """The dataset part of a card; a dataset that is no longer known keeps just its name."""
    try:
        info = get_info(name, workspace_root)
    except (ValueError, OSError) as e:
        return {"name": name, "title": name, "class_names": None, "note": f"dataset details unavailable: {e}"}
    pre = preprocessing(info)
    return {"name": info.name, "title": info.title, "class_names": list(info.class_names),
            "num_classes": info.num_classes, "in_channels": info.in_channels, "image_size": info.image_size,
            "mean": list(info.mean), "std": list(info.std), "uploaded": bool(info.uploaded),
            "description": info.description, "preprocessing": pre["description"], "preprocessing_detail": pre}


def model_card(ws, variant) -> dict:
    """The JSON-safe model card of `variant` (a Variant or an id/name) of workspace `ws`."""
    v = variant if not isinstance(variant, str) else ws.get_variant(variant)
    created = _dt.datetime.fromtimestamp(v.created_at, tz=_dt.UTC)
    metrics = dict(v.metrics)
    card = {
        "card_version": CARD_VERSION,
        "id": v.id,
        "name": v.name,
        "parent_id": v.parent_id,
        "origin": v.origin,
        "created_at": created.isoformat(timespec="seconds"),
        "created_at_unix": v.created_at,
        "arch": v.arch,
        "recipe": v.recipe,
        "metrics": metrics,
        "measured_on": metrics.get("device"),
        "kind": {k: bool(v.kind.get(k)) for k in KIND_FLAGS},
        "kind_label": kind_label(v.kind),
        "weights_format": v.format,
        "dataset": dataset_card(v.dataset, ws.root),
        "libraries": library_versions(),
        "notes": v.notes,
    }
    return _json_safe(card)


__all__ = ["dataset_card", "library_versions", "model_card", "preprocessing"]
