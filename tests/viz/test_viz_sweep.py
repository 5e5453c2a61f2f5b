"""core/viz_sweep: the sweep's heatmap and accuracy-vs-size scatter, on a finished and a live result."""
from __future__ import annotations

import pytest

from core.viz.sweep import BEST_MARK, sweep_heatmap, sweep_scatter, trial_label


def row(trial, amount, epochs, state="done", val=None, acc=None, size=None, error=None, progress=None):
    metrics = {} if val is None else {"val_accuracy": val, "accuracy": acc, "size_bytes": size}
    r = {"trial": trial, "params": {"amount": amount, "epochs": epochs}, "state": state, "metrics": metrics,
         "seconds": 1.0, "node": "vm", "error": error}
    if progress is not None:
        r["progress"] = progress
    return r


def prune_result(**over) -> dict:
    """A finished 2 x 2 prune_finetune sweep: trial 2 (90%, 1 ep) failed; trial 1 is the best."""
    trials = [row(0, 0.5, 1, val=0.80, acc=0.79, size=900_000),
              row(1, 0.5, 2, val=0.81, acc=0.80, size=880_000),
              row(2, 0.9, 1, state="failed", error="RuntimeError: diverged"),
              row(3, 0.9, 2, val=0.70, acc=0.69, size=220_000)]
    return {"family": "prune_finetune", "axes": ["amount", "epochs"], "labels": ["prune amount", "fine-tune epochs"],
            "objective": "smallest_within", "tolerance": 0.02, "reference_val_accuracy": 0.82, "trials": trials,
            "best_trial": 1, "why": "...", **over}


def traces(fig, name):
    return [t for t in fig.data if t.name == name]


def test_the_heatmap_has_one_cell_per_trial_with_its_accuracy_and_the_best_one_starred_and_outlined():
    fig = sweep_heatmap(prune_result())
    acc = traces(fig, "val accuracy")[0]
    assert list(acc.x) == ["50%", "90%"] and list(acc.y) == ["1", "2"]   # amount across, epochs up
    assert [list(r) for r in acc.z] == [[0.80, None], [0.81, 0.70]]
    assert acc.text[1][0] == f"{BEST_MARK} 81.0%<br>880 KB"               # sizes differ: each cell says its size
    assert acc.text[0][0] == "80.0%<br>900 KB" and acc.text[1][1] == "70.0%<br>220 KB"
    assert sum(BEST_MARK in s for r in acc.text for s in r) == 1
    (outline,) = fig.layout.shapes
    assert (outline.x0, outline.x1, outline.y0, outline.y1) == (-0.5, 0.5, 0.5, 1.5)   # the (50%, 2 ep) cell
    # the failed trial: its own red cell that says so, its error in the hover
    status = traces(fig, "not measured")[0]
    assert [list(r) for r in status.z] == [[None, 1.0], [None, None]]
    assert status.text[0][1] == "failed" and "RuntimeError: diverged" in status.customdata[0][1]
    assert fig.layout.title.text == f"Validation accuracy per trial (4 trials; {BEST_MARK} best)"


def test_the_heatmap_of_a_running_sweep_shows_queued_and_running_cells_and_no_best():
    r = prune_result(best_trial=None, partial=True)
    r["trials"][2] = row(2, 0.9, 1, state="running", progress=0.4)
    r["trials"][3] = row(3, 0.9, 2, state="queued")
    fig = sweep_heatmap(r)
    status = traces(fig, "not measured")[0]
    assert [list(x) for x in status.z] == [[None, 0.0], [None, 0.0]]        # grey: not measured yet
    assert status.text[0][1] == "running 40%" and status.text[1][1] == "queued"
    assert not fig.layout.shapes
    assert not any(BEST_MARK in s for x in traces(fig, "val accuracy")[0].text for s in x)
    assert fig.layout.title.text == "Validation accuracy per trial (2 of 4 trials done)"


def test_a_heatmap_before_any_trial_finished_still_draws():
    r = prune_result(best_trial=None, partial=True)
    r["trials"] = [row(i, a, e, state="queued") for i, (a, e) in enumerate([(0.5, 1), (0.9, 1)])]
    fig = sweep_heatmap(r)
    assert [list(x) for x in traces(fig, "val accuracy")[0].z] == [[None, None]]
    assert list(traces(fig, "not measured")[0].text[0]) == ["queued", "queued"]


