import pytest
import torch
import torch.nn as nn

from core.models import (
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
