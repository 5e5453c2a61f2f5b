"""The sweep job kind on the local path: configs check themselves, trials are the tasks themselves
(same numbers), a failed trial is a row, the best trial is the one variant stored, cancel stops it.
The Ray Tune path is tested in test_ray_runner.py (one local Ray per module)."""
from __future__ import annotations

import pytest
from job_helpers import wait_for

from core.base.cancel import Cancelled
from core.run import jobs
from core.tasks import TaskContext, run_task
from core.tasks.sweep import SweepJobConfig, sweep_result
from core.tasks.sweep_grid import TrialResult, pick_best

TINY_SWEEP = {"family": "prune_finetune", "grid": {"amount": [0.5, 0.9], "epochs": [1]}, "subset": 256,
              "device": "cpu"}


@pytest.fixture
def base(workspace):
    return run_task("train", {"model": "lenet5-small", "subset": 256, "train": {"epochs": 1, "device": "cpu"}},
                    TaskContext(workspace)).variant_id


@pytest.mark.parametrize("change, match", [
    ({"family": "grid_everything"}, "family must be one of distill, prune_finetune"),
    ({"grid": {"amount": [0.5], "alpha": [0.5]}}, "grid takes values for amount and epochs"),
    ({"grid": {"amount": [0.1, 0.2, 0.3, 0.4, 0.5], "epochs": [1, 2, 3, 4]}}, "the grid has 20 trials; a sweep runs at most 16"),
    ({"grid": {"amount": [0.5], "epochs": [1.5]}}, "grid epochs must be whole numbers"),
    ({"grid": {"amount": ["half"], "epochs": [1]}}, "grid amount values must be numbers"),
    ({"grid": {"amount": [1.5], "epochs": [1]}}, "amount"),   # the prune task's own rule
    ({"family": "distill", "grid": {"temperature": [0], "alpha": [0.5]}}, "temperature must be a number above 0"),
    ({"objective": "fastest"}, "objective must be one of val_accuracy, smallest_within"),
    ({"tolerance": 2}, "tolerance must be a fraction"),
    ({"max_concurrent": 0}, "max_concurrent must be a positive whole number"),
    ({"cpus_per_trial": 0}, "cpus_per_trial must be a positive whole number"),
    ({"gpus_per_trial": 1.5}, r"gpus_per_trial must be a fraction in \(0, 1\] or a whole number"),
])
def test_a_bad_sweep_config_says_what_is_wrong(change, match):
    with pytest.raises(ValueError, match=match):
        SweepJobConfig.from_dict({"variant": "v", **TINY_SWEEP, **change})


def test_each_family_has_its_own_defaults():
    d = SweepJobConfig(variant="v")
    assert (d.family, d.objective, d.grid) == ("distill", "val_accuracy", {"temperature": (2.0, 4.0), "alpha": (0.5, 0.9)})
    p = SweepJobConfig(variant="v", family="prune_finetune")
    assert (p.objective, p.grid) == ("smallest_within", {"amount": (0.5, 0.8, 0.9), "epochs": (1, 2)})
    assert len(p.trial_configs()) == 6 and p.trial_configs()[1]["prune"]["amount"] == 0.5
    assert p.trial_configs()[1]["finetune"]["epochs"] == 2   # amount-major order
    dc = d.trial_configs()[3]
    assert dc["teacher"] == "v" and dc["student"] == "lenet5-small" and dc["distill"]["temperature"] == 4.0
    assert SweepJobConfig.from_dict(p.to_dict()) == p
    # the CLI's grid.amount=0.5,0.9: text values, and an axis left out keeps its default
    cli = SweepJobConfig.from_dict({"variant": "v", "family": "prune_finetune", "grid": {"amount": "0.9,0.5"}})
    assert cli.grid == {"amount": (0.5, 0.9), "epochs": (1, 2)}


def _trial(i, val, size, state="done"):
    return TrialResult(i, {"x": i}, state, {"val_accuracy": val, "size_bytes": size} if state == "done" else {}, 1.0)


def test_pick_best_by_validation_accuracy_and_by_size_within_a_tolerance():
    trials = [_trial(0, 0.80, 900), _trial(1, 0.85, 500), _trial(2, 0.84, 300), _trial(3, 0.0, 1, "failed")]
    best, why = pick_best(trials, "val_accuracy")
    assert best.trial == 1 and why == "the highest validation accuracy"
    best, why = pick_best(trials, "smallest_within", reference_val=0.86, tolerance=0.02)
    assert best.trial == 2 and "smallest file among the 2 trials within 2 pt" in why
    best, why = pick_best(trials, "smallest_within", reference_val=0.95, tolerance=0.01)
    assert best.trial == 1 and why.startswith("no trial stayed within 1 pt") and "kept the most accurate" in why
    assert pick_best([_trial(0, 0, 0, "failed")], "val_accuracy") == (None, "no trial finished with a validation accuracy")


