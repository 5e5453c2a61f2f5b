"""In a real browser: upload a zip of class folders (made from scikit-learn's digits) on the
Fine-tune page and see its sample grid; start a short fine-tune of the LeNet-5 baseline and watch
the validation accuracy per epoch with its reference line, then the new variant next to its parent."""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
from e2e_helpers import wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

PLOTS = """() => [...document.querySelectorAll('.js-plotly-plot')].map(p => ({
    title: ((p.layout || {}).title || {}).text || '',
    names: (p.data || []).map(t => t.name || ''),
    ticks: (((p.layout || {}).yaxis || {}).ticktext || []),
    x: ((p.data || [])[0] || {}).x || []}))"""


def digits_zip(classes=(0, 1, 2), per_class: int = 20) -> bytes:
    """Class folders of PNGs (dark digits on a light background, as a scan would be)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c in classes:
            for i, k in enumerate(np.flatnonzero(d.target == c)[:per_class]):
                png = io.BytesIO()
                Image.fromarray((255 - d.images[k] * 15).astype(np.uint8)).resize((32, 32)).save(png, format="PNG")
                zf.writestr(f"digit-{c}/{i:03d}.png", png.getvalue())
    return buf.getvalue()


def shoot(page, name: str) -> None:
    """A full-page screenshot when E2E_SHOTS names a folder (for looking at the page, not asserting)."""
    if os.environ.get("E2E_SHOTS"):
        page.screenshot(path=os.path.join(os.environ["E2E_SHOTS"], f"{name}.png"), full_page=True)


def plots(page) -> list[dict]:
    return page.evaluate(PLOTS)


def test_upload_a_class_folder_zip_and_see_its_sample_grid(new_page, e2e_workspace, lenet5_variant, settle):
    from core.data.uploaded import delete_uploaded, list_uploaded

    page = new_page(f"/finetune?variant={lenet5_variant.id}")
    expect(page.get_by_role("heading", name="Fine-tune", exact=True)).to_be_visible(timeout=60_000)
    page.get_by_text("Transfer to another dataset", exact=True).click()
    settle(page)
    page.get_by_text("Upload a class-folder zip").click()
    uploader = page.get_by_test_id("stFileUploader").locator('input[type="file"]')
    uploader.set_input_files({"name": "three-digits.zip", "mimeType": "application/zip", "buffer": digits_zip()})
    settle(page)
    name = page.get_by_label("Dataset name", exact=True)
    name.fill("e2e-digits")
    name.press("Enter")
    settle(page)
    try:
        page.get_by_role("button", name="Check and store the dataset").click()
        settle(page)
        expect(page.get_by_text("Stored the dataset e2e-digits")).to_be_visible(timeout=60_000)
        assert [d.name for d in list_uploaded(e2e_workspace.root)] == ["e2e-digits"]
        grid = wait_for(lambda: [p for p in plots(page) if "e2e-digits: sample images per class" in p["title"]], 60,
                        "the sample grid of the new dataset")
        assert grid[0]["ticks"] == ["digit-0 (20)", "digit-1 (20)", "digit-2 (20)"]
        expect(page.get_by_text("3 classes (images per class in brackets), 1x28x28 (greyscale)")).to_be_visible()
        expect(page.get_by_role("button", name="Start transfer learning")).to_be_enabled()
        shoot(page, "finetune-transfer-uploaded")
    finally:
        for d in list_uploaded(e2e_workspace.root):
            delete_uploaded(d.name, e2e_workspace.root)


def test_a_short_fine_tune_shows_val_accuracy_and_the_new_variant(new_page, e2e_workspace, lenet5_variant, settle):
    v = lenet5_variant
    page = new_page(f"/finetune?variant={v.id}")
    expect(page.get_by_text(f"{v.name} is dense: every weight trains.")).to_be_visible(timeout=60_000)
    for label, value in (("Epochs", "2"), ("Training samples (0 = all)", "500")):
        box = page.get_by_label(label, exact=True)
        box.fill(value)
        box.press("Enter")
        settle(page)
    before = {c.id for c in e2e_workspace.children(v.id)}
    page.get_by_role("button", name=f"Start fine-tuning {v.name}").click()
    settle(page)
    job = wait_for(lambda: next((j for j in e2e_workspace.jobs.list() if j.kind == "finetune"), None), 30,
                   "the job to be queued")
    assert job.config["subset"] == 500 and job.config["train"]["epochs"] == 2
    try:
        # another browser session sees the same job on this page, cancellable while it runs
        other = new_page(f"/finetune?variant={v.id}")
        expect(other.get_by_text(job.title)).to_be_visible(timeout=30_000)
        wait_for(lambda: e2e_workspace.jobs.get(job.id).is_final
                 or other.get_by_role("button", name="Cancel").is_visible(), 30, "its Cancel button")
        other.close()
        # the live chart: epoch 0 (the parent) first, then each epoch; the parent's line
        chart = wait_for(lambda: [p for p in plots(page) if "validation accuracy per epoch" in p["title"]], 240,
                         "the validation-accuracy chart")
        assert chart[0]["names"][0] == "validation accuracy" and chart[0]["x"][0] == 0
        assert any(n.startswith("parent (the dense root): ") for n in chart[0]["names"])
        # while the finished job's card replaces the live one, the old card can linger for a moment
        opens = page.get_by_role("button", name="Open variant")
        expect(opens.first).to_be_visible(timeout=240_000)
        settle(page)
        wait_for(lambda: opens.count() == 1, 30, "one card for the finished job")
        done = e2e_workspace.jobs.get(job.id)
        assert done.state == "done", done.error
        child = e2e_workspace.get_variant(done.variant_id)
        chart = wait_for(lambda: [p for p in plots(page) if "validation accuracy per epoch" in p["title"]], 30,
                         "the final chart")
        names = chart[0]["names"]
        assert list(chart[0]["x"]) == [0, 1, 2]
        assert any(n.startswith("best epoch") or n.startswith("kept") for n in names)
        # the new variant next to its parent, with its recipe, and in the sidebar's picker
        table = page.get_by_test_id("stDataFrame").last
        expect(table).to_contain_text(child.name)
        expect(table).to_contain_text(v.name)
        expect(page.get_by_text("Recipe of the new variant")).to_be_visible()
        shoot(page, "finetune-done")
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
        expect(page.get_by_role("option", name=child.name, exact=False).first).to_be_visible()
        page.keyboard.press("Escape")
    finally:
        for c in e2e_workspace.children(v.id):
            if c.id not in before:
                e2e_workspace.delete_variant(c.id, cascade=True)
