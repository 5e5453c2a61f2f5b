"""The Fine-tune page's figures: validation accuracy per epoch read off a job's events (epoch 0 =
the start, the best epoch marked, reference lines with a legend entry each) and the sample grid."""
from __future__ import annotations

import numpy as np
import pytest

from core.viz import finetune as vf


def events(stage="finetune", early=False):
    ev = [{"kind": "start", "stage": stage, "epoch": 1, "epochs": 4, "step": 0, "total_steps": 40,
           "val_accuracy": 0.80},
          {"kind": "batch_end", "stage": stage, "epoch": 1, "epochs": 4, "step": 10, "loss": 0.5},
          {"kind": "epoch_end", "stage": stage, "epoch": 1, "epochs": 4, "step": 10, "val_accuracy": 0.84},
          {"kind": "epoch_end", "stage": stage, "epoch": 2, "epochs": 4, "step": 20, "val_accuracy": 0.83},
          {"kind": "epoch_end", "stage": stage, "epoch": 3, "epochs": 4, "step": 30, "val_accuracy": 0.82}]
    if early:
        ev.append({"kind": "early_stop", "stage": stage, "epoch": 3, "epochs": 4, "val_accuracy": 0.84,
                   "best_epoch": 1})
    ev.append({"kind": "end", "stage": stage, "epoch": 3, "epochs": 4, "val_accuracy": 0.84, "best_epoch": 1})
    return ev


def test_val_points_start_at_epoch_zero_and_know_the_best_epoch():
    v = vf.val_points(events(early=True), "finetune")
    assert [p["epoch"] for p in v["points"]] == [0, 1, 2, 3]
    assert [p["val_accuracy"] for p in v["points"]] == [0.80, 0.84, 0.83, 0.82]
    assert v["start"] == 0.80 and v["epochs"] == 4 and v["best_epoch"] == 1 and v["stopped_early"]
    # another stage's events are left out; a running job has no best epoch yet
    assert vf.val_points(events(), "transfer")["points"] == []
    running = vf.val_points(events()[:3], "finetune")
    assert running["best_epoch"] is None and [p["epoch"] for p in running["points"]] == [0, 1]


def test_chart_has_reference_lines_the_best_epoch_and_a_fixed_frame():
    v = vf.val_points(events(early=True), "finetune")
    fig = vf.val_accuracy_chart(v["points"], references=[("parent", 0.80), ("dense root LeNet-5", 0.86)],
                                best_epoch=v["best_epoch"], epochs=v["epochs"], stopped_early=True)
    names = [t.name for t in fig.data]
    assert names == ["validation accuracy", "parent: 80.00%", "dense root LeNet-5: 86.00%",
                     "best epoch 1 (its weights restored)"]
    lines = [s for s in fig.layout.shapes if s.y0 == s.y1]
    assert sorted(round(s.y0, 4) for s in lines) == [0.80, 0.86]
    star = fig.data[-1]
    assert list(star.x) == [1] and list(star.y) == [0.84] and star.marker.symbol == "star"
    assert any("stopped early" in (a.text or "") for a in fig.layout.annotations)
    assert fig.layout.xaxis.range[1] >= 4          # the planned 4 epochs, though 3 ran
    lo, hi = fig.layout.yaxis.range
    assert lo < 0.80 and hi > 0.86                 # every line and point inside the frame


def test_best_epoch_zero_says_the_start_was_kept_and_none_is_skipped():
    pts = [{"epoch": 0, "val_accuracy": 0.9}, {"epoch": 1, "val_accuracy": 0.88}]
    fig = vf.val_accuracy_chart(pts, references=[("parent", 0.9), ("root", None)], best_epoch=0)
    assert [t.name for t in fig.data] == ["validation accuracy", "parent: 90.00%",
                                          "kept: no epoch beat the start"]
    assert vf.val_accuracy_chart([], references=[("chance", 0.1)]).data[0].name == "chance: 10.00%"


@pytest.mark.parametrize("colour", [False, True])
def test_sample_mosaic_puts_a_row_per_class(colour):
    shape = (3, 8, 8, 3) if colour else (3, 8, 8)
    grid = [("a", np.full(shape, 10, np.uint8)), ("b", np.full(shape[:0] + (2,) + shape[1:], 200, np.uint8))]
    img, names = vf.sample_mosaic(grid, pad=2)
    assert names == ["a", "b"]
    assert img.shape[:2] == (2 * 10 + 2, 3 * 10 + 2) and (img.ndim == 3) == colour
    assert (img[2:10, 2:10] == 10).all() and (img[12:20, 22:30] == 255).all()   # b has 2 images: the 3rd cell blank
    assert (img[12:20, 12:20] == 200).all()


def test_sample_grid_figure_is_one_image_with_class_labels():
    from core.data.datasets import cached_dataset, sample_grid

    ds = cached_dataset("digits")
    fig = vf.sample_grid_figure(sample_grid(ds, 4), counts={"0": 178}, title="digits")
    assert len(fig.data) == 1 and fig.data[0].type == "image"
    assert list(fig.layout.yaxis.ticktext)[:2] == ["0 (178)", "1"]
    many = [(f"c{i}", np.zeros((1, 8, 8), np.uint8)) for i in range(vf.MAX_GRID_CLASSES + 5)]
    fig = vf.sample_grid_figure(many)
    assert len(fig.layout.yaxis.ticktext) == vf.MAX_GRID_CLASSES and "5 more classes" in fig.layout.title.text
    with pytest.raises(ValueError, match="no images"):
        vf.sample_mosaic([("a", np.zeros((0, 8, 8), np.uint8))])
