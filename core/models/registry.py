"""Model registry: create_model(name, num_classes, in_channels, **kw) and list_models().

Structural edits (channel counts after structured pruning) are applied by `apply_edits_`, so any
registered model whose layers were physically shrunk can be rebuilt from its `arch` dict.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F


class PretrainedUnavailable(UserWarning):
    """ImageNet weights were asked for but are neither cached nor downloadable."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    builder: Callable[..., nn.Module] = field(repr=False)
    student_of: str | None = None  # the teacher this model is sized to learn from
    has_pretrained: bool = False


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, description: str, student_of: str | None = None, has_pretrained: bool = False):
    def deco(fn: Callable[..., nn.Module]):
        _REGISTRY[name] = ModelSpec(name, description, fn, student_of, has_pretrained)
        return fn
    return deco


def list_models() -> list[ModelSpec]:
    return list(_REGISTRY.values())


DEFAULT_STUDENT = "lenet5-small"


def default_student(teacher_arch: str | None) -> str:
    """The registered model sized to learn from `teacher_arch` (its declared student), else
    DEFAULT_STUDENT: what the Distill page and the sweep offer first."""
    named = [s.name for s in _REGISTRY.values() if teacher_arch and s.student_of == teacher_arch]
    return named[0] if named else DEFAULT_STUDENT


def get_spec(name: str) -> ModelSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}") from None


def create_model(name: str, num_classes: int = 10, in_channels: int = 1, **kw) -> nn.Module:
    """Build a registered model. Models with ImageNet weights take `pretrained=True`; when the
    weights cannot be had the model stays untrained and `model.notices` says so."""
    model = get_spec(name).builder(num_classes=num_classes, in_channels=in_channels, **kw)
    if not hasattr(model, "notices"):
        model.notices = []
    return model


# ---------------------------------------------------------------- small models for 28x28 inputs

class LeNet300(nn.Module):
    """LeNet-300-100: the fully connected net of the Deep Compression paper (266,610 params on 28x28)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x):
        x = x.flatten(1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class LeNet5(nn.Module):
    """Caffe LeNet-5 (Deep Compression): conv 20 5x5, pool, conv 50 5x5, pool, fc 500, fc classes.
    431,080 params on 28x28 greyscale with 10 classes."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28,
                 widths: tuple[int, int, int] = (20, 50, 500)):
        super().__init__()
        c1, c2, hidden = widths
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        side = ((image_size - 4) // 2 - 4) // 2  # 28 -> 24 -> 12 -> 8 -> 4
        self.fc1 = nn.Linear(c2 * side * side, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet for 28x28 inputs: 3x3 stem and three stages of basic blocks (16/32/64 wide)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64),
                 blocks_per_stage: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            for b in range(blocks_per_stage):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and b == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@register("lenet300", "LeNet-300-100, fully connected (266K params)")
def _lenet300(num_classes=10, in_channels=1, image_size=28):
    return LeNet300(num_classes, in_channels, image_size)


@register("lenet5", "Caffe LeNet-5 of Deep Compression: conv20, conv50, fc500 (431K params)")
def _lenet5(num_classes=10, in_channels=1, image_size=28):
    return LeNet5(num_classes, in_channels, image_size)


@register("lenet5-small", "Quarter-width LeNet-5, a distillation student (about 37K params)", student_of="lenet5")
def _lenet5_small(num_classes=10, in_channels=1, image_size=28):
    return LeNet5(num_classes, in_channels, image_size, widths=(8, 16, 128))


@register("resnet-small", "ResNet for 28x28 inputs: 3x3 stem, stages 16/32/64 (about 78K params)")
def _resnet_small(num_classes=10, in_channels=1, image_size=28, blocks_per_stage=1):
    return SmallResNet(num_classes, in_channels, blocks_per_stage=blocks_per_stage)


# ---------------------------------------------------------------- torchvision models

IMAGENET_WEIGHTS = {"resnet18": "ResNet18_Weights", "mobilenet_v3_small": "MobileNet_V3_Small_Weights"}


def _cache_file(weights_enum) -> str:
    import os

    from torch.hub import get_dir

    return os.path.join(get_dir(), "checkpoints", os.path.basename(weights_enum.DEFAULT.url))


def imagenet_weights_file(name: str) -> str | None:
    """Where torch's cache keeps registered model `name`'s ImageNet weights (None: it has none)."""
    import torchvision

    enum_name = IMAGENET_WEIGHTS.get(name)
    return _cache_file(getattr(torchvision.models, enum_name)) if enum_name else None


def _load_imagenet_weights(model: nn.Module, weights_enum, allow_download: bool) -> str | None:
    """Copy ImageNet weights into every layer whose shape matches; returns a notice or None."""
    import os

    weights = weights_enum.DEFAULT
    file = _cache_file(weights_enum)
    if not os.path.exists(file) and not allow_download:
        return f"ImageNet weights for {weights} are not in the torch cache ({file}); the model is untrained."
    try:
        state = weights.get_state_dict(progress=False, check_hash=False)
    except Exception as e:
        return (f"ImageNet weights for {weights} could not be loaded or downloaded ({type(e).__name__}); "
                "the model is untrained.")
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)
    skipped = sorted(set(own) - set(kept))
    if skipped:
        return (f"ImageNet weights loaded; {len(skipped)} tensors re-initialised to fit this dataset "
                f"({', '.join(skipped[:4])}...).")
    return None


