"""AppTest: the sweep sections of the Distill page (temperature × alpha) and the Prune page (amount
× fine-tune epochs): the form's defaults and help texts, where the trials run, Start queues a
`sweep` job with the chosen grid; a finished sweep (really run, 2 trials) shows one table row per
trial, the heatmap and the scatter, why the best was chosen, and opens the best variant; a failed
sweep says so. On the Jobs page a sweep's card shows its trials, and a Ray job says where it ran."""
from __future__ import annotations

import time

import pytest
from ui_helpers import charts, ok, texts

from core.run import jobs
from core.tasks import TaskContext, run_task
from core.tasks.sweep import SweepJobConfig
from core.viz.sweep import BEST_MARK

D, P = "sweep-distill-", "sweep-prune_finetune-"


@pytest.fixture
def no_workers(monkeypatch):
    """Jobs stay queued: the test reads what Start put in the job store, no worker runs it."""
    monkeypatch.setattr(jobs, "dispatch", lambda ws, runner=None: [])


def sweep_jobs(ws):
    return [j for j in ws.jobs.list() if j.kind == "sweep"]


def controls(at, prefix):
    return [w for kind in ("selectbox", "multiselect", "number_input", "radio")
            for w in at.get(kind) if (w.key or "").startswith(prefix)]


def test_the_distill_sweep_form_shows_the_default_grid_and_where_trials_run(app, monkeypatch):
    app.switch_page("pages/distill.py").run()
    ok(app)
    assert app.selectbox(key=D + "variant").value == "base-lenet5"
    assert app.selectbox(key=D + "student").value == "lenet5-small"
    assert app.multiselect(key=D + "temperature").value == [2.0, 4.0]
    assert app.multiselect(key=D + "alpha").value == [0.5, 0.9]
    assert app.number_input(key=D + "epochs").value == 3      # 3 epochs on 10,000 images: ~85% in ~6 s per trial
    assert app.number_input(key=D + "subset").value == 10000
    assert "**2 × 2 = 4 trials**, run one after another in a background job" in texts(app.caption)
    assert "trains a fresh lenet5-small for 3 epoch(s) on 10,000 training images" in texts(app.caption)
    assert len(controls(app, D)) == 6 and all(w.proto.help.strip() for w in controls(app, D))
    assert app.button(key=D + "start").help and not app.button(key=D + "start").disabled
    assert "No sweep yet" in texts(app.caption)
    # the one-run form is still there, in its own tab
    assert app.slider(key="distill-temperature").value == 4.0
    monkeypatch.setenv("WORKBENCH_RUNNER", "ray")
    app.run()
    assert "run in parallel with Ray Tune across the cluster" in texts(ok(app).caption)


def test_the_prune_sweep_form_defaults_and_a_grid_too_big_is_refused(app):
    app.switch_page("pages/prune.py").run()
    ok(app)
    assert app.selectbox(key=P + "variant").value == "base-lenet5"
    assert app.multiselect(key=P + "amount").value == [0.5, 0.8, 0.9]
    assert app.multiselect(key=P + "epochs").value == [1, 2]
    assert app.radio(key=P + "objective").value == "smallest_within"
    assert app.number_input(key=P + "tolerance").value == 1.0
    assert "**3 × 2 = 6 trials**" in texts(app.caption)
    assert len(controls(app, P)) == 6 and all(w.proto.help.strip() for w in controls(app, P))
    app.radio(key=P + "objective").set_value("val_accuracy").run()
    assert not [w for w in ok(app).number_input if w.key == P + "tolerance"]   # no tolerance to set
    app.multiselect(key=P + "amount").set_value([0.3, 0.5, 0.6, 0.7, 0.8, 0.9])
    app.multiselect(key=P + "epochs").set_value([1, 2, 3]).run()
    assert "6 × 3 = 18 trials: a sweep runs at most 16" in texts(ok(app).error)
    assert app.button(key=P + "start").disabled
    app.multiselect(key=P + "epochs").set_value([]).run()
    assert "Pick at least one value" in texts(ok(app).warning) and app.button(key=P + "start").disabled


