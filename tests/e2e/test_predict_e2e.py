"""In a real browser: upload a photo through the file input and see the input the model receives and
the top-k predictions of two variants side by side; a broken file next to it gets its own message
while the photo is still classified."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from e2e_helpers import wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def photo_png() -> bytes:
    """One Fashion-MNIST test image photographed (scripts/make_photo_testset.py: dark item, light table)."""
    spec = importlib.util.spec_from_file_location("make_photo_testset", REPO / "scripts" / "make_photo_testset.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    ps = mod.photo_testset(1, seed=11)
    return mod.png_bytes(ps.photos[0])


def test_upload_a_photo_and_a_broken_file_see_two_variants(new_page, e2e_workspace, lenet5_variant, settle):
    v = lenet5_variant
    others = [c for c in e2e_workspace.list_variants() if c.dataset == v.dataset and c.id != v.id]
    assert others, "the e2e workspace holds a second variant on the same dataset (the shipped baselines)"
    page = new_page(f"/predict?variant={v.id}")
    expect(page.get_by_role("heading", name="Predict")).to_be_visible(timeout=60_000)
    picker = page.get_by_test_id("stMultiSelect").filter(has_text="Variants to compare")
    expect(picker).to_contain_text(v.name)
    chosen = wait_for(lambda: [c.name for c in [v, *others] if c.name in picker.inner_text()], 30,
                      "two variants chosen by default")
    assert len(chosen) == 2

    page.get_by_test_id("stFileUploader").locator('input[type="file"]').set_input_files([
        {"name": "shoe-photo.png", "mimeType": "image/png", "buffer": photo_png()},
        {"name": "broken.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40},
    ])
    settle(page)
    expect(page.get_by_text("broken.png: not an image")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("1 of 2 files could not be used")).to_be_visible()
    card = page.locator(".st-key-predict-card-0")
    expect(card).to_contain_text("shoe-photo.png", timeout=60_000)
    expect(card.get_by_text("what the model receives (28x28)")).to_be_visible()
    expect(card.get_by_text("as uploaded", exact=True)).to_be_visible()
    # both variants' top-k: the card's table (drawn on a canvas) and a bar chart with one series per variant
    expect(card.get_by_test_id("stDataFrame")).to_be_visible()
    series = wait_for(lambda: card.evaluate(
        "el => { const p = el.querySelector('.js-plotly-plot'); return p && p.data ? p.data.map(d => d.name) : null }"),
        30, "the probability chart")
    assert sorted(series) == sorted(chosen)
    expect(page.locator(".st-key-predict-card-1")).to_contain_text("broken.png")