def _adapt_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if conv.in_channels == in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=conv.bias is not None)
    with torch.no_grad():  # keep pretrained filters: average over RGB, repeat to the new channel count
        new.weight.copy_(conv.weight.mean(1, keepdim=True).repeat(1, in_channels, 1, 1))
    return new


def _finish_torchvision(model, weights_enum, pretrained, allow_download, adapt) -> nn.Module:
    notices = []
    if pretrained:
        notice = _load_imagenet_weights(model, weights_enum, allow_download)
        if notice:
            notices.append(notice)
            warnings.warn(notice, PretrainedUnavailable, stacklevel=3)
    adapt(model)
    model.notices = notices
    return model


@register("resnet18", "torchvision ResNet-18 (11.2M params), ImageNet weights when available", has_pretrained=True)
def _resnet18(num_classes=10, in_channels=1, image_size=28, pretrained=False, allow_download=True):
    import torchvision

    model = torchvision.models.resnet18()

    def adapt(m):
        m.conv1 = _adapt_conv(m.conv1, in_channels)
        m.fc = nn.Linear(m.fc.in_features, num_classes)
    return _finish_torchvision(model, torchvision.models.ResNet18_Weights, pretrained, allow_download, adapt)


@register("mobilenet_v3_small", "torchvision MobileNetV3-Small (1.5M params), ImageNet weights when available",
          has_pretrained=True)
def _mobilenet_v3_small(num_classes=10, in_channels=1, image_size=28, pretrained=False, allow_download=True):
    import torchvision

    model = torchvision.models.mobilenet_v3_small()

    def adapt(m):
        m.features[0][0] = _adapt_conv(m.features[0][0], in_channels)
        last = m.classifier[-1]
        m.classifier[-1] = nn.Linear(last.in_features, num_classes)
    return _finish_torchvision(model, torchvision.models.MobileNet_V3_Small_Weights, pretrained, allow_download, adapt)


# ---------------------------------------------------------------- structural edits

# Attributes that Torch-Pruning changes when it removes channels; enough to rebuild the module.
EDIT_ATTRS = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.Linear: ("in_features", "out_features"),
    nn.BatchNorm2d: ("num_features",),
    nn.BatchNorm1d: ("num_features",),
    nn.LayerNorm: ("normalized_shape",),
}


def _edit_attrs(module: nn.Module) -> tuple[str, ...]:
    for cls, attrs in EDIT_ATTRS.items():
        if isinstance(module, cls):
            return attrs
    return ()


def structural_edits(model: nn.Module, reference: nn.Module) -> dict[str, dict]:
    """Module attributes (channel counts) where `model` differs from a freshly built `reference`."""
    ref = dict(reference.named_modules())
    edits = {}
    for name, m in model.named_modules():
        r = ref.get(name)
        if r is None:
            continue
        diff = {}
        for a in _edit_attrs(m):
            v = getattr(m, a)
            if v != getattr(r, a):
                diff[a] = list(v) if isinstance(v, tuple) else v
        if diff:
            edits[name] = diff
    return edits


class ArchError(ValueError):
    """An `arch` dict that does not describe a registered model (or a shrunk copy of one)."""


