"""In a real browser: on the Prune page's Sweep tab, cut the default grid to 2 trials on 500 images,
start the sweep (the local runner: trials one after another in a background job), watch it end
with one table row per trial, the heatmap and the accuracy-vs-size chart, then open the variant
the sweep kept."""
from __future__ import annotations

import pytest
from e2e_helpers import wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

K = ".st-key-sweep-prune_finetune-"
TITLES = "() => [...document.querySelectorAll('.js-plotly-plot')].map(p => ((p.layout || {}).title || {}).text || '')"


def test_a_two_trial_sweep_from_the_prune_page_keeps_its_best_variant(new_page, e2e_workspace, lenet5_variant,
                                                                      settle):
    page = new_page(f"/prune?variant={lenet5_variant.id}")
    expect(page.get_by_role("heading", name="Prune", exact=True)).to_be_visible(timeout=60_000)
    page.get_by_role("tab", name="Sweep amount × fine-tune epochs").click()
    settle(page)
    expect(page.get_by_text("6 trials", exact=False).first).to_be_visible()   # 3 amounts x 2 epochs by default
    for axis in ("amount", "epochs"):   # Backspace in an empty multiselect drops its last value
        page.locator(f"{K}{axis} input").click()
        page.keyboard.press("Backspace")
        page.keyboard.press("Escape")
        settle(page)
    subset = page.locator(f"{K}subset input")
    subset.fill("500")
    subset.press("Enter")
    settle(page)
    expect(page.get_by_text("2 × 1 = 2 trials")).to_be_visible()
    page.get_by_role("button", name="Start sweep").click()
    settle(page)
    expect(page.get_by_text("Latest finished sweep of")).to_be_visible(timeout=240_000)
    job = next(j for j in e2e_workspace.jobs.list() if j.kind == "sweep")
    assert job.state == "done", (job.error, job.log)
    assert [t["params"] for t in job.result["trials"]] == [{"amount": 0.5, "epochs": 1}, {"amount": 0.8, "epochs": 1}]
    assert job.config["subset"] == 500 and job.result["mode"] == "sequential"
    expect(page.get_by_text("Best: trial")).to_be_visible()
    expect(page.get_by_test_id("stDataFrame").first).to_be_visible()   # the trials table (a canvas)
    titles = wait_for(lambda: len(t := page.evaluate(TITLES)) >= 2 and t, 60, "the two sweep charts")
    assert any("validation accuracy" in t.lower() for t in titles), titles
    best = e2e_workspace.get_variant(job.variant_id)
    page.get_by_role("button", name=f"Open the best trial's variant: {best.name}").click()
    settle(page)
    expect(page.get_by_role("heading", name="Model", exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_text(best.name).first).to_be_visible()
