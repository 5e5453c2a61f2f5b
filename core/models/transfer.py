"""Transfer learning: a trained network's features reused for a new dataset. The classifier (the
last Linear layer) is replaced by a fresh one sized for the new classes; the rest (the backbone)
is either trained along or frozen: no gradients, and its BatchNorm and Dropout layers kept in
eval mode, so the features the head learns on are exactly the ones it will see at test time."""
from __future__ import annotations

import contextlib
import os
import types

import torch
import torch.nn as nn

from core.base.kinds import is_float
from core.models.registry import classifier_name, imagenet_weights_file, list_models

TRANSFER_MODELS = tuple(s.name for s in list_models() if s.has_pretrained)   # torchvision: ImageNet weights
_EVAL_WHEN_FROZEN = (nn.modules.batchnorm._BatchNorm, nn.Dropout)


def imagenet_weights_status(model_name: str) -> str | None:
    """None when registered model `model_name`'s ImageNet weights are in torch's cache; otherwise
    a sentence saying what starting it will do without them."""
    file = imagenet_weights_file(model_name)
    if file is None:
        return f"{model_name} has no ImageNet weights: it starts untrained."
    if os.path.exists(file):
        return None
    return (f"The ImageNet weights of {model_name} are not in the torch cache ({file}). Starting will try to "
            "download them; without a connection the model is trained from random weights (the job's log says "
            "which happened).")


def transfer_refusal(variant, info, model: nn.Module | None = None) -> str | None:
    """Why `variant` cannot be transferred to the dataset `info` (a DatasetInfo), or None. With
    `model` (the variant's module) the check includes one forward pass at the dataset's input size."""
    if not is_float(variant.kind):
        return (f"{variant.name} is quantized ({variant.kind_label}): transfer from its float parent instead, "
                "then quantize the result.")
    kwargs = variant.arch.get("kwargs", {})
    channels = kwargs.get("in_channels", 1)
    if channels != info.in_channels:
        def kind(c):
            return "greyscale (1 channel)" if c == 1 else f"colour ({c} channels)"
        return (f"{variant.name} takes {kind(channels)} images and {info.title} has {kind(info.in_channels)} "
                f"images: import the dataset as {kind(channels).split(' ')[0]} to reuse this model.")
    if model is not None:
        try:
            with torch.no_grad():
                model.eval()(torch.zeros(1, *info.input_shape))
        except RuntimeError:
            size = kwargs.get("image_size")
            return (f"{variant.name} was built for {size}x{size} images and {info.title} has "
                    f"{info.image_size}x{info.image_size}: import the dataset at {size}x{size} to reuse this model.")
    return None


def replace_head_(model: nn.Module, num_classes: int) -> str:
    """In place: a fresh Linear classifier with `num_classes` outputs (same input features, seeded by
    the caller's RNG state). Returns its module name."""
    name = classifier_name(model)
    if not name:
        raise ValueError("the model has no Linear classifier to replace")
    old = model.get_submodule(name)
    owner_name, _, attr = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    setattr(owner, attr, nn.Linear(old.in_features, num_classes, bias=old.bias is not None))
    return name


def param_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters()) - trainable


@contextlib.contextmanager
def frozen_backbone(model: nn.Module, head: str, enabled: bool = True):
    """While inside: every parameter outside module `head` has no gradient, and `model.train()`
    leaves the backbone's BatchNorm/Dropout in eval mode (running statistics unchanged). Restored
    on exit (the model is stored as a plain module)."""
    if not enabled:
        yield
        return
    head_params = {id(p) for p in model.get_submodule(head).parameters()}
    frozen = [p for p in model.parameters() if id(p) not in head_params and p.requires_grad]
    keep_eval = [m for n, m in model.named_modules()
                 if isinstance(m, _EVAL_WHEN_FROZEN) and not (n == head or n.startswith(head + "."))]
    for p in frozen:
        p.requires_grad_(False)

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)
        for m in keep_eval:
            m.eval()
        return self

    model.train = types.MethodType(train, model)   # an instance attribute: train_ calls model.train() per epoch
    try:
        yield
    finally:
        del model.train
        for p in frozen:
            p.requires_grad_(True)


def head_summary(model, source_name: str, info, freeze: bool) -> str:
    """What replacing the classifier of `model` for `info`'s classes does, in numbers."""
    head = classifier_name(model)
    if not head:
        return ""
    old = model.get_submodule(head)
    new_params = old.in_features * info.num_classes + (info.num_classes if old.bias is not None else 0)
    total = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in old.parameters()) + new_params
    trains = f"only its {new_params:,} parameters train" if freeze else f"all {total:,} parameters train"
    return (f"The head `{head}` of {source_name} ({old.out_features} outputs) becomes a new, untrained `{head}` with "
            f"{info.num_classes} outputs, one per class of {info.title}: {trains}.")
