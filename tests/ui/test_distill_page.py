"""AppTest: the Distill page. The form's defaults and help texts; Start queues a `distill` job with
the widget values; one click queues its ablation (the same config without the teacher); when a
distillation and its ablation are done, the three variants side by side with the gap closed, the
per-class deltas and a plain verdict (also when distillation did not help); quantized teachers and
students are refused."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from ui_helpers import charts, ok, texts

from core.compress.distill.kd import DistillConfig
from core.tasks import TaskContext, run_task
from core.tasks.distill import DistillJobConfig

K = "distill-"
APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 90


def distill_jobs(ws):
    return [j for j in ws.jobs.list() if j.kind == "distill"]


@pytest.fixture
def page(app):
    app.switch_page("pages/distill.py").run()
    return ok(app)


def test_renders_with_defaults_and_a_help_text_on_every_control(page, app_env):
    assert page.title[0].value == "Distill"
    assert page.selectbox(key=K + "teacher").value == "base-lenet5"          # the active variant
    assert page.radio(key=K + "student-source").value == "model"
    assert page.selectbox(key=K + "student-model").value == "lenet5-small"   # lenet5's declared student
    assert page.slider(key=K + "temperature").value == 4.0
    assert page.slider(key=K + "alpha").value == 0.9
    assert page.number_input(key=K + "epochs").value == 2
    assert page.number_input(key=K + "lr").value == pytest.approx(0.005)
    assert page.number_input(key=K + "subset").value == 10_000
    assert "10,000 Fashion-MNIST training images × 2 epoch(s), batch 64 (314 optimizer steps)" in texts(page.caption)
    assert "A fresh, untrained **lenet5-small** learns" in texts(page.caption)
    controls = [w for kind in ("selectbox", "slider", "number_input", "radio", "text_input")
                for w in page.get(kind) if (w.key or "").startswith(K)]
    assert len(controls) >= 11
    assert all(w.proto.help.strip() for w in controls), [w.key for w in controls if not w.proto.help.strip()]
    assert page.button(key=K + "start").help
    assert "No distillation yet" in texts(page.caption)
    # an existing variant as the student: the smallest float one other than the teacher is offered
    page.radio(key=K + "student-source").set_value("variant").run()
    ok(page)
    assert page.selectbox(key=K + "student-variant").value != "base-lenet5"
    chosen = app_env.get_variant(page.selectbox(key=K + "student-variant").value)
    assert f"**{chosen.name}** continues from its trained weights" in texts(page.caption)
    assert not page.button(key=K + "start").disabled


def test_start_queues_the_widget_values_and_the_ablation_button_its_twin(page, app_env):
    page.slider(key=K + "temperature").set_value(3.0)
    page.slider(key=K + "alpha").set_value(0.75)
    page.number_input(key=K + "epochs").set_value(1)
    page.number_input(key=K + "lr").set_value(0.004)
    page.number_input(key=K + "seed").set_value(7)
    page.number_input(key=K + "subset").set_value(300).run()
    ok(page)
    page.button(key=K + "start").click().run()
    ok(page)
    jobs = distill_jobs(app_env)
    assert len(jobs) == 1
    cfg = DistillJobConfig.from_dict(jobs[0].config)
    assert cfg == DistillJobConfig(teacher="base-lenet5", student="lenet5-small", subset=300,
                                   distill=DistillConfig(temperature=3.0, alpha=0.75, epochs=1, lr=0.004, seed=7))
    assert jobs[0].title.startswith("Distill LeNet-5 test baseline into lenet5-small: KD T=3, alpha=0.75, 1 ep")
    # its card is on the page (live while it runs: Cancel is offered until it is final), with the ablation one
    # click away
    assert f"job `{jobs[0].id}`" in texts(page.caption)
    cancel = [b for b in page.button if b.key == f"{K}job-cancel-{jobs[0].id}"]
    if cancel:                                        # drawn live: the job had not finished when the card was drawn
        assert cancel[0].label == "Cancel" and cancel[0].help
    else:                                             # drawn final: it finished before the page drew it
        assert app_env.jobs.get(jobs[0].id).is_final
    assert "These exact settings were already started" in texts(page.info)
    page.button(key=K + "ablation").click().run()
    ok(page)
    jobs = distill_jobs(app_env)
    assert len(jobs) == 2
    abl = next(j for j in jobs if j.config["ablation"])
    assert DistillJobConfig.from_dict(abl.config) == DistillJobConfig(**{**cfg.__dict__, "ablation": True})
    assert abl.title.startswith("Train without teacher (ablation) lenet5-small: KD T=3, alpha=0, 1 ep")
    # the pair is shown together, and the ablation is not offered twice
    assert not [b for b in page.button if b.key == K + "ablation"]


def _stored_job(ws, cfg: DistillJobConfig, variant_id: str) -> str:
    from core.run import jobs

    job = ws.jobs.create("distill", cfg.to_dict(), jobs.describe("distill", cfg, ws))
    now = time.time()
    ws.jobs.update(job.id, state="done", progress=1.0, message=f"saved {variant_id}", variant_id=variant_id,
                   started_at=now - 5, finished_at=now)
    return job.id


@pytest.fixture
def trio(app_env, monkeypatch):
    """A distilled and a scratch student of base-lenet5 (really trained, briefly) and their done jobs,
    timed with the teacher in every runtime, as the app times them."""
    monkeypatch.setenv("WORKBENCH_LATENCY_RUNTIMES", "torch,onnxruntime,openvino")
    ws = app_env
    cfg = DistillJobConfig(teacher="base-lenet5", student="lenet5-small", subset=256,
                           distill=DistillConfig(epochs=1, seed=3))
    abl = DistillJobConfig(**{**cfg.__dict__, "ablation": True})
    made = []
    try:
        for c in (cfg, abl):
            out = run_task("distill", c, TaskContext(ws))
            made.append(ws.get_variant(out.variant_id))
            _stored_job(ws, c, out.variant_id)
        yield ws.get_variant("base-lenet5"), made[0], made[1]
    finally:
        for v in made:
            ws.delete_variant(v.id, cascade=True)


def test_comparison_shows_the_gap_closed_and_the_verdict(page, trio, app_env):
    teacher, distilled, scratch = trio
    w = app_env
    t = teacher.metrics["accuracy"]
    w.update_variant(distilled.id, metrics={"accuracy": t - 0.10})
    w.update_variant(scratch.id, metrics={"accuracy": t - 0.20})
    page.run()
    ok(page)
    assert "Did distillation help?" in texts(page.subheader)
    assert "Distillation closed 50% of the gap" in texts(page.success)
    gap = next(m for m in page.metric if m.label == "Gap closed")
    assert gap.value == "50%"
    table = next(d.value for d in page.dataframe if "role" in d.value.columns)
    assert list(table["role"]) == ["teacher", "distilled", "scratch"]
    assert list(table["id"]) == [teacher.id, distilled.id, scratch.id]
    classes = next(s for s in charts(page) if "Per-class" in s["layout"]["title"]["text"])
    assert [t["name"] for t in classes["data"]] == ["distilled − scratch", "teacher − distilled"]
    assert classes["data"][0]["x"][0] == "T-shirt/top" and len(classes["data"][0]["x"]) == 10
    assert f"Result: {distilled.name}" in texts(page.subheader)
    # the speed against the teacher: each student timed together with it, a ratio with its interval or why not,
    # in both runtimes; never refused over device strings
    captions = texts(page.caption)
    for head in ("Speed against the teacher, batch 64.", "Distilled student against the teacher, batch 64.",
                 "Scratch student against the teacher, batch 64."):
        line = next(c.value for c in page.caption if head in c.value)
        for runtime in ("PyTorch eager: ", "ONNX Runtime: ", "OpenVINO: "):
            said = line.split(runtime, 1)[1]
            assert re.match(r"(\d+\.\d\dx (faster|slower) than|same speed as) the teacher \(95% interval "
                            r"|not measurable now: |no (ONNX Runtime|OpenVINO) figure: |no ratio: the other variant", said), line
    assert "Latencies not compared" not in texts(page.warning) and "different devices" not in captions
    numbers = next(d.value for d in page.dataframe if "role" in d.value.columns).set_index("role")
    for role in ("distilled", "scratch"):
        cell = numbers.loc[role, "vs teacher b64, PyTorch eager"]
        assert re.match(r"(\d+\.\d\dx (faster|slower)|same speed) \(|not measurable now|not compared", cell), cell
    # no better than scratch: said plainly
    w.update_variant(distilled.id, metrics={"accuracy": t - 0.25})
    page.run()
    ok(page)
    assert "Distillation did not help" in texts(page.warning)
    assert next(m for m in page.metric if m.label == "Gap closed").value == "-25%"
    assert not page.success


def test_a_quantized_teacher_or_student_is_refused(page, app_env):
    base = app_env.get_variant("base-lenet5")   # stored again, flagged quantized (the page only reads the flag)
    q = app_env.add_variant(app_env.load_model(base), name="LeNet-5 int8 (test)", dataset=base.dataset,
                            arch=base.arch, metrics=dict(base.metrics), kind={"quantized": True}, parent_id=base.id,
                            recipe=[*base.recipe, {"step": "quantize", "mode": "static-int8"}])
    try:
        page.run()
        ok(page)
        page.selectbox(key=K + "teacher").set_value(q.id).run()
        ok(page)
        err = texts(page.error)
        assert "**LeNet-5 int8 (test)** is quantized (integer kernels): it cannot be the teacher" in err
        assert "Use its float parent **LeNet-5 test baseline** instead" in err
        assert page.button(key=K + "start").disabled
        page.selectbox(key=K + "teacher").set_value("base-lenet5")
        page.radio(key=K + "student-source").set_value("variant").run()
        page.selectbox(key=K + "student-variant").set_value(q.id).run()
        ok(page)
        assert "it cannot be the student" in texts(page.error) and "quantize the distilled student afterwards" \
            in texts(page.error)
        assert page.button(key=K + "start").disabled
        page.selectbox(key=K + "student-variant").set_value("base-lenet5").run()
        ok(page)
        assert not page.error and not page.button(key=K + "start").disabled
    finally:
        app_env.delete_variant(q.id, cascade=True)


def test_an_empty_workspace_says_where_to_start(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.store.workspace import Workspace

    monkeypatch.setattr(Workspace, "seed_baselines", lambda self, *a, **k: [])
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "empty"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    at.switch_page("pages/distill.py").run()
    ok(at)
    assert "No variant yet: train a baseline or upload a checkpoint on the Model page" in texts(at.info)
    assert not at.button