def validate_edits(model: nn.Module, edits: object) -> dict[str, dict]:
    """`edits` checked against `model`, a freshly built registry model: every edit names one of its
    modules and an attribute in EDIT_ATTRS for that module's type, with a positive int no larger
    than the module's own value (structured pruning only removes channels), and a conv's groups
    divide its channel counts. Anything else (`forward`, `stride`, an unknown module, a huge
    count) is refused with an ArchError naming it. Returns the edits with lists as tuples."""
    if not isinstance(edits, dict):
        raise ArchError(f"structural edits must be a map of module names to attributes, not {type(edits).__name__}")
    modules = dict(model.named_modules())
    clean: dict[str, dict] = {}
    for name, attrs in edits.items():
        m = modules.get(name) if name else None  # "" is the model itself: never editable
        if m is None:
            raise ArchError(f"structural edit of {str(name)[:80]!r}: the model has no such layer")
        if not isinstance(attrs, dict) or not attrs:
            raise ArchError(f"structural edit of {name}: expected a map of attributes to sizes")
        allowed = _edit_attrs(m)
        clean[name] = {}
        for a, v in attrs.items():
            where = f"structural edit {name}.{str(a)[:40]}"
            if a not in allowed:
                why = f"only {', '.join(allowed)} can change" if allowed else "it has no editable size"
                raise ArchError(f"{where}: not allowed on a {type(m).__name__} ({why})")
            clean[name][a] = _check_size(where, v, getattr(m, a))
        groups = clean[name].get("groups", getattr(m, "groups", 1))
        for a in ("in_channels", "out_channels"):
            if isinstance(m, nn.Conv2d) and clean[name].get(a, getattr(m, a)) % groups:
                raise ArchError(f"structural edit of {name}: groups={groups} does not divide {a}")
    return clean


def _check_size(where: str, value: object, registry: int | tuple[int, ...]) -> int | tuple[int, ...]:
    if isinstance(registry, tuple):  # LayerNorm.normalized_shape
        if not isinstance(value, (list, tuple)) or len(value) != len(registry):
            raise ArchError(f"{where}: expected {len(registry)} size(s), got {str(value)[:40]}")
        return tuple(_check_size(where, v, r) for v, r in zip(value, registry))
    if type(value) is not int or not 1 <= value <= registry:
        raise ArchError(f"{where}={str(value)[:40]}: must be a whole number from 1 to {registry} "
                        "(the registered model's size)")
    return value


def _attr_shapes(m: nn.Module) -> dict[str, tuple[int, ...]]:
    """Parameter and buffer shapes that a module's size attributes imply (the EDIT_ATTRS types)."""
    if isinstance(m, nn.Conv2d):
        return {"weight": (m.out_channels, m.in_channels // m.groups, *m.kernel_size), "bias": (m.out_channels,)}
    if isinstance(m, nn.Linear):
        return {"weight": (m.out_features, m.in_features), "bias": (m.out_features,)}
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {k: (m.num_features,) for k in ("weight", "bias", "running_mean", "running_var")}
    if isinstance(m, nn.LayerNorm):
        return {"weight": tuple(m.normalized_shape), "bias": tuple(m.normalized_shape)}
    return {}


def apply_edits_(model: nn.Module, edits: dict[str, dict],
                 state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Validate `edits` (see `validate_edits`; `model` must be freshly built), set the edited
    attributes and resize those modules' parameters and buffers (uninitialised) to the shapes the
    attributes imply, in place, so a state_dict of the shrunk model then loads strictly.
    `state_dict` is not used: the shapes come from the validated edits, never from a file."""
    modules = dict(model.named_modules())
    for name, attrs in validate_edits(model, edits).items():
        m = modules[name]
        for a, v in attrs.items():
            setattr(m, a, v)
        for leaf, shape in _attr_shapes(m).items():
            if m._parameters.get(leaf) is not None and m._parameters[leaf].shape != shape:
                m._parameters[leaf] = nn.Parameter(torch.empty(shape, dtype=m._parameters[leaf].dtype))
            elif m._buffers.get(leaf) is not None and m._buffers[leaf].shape != shape:
                m._buffers[leaf] = torch.empty(shape, dtype=m._buffers[leaf].dtype)
    return model


def build_from_arch(arch: dict, state_dict: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Rebuild a module from a variant's `arch` ({"name", "kwargs", "edits"}), its structural edits
    validated and applied, and load weights strictly when given (without them the shrunk
    module's tensors are uninitialised: `model.state_dict()` gives the shapes a file must have)."""
    model = create_model(arch["name"], **arch.get("kwargs", {}))
    apply_edits_(model, arch.get("edits") or {})
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def classifier_name(model: nn.Module) -> str:
    """Name of the last Linear layer: the classifier, which pruning leaves alone by default."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return last or ""
