"""AppTest: the Fine-tune page. Start queues a finetune job with the widget values; a quantized
variant is refused with both ways out (its float parent, QAT on the Quantize page); the transfer
form queues a transfer job; a zip of class folders is checked, stored and shown as a sample grid
(a bad one is one error box, nothing written); a finished job draws validation accuracy per epoch
with the parent's and the dense root's lines, and the child next to its parent."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from ui_helpers import charts, ok, texts

from core.compress.quant.quantize import QuantConfig
from core.tasks import QuantizeJobConfig, TaskContext, run_task

PAGE = "pages/finetune.py"


def title(spec) -> str:
    t = spec["layout"].get("title")
    return (t.get("text") if isinstance(t, dict) else t) or ""


def digits_zip(classes=(0, 1, 2), per_class: int = 12, wrap: str = "") -> bytes:
    """A zip of class folders (PNG files) made from scikit-learn's bundled digits."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c in classes:
            for i, k in enumerate(np.flatnonzero(d.target == c)[:per_class]):
                img = Image.fromarray((255 - d.images[k] * 15).astype(np.uint8)).resize((32, 32))  # dark on light
                png = io.BytesIO()
                img.save(png, format="PNG")
                zf.writestr(f"{wrap}digit-{c}/{i:03d}.png", png.getvalue())
    return buf.getvalue()


def new_jobs(ws, kind):
    return [j for j in ws.jobs.list() if j.kind == kind]


@pytest.fixture
def page(app):
    app.switch_page(PAGE).run()
    return ok(app)


def test_page_renders_and_says_what_fine_tuning_keeps(page, app_env):
    assert page.title[0].value == "Fine-tune"
    assert page.segmented_control(key="ft-mode").value == "finetune"
    assert "**LeNet-5 test baseline** is dense: every weight trains." in texts(page.markdown)
    assert page.button(key="ft-start").label == "Start fine-tuning LeNet-5 test baseline"
    # every control says what it does
    for w in [*page.number_input, *page.checkbox, *page.selectbox, *page.text_input]:
        if w.key and w.key.startswith("ft-"):
            assert w.help, w.key
    assert page.number_input(key="ft-ft-subset").value == 10_000       # a quick default on a CPU
    masked = next(v for v in app_env.children("base-lenet5") if v.kind.get("masked"))
    page.sidebar.selectbox(key="variant").set_value(masked.id).run()
    ok(page)
    assert f"**{masked.name}** is masked: its pruned zeros" in texts(page.markdown)
    assert "stay zero" in texts(page.markdown)


def test_start_queues_a_finetune_job_with_the_widget_values(page, app_env):
    page.number_input(key="ft-ft-epochs").set_value(4)
    page.number_input(key="ft-ft-lr").set_value(0.02)
    page.number_input(key="ft-ft-subset").set_value(300)
    page.number_input(key="ft-ft-patience").set_value(1)
    page.checkbox(key="ft-ft-restore").uncheck()
    page.selectbox(key="ft-ft-optimizer").set_value("adam")
    page.number_input(key="ft-ft-batch").set_value(32)
    page.text_input(key="ft-ft-name").input("my fine-tune")
    page.button(key="ft-start").click().run()
    ok(page)
    jobs = new_jobs(app_env, "finetune")
    assert len(jobs) == 1
    job = jobs[0]
    cfg = job.config
    assert cfg["variant"] == "base-lenet5" and cfg["subset"] == 300 and cfg["name"] == "my fine-tune"
    t = cfg["train"]
    assert (t["epochs"], t["lr"], t["early_stop"], t["restore_best"], t["optimizer"], t["batch_size"]) == \
        (4, 0.02, 1, False, "adam", 32)
    assert page.session_state["last_job"] == job.id
    # its card: live, cancellable (from this or any other session)
    assert "Fine-tune jobs" in texts(page.subheader)
    if not app_env.jobs.get(job.id).is_final:
        page.button(key=f"ft-jobs-cancel-{job.id}").click().run()
        ok(page)
        assert app_env.jobs.get(job.id).state == "cancelled"


