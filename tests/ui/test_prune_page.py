"""AppTest: the Prune page. Every control changes the live preview; Apply stores a measured child;
the sensitivity and prune-and-recover jobs start from the page and their results are drawn."""
from __future__ import annotations

import json
import time

import pytest

from core.tasks import TaskContext, run_task


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def trace_types(at) -> set[str]:
    return {t.get("type", "scatter") for spec in charts(at) for t in spec["data"]}


def heatmap(at) -> dict:
    return next(s for s in charts(at) if s["data"][0]["type"] == "heatmap" and "weights" in _title(s))


def _title(spec) -> str:
    t = spec["layout"].get("title")
    return (t.get("text") if isinstance(t, dict) else t) or ""


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def page(app):
    app.switch_page("pages/prune.py").run()
    return ok(app)


def test_default_preview_numbers_truth_panel_and_figures(page, app_env):
    from core.base.units import human_bytes
    from core.compress.pruning.preview import preview_subset
    from core.compress.pruning.prune import PruneConfig
    from core.data.datasets import cached_dataset
    from core.tasks.prune import preview_child

    assert page.title[0].value == "Prune"
    m = metrics(page)
    assert m["Sparsity"] == "50.0%"
    # the bytes Apply would write for the default settings (L1 global 50%), computed by the engine here
    base = app_env.get_variant("base-lenet5")
    expected = preview_child(app_env, base, app_env.load_model(base), PruneConfig(amount=0.5),
                             preview_subset(cached_dataset(base.dataset).val))
    assert m["File size"] == human_bytes(expected.size_bytes)
    captions = texts(page.caption)
    assert "fixed 1,000-image validation subset (not the test set)" in captions
    # what the amount means for this method and scope, in words
    assert "50% of all prunable weights, ranked together by |weight|, become zeros" in captions
    assert "Left alone: **fc2**" in captions and "classifier" in captions
    md = texts(page.markdown)
    assert "**Masked**" in md and "same speed" in md
    assert {"bar", "heatmap"} <= trace_types(page)       # sparsity bars, heatmap, histogram, grid
    assert page.multiselect(key="prune-exclude").value == ["fc2"]


def test_amount_scope_and_random_seed_change_the_preview(page):
    page.slider(key="prune-amount").set_value(0.9).run()
    ok(page)
    assert metrics(page)["Sparsity"] == "90.0%"
    page.radio(key="prune-scope").set_value("layer").run()
    ok(page)
    assert metrics(page)["Sparsity"] == "90.0%"
    assert page.subheader[0].value == "Preview: L1 layer 90%"
    page.radio(key="prune-method").set_value("random").run()
    ok(page)
    assert not page.number_input(key="prune-seed").disabled
    assert page.subheader[0].value == "Preview: random layer 90%"
    mask_seed0 = heatmap(page)["data"][0]["z"]
    page.number_input(key="prune-seed").set_value(3).run()
    ok(page)
    assert page.subheader[0].value == "Preview: random layer 90%" and metrics(page)["Sparsity"] == "90.0%"
    assert heatmap(page)["data"][0]["z"] != mask_seed0      # same method and amount, another random mask


def test_channel_method_shrinks_and_measures_speed(page):
    page.radio(key="prune-method").set_value("channel").run()
    ok(page)
    assert not page.radio(key="prune-norm").disabled
    page.radio(key="prune-norm").set_value(2).run()
    ok(page)
    m = {x.label: x for x in page.metric}
    assert page.subheader[0].value == "Preview: channel L2 global 50%"
    # before and after timed in this run, alternately: the ratio compares two timings taken the same way
    lat = m["Latency b64"]
    # a speed-up with its interval, or (on a busy machine) no number and no pill, with the reason
    assert (lat.value.endswith(" ms") and lat.delta.endswith("x faster") and "95% interval" in lat.help) or (
        lat.value == "not measurable now" and not lat.delta and "not measurable now" in lat.help)
    md = texts(page.markdown)
    assert "**Shrunk**" in md and "alternately" in md
    assert "timed once" not in md
    # the removed-channels view draws the per-channel norms and the per-layer kept/removed bars
    page.segmented_control(key="prune-view").set_value("Removed channels").run()
    ok(page)
    names = {t.get("name") for spec in charts(page) for t in spec["data"]}
    assert {"kept", "removed", "channels"} <= names
    assert not [s for s in charts(page) if s["data"][0]["type"] == "heatmap"]   # one view at a time
    # the excluded classifier loses only inputs, and the bars say so (not "89% removed, grey: excluded")
    bars = next(s for s in charts(page) if _title(s).startswith("weights removed per layer"))
    own, inputs = bars["data"]
    fc2 = own["y"].index("fc2")
    assert own["x"][fc2] == 0 and inputs["x"][fc2] > 0.3
    assert inputs["text"][fc2].endswith("(excluded: outputs kept)")
    assert "keeps at least 10% of its output channels" in texts(page.caption)