def test_start_queues_a_sweep_job_with_the_chosen_grid(app, app_env, no_workers):
    app.switch_page("pages/prune.py").run()
    app.multiselect(key=P + "amount").set_value([0.9, 0.7])
    app.multiselect(key=P + "epochs").set_value([1])
    app.number_input(key=P + "subset").set_value(256)
    app.number_input(key=P + "tolerance").set_value(2.0).run()
    assert "**2 × 1 = 2 trials**" in texts(ok(app).caption)
    app.button(key=P + "start").click().run()
    ok(app)
    (job,) = sweep_jobs(app_env)
    assert SweepJobConfig.from_dict(job.config) == SweepJobConfig(
        variant="base-lenet5", family="prune_finetune", grid={"amount": (0.7, 0.9), "epochs": (1,)}, subset=256,
        objective="smallest_within", tolerance=0.02)
    assert job.state == "queued" and app.button(key=f"{P}job-cancel-{job.id}")   # its card, live
    # the distill page: its own family, the teacher and the student
    app.switch_page("pages/distill.py").run()
    app.multiselect(key=D + "temperature").set_value([3.0])
    app.multiselect(key=D + "alpha").set_value([0.5, 0.8])
    app.number_input(key=D + "epochs").set_value(2).run()
    app.button(key=D + "start").click().run()
    ok(app)
    d = next(j for j in sweep_jobs(app_env) if j.config["family"] == "distill")
    assert SweepJobConfig.from_dict(d.config) == SweepJobConfig(
        variant="base-lenet5", family="distill", grid={"temperature": (3.0,), "alpha": (0.5, 0.8)}, epochs=2,
        student="lenet5-small", objective="val_accuracy")
    assert d.title.startswith("Sweep LeNet-5 test baseline")


# ---------------------------------------------------------------- a finished sweep (really run)

@pytest.fixture(scope="module")
def finished(ui_workspace):
    """A prune_finetune sweep of base-lenet5 over 2 trials, run inline: (config, result)."""
    from core.store.workspace import Workspace

    ws = Workspace(ui_workspace, seed_baselines=False)
    cfg = SweepJobConfig(variant="base-lenet5", family="prune_finetune", grid={"amount": [0.5, 0.9], "epochs": [1]},
                         subset=256, device="cpu")
    out = run_task("sweep", cfg, TaskContext(ws))
    yield cfg, out.result
    ws.delete_variant(out.variant_id, cascade=True)


def stored(ws, cfg, result, **columns) -> str:
    """A sweep job row as a worker leaves it (the store's own API)."""
    job = ws.jobs.create("sweep", cfg.to_dict(), jobs.describe("sweep", cfg, ws))
    now = time.time()
    ws.jobs.update(job.id, **{"state": "done", "progress": 1.0, "message": "done", "result": result,
                              "variant_id": result.get("variant_id") if result else None, "started_at": now - 20,
                              "finished_at": now, "runner": "local", "node": "vm", **columns})
    return job.id


def test_a_finished_sweep_shows_its_trials_charts_and_opens_the_best_variant(app, app_env, finished):
    cfg, result = finished
    jid = stored(app_env, cfg, result)
    app.switch_page("pages/prune.py").run()
    ok(app)
    table = next(d.value for d in app.dataframe if "prune amount" in d.value.columns)
    assert list(table["prune amount"]) == ["50%", "90%"] and list(table["fine-tune epochs"]) == ["1", "1"]
    assert list(table["state"]) == ["done", "done"]
    best = result["best_trial"]
    assert list(table["best"]) == [BEST_MARK if i == best else "" for i in range(2)]
    assert list(table["val acc"]) == [round(t["metrics"]["val_accuracy"] * 100, 2) for t in result["trials"]]
    assert list(table["size (KB)"]) == [round(t["metrics"]["size_bytes"] / 1000, 1) for t in result["trials"]]
    figs = charts(app)
    heat = next(f for f in figs if f["layout"]["title"]["text"].startswith("Validation accuracy per trial"))
    acc = next(t for t in heat["data"] if t["name"] == "val accuracy")
    assert sum(BEST_MARK in s for row in acc["text"] for s in row) == 1
    scatter = next(f for f in figs if f["layout"]["title"]["text"].startswith("Validation accuracy vs file size"))
    assert {t["name"] for t in scatter["data"]} >= {f"{BEST_MARK} best trial", "parent"}
    assert f"Chosen as {result['why']}" in texts(app.success) + texts(app.warning)
    assert f"job `{jid}`, local runner" in texts(app.caption)
    assert not [b for b in app.button if b.key == f"{P}job-cancel-{jid}"]     # drawn in full, not as a card
    made = app_env.get_variant(result["variant_id"])
    app.button(key=P + "result-open-best").click().run()
    ok(app)
    assert app.session_state["variant"] == made.id


