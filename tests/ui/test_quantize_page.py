"""AppTest: the Quantize page. The coverage table says what a mode will do before anything runs;
the weight-only bits slider previews live; Run measures static int8 and draws the error per layer;
Save stores a quantized child; a quantized variant says so on every page that shows it."""
from __future__ import annotations

import json

import pytest
import torch

from core.compress.quant.quantize import QuantConfig, speed_verdict
from core.tasks import QuantizeJobConfig, TaskContext, run_task


def texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def title(spec) -> str:
    t = spec["layout"].get("title")
    return (t.get("text") if isinstance(t, dict) else t) or ""


def table(at, which: str):
    """The coverage table drawn before running ("before") or read off the quantized copy ("after")."""
    tables = [d.value for d in at.dataframe if "what happens" in d.value.columns]
    return tables[{"before": 0, "after": 1}[which]]


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def page(app):
    from ui import resources

    # runs are shared by every session of the server (here: every test of this process), so an
    # earlier test's Run would make this page start with its result; these tests start from none
    resources._previews.clear()
    app.switch_page("pages/quantize.py").run()
    return ok(app)


def test_coverage_before_running_on_lenet5(page):
    assert page.title[0].value == "Quantize"
    assert page.radio(key="quant-mode").value == "static-int8"
    cov = table(page, "before")
    assert list(cov["layer"]) == ["conv1", "conv2", "fc1", "fc2"]
    assert set(cov["action"]) == {"quantized"}
    assert "4 of 4 layers with weights quantized (100% of the parameters)" in texts(page.caption)
    assert not page.warning
    # static int8 runs only when asked: nothing measured yet, a Run button
    assert "Val. accuracy" not in metrics(page)
    assert page.button(key="quant-run").label == "Run static-int8 on a copy"
    assert page.button(key="quant-save").label == "Save as a variant"


def test_dynamic_int8_warns_that_the_convolutions_stay_float(page):
    page.radio(key="quant-mode").set_value("dynamic-int8").run()
    ok(page)
    cov = table(page, "before")
    assert dict(zip(cov["layer"], cov["action"], strict=True)) == {
        "conv1": "stays float", "conv2": "stays float", "fc1": "quantized", "fc2": "quantized"}
    warning = texts(page.warning)
    assert "dynamic-int8 quantizes 2 of 4 conv/linear layers" in warning and "conv1, conv2" in warning
    # fp16 converts the whole model: nothing to keep in float
    page.radio(key="quant-mode").set_value("fp16").run()
    ok(page)
    assert page.multiselect(key="quant-keep").disabled
    assert page.button(key="quant-save-job").label == "Save as a variant (background job)"


def test_bits_slider_previews_live_and_changes_accuracy_and_size(page, app_env):
    page.radio(key="quant-mode").set_value("weight-only").run()
    ok(page)
    four = metrics(page)
    assert page.slider(key="quant-bits").value == 4
    assert page.subheader[1].value == "Result on a copy: weight-only 4-bit sym"
    page.slider(key="quant-bits").set_value(2).run()
    ok(page)
    two = metrics(page)
    assert page.subheader[1].value == "Result on a copy: weight-only 2-bit sym"
    assert two["Val. accuracy"] != four["Val. accuracy"]
    assert two["File size"] != four["File size"]
    assert float(two["Val. accuracy"].rstrip("%")) < float(four["Val. accuracy"].rstrip("%"))
    # weight-only is simulated: it computes in float, so it is not timed (the float latency is shown)
    assert [m.delta for m in page.metric if m.label == "Latency b64"] == ["as float"]
    assert "badge[:material/science: simulated]" in texts(page.markdown)
    # the grid of a chosen channel is drawn over the layer's histogram: 2-bit symmetric has 3 values
    grid = next(s for s in charts(page) if "grid of channel" in title(s))
    assert "the 3 values the channel can store" in title(grid)
    page.radio(key="quant-symmetric").set_value(False).run()
    ok(page)
    grid = next(s for s in charts(page) if "grid of channel" in title(s))
    assert "the 4 values the channel can store" in title(grid)


def test_run_static_int8_shows_coverage_after_errors_and_keeps_the_worst_in_float(page):
    page.button(key="quant-run").click().run()
    ok(page)
    m = {x.label: x for x in page.metric}
    lat = m["Latency b64"]
    assert (lat.value.endswith(" ms") and "95% interval" in lat.help) or (
        lat.value == "not measurable now" and not lat.delta and "not measurable now" in lat.help)
    assert m["Val. accuracy"].delta.endswith(" pp")
    assert "x smaller" in m["File size"].delta
    after = table(page, "after")
    assert list(after["action"]) == ["quantized"] * 4
    errors = next(s for s in charts(page) if "quantization error per layer" in title(s))
    assert [t["name"] for t in errors["data"]] == ["weight SQNR", "output SQNR"]
    assert errors["data"][1]["y"] == ["conv1", "conv2", "fc1", "fc2"]
    worst = title(errors).split("lowest output: ")[1].split(" ")[0]
    assert worst in ("conv1", "conv2", "fc1", "fc2")
    # "keep the worst 1 in float" fills the multiselect, and the result follows without another Run
    page.button(key="quant-keep-worst").click().run()
    ok(page)
    assert page.multiselect(key="quant-keep").value == [worst]
    after = table(page, "after")
    actions = dict(zip(after["layer"], after["action"], strict=True))
    assert actions[worst] == "stays float" and sum(a == "quantized" for a in actions.values()) == 3
    assert page.subheader[1].value == "Result on a copy: static-int8, 1 layer(s) kept float"
    assert "Val. accuracy" in metrics(page)
    assert not page.warning                          # kept float by choice: no warning
    # the worst 3 of the 3 left: every conv/linear layer float, the shortcut and the error chart step aside
    page.number_input(key="quant-worst-n").set_value(3).run()
    page.button(key="quant-keep-worst").click().run()
    ok(page)
    assert sorted(page.multiselect(key="quant-keep").value) == ["conv1", "conv2", "fc1", "fc2"]
    assert "No convolution or linear layer is quantized" in texts(page.info)


