"""core.viz.distill: the distillation curves and the per-class delta bars draw what the events and
compare_distillation's rows hold."""
from __future__ import annotations

import json

import pytest

from core.viz import distill as viz_distill


def _events(*, teacher: bool = True, epochs: int = 2, steps_per_epoch: int = 40, log_every: int = 20,
            finished_epochs: int | None = None) -> list[dict]:
    """Events as the distill task emits them (stage, TrainEvent fields, soft/hard loss, agreement)."""
    total = epochs * steps_per_epoch
    out = [{"stage": "distill", "kind": "start", "epoch": 1, "epochs": epochs, "step": 0, "total_steps": total}]
    seq = 1
    for ep in range(1, (finished_epochs if finished_epochs is not None else epochs) + 1):
        for step in range((ep - 1) * steps_per_epoch + log_every, ep * steps_per_epoch + 1, log_every):
            hard = 2.0 / step ** 0.3
            e = {"stage": "distill", "kind": "batch_end", "epoch": ep, "epochs": epochs, "step": step,
                 "total_steps": total, "hard_loss": hard, "accuracy": 0.5}
            if teacher:
                e |= {"soft_loss": 10.0 / step ** 0.3, "loss": 0.9 * 10.0 / step ** 0.3 + 0.1 * hard}
            else:
                e["loss"] = hard
            out.append(e)
        out.append({"stage": "distill", "kind": "epoch_end", "epoch": ep, "epochs": epochs,
                    "step": ep * steps_per_epoch, "total_steps": total, "loss": 1.0, "hard_loss": 0.9,
                    **({"soft_loss": 1.1} if teacher else {}), "val_accuracy": 0.6 + 0.1 * ep,
                    "agreement": 0.65 + 0.1 * ep})
    for e in out:
        e["seq"] = seq
        seq += 1
    return out


def _by_name(fig) -> dict:
    return {t.name: t for t in fig.data}


def test_curves_have_total_soft_and_hard_loss_per_step_and_accuracy_agreement_per_epoch():
    ev = _events()
    assert viz_distill.has_distill_curves(ev) and viz_distill.uses_teacher(ev)
    fig = viz_distill.distill_curves(ev)
    t = _by_name(fig)
    assert set(t) == {"total loss", "soft loss (T²·KL to the teacher)", "hard loss (cross-entropy with labels)",
                      "student val. accuracy", "agreement with the teacher (top-1)"}
    batch = [e for e in ev if e["kind"] == "batch_end"]
    assert list(t["total loss"].x) == [e["step"] for e in batch] == [20, 40, 60, 80]
    assert list(t["soft loss (T²·KL to the teacher)"].y) == pytest.approx([e["soft_loss"] for e in batch])
    assert list(t["hard loss (cross-entropy with labels)"].y) == pytest.approx([e["hard_loss"] for e in batch])
    assert list(t["student val. accuracy"].x) == [1, 2]
    assert list(t["student val. accuracy"].y) == pytest.approx([0.7, 0.8])
    assert list(t["agreement with the teacher (top-1)"].y) == pytest.approx([0.75, 0.85])
    # losses on the left panel (x: step), accuracy and agreement on the right one (x: epoch)
    assert {t["total loss"].xaxis, t["student val. accuracy"].xaxis} == {"x", "x2"}
    assert t["student val. accuracy"].xaxis == t["agreement with the teacher (top-1)"].xaxis == "x2"
    assert fig.layout.xaxis.title.text == "optimizer step" and fig.layout.xaxis2.title.text == "epoch"
    assert tuple(fig.layout.xaxis.range) == (0, 80)             # a running job grows into the whole run
    assert fig.layout.yaxis2.tickformat == ".0%"
    json.loads(fig.to_json())                                   # serializable for st.plotly_chart


def test_a_running_job_has_loss_before_the_first_epoch_ends_and_grows():
    early = _events(finished_epochs=0)
    assert not viz_distill.has_distill_curves(early)           # only the start event: nothing to draw
    part = _events(finished_epochs=1)
    fig1 = viz_distill.distill_curves(part)
    fig2 = viz_distill.distill_curves(_events())
    assert len(_by_name(fig1)["total loss"].x) == 2 and len(_by_name(fig2)["total loss"].x) == 4
    assert len(_by_name(fig1)["student val. accuracy"].x) == 1
    assert tuple(fig1.layout.xaxis2.range) == (0.5, 2.5)       # epochs 1..2 framed from the start
    # a finished (or cancelled) run is drawn over what it did, not the planned range
    assert viz_distill.distill_curves(part, full_range=False).layout.xaxis.range is None


def test_the_ablation_has_one_loss_and_says_so():
    ev = _events(teacher=False)
    assert not viz_distill.uses_teacher(ev)
    fig = viz_distill.distill_curves(ev)
    names = set(_by_name(fig))
    assert "loss (cross-entropy)" in names and not any("soft" in n for n in names)
    assert "no teacher" in fig.layout.annotations[0].text


def test_epoch_means_stand_in_when_an_epoch_is_shorter_than_a_logging_window():
    ev = [e for e in _events() if e["kind"] != "batch_end"]
    t = _by_name(viz_distill.distill_curves(ev))
    assert list(t["total loss"].x) == [40, 80] and t["total loss"].mode == "lines+markers"


def test_class_delta_chart_draws_both_differences_in_points_with_class_names():
    rows = [{"class": 0, "teacher": 0.9, "distilled": 0.8, "scratch": 0.7, "distilled_minus_scratch": 0.1,
             "teacher_minus_distilled": 0.1},
            {"class": 1, "teacher": 0.95, "distilled": 0.85, "scratch": 0.9, "distilled_minus_scratch": -0.05,
             "teacher_minus_distilled": 0.1},
            {"class": 2, "teacher": None, "distilled": None, "scratch": None, "distilled_minus_scratch": None,
             "teacher_minus_distilled": None}]
    fig = viz_distill.class_delta_chart(rows, ["cat", "dog", "bird"])
    gain, missing = fig.data
    assert gain.name == "distilled − scratch" and missing.name == "teacher − distilled"
    assert list(gain.x) == ["cat", "dog", "bird"]
    assert list(gain.y)[:2] == pytest.approx([10.0, -5.0]) and list(gain.y)[2] is None
    assert list(missing.y)[:2] == pytest.approx([10.0, 10.0])
    assert "teacher 95.0%, distilled 85.0%, scratch 90.0%" == gain.customdata[1]
    assert fig.layout.barmode == "group" and fig.layout.yaxis.ticksuffix == " pp"
    # without names the class index is shown
    assert list(viz_distill.class_delta_chart(rows[:2]).data[0].x) == ["0", "1"]