def test_a_local_sweep_runs_each_trial_as_its_task_and_stores_only_the_best(workspace, base):
    events, lines = [], []
    out = run_task("sweep", {"variant": base, **TINY_SWEEP}, TaskContext(workspace, on_event=events.append,
                                                                         log=lines.append))
    r = out.result
    assert r["mode"] == "sequential" and [t["params"] for t in r["trials"]] == [
        {"amount": 0.5, "epochs": 1}, {"amount": 0.9, "epochs": 1}]
    assert all(t["state"] == "done" for t in r["trials"])
    # the trial is the prune_recover task itself: run alone with the same config, the same numbers
    cfg = SweepJobConfig.from_dict({"variant": base, **TINY_SWEEP})
    alone = workspace.get_variant(run_task("prune_recover", cfg.trial_configs()[1], TaskContext(workspace)).variant_id)
    t1 = r["trials"][1]["metrics"]
    assert (t1["nonzero_params"], t1["params"], t1["size_bytes"]) == (
        alone.metrics["nonzero_params"], alone.metrics["params"], alone.metrics["size_bytes"])
    assert t1["val_accuracy"] == alone.metrics["val_accuracy"] and t1["accuracy"] == alone.metrics["accuracy"]
    # one variant stored: the best trial's, a child of the parent, its recipe the trial's own step
    best = workspace.get_variant(out.variant_id)
    assert r["variant_id"] == out.variant_id and r["best_trial"] in (0, 1)
    chosen = r["trials"][r["best_trial"]]
    assert best.parent_id == base and best.recipe[-1]["step"] == "prune_recover"
    assert best.recipe[-1]["prune"]["amount"] == chosen["params"]["amount"]
    assert best.metrics["nonzero_params"] == chosen["metrics"]["nonzero_params"]
    assert "[best of sweep]" in best.name and "Best of 2 sweep trials" in best.notes
    assert len(workspace.list_variants()) == 3   # base, the trial run alone above, the sweep's best
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "start" and kinds.count("trial") == 2 and kinds[-1] == "result"
    assert sweep_result(None, events) == r
    assert any("trial 2 amount 0.9, epochs 1: done" in ln for ln in lines)


def test_a_failed_trial_is_a_row_and_the_sweep_goes_on(workspace, base):
    pruned = run_task("prune", {"variant": base, "prune": {"amount": 0.6, "scope": "global"}, "device": "cpu"},
                      TaskContext(workspace)).variant_id
    out = run_task("sweep", {"variant": pruned, **TINY_SWEEP}, TaskContext(workspace))
    first, second = out.result["trials"]
    assert first["state"] == "failed" and "already 60.0% sparse" in first["error"] and first["metrics"] == {}
    assert second["state"] == "done" and out.result["best_trial"] == 1


def test_a_sweep_whose_trials_all_fail_fails_with_the_reason(workspace, base):
    pruned = run_task("prune", {"variant": base, "prune": {"amount": 0.95, "scope": "global"}, "device": "cpu"},
                      TaskContext(workspace)).variant_id
    with pytest.raises(RuntimeError, match="every trial of the sweep failed: .*already 95.0% sparse"):
        run_task("sweep", {"variant": pruned, **TINY_SWEEP}, TaskContext(workspace))


def test_cancel_stops_a_local_sweep_and_stores_nothing(workspace, base):
    seen = []

    def stop_after_first_trial():
        return any(e["kind"] == "trial" for e in seen)

    with pytest.raises(Cancelled, match="sweep cancelled with 1 of 2 trials finished"):
        run_task("sweep", {"variant": base, **TINY_SWEEP},
                 TaskContext(workspace, on_event=seen.append, should_stop=stop_after_first_trial))
    assert len(workspace.list_variants()) == 1


def test_a_live_sweep_result_shows_finished_running_and_queued_trials():
    start = {"stage": "sweep", "kind": "start", "family": "distill", "axes": ["temperature", "alpha"],
             "labels": ["T", "a"], "objective": "val_accuracy", "tolerance": 0.01, "reference_val_accuracy": 0.9,
             "mode": "ray_tune", "parent": "p", "trials": [{"trial": i, "params": {"temperature": i, "alpha": 0.5}}
                                                              for i in range(3)]}
    done = {"stage": "sweep", "kind": "trial", "trial": 0, "params": {"temperature": 0, "alpha": 0.5}, "state": "done",
            "metrics": {"val_accuracy": 0.8}, "seconds": 1.0, "node": "n", "error": None}
    live = sweep_result(None, [start, done, {"stage": "sweep", "kind": "trial_progress", "trial": 2, "progress": 0.4,
                                             "message": "m"}])
    assert live["partial"] and [t["state"] for t in live["trials"]] == ["done", "queued", "running"]
    assert live["trials"][2]["progress"] == 0.4 and live["mode"] == "ray_tune"
    assert sweep_result(None, []) is None


def test_a_sweep_job_on_the_local_runner_ends_with_its_best_variant(workspace, base, monkeypatch):
    monkeypatch.setenv("WORKBENCH_RUNNER", "local")
    job_id = jobs.submit(workspace, "sweep", {"variant": base, **TINY_SWEEP})
    job = wait_for(lambda: (j := workspace.jobs.get(job_id)).is_final and j, 180, "the sweep job to end")
    assert job.state == "done", (job.error, job.log)
    assert job.runner == "local" and job.result["mode"] == "sequential" and len(job.result["trials"]) == 2
    assert job.variant_id == job.result["variant_id"] and workspace.get_variant(job.variant_id).parent_id == base
    assert "Sweep " in job.title and "2 trials" in job.title