def test_equal_sizes_are_not_repeated_in_every_cell():
    r = {"family": "distill", "axes": ["temperature", "alpha"], "labels": ["temperature T", "alpha"],
         "objective": "val_accuracy", "tolerance": 0.01, "reference_val_accuracy": 0.9, "best_trial": 0,
         "trials": [{"trial": 0, "params": {"temperature": 2.0, "alpha": 0.5}, "state": "done",
                     "metrics": {"val_accuracy": 0.5, "accuracy": 0.5, "size_bytes": 150_000}},
                    {"trial": 1, "params": {"temperature": 2.0, "alpha": 0.9}, "state": "done",
                     "metrics": {"val_accuracy": 0.4, "accuracy": 0.4, "size_bytes": 150_000}}]}
    close = {**r, "trials": [{**r["trials"][0]}, {**r["trials"][1], "metrics": {"val_accuracy": 0.495,
                                                                               "size_bytes": 150_000}}]}
    assert [list(x) for x in traces(sweep_heatmap(close), "val accuracy")[0].text] == [[f"{BEST_MARK} 50.00%"],
                                                                                         ["49.50%"]]
    acc = traces(sweep_heatmap(r), "val accuracy")[0]
    assert list(acc.x) == ["2"] and list(acc.y) == ["0.5", "0.9"]
    assert acc.zmin == pytest.approx(0.35) and acc.zmax == 0.5      # half the spread below the worst: both tinted
    assert [list(x) for x in acc.text] == [[f"{BEST_MARK} 50.0%"], ["40.0%"]]
    assert not traces(sweep_heatmap(r), "not measured")
    # a distill sweep's reference is the teacher
    scatter = sweep_scatter(r, parent_size_bytes=1_700_000)
    assert [a.text for a in scatter.layout.annotations] == ["teacher (validation) 90.0%"]
    assert traces(scatter, "teacher")[0].x[0] == 1700.0


def test_the_scatter_puts_trials_at_their_size_and_accuracy_with_the_parent_line_and_tolerance_band():
    fig = sweep_scatter(prune_result(), parent_size_bytes=1_700_000)
    trials, best, parent = traces(fig, "trials")[0], traces(fig, f"{BEST_MARK} best trial")[0], traces(fig, "parent")[0]
    assert list(trials.x) == [900.0, 220.0] and list(trials.y) == [0.80, 0.70]   # the failed trial is not drawn
    assert list(best.x) == [880.0] and list(best.y) == [0.81] and best.marker.symbol == "star"
    assert list(best.text) == ["amount 50%, epochs 2"]
    assert list(parent.x) == [1700.0] and list(parent.y) == [0.82]
    (band, line) = fig.layout.shapes
    assert band.y0 == pytest.approx(0.80) and band.type == "rect"          # parent 82% - 2 pt
    assert line.y0 == line.y1 == 0.82
    assert {a.text for a in fig.layout.annotations} == {"kept if at most 2 pt below the parent",
                                                         "parent (validation) 82.0%"}
    assert trials.mode == "markers" and best.mode == "markers+text"   # only the best point is labelled
    assert fig.data[-2].hovertemplate.startswith("%{text}")          # the others are named on hover


def test_the_scatter_without_tolerance_objective_has_no_band_and_a_live_one_has_no_best():
    r = prune_result(objective="val_accuracy", best_trial=None, partial=True)
    fig = sweep_scatter(r)
    assert len(fig.layout.shapes) == 1                # only the parent's line
    assert not traces(fig, f"{BEST_MARK} best trial") and len(traces(fig, "trials")[0].x) == 3
    assert not traces(fig, "parent")                  # no parent size given: no parent point
    empty = sweep_scatter({**r, "trials": [row(0, 0.5, 1, state="queued")]})
    assert "no finished trial yet" in empty.layout.title.text


def test_trial_label_writes_amounts_as_percentages():
    r = prune_result()
    assert trial_label(r, r["trials"][3]) == "amount 90%, epochs 2"