def test_exclude_overrides_and_layer_inspection(page):
    page.multiselect(key="prune-exclude").set_value(["conv1"]).run()
    ok(page)
    assert "excluded in the config" in texts(page.caption)
    page.multiselect(key="prune-overrides").set_value(["fc2"]).run()
    ok(page)
    page.slider(key="prune-layer-fc2").set_value(0.2).run()
    ok(page)
    bars = next(s for s in charts(page) if s["data"][0].get("name") == "sparsity")
    assert bars["data"][0]["text"][0] == "0.0% (excluded)" and bars["data"][0]["text"][3] == "20.0%"   # as on Model
    sparsity = dict(zip(bars["data"][0]["y"], bars["data"][0]["x"], strict=True))
    assert sparsity["conv1"] == 0 and sparsity["fc2"] == pytest.approx(0.2, abs=1e-3)
    page.selectbox(key="prune-inspect").set_value("conv2").run()
    ok(page)
    heat = heatmap(page)
    assert _title(heat).startswith("conv2: weights after pruning")
    page.toggle(key="prune-fullres").set_value(True).run()
    ok(page)
    assert "image" in trace_types(page)
    page.segmented_control(key="prune-view").set_value("All layers").run()
    ok(page)
    grid = next(s for s in charts(page) if _title(s).startswith("masks of all layers"))
    assert len(grid["data"]) == 4
    page.segmented_control(key="prune-view").set_value("Histogram").run()
    ok(page)
    assert any(_title(s) == "conv2: weights before / after" for s in charts(page))


def test_apply_saves_a_measured_child_that_the_sidebar_offers(page, app_env):
    page.slider(key="prune-amount").set_value(0.8).run()
    before = {v.id for v in app_env.children("base-lenet5")}
    page.button(key="prune-apply").click().run()
    ok(page)
    new = [v for v in app_env.children("base-lenet5") if v.id not in before]
    try:
        assert len(new) == 1
        child = new[0]
        assert child.kind["masked"] and child.recipe[-1]["step"] == "prune" and child.recipe[-1]["amount"] == 0.8
        assert child.metrics["sparsity"] == pytest.approx(0.8, abs=1e-4) and child.format == "sparse"
        assert f"Saved **{child.name}**" in texts(page.success)
        assert any(o.startswith(child.name) for o in page.sidebar.selectbox(key="variant").options)
        # the same settings again: the page offers the child it already made, no second Apply
        page.run()
        ok(page)
        assert not [b for b in page.button if b.key == "prune-apply"]
        assert f"These settings were already applied to {app_env.get_variant('base-lenet5').name}: **{child.name}**" \
            in texts(page.info)
        page.button(key="prune-open-existing").click().run()
        ok(page)
        assert page.session_state["variant"] == child.id
        assert page.title[0].value == "Prune"
        # on the child, global 80% again adds nothing, and the truth panel says each layer's own sparsity
        page.slider(key="prune-amount").set_value(0.8).run()
        ok(page)
        conv1 = dict(heatmap_free_rows(page))["conv1"]
        reason = next(c for c in texts(page.caption).splitlines() if "Left alone: **conv1**" in c)
        assert f"(this layer {conv1})" in reason and "already at 80.0%" in reason
    finally:
        for v in new:
            app_env.delete_variant(v.id, cascade=True)


def heatmap_free_rows(at) -> list[tuple[str, str]]:
    """(layer, sparsity text) from the per-layer bars, as the page shows them."""
    bars = next(s for s in charts(at) if s["data"][0].get("name") == "sparsity")
    return [(n, t.split(" ")[0]) for n, t in zip(bars["data"][0]["y"], bars["data"][0]["text"], strict=True)]


def _run_inline(ws, kind: str, config: dict) -> str:
    """Run a task in this process as a finished job (the worker process is core.run.jobs' business)."""
    job = ws.jobs.create(kind, config)
    ws.jobs.update(job.id, state="running", started_at=time.time())
    ctx = TaskContext(ws, on_event=lambda e: ws.jobs.add_events(job.id, [e]), job_id=job.id)
    out = run_task(kind, config, ctx)
    ws.jobs.update(job.id, state="done", progress=1.0, finished_at=time.time(), variant_id=out.variant_id,
                   result=out.result)
    return job.id