def test_a_quantized_variant_is_refused_with_both_ways_out(page, app_env):
    out = run_task("quantize", QuantizeJobConfig(variant="base-lenet5", quant=QuantConfig(mode="dynamic-int8")),
                   TaskContext(app_env))
    q = app_env.get_variant(out.variant_id)
    try:
        page.run()
        page.sidebar.selectbox(key="variant").set_value(q.id).run()
        ok(page)
        warning = texts(page.warning)
        assert f"**{q.name}** is quantized" in warning and "cannot be fine-tuned. Two ways out" in warning
        assert not [b for b in page.button if b.key == "ft-start"]
        assert "Fine-tune the float parent" in texts(page.markdown) and "Quantization-aware training" in texts(
            page.markdown)
        # way out 1: the float parent becomes active, and the form is back
        page.button(key="ft-use-parent").click().run()
        ok(page)
        assert page.session_state["variant"] == "base-lenet5"
        assert page.button(key="ft-start").label == "Start fine-tuning LeNet-5 test baseline"
        # way out 2: QAT on the Quantize page, of the float parent
        page.sidebar.selectbox(key="variant").set_value(q.id).run()
        page.button(key="ft-to-qat").click().run()
        ok(page)
        assert page.title[0].value == "Quantize"
        assert page.session_state["variant"] == "base-lenet5"
        assert page.radio(key="quant-mode").value == "qat"
    finally:
        app_env.delete_variant(q.id, cascade=True)


def test_transfer_form_queues_a_transfer_job(page, app_env):
    page.segmented_control(key="ft-mode").set_value("transfer").run()
    ok(page)
    assert page.radio(key="ft-source-kind").value == "variant"
    page.selectbox(key="ft-dataset").set_value("digits").run()
    ok(page)
    grid = next(s for s in charts(page) if "sample images per class" in title(s))
    assert grid["data"][0]["type"] == "image"
    assert grid["layout"]["yaxis"]["ticktext"][0].startswith("0 (")
    assert page.checkbox(key="ft-freeze").value is True
    page.number_input(key="ft-tr-epochs").set_value(2)
    page.number_input(key="ft-tr-subset").set_value(500)
    page.button(key="ft-tr-start").click().run()
    ok(page)
    jobs = new_jobs(app_env, "transfer")
    assert len(jobs) == 1
    cfg = jobs[0].config
    assert (cfg["source"], cfg["dataset"], cfg["freeze_backbone"], cfg["subset"]) == ("base-lenet5", "digits", True,
                                                                                      500)
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["restore_best"] is True
    assert "Transfer jobs" in texts(page.subheader)
    # a torchvision model: its ImageNet-weights status, offered untrained when they are not cached
    from core.models.transfer import imagenet_weights_status

    page.radio(key="ft-source-kind").set_value("registry").run()
    ok(page)
    model = page.selectbox(key="ft-registry-model").value
    status = imagenet_weights_status(model)
    if status is None:
        assert "are in the torch cache" in texts(page.caption)
        assert page.checkbox(key="ft-pretrained").value is True
    else:
        assert status in texts(page.warning) and "offered untrained" in texts(page.warning)
        assert page.checkbox(key="ft-pretrained").value is False
        assert page.checkbox(key="ft-freeze-untrained").disabled and not page.checkbox(key="ft-freeze-untrained").value
        page.button(key="ft-tr-start").click().run()
        ok(page)
        cfg = next(j for j in new_jobs(app_env, "transfer") if j.config["source"] == model).config
        assert cfg["pretrained"] is False and cfg["freeze_backbone"] is False