def test_save_makes_a_quantized_child_offered_once(page, app_env):
    page.radio(key="quant-mode").set_value("dynamic-int8").run()
    before = {v.id for v in app_env.children("base-lenet5")}
    page.button(key="quant-save").click().run()
    ok(page)
    new = [v for v in app_env.children("base-lenet5") if v.id not in before]
    try:
        assert len(new) == 1
        child = new[0]
        assert child.kind["quantized"] and not child.kind["simulated"]
        assert child.recipe[-1]["step"] == "quantize" and child.recipe[-1]["mode"] == "dynamic-int8"
        assert {"latency_ms_b64", "reference_latency_ms_b64", "quantized_layers"} <= set(child.metrics)
        assert f"Saved **{child.name}**" in texts(page.success)
        label = next(o for o in page.sidebar.selectbox(key="variant").options if o.startswith(child.name))
        assert "quantized" in label
        # the same settings again: the existing child is offered instead of a second save
        page.run()
        ok(page)
        assert not [b for b in page.button if b.key == "quant-save"]
        assert f"already quantized with these settings: **{child.name}**" in texts(page.info)
        page.button(key="quant-open-existing").click().run()
        ok(page)
        assert page.session_state["variant"] == child.id
        # on a quantized variant the page points at the float parent instead
        assert "is already quantized. Quantize its float parent instead" in texts(page.info)
        assert not [b for b in page.button if b.key == "quant-save"]
        # the Prune page stops with a message, the Model page shows the kind and its layers
        page.switch_page("pages/prune.py").run()
        ok(page)
        assert "is quantized" in texts(page.warning)
        page.switch_page("pages/model.py").run()
        ok(page)
        assert "badge[quantized]" in texts(page.markdown)
        assert list(page.dataframe[1].value["layer"]) == ["conv1", "conv2", "fc1", "fc2"]
        page.switch_page("pages/quantize.py").run()
        ok(page)
        page.button(key="quant-use-parent").click().run()
        ok(page)
        assert page.session_state["variant"] == "base-lenet5"
    finally:
        for v in new:
            app_env.delete_variant(v.id, cascade=True)


def test_model_page_says_no_real_speed_up_for_a_dynamic_int8_lenet300(app, app_env, tiny_data):
    from core.models.registry import create_model
    from core.store.variants import base_arch, measure_and_store

    torch.manual_seed(0)
    base = measure_and_store(app_env, create_model("lenet300", num_classes=10, in_channels=1), data=tiny_data,
                             name="LeNet-300 test", arch=base_arch("lenet300", tiny_data),
                             recipe=[{"step": "train", "model": "lenet300"}], device="cpu")
    try:
        out = run_task("quantize", QuantizeJobConfig(variant=base.id, quant=QuantConfig(mode="dynamic-int8")),
                       TaskContext(app_env))
        child = app_env.get_variant(out.variant_id)
        assert child.kind["quantized"]
        app.run()                                     # the picker now lists the new variants
        app.sidebar.selectbox(key="variant").set_value(child.id)
        app.switch_page("pages/model.py").run()
        ok(app)
        # the rule, on figures set by hand (measured ones vary with the machine's load): a batch 64
        # time less than 1.1x below the parent's, timed with it, is no real speed-up, and says where
        said = "no real speed-up in pytorch eager"     # the Model page's verdict names the runtime
        timed = {"reference_latency_ms_b64": 10.0, "latency_unmeasured": "", "latency_busy": False}
        app_env.update_variant(child.id, metrics=timed | {"latency_ms_b64": 10.0 / 1.05,
                                                          "latency_ms_b64_ci": [9.4, 9.7],
                                                          "latency_ms_b64_vs_reference_ci": [1.03, 1.07]})
        assert speed_verdict(app_env.get_variant(child.id).metrics) is not None
        app.run()
        ok(app)
        assert said in texts(app.markdown).lower()
        app_env.update_variant(child.id, metrics=timed | {"latency_ms_b64": 5.0, "latency_ms_b64_ci": [4.9, 5.1],
                                                          "latency_ms_b64_vs_reference_ci": [1.95, 2.05]})
        app.run()
        ok(app)
        assert said not in texts(app.markdown).lower() and "2.00x faster in PyTorch eager" in texts(app.markdown)
    finally:
        app_env.delete_variant(base.id, cascade=True)


def test_qat_saves_as_a_background_job(page, app_env):
    page.radio(key="quant-mode").set_value("qat").run()
    ok(page)
    assert "QAT trains, so it runs as a background job" in texts(page.info)
    assert not [b for b in page.button if b.key == "quant-run"]
    page.number_input(key="quant-qat-epochs").set_value(2).run()
    page.button(key="quant-save-job").click().run()
    ok(page)
    jobs = [j for j in app_env.jobs.list() if j.kind == "quantize"]
    assert len(jobs) == 1
    cfg = jobs[0].config
    assert cfg["variant"] == "base-lenet5" and cfg["quant"]["mode"] == "qat" and cfg["train"]["epochs"] == 2
    assert jobs[0].title.startswith("Quantize LeNet-5 test baseline: qat")
    # the page shows the job, and does not offer to start the same one twice
    assert "Quantization jobs of this variant" in texts(page.markdown)
    if not app_env.jobs.get(jobs[0].id).is_final:
        assert not [b for b in page.button if b.key == "quant-save-job"]
