"""AppTest: the Predict page. Samples of the test split are classified by two variants side by side
(their true labels known); an uploaded photo shows the input the model receives and both variants'
top-k; a bad file gets its own message while the good one is still classified."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from ui_helpers import charts, ok, texts


def tables(at) -> list:
    return [d.value for d in at.dataframe if "variant" in getattr(d.value, "columns", [])]


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def trouser_photo() -> bytes:
    """Dark trousers (two legs joined at the waist) off-centre on a light, slightly tinted table."""
    img = Image.new("RGB", (300, 280), (228, 224, 218))
    px = img.load()
    for y in range(40, 250):
        for x in range(120, 205):
            if y < 80 or not 158 <= x <= 167:      # the waist band, then two legs with a gap
                px[x, y] = (45, 50, 70)
    return png(img)


@pytest.fixture
def page(app):
    app.switch_page("pages/predict.py").run()
    return ok(app)


def test_page_renders_with_the_active_variant_and_another_by_default(page):
    assert page.title[0].value == "Predict"
    chosen = page.multiselect(key="predict-variants-base-lenet5").value
    # the baseline is a root: its newest child joins it, so two answers are side by side from the start
    assert chosen[0] == "base-lenet5" and len(chosen) == 2
    assert page.radio(key="predict-source").value == "Upload images"
    assert "Drop one or more pictures above" in texts(page.info)
    assert "What am I looking at?" in [e.label for e in page.expander]


def test_samples_show_predictions_from_two_variants_with_true_labels(page):
    page.radio(key="predict-source").set_value("Samples from the test split").run()
    ok(page)
    page.slider(key="predict-n").set_value(3).run()
    ok(page)
    names = [v for v in page.multiselect(key="predict-variants-base-lenet5").value]
    got = tables(page)
    assert len(got) == 3
    for t in got:
        assert len(t) == 2 and set(t.columns) >= {"variant", "right?", "#1", "#2", "#3"}
        assert set(t["right?"]) <= {"yes", "no"}
    assert len(names) == 2 and len(charts(page)) == 3
    assert all(len(c["data"]) == 2 for c in charts(page))   # one bar series per variant
    cards = [m.value for m in page.markdown if "true label:" in str(m.value)]
    assert len(cards) == 3 and all(m.startswith("**test image #") for m in cards)
    # another draw shows other images; top-k follows the slider
    page.button(key="predict-redraw").click().run()
    ok(page)
    assert [m.value for m in page.markdown if "true label:" in str(m.value)] != cards
    page.slider(key="predict-k").set_value(5).run()
    ok(page)
    assert "#5" in tables(page)[0].columns


def test_an_upload_shows_the_model_input_and_a_bad_file_its_own_message(page):
    page.file_uploader(key="predict-upload").set_value([
        ("trousers.png", trouser_photo(), "image/png"),
        ("broken.png", png(Image.new("RGB", (64, 64), (200, 10, 10)))[:60], "image/png"),
        ("empty.gif", b"", "image/gif"),
    ]).run()
    ok(page)
    errors = texts(page.error)
    assert "broken.png: the image cannot be decoded (the file is truncated)" in errors
    assert "empty.gif: the file is empty" in errors
    assert "2 of 3 files could not be used" in texts(page.warning)
    got = tables(page)
    assert len(got) == 1 and len(got[0]) == 2            # the good image, by both variants
    assert "trousers.png" in texts(page.markdown) and "300 x 280 PNG" in texts(page.markdown)
    captions = [c for i in page.image for c in i.captions]
    assert "as uploaded" in captions and "what the model receives (28x28)" in captions
    # a trouser photo is a trouser to the shipped-style baseline trained on the fixture's data
    first = got[0]["#1"].iloc[0]
    assert first.split(" ")[0] in ("Trouser", "Dress"), first
    with_steps = [e for e in page.expander if e.label == "How this input was made"]
    assert with_steps and "turned dark" in texts(page.caption)


def test_a_masked_child_runs_next_to_its_parent_in_the_order_chosen(page, app_env):
    child = next(v for v in app_env.list_variants() if v.parent_id == "base-lenet5")
    page.multiselect(key="predict-variants-base-lenet5").set_value([child.id, "base-lenet5"]).run()
    page.radio(key="predict-source").set_value("Samples from the test split").run()
    ok(page)
    t = tables(page)[0]
    assert list(t["variant"]) == [child.name, "LeNet-5 test baseline"]
    probs = [float(s.split(" ")[-1].rstrip("%").lstrip("<")) for s in t["#1"]]
    assert all(0 < p <= 100 for p in probs)
    assert np.isfinite(probs).all()


def test_a_quantized_child_runs_on_the_cpu_next_to_its_float_parent(page, app_env):
    from core.compress.quant.quantize import QuantConfig
    from core.tasks import QuantizeJobConfig, TaskContext, run_task

    out = run_task("quantize", QuantizeJobConfig(variant="base-lenet5", quant=QuantConfig(mode="static-int8")),
                   TaskContext(app_env))
    try:
        q = app_env.get_variant(out.variant_id)
        assert q.kind["quantized"]
        page.run()                                        # the picker now lists the new variant
        page.multiselect(key="predict-variants-base-lenet5").set_value([q.id, "base-lenet5"]).run()
        page.radio(key="predict-source").set_value("Samples from the test split").run()
        ok(page)
        assert not page.error
        t = tables(page)[0]
        assert list(t["variant"]) == [q.name, "LeNet-5 test baseline"]
        # static int8 keeps the float model's answers on nearly every sample
        agree = [list(t["#1"].str.split(" ").str[0]) for t in tables(page)]
        assert sum(a[0] == a[1] for a in agree) >= len(agree) - 1
    finally:
        app_env.delete_variant(out.variant_id, cascade=True)