def test_upload_a_class_folder_zip_then_transfer_is_offered_and_it_can_be_deleted(page, app_env):
    from core.data.datasets import list_datasets
    from core.data.uploaded import list_uploaded

    page.segmented_control(key="ft-mode").set_value("transfer").run()
    ok(page)
    # a zip that is not one: one error box, nothing stored, the file and the name kept
    page.file_uploader(key="ft-zip-0").set_value(("notes.zip", b"not a zip at all", "application/zip"))
    page.run()
    page.text_input(key="ft-zip-name").input("my-digits").run()
    page.button(key="ft-zip-import").click().run()
    ok(page)
    assert "Not stored: the upload is not a zip archive" in texts(page.error)
    assert not list_uploaded(app_env.root)
    assert page.text_input(key="ft-zip-name").value == "my-digits"
    # a good one (wrapped in a top-level folder): stored under its name, selected, its grid drawn
    page.file_uploader(key="ft-zip-0").set_value(("digits.zip", digits_zip(wrap="photos/"), "application/zip"))
    page.run()
    page.radio(key="ft-zip-channels").set_value(1)
    page.button(key="ft-zip-import").click().run()
    ok(page)
    try:
        assert [d.name for d in list_uploaded(app_env.root)] == ["my-digits"]
        assert "Stored the dataset **my-digits**" in texts(page.success)
        assert page.selectbox(key="ft-dataset").value == "my-digits"
        grid = next(s for s in charts(page) if "sample images per class" in title(s))
        assert grid["layout"]["yaxis"]["ticktext"] == ["digit-0 (12)", "digit-1 (12)", "digit-2 (12)"]
        assert "3 classes (images per class in brackets), 1x28x28 (greyscale)" in texts(page.caption)
        assert not [w for w in page.warning if "cannot" in str(w.value)]        # lenet5 can be transferred to it
        assert not page.button(key="ft-tr-start").disabled
        assert ("becomes a new, untrained `fc2` with 3 outputs, one per class of my-digits: only its 1,503 parameters "
                "train") in texts(page.caption)
        assert "my-digits" in [d.name for d in list_datasets(app_env.root)]   # every page's dataset list
        # the same name again is refused with the reason
        page.file_uploader(key="ft-zip-1").set_value(("digits.zip", digits_zip(), "application/zip"))
        page.run()
        page.text_input(key="ft-zip-name").input("my-digits").run()
        page.button(key="ft-zip-import").click().run()
        ok(page)
        assert "already exists" in texts(page.error)
        # colour images do not fit the greyscale lenet5: said, and Start is disabled
        page.text_input(key="ft-zip-name").input("colour-digits").run()
        page.radio(key="ft-zip-channels").set_value(3)
        page.button(key="ft-zip-import").click().run()
        ok(page)
        assert page.selectbox(key="ft-dataset").value == "colour-digits"
        assert "takes greyscale (1 channel) images" in texts(page.warning)
        assert page.button(key="ft-tr-start").disabled
        # delete both
        for name in ("colour-digits", "my-digits"):
            page.button(key=f"ft-del-{name}").click().run()
            ok(page)
        assert not list_uploaded(app_env.root)
        assert page.selectbox(key="ft-dataset").value == "digits"
    finally:
        from core.data.uploaded import delete_uploaded

        for d in list_uploaded(app_env.root):
            delete_uploaded(d.name, app_env.root)


