"""AppTest: Deep Compression's later stages on the Quantize page. A float variant offers trained
weight sharing as a background job with the chosen codebook bits; a weight-shared variant shows its
stage table and where its bytes went, and one click Huffman-codes it into a smaller child."""
from __future__ import annotations

import pytest
from ui_helpers import charts, ok, texts

from core.tasks import TaskContext, run_task
from core.tasks.share_weights import ShareWeightsJobConfig

MASKED = "LeNet-5 masked 50% fc1"


def _title(spec) -> str:
    t = spec["layout"].get("title")
    return (t.get("text") if isinstance(t, dict) else t) or ""


def _open(app, app_env, name: str):
    vid = next(v.id for v in app_env.list_variants() if v.name == name)
    app.run()
    app.sidebar.selectbox(key="variant").set_value(vid)
    app.switch_page("pages/quantize.py").run()
    return ok(app)


def test_share_form_queues_a_weight_sharing_job_with_the_chosen_bits(app, app_env):
    page = _open(app, app_env, MASKED)
    assert "Weight sharing (Deep Compression)" in texts(page.subheader)
    page.slider(key="share-bits-fc").set_value(4)
    page.number_input(key="share-epochs").set_value(0)
    page.button(key="FormSubmitter:share-form-Share weights (background job)").click().run()
    ok(page)
    jobs = [j for j in app_env.jobs.list() if j.kind == "share_weights"]
    assert len(jobs) == 1
    cfg = jobs[0].config
    assert (cfg["bits_conv"], cfg["bits_fc"], cfg["epochs"], cfg["subset"]) == (8, 4, 0, 10_000)
    assert cfg["variant"] == next(v.id for v in app_env.list_variants() if v.name == MASKED)
    assert "Weight-sharing jobs of this variant" in texts(page.markdown)


def test_dense_variant_is_told_to_prune_first(app, app_env):
    page = _open(app, app_env, "LeNet-5 test baseline")
    assert any("Prune it first" in str(i.value) for i in page.info)


@pytest.fixture
def shared_variant(app_env):
    masked = next(v for v in app_env.list_variants() if v.name == MASKED)
    out = run_task("share_weights", ShareWeightsJobConfig(variant=masked.id, bits_conv=6, bits_fc=4, epochs=0,
                                                          subset=500, device="cpu"), TaskContext(app_env))
    v = app_env.get_variant(out.variant_id)
    yield v
    app_env.delete_variant(v.id, cascade=True)


def test_shared_variant_shows_its_stages_and_huffman_makes_it_smaller(app, app_env, shared_variant):
    v = shared_variant
    page = _open(app, app_env, v.name)
    assert any("is weight-shared (bit-packed codes)" in str(i.value) for i in page.info)
    stages = next(d.value for d in page.dataframe if "stage" in d.value.columns)
    assert list(stages["stage"]) == ["float32 dense (root)", "pruned", "weight sharing"]
    assert list(stages["variant"])[-1] == v.name and stages["file bytes"].iloc[-1] == f"{v.metrics['size_bytes']:,}"
    bars = [c for c in charts(page) if _title(c).startswith("Where the ")]
    assert bars and {t["name"] for t in bars[0]["data"]} >= {"codes (one per non-zero weight)",
                                                              "relative indices (where the non-zeros are)"}
    # the int8 modes are not offered for it
    assert not [r for r in page.radio if r.key == "quant-mode"]

    page.button(key="share-huffman").click().run()
    ok(page)
    child = next(c for c in app_env.children(v.id))
    assert child.format == "shared+huffman" and child.metrics["size_bytes"] < v.metrics["size_bytes"]
    assert child.metrics["accuracy"] == v.metrics["accuracy"]          # the same weights, fewer bytes
    assert f"Saved **{child.name}**" in texts(page.success)
    page.run()
    ok(page)
    assert any(f"Already Huffman-coded: **{child.name}**" in str(i.value) for i in page.info)
