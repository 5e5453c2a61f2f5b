import pytest
import torch
import torch.nn as nn

from core.models.registry import (
    apply_edits_,
    build_from_arch,
    classifier_name,
    create_model,
    get_spec,
    list_models,
    structural_edits,
)

EXPECTED_PARAMS = {"lenet300": 266_610, "lenet5": 431_080}


@pytest.mark.parametrize("spec", list_models(), ids=lambda s: s.name)
def test_every_registered_model_runs_on_the_default_dataset(spec):
    model = create_model(spec.name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_paper_parameter_counts():
    for name, n in EXPECTED_PARAMS.items():
        assert sum(p.numel() for p in create_model(name).parameters()) == n


def test_student_is_at_most_a_quarter_of_its_teacher():
    spec = get_spec("lenet5-small")
    student = sum(p.numel() for p in create_model("lenet5-small").parameters())
    teacher = sum(p.numel() for p in create_model(spec.student_of).parameters())
    assert student <= teacher / 4


def test_models_adapt_to_channels_and_classes():
    for name in ("lenet5", "resnet-small", "resnet18", "mobilenet_v3_small"):
        m = create_model(name, num_classes=7, in_channels=3, image_size=32).eval()
        with torch.no_grad():
            assert m(torch.randn(1, 3, 32, 32)).shape == (1, 7)


def test_pretrained_without_weights_gives_a_notice(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.warns(UserWarning, match="untrained"):
        m = create_model("resnet18", pretrained=True, allow_download=False)
    assert m.notices and "untrained" in m.notices[0]


def test_unknown_model_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'vgg99'"):
        create_model("vgg99")


def test_structural_edits_rebuild_a_shrunk_model():
    model = create_model("lenet5")
    # shrink conv2 from 50 to 30 output channels by hand, as structured pruning would
    keep = torch.arange(30)
    with torch.no_grad():
        model.conv2 = nn.Conv2d(20, 30, 5)
        old_fc = model.fc1
        model.fc1 = nn.Linear(30 * 16, 500)
        model.fc1.weight.copy_(old_fc.weight.view(500, 50, 16)[:, keep].reshape(500, -1))
    edits = structural_edits(model, create_model("lenet5"))
    assert edits == {"conv2": {"out_channels": 30}, "fc1": {"in_features": 480}}
    arch = {"name": "lenet5", "kwargs": {}, "edits": edits}
    rebuilt = build_from_arch(arch, model.state_dict()).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model.eval()(x))
    assert rebuilt.conv2.out_channels == 30


def test_apply_edits_only_touches_named_modules():
    m = create_model("lenet300")
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    apply_edits_(m, {}, sd)
    assert m.fc1.in_features == 784
    assert classifier_name(m) == "fc3"


# ---------------------------------------------------------------- structural edits from a file are validated

@pytest.mark.parametrize("edits, match", [
    ({"fc1": {"forward": 3}}, r"fc1.forward: not allowed on a Linear \(only in_features, out_features can change\)"),
    ({"conv1": {"stride": 2}}, r"conv1.stride: not allowed on a Conv2d"),
    ({"conv1": {"__class__": "x"}}, r"conv1.__class__: not allowed"),
    ({"conv1": {"weight": 1}}, r"conv1.weight: not allowed"),
    ({"": {"forward": 1}}, r"'': the model has no such layer"),
    ({"fc9": {"out_features": 3}}, r"'fc9': the model has no such layer"),
    ({"fc1.weight": {"out_features": 3}}, r"'fc1.weight': the model has no such layer"),
    ({"fc1": {"out_features": -5}}, r"fc1.out_features=-5: must be a whole number from 1 to 500"),
    ({"fc1": {"out_features": 0}}, r"fc1.out_features=0: must be a whole number from 1 to 500"),
    ({"fc1": {"out_features": 10**12}}, r"fc1.out_features=1000000000000: must be a whole number from 1 to 500"),
    ({"fc1": {"out_features": 3.0}}, r"must be a whole number"),
    ({"fc1": {"out_features": True}}, r"must be a whole number"),
    ({"fc1": {"out_features": "300"}}, r"must be a whole number"),
    ({"conv2": {"groups": 100}}, r"conv2.groups=100: must be a whole number from 1 to 1"),
    ({"fc1": []}, r"expected a map of attributes"),
    (["fc1"], r"must be a map of module names"),
])
def test_edits_other_than_known_channel_counts_are_refused(edits, match):
    from core.models.registry import ArchError, validate_edits

    with pytest.raises(ArchError, match=match):
        validate_edits(create_model("lenet5"), edits)
    model = create_model("lenet5")
    with pytest.raises(ArchError, match=match):
        apply_edits_(model, edits)
    assert type(model.fc1).forward is nn.Linear.forward and model.conv1.stride == (1, 1)  # nothing was set
    with pytest.raises(ArchError, match=match):
        build_from_arch({"name": "lenet5", "kwargs": {}, "edits": edits})


def test_edits_set_shapes_from_the_attributes_not_from_the_file():
    m = create_model("lenet5")
    apply_edits_(m, {"conv2": {"out_channels": 30}, "fc1": {"in_features": 480}})
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["conv2.weight"] == (30, 20, 5, 5) and shapes["conv2.bias"] == (30,) and shapes["fc1.weight"] == (500, 480)
    # a state_dict with other shapes no longer resizes the model to fit it: it is refused on load
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd["conv1.weight"] = torch.zeros(20, 1, 3, 3)
    with pytest.raises(RuntimeError, match="size mismatch for conv1.weight"):
        build_from_arch({"name": "lenet5", "kwargs": {}, "edits": {"conv2": {"out_channels": 30},
                                                                     "fc1": {"in_features": 480}}}, sd)


def test_depthwise_and_norm_edits_of_the_registry_models_are_accepted():
    from core.models.registry import validate_edits

    mb = create_model("mobilenet_v3_small")
    dw = next(n for n, m in mb.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1)
    c = dict(mb.named_modules())[dw].in_channels // 2
    assert validate_edits(mb, {dw: {"in_channels": c, "out_channels": c, "groups": c}}) == {
        dw: {"in_channels": c, "out_channels": c, "groups": c}}
    rs = create_model("resnet-small")
    assert validate_edits(rs, {"stem.1": {"num_features": 8}}) == {"stem.1": {"num_features": 8}}
    ln = nn.Sequential(nn.LayerNorm(6))
    assert validate_edits(ln, {"0": {"normalized_shape": [4]}}) == {"0": {"normalized_shape": (4,)}}
    from core.models.registry import ArchError

    with pytest.raises(ArchError, match=f"{dw}: groups=5 does not divide in_channels"):
        validate_edits(mb, {dw: {"groups": 5}})
    with pytest.raises(ArchError, match="expected 1 size"):
        validate_edits(ln, {"0": {"normalized_shape": [4, 4]}})
