"""Knowledge distillation: the KD loss, cached teacher logits, the distill task (a variant with its
recipe, soft/hard losses and agreement in the events), the scratch ablation, masked students and
the CLI. Tiny subsets and one epoch keep it fast."""
from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from core.cli.main import main
from core.compress.distill.kd import (
    DistillConfig,
    DistillLoss,
    agreement,
    distill_,
    kd_loss,
    per_class_accuracy,
    predictions,
    with_teacher_logits,
)
from core.measure.training import TrainConfig, train_
from core.models.registry import create_model
from core.tasks import DistillJobConfig, TaskContext, compare_distillation, job_title, run_task
from core.tasks.distill import class_accuracies


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with the shipped, trained baselines (base-lenet5 is the teacher)."""
    from core.store.workspace import Workspace

    return Workspace(tmp_path_factory.mktemp("distill") / "ws", seed_baselines=True)


@pytest.fixture(scope="module")
def teacher(ws):
    return ws.load_model(ws.get_variant("base-lenet5"))


# ---------------------------------------------------------------- the loss

def test_kd_loss_is_hinton_kd():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(8, 10, generator=g), 3 * torch.randn(8, 10, generator=g)
    y = torch.randint(0, 10, (8,), generator=g)
    total, soft, hard = kd_loss(s, t, y, 1.0, 0.0)
    assert torch.allclose(total, F.cross_entropy(s, y)) and torch.allclose(hard, F.cross_entropy(s, y))
    for T in (1.0, 2.0, 4.0, 20.0):
        p_t = F.softmax(t / T, 1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / T, 1))).sum(1).mean()   # KL(teacher || student), batchmean
        total, soft, hard = kd_loss(s, t, y, T, 1.0)
        assert torch.allclose(soft, T * T * kl, rtol=1e-5) and torch.allclose(total, soft)
        total, _, _ = kd_loss(s, t, y, T, 0.3)
        assert torch.allclose(total, 0.3 * T * T * kl + 0.7 * F.cross_entropy(s, y), rtol=1e-5)
    assert float(kd_loss(t, t, y, 4.0, 1.0)[1]) == pytest.approx(0.0, abs=1e-6)   # same outputs: nothing to learn
    s.requires_grad_(True)
    kd_loss(s, t, y, 4.0, 1.0)[0].backward()
    assert s.grad is not None and torch.isfinite(s.grad).all()


def test_distill_config_validates_itself():
    cfg = DistillConfig(temperature=2, alpha=1, epochs=1)
    assert DistillConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    for bad, match in (({"temperature": 0}, "temperature"), ({"temperature": 101}, "temperature"),
                       ({"temperature": float("nan")}, "temperature"), ({"alpha": 1.5}, "alpha"),
                       ({"alpha": -0.1}, "alpha"), ({"epochs": 0}, "epochs"), ({"lr": 1e308}, "lr"),
                       ({"optimizer": "lbfgs"}, "optimizer"), ({"batch_size": 0}, "batch_size"), ({"seed": -1}, "seed")):
        with pytest.raises(ValueError, match=match):
            DistillConfig(**bad)
    with pytest.raises(ValueError, match="teacher is required"):
        DistillJobConfig(teacher="", student="lenet5-small")
    with pytest.raises(ValueError, match="subset"):
        DistillJobConfig(teacher="x", student="lenet5-small", subset=0)
    job = DistillJobConfig(teacher="x", student="lenet5-small", distill={"alpha": 0.5}, ablation=True)
    assert job.distill.alpha == 0.5 and job.effective.alpha == 0.0
    assert job_title("distill", job) == "Train without teacher (ablation) lenet5-small: KD T=4, alpha=0, 3 ep"


# ---------------------------------------------------------------- cached teacher logits

def test_cached_teacher_logits_equal_live_ones_for_the_same_batches(tiny_data, teacher):
    cached = with_teacher_logits(tiny_data.train, teacher, "cpu")
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    n = 0
    with torch.no_grad():
        for (x1, y1), (x2, y2) in zip(cached.batches(100, shuffle=True, generator=g1),
                                      tiny_data.train.batches(100, shuffle=True, generator=g2), strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)     # the same batches, in the same order
            assert torch.allclose(cached.cursor.logits, teacher.eval()(x1), atol=1e-4)
            n += 1
    assert n == tiny_data.train.num_batches(100)
    assert cached.to("cpu").cursor is cached.cursor      # train_'s moved copy still feeds the loss


def test_distill_reports_soft_hard_losses_and_agreement(tiny_data, teacher):
    events = []
    torch.manual_seed(0)
    student = create_model("lenet5-small")
    cfg = DistillConfig(epochs=1, batch_size=50, alpha=0.7)
    result = distill_(student, copy.deepcopy(teacher), tiny_data, cfg, device="cpu", on_event=events.append)
    batch = [e for e in events if e["kind"] == "batch_end"]
    epoch = [e for e in events if e["kind"] == "epoch_end"]
    assert batch and len(epoch) == 1
    for e in batch + epoch:    # the loss the loop reports is the weighted sum of the two
        assert e["loss"] == pytest.approx(0.7 * e["soft_loss"] + 0.3 * e["hard_loss"], rel=1e-4)
    row = result.history[0]
    assert {"soft_loss", "hard_loss", "agreement"} <= set(row) and 0 <= row["agreement"] <= 1
    assert row["agreement"] == pytest.approx(agreement(student, predictions(teacher, tiny_data.val), tiny_data.val))
    # the live teacher (no cache) trains the very same student
    torch.manual_seed(0)
    live = create_model("lenet5-small")
    distill_(live, copy.deepcopy(teacher), tiny_data, DistillConfig(epochs=1, batch_size=50, alpha=0.7,
                                                                     cache_teacher=False), device="cpu")
    for a, b in zip(student.parameters(), live.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_the_ablation_is_plain_cross_entropy_with_the_same_batches(tiny_data, teacher):
    torch.manual_seed(1)
    init = create_model("lenet5-small")
    ablation, plain, distilled = copy.deepcopy(init), copy.deepcopy(init), copy.deepcopy(init)
    cfg = DistillConfig(epochs=1, batch_size=100, seed=3)
    result = distill_(ablation, copy.deepcopy(teacher), tiny_data, cfg, device="cpu", use_teacher=False)
    train_(plain, tiny_data, TrainConfig(epochs=1, batch_size=100, lr=cfg.lr, seed=3, device="cpu"))
    for a, b in zip(ablation.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)            # no teacher signal at all
    assert "soft_loss" not in result.history[0] and "agreement" in result.history[0]
    distill_(distilled, copy.deepcopy(teacher), tiny_data, cfg, device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(ablation.parameters(), distilled.parameters(), strict=True))


def test_distill_loss_without_a_teacher_reports_only_the_hard_loss():
    loss = DistillLoss(4.0, 0.0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    total, logits = loss(model, x, y)
    assert torch.allclose(total, F.cross_entropy(logits, y))
    assert set(loss.take("window")) == {"hard_loss"} and loss.take("window") == {}


def test_per_class_accuracy(tiny_data, teacher):
    pc = per_class_accuracy(teacher, tiny_data.test, 10)
    pred, y = predictions(teacher, tiny_data.test), tiny_data.test.labels
    for c in range(10):
        assert pc[c] == pytest.approx(float((pred[y == c] == c).float().mean()))
    assert per_class_accuracy(teacher, tiny_data.test.subset(3), 10).count(None) >= 7


# ---------------------------------------------------------------- the task, the comparison, the CLI

def _run(ws, **kw):
    events = []
    cfg = DistillJobConfig(teacher="base-lenet5", device="cpu", subset=1500,
                           distill=DistillConfig(epochs=1, batch_size=64), **kw)
    out = run_task("distill", cfg, TaskContext(ws, on_event=events.append))
    return ws.get_variant(out.variant_id), out.result, events


def test_distill_task_makes_a_root_variant_that_names_its_teacher(ws, monkeypatch):
    monkeypatch.setenv("WORKBENCH_LATENCY_RUNTIMES", "torch,onnxruntime,openvino")   # as the app: every runtime
    v, result, events = _run(ws, student="lenet5-small")
    scratch, sresult, sevents = _run(ws, student="lenet5-small", ablation=True)
    assert v.parent_id is None and v.arch["name"] == "lenet5-small"
    step = v.recipe[0]
    assert len(v.recipe) == 1 and step["step"] == "distill" and step["teacher"] == "base-lenet5"
    assert step["distill"]["alpha"] == 0.9 and step["ablation"] is False
    assert scratch.recipe[0]["distill"]["alpha"] == 0.0 and scratch.recipe[0]["ablation"] is True
    epoch = [e for e in events if e["kind"] == "epoch_end"]
    assert epoch and all(e["stage"] == "distill" for e in events)
    assert {"loss", "soft_loss", "hard_loss", "accuracy", "val_accuracy", "agreement"} <= set(epoch[0])
    assert any("soft_loss" in e for e in events if e["kind"] == "batch_end")
    assert not any("soft_loss" in e for e in sevents)
    assert result["teacher_accuracy"] == ws.get_variant("base-lenet5").metrics["accuracy"]
    assert result["agreement"] == epoch[-1]["agreement"] and len(result["history"]) == 1
    assert_timed_with_teacher(v.metrics, runtimes=("", "ort_", "ov_"))
    assert "reference_latency_ms_b64" not in v.metrics and "latency_ms_b64_vs_reference_ci" not in v.metrics
    assert v.metrics["accuracy"] != scratch.metrics["accuracy"]

    teacher = ws.get_variant("base-lenet5")
    cmp = compare_distillation(teacher, v, scratch, per_class=class_accuracies(ws, [teacher, v, scratch]))
    assert cmp["teacher"]["accuracy"] == teacher.metrics["accuracy"] and len(cmp["per_class"]) == 10
    row = cmp["per_class"][0]
    assert row["distilled_minus_scratch"] == pytest.approx(row["distilled"] - row["scratch"])
    gap = teacher.metrics["accuracy"] - scratch.metrics["accuracy"]
    assert cmp["gap_closed"] == pytest.approx((v.metrics["accuracy"] - scratch.metrics["accuracy"]) / gap)


def assert_timed_with_teacher(m: dict, runtimes=("", "ort_")) -> None:
    """The teacher timed with the student, alternately, in one call: a figure with the interval of the
    ratio, or NaN with the reason (the lane withholds what did not settle)."""
    for p in runtimes:
        if p and m.get(f"{p}unavailable"):
            continue
        for b in (1, 64):
            teacher, ci = m[f"teacher_{p}latency_ms_b{b}"], m[f"{p}latency_ms_b{b}_vs_teacher_ci"]
            if math.isfinite(teacher):
                assert teacher > 0 and 0.95 * ci[0] <= teacher / m[f"{p}latency_ms_b{b}"] <= 1.05 * ci[1]
            else:
                assert ci is None and m[f"{p}latency_unmeasured"].startswith("not measurable now"), m
    assert math.isfinite(m["teacher_latency_ms_b64"]) or "not measurable now" in m["latency_unmeasured"]


def test_a_masked_student_keeps_its_zeros(ws):
    out = run_task("prune", {"variant": "base-lenet5", "prune": {"amount": 0.8, "scope": "global"}, "device": "cpu"},
                   TaskContext(ws))
    pruned = ws.get_variant(out.variant_id)
    v, _, _ = _run(ws, student=pruned.id)
    assert v.parent_id == pruned.id and v.recipe[-1]["step"] == "distill" and v.kind["masked"]
    # timed with its parent (the ratio to it) and its teacher in one call
    assert_timed_with_teacher(v.metrics, runtimes=("",))
    assert "reference_latency_ms_b64" in v.metrics and v.metrics["device"] == ws.get_variant(pruned.id).metrics["device"]
    assert v.metrics["nonzero_params"] == pruned.metrics["nonzero_params"]
    before, after = ws.load_model(pruned), ws.load_model(v)
    for (name, a), b in zip(before.state_dict().items(), after.state_dict().values(), strict=True):
        if name.endswith("weight") and a.ndim > 1:
            assert torch.equal(a == 0, b == 0), name
    assert any(not torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True))


def test_compare_distillation_says_when_it_did_not_help():
    def var(i, acc):
        return SimpleNamespace(id=i, name=i, metrics={"accuracy": acc, "device": "cpu", "size_bytes": 1})
    out = compare_distillation(var("t", 0.9), var("d", 0.8), var("s", 0.7))
    assert out["gap_closed"] == pytest.approx(0.5) and "closed 50%" in out["verdict"]
    out = compare_distillation(var("t", 0.9), var("d", 0.69), var("s", 0.7))
    assert out["gap_closed"] < 0 and out["verdict"].startswith("Distillation did not help")
    out = compare_distillation(var("t", 0.7), var("d", 0.8), var("s", 0.75))
    assert out["gap_closed"] is None and "no gap" in out["verdict"]


def test_cli_distill(ws, capsys):
    code = main(["--workspace", str(ws.root), "--json", "distill", "--teacher", "base-lenet5", "--student",
                 "lenet5-small", "--epochs", "1", "--subset", "500", "--device", "cpu", "--temperature", "2",
                 "--alpha", "0.5", "--seed", "7"])
    out = capsys.readouterr()
    assert code == 0, out.err
    result = json.loads(out.out.strip().splitlines()[-1])
    assert result["teacher_id"] == "base-lenet5" and 0 <= result["agreement"] <= 1
    step = ws.get_variant(result["id"]).recipe[0]
    assert step["distill"]["temperature"] == 2 and step["distill"]["alpha"] == 0.5 and step["distill"]["seed"] == 7
    for bad in (["--alpha", "2"], ["--temperature", "0"], ["--epochs", "0"]):
        code = main(["--workspace", str(ws.root), "distill", "--teacher", "base-lenet5", "--student", "lenet5-small",
                     *bad])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error:")
    assert main(["--workspace", str(ws.root), "distill", "--teacher", "base-lenet5", "--student", "nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err


def test_the_speed_against_the_teacher_is_the_paired_ratio_with_its_interval_or_why_there_is_none():
    lane = "cpu: AMD EPYC, AVX512 kernels + AVX-512 VNNI, 1 thread"
    old = "cpu: x86_64, 1 threads"   # a job's device string before the lane: never a reason to refuse a paired ratio
    teacher = SimpleNamespace(id="t", name="t", metrics={"accuracy": 0.9, "latency_ms_b64": 12.0, "device": old})
    distilled = SimpleNamespace(id="d", name="d", metrics={
        "accuracy": 0.85, "device": lane, "latency_ms_b64": 3.0, "teacher_latency_ms_b64": 9.6,
        "latency_ms_b64_vs_teacher_ci": [3.1, 3.3], "ort_latency_ms_b64": float("nan"), "ort_device": lane,
        "teacher_ort_latency_ms_b64": float("nan"), "ort_latency_ms_b64_vs_teacher_ci": None, "ort_unavailable": "",
        "ort_latency_unmeasured": "not measurable now: other processes are using 1.8 of 2 cores (batch 64)"})
    scratch = SimpleNamespace(id="s", name="s", metrics={
        "accuracy": 0.8, "device": lane, "latency_ms_b64": float("nan"), "teacher_latency_ms_b64": float("nan"),
        "latency_unmeasured": "not measurable now: another latency measurement held the lane (batch 64)",
        "ort_unavailable": "onnxruntime is not installed"})
    out = compare_distillation(teacher, distilled, scratch)
    torch_ratio = out["speed_vs_teacher"]["distilled"][64]["torch"]
    assert torch_ratio.value == pytest.approx(3.2) and (torch_ratio.low, torch_ratio.high) == (3.1, 3.3)
    assert out["speed_words"]["distilled"] == (
        "PyTorch eager: 3.20x faster than the teacher (95% interval 3.10x-3.30x); ONNX Runtime: not measurable now: "
        "other processes are using 1.8 of 2 cores (batch 64)")
    assert out["speed_words"]["scratch"] == (
        "PyTorch eager: not measurable now: another latency measurement held the lane (batch 64); "
        "ONNX Runtime: no ONNX Runtime figure: onnxruntime is not installed")