def test_a_failed_sweep_says_so_with_the_trials_it_ran(app, app_env):
    cfg = SweepJobConfig(variant="base-lenet5", family="distill", grid={"temperature": [2.0], "alpha": [0.5, 0.9]})
    job = app_env.jobs.create("sweep", cfg.to_dict(), jobs.describe("sweep", cfg, app_env))
    trials = [{"trial": i, "params": {"temperature": 2.0, "alpha": a}} for i, a in enumerate((0.5, 0.9))]
    app_env.jobs.add_events(job.id, [
        start_event(trials),
        *({"stage": "sweep", "kind": "trial", **t, "state": "failed", "metrics": {}, "seconds": 0.1, "node": "vm",
           "error": "RuntimeError: loss is nan"} for t in trials)])
    err = "every trial of the sweep failed: RuntimeError: loss is nan"
    app_env.jobs.update(job.id, state="failed", error=err, started_at=time.time() - 3, finished_at=time.time())
    app.switch_page("pages/distill.py").run()
    ok(app)
    assert f"This sweep failed: {err}. No variant was kept; 0 of 2 trials had finished" in texts(app.error)
    table = next(d.value for d in app.dataframe if "temperature T" in d.value.columns)
    assert list(table["state"]) == ["failed", "failed"] and set(table["error"]) == {"RuntimeError: loss is nan"}


def start_event(trials):
    return {"stage": "sweep", "kind": "start", "family": "distill", "axes": ["temperature", "alpha"],
            "labels": ["temperature T", "alpha (soft-loss weight)"], "objective": "val_accuracy", "tolerance": 0.01,
            "reference_val_accuracy": 0.5, "mode": "sequential", "parent": "base-lenet5", "trials": trials}


def test_a_running_sweeps_card_grows_its_trials_table_and_heatmap(app, app_env, no_workers):
    cfg = SweepJobConfig(variant="base-lenet5", family="distill", grid={"temperature": [2.0], "alpha": [0.5, 0.9]})
    job = app_env.jobs.create("sweep", cfg.to_dict(), jobs.describe("sweep", cfg, app_env))
    trials = [{"trial": i, "params": {"temperature": 2.0, "alpha": a}} for i, a in enumerate((0.5, 0.9))]
    app_env.jobs.add_events(job.id, [
        start_event(trials),
        {"stage": "sweep", "kind": "trial", **trials[0], "state": "done", "seconds": 2.0, "node": "vm", "error": None,
         "metrics": {"val_accuracy": 0.6, "accuracy": 0.59, "size_bytes": 151_288, "nonzero_params": 37_610}},
        {"stage": "sweep", "kind": "trial_progress", "trial": 1, "progress": 0.4, "message": "epoch 1"}])
    app_env.jobs.update(job.id, state="running", started_at=time.time(), progress=0.6, message="trial 2/2")
    try:
        app.switch_page("pages/distill.py").run()
        ok(app)
        assert app.button(key=f"{D}job-cancel-{job.id}")                      # its live card
        table = next(d.value for d in app.dataframe if "temperature T" in d.value.columns)
        assert list(table["state"]) == ["done", "running 40%"] and list(table["val acc"])[0] == 60.0
        heat = next(f for f in charts(app) if f["layout"]["title"]["text"].startswith("Validation accuracy per"))
        assert "1 of 2 trials done" in heat["layout"]["title"]["text"]
        assert "1 of 2 trials done. Most accurate so far: temperature 2, alpha 0.5, validation accuracy 60.00%; " \
               "the teacher's: 50.00%." in texts(app.caption)
    finally:
        app_env.jobs.update(job.id, state="cancelled", finished_at=time.time())


def test_the_jobs_page_shows_a_sweeps_trials_and_where_a_ray_job_ran(app, app_env, finished):
    cfg, result = finished
    jid = stored(app_env, cfg, result)
    ray_job = app_env.jobs.create("train", {"model": "lenet5"}, "Train lenet5 (on Ray)")
    app_env.jobs.update(ray_job.id, state="done", progress=1.0, started_at=time.time() - 5, finished_at=time.time(),
                        runner="ray", node="host (Ray node abcd1234)")
    app.switch_page("pages/jobs.py").run()
    ok(app)
    captions = texts(app.caption)
    assert f"job `{ray_job.id}` · Train · ray runner on host (Ray node abcd1234)" in captions
    assert f"job `{jid}` · Sweep · local runner on vm" in captions
    table = next(d.value for d in app.dataframe if "prune amount" in d.value.columns)
    assert len(table) == len(result["trials"]) == 2
    assert any(f["layout"]["title"]["text"].startswith("Validation accuracy per trial") for f in charts(app))