def test_sensitivity_job_starts_and_its_allocation_fills_the_sliders(page, app_env):
    page.multiselect(key="prune-sens-amounts").set_value([0.5, 0.9]).run()
    page.button(key="prune-sens-start").click().run()
    ok(page)
    queued = [j for j in app_env.jobs.list() if j.kind == "sensitivity"]
    assert len(queued) == 1 and queued[0].config["amounts"] == [0.5, 0.9]
    assert queued[0].title == "Sensitivity scan of LeNet-5 test baseline: L1, 2 amounts, 1,000 validation images"
    assert queued[0].config["variant"] == "base-lenet5"
    from core.run import jobs
    jobs.cancel(app_env, queued[0].id, grace_s=0.5)

    _run_inline(app_env, "sensitivity", {"variant": "base-lenet5", "amounts": [0.5, 0.9], "val_subset": 200})
    page.run()
    ok(page)
    spec = next(s for s in charts(page) if "sensitivity" in (s["layout"].get("title", {}).get("text") or ""))
    assert [t["name"].split(" ")[0] for t in spec["data"]] == ["conv1", "conv2", "fc1"]
    assert "Suggested per-layer allocation" in texts(page.markdown)
    page.slider(key="prune-sens-target").set_value(0.85).run()
    ok(page)
    page.button(key="prune-sens-use").click().run()
    ok(page)
    assert page.radio(key="prune-method").value == "l1"
    assert page.multiselect(key="prune-overrides").value == ["conv1", "conv2", "fc1"]
    amounts = {n: page.slider(key=f"prune-layer-{n}").value for n in ("conv1", "conv2", "fc1")}
    weights = {"conv1": 500, "conv2": 25_000, "fc1": 400_000}
    overall = sum(amounts[n] * weights[n] for n in weights) / sum(weights.values())
    assert overall == pytest.approx(0.85, abs=0.01)
    assert metrics(page)["Sparsity"] == f"{overall:.1%}"
    # visible feedback: a note above the sliders, the per-layer section open, the heading and the
    # Amount slider no longer claiming the overridden global amount
    assert "Per-layer amounts set from the sensitivity scan's allocation for 85% overall" in texts(page.success)
    assert next(e for e in page.expander if e.label.startswith("Per-layer amounts")).label.endswith(": 3 set")
    assert page.subheader[0].value == "Preview: L1 per-layer amounts"
    assert page.slider(key="prune-amount").disabled


def test_prune_and_recover_job_starts_with_the_settings_and_draws_its_curve(page, app_env):
    page.slider(key="prune-amount").set_value(0.9).run()
    page.number_input(key="prune-rec-steps").set_value(3)
    page.number_input(key="prune-rec-epochs").set_value(2)
    page.number_input(key="prune-rec-lr").set_value(0.02)
    page.number_input(key="prune-rec-subset").set_value(1000)
    page.button(key="prune-rec-start").click().run()
    ok(page)
    job = next(j for j in app_env.jobs.list() if j.kind == "prune_recover")
    from core.run import jobs
    jobs.cancel(app_env, job.id, grace_s=0.5)
    c = job.config
    assert c["variant"] == "base-lenet5" and c["steps"] == 3 and c["subset"] == 1000
    assert c["prune"]["amount"] == 0.9 and c["prune"]["scope"] == "global"
    assert c["finetune"]["epochs"] == 2 and c["finetune"]["lr"] == pytest.approx(0.02)

    # a finished run's points: the accuracy-vs-sparsity curves
    done = app_env.jobs.create("prune_recover", {**c})
    app_env.jobs.add_events(done.id, [
        {"stage": "prune_recover", "kind": "point", "step": 0, "phase": "start", "sparsity": 0.0, "val_accuracy": 0.8},
        {"stage": "prune_recover", "kind": "point", "step": 1, "phase": "pruned", "sparsity": 0.5,
         "val_accuracy": 0.6},
        {"stage": "prune_recover", "kind": "point", "step": 1, "phase": "recovered", "sparsity": 0.5,
         "val_accuracy": 0.79}])
    app_env.jobs.update(done.id, state="done", started_at=time.time() - 5, finished_at=time.time())
    page.run()
    ok(page)
    curve = next(s for s in charts(page) if "accuracy vs sparsity" in (s["layout"].get("title", {}).get("text") or ""))
    assert [t["name"] for t in curve["data"]] == ["after pruning", "after fine-tuning"]
    assert curve["data"][1]["y"] == [0.8, 0.79]