def test_a_finished_fine_tune_draws_val_accuracy_with_reference_lines_and_the_child(page, app_env):
    """The job run to its end in this process (as a worker would), then shown in the page."""
    from core.measure.training import TrainConfig
    from core.run import jobs
    from core.run.channels import StoreChannel
    from core.run.execute import execute_job
    from core.run.jobs import finish
    from core.tasks.finetune import FinetuneJobConfig

    masked = next(v for v in app_env.children("base-lenet5") if v.kind.get("masked"))
    cfg = FinetuneJobConfig(variant=masked.id, subset=300, train=TrainConfig(epochs=2, lr=0.01, early_stop=2,
                                                                             restore_best=True, device="cpu"))
    job = app_env.jobs.create("finetune", cfg.to_dict(), jobs.describe("finetune", cfg, app_env))
    assert app_env.jobs.claim_next(100, "inline").id == job.id      # running here, not in a spawned worker
    finish(app_env.jobs, job.id, execute_job(app_env.jobs.get(job.id), StoreChannel(app_env.jobs, job.id), app_env))
    job = app_env.jobs.get(job.id)
    assert job.state == "done", job.error
    child = app_env.get_variant(job.variant_id)
    try:
        page.run()
        page.sidebar.selectbox(key="variant").set_value(masked.id).run()
        ok(page)
        chart = next(s for s in charts(page) if "validation accuracy per epoch" in title(s))
        names = [t.get("name", "") for t in chart["data"]]
        assert names[0] == "validation accuracy"
        assert chart["data"][0]["x"][0] == 0 and len(chart["data"][0]["x"]) == 3      # epoch 0 and 2 epochs
        assert any(n.startswith("parent: ") for n in names)
        assert any(n.startswith("dense root LeNet-5 test baseline: ") for n in names)
        best = job.result["best_epoch"]
        assert any(n.startswith("best epoch") or n.startswith("kept") for n in names) and best in (0, 1, 2)
        # the new variant next to its parent, with its recipe
        table = next(d.value for d in page.dataframe if "test accuracy" in d.value.columns)
        assert list(table["variant"]) == [masked.name, child.name]
        assert list(table[""]) == ["parent", "new child"]
        assert child.recipe[-1]["step"] == "finetune"
        assert '"step": "finetune"' in texts(page.code)
        # masked zeros kept
        assert child.metrics["nonzero_params"] == masked.metrics["nonzero_params"]
        assert page.button(key=f"ft-jobs-open-{job.id}").label == f"Open variant {child.name}"
    finally:
        app_env.delete_variant(child.id, cascade=True)


def test_a_finished_transfer_draws_val_accuracy_against_chance_and_the_new_variant(page, app_env):
    from core.run import jobs
    from core.run.channels import StoreChannel
    from core.run.execute import execute_job
    from core.run.jobs import finish
    from core.tasks.transfer import TransferJobConfig

    cfg = TransferJobConfig(source="base-lenet5", dataset="digits", train={"epochs": 1, "device": "cpu"})
    job = app_env.jobs.create("transfer", cfg.to_dict(), jobs.describe("transfer", cfg, app_env))
    assert app_env.jobs.claim_next(100, "inline").id == job.id
    finish(app_env.jobs, job.id, execute_job(app_env.jobs.get(job.id), StoreChannel(app_env.jobs, job.id), app_env))
    job = app_env.jobs.get(job.id)
    assert job.state == "done", job.error
    try:
        page.segmented_control(key="ft-mode").set_value("transfer").run()
        ok(page)
        chart = next(s for s in charts(page) if "Transfer: validation accuracy per epoch" in title(s))
        names = [t.get("name", "") for t in chart["data"]]
        assert names[:2] == ["validation accuracy", "chance: 10.00%"]
        assert chart["data"][0]["x"] == [0, 1]
        assert "best epoch 1" in names                        # the last epoch: nothing to restore
        table = next(d.value for d in page.dataframe if "test accuracy" in d.value.columns)
        assert list(table[""]) == ["source", "new variant"]
        assert list(table["dataset"]) == ["fashion-mnist", "digits"]
        assert "trained, " in texts(page.caption) and "frozen parameters" in texts(page.caption)
    finally:
        app_env.delete_variant(job.variant_id, cascade=True)


def test_an_empty_workspace_says_where_to_start_and_transfer_offers_a_torchvision_model(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.store.workspace import Workspace

    monkeypatch.setattr(Workspace, "seed_baselines", lambda self, *a, **k: [])
    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "empty"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "app.py"), default_timeout=90).run()
    at.switch_page(PAGE).run()
    ok(at)
    assert "No variant yet" in texts(at.info)
    assert not [b for b in at.button if b.key == "ft-start"]
    at.segmented_control(key="ft-mode").set_value("transfer").run()
    ok(at)
    assert at.radio(key="ft-source-kind").options == ["A torchvision model (ImageNet weights)"]
    assert at.button(key="ft-tr-start").label == "Start transfer learning"
