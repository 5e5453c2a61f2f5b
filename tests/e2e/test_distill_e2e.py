"""In a real browser: start a distillation on the Distill page, watch its curves grow while it runs,
start the ablation with one click (a second session sees the running job with Cancel), and see the
teacher, the distilled and the scratch student compared with the gap closed and a verdict."""
from __future__ import annotations

import re
import time

import pytest
from e2e_helpers import metric_value, wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

# points of the distillation's "total loss" curve drawn in the page (0 while there is no chart)
LOSS_POINTS = """() => { for (const p of document.querySelectorAll('.js-plotly-plot')) {
    const t = (p.data || []).find(d => d.name === 'total loss'); if (t) return t.x.length; } return 0; }"""
PLOT_TITLES = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .map(p => ((p.layout || {}).title || {}).text || '')"""


def _fill(page, label: str, value: int) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")


def test_distill_live_curves_then_ablation_and_comparison(new_page, e2e_workspace, lenet5_variant, settle):
    ws, v = e2e_workspace, lenet5_variant
    before = {j.id for j in ws.jobs.list()}
    page = new_page(f"/distill?variant={v.id}")
    expect(page.get_by_role("heading", name="Teacher and student")).to_be_visible(timeout=60_000)
    # a small budget: 4,000 images, 2 epochs, batch 4 (2,000 steps: long enough to watch the curves grow
    # on a fast machine too, where 500 steps ended before the page's second poll)
    _fill(page, "Training images", 4000)
    settle(page)
    _fill(page, "Epochs", 2)
    settle(page)
    page.get_by_text("More settings").click()
    _fill(page, "Batch size", 4)
    settle(page)
    expect(page.get_by_text("4,000 Fashion-MNIST training images × 2 epoch(s), batch 4 (2,000 optimizer steps)")) \
        .to_be_visible()
    page.get_by_role("button", name="Start distillation").click()

    job = wait_for(lambda: next((j for j in ws.jobs.list() if j.kind == "distill" and j.id not in before), None),
                   30, "the distill job to be queued")
    assert job.config["subset"] == 4000 and job.config["distill"]["epochs"] == 2 and not job.config["ablation"]
    assert job.config["distill"]["batch_size"] == 4 and job.config["student"] == "lenet5-small"
    made = []
    try:
        # the curves appear and grow while the job runs (the card polls the job store every second);
        # once they have grown, one click queues the ablation: the same student, budget and seed without the teacher
        seen: list[int] = []
        ablation = None
        end = time.time() + 240
        while time.time() < end:
            state = ws.jobs.get(job.id).state
            if state not in ("queued", "running"):
                break
            n = page.evaluate(LOSS_POINTS)
            if n and (not seen or n != seen[-1]):
                seen.append(n)
            if len(seen) >= 2 and ablation is None:   # the curves moved; the ablation's wait must not hide that
                page.get_by_role("button", name="Start the ablation: the same student without the teacher").click()
                ablation = wait_for(lambda: next((j for j in ws.jobs.list() if j.kind == "distill"
                                                  and j.config["ablation"] and j.id not in before), None),
                                    30, "the ablation job")
            time.sleep(0.3)
        assert ws.jobs.get(job.id).state == "done", ws.jobs.get(job.id).error
        assert len(seen) >= 2 and seen == sorted(seen), f"loss points seen while running: {seen}"
        assert ablation is not None, "the chart never showed while the distillation ran"
        made.append(ws.jobs.get(job.id).variant_id)
        assert {k: w for k, w in ablation.config.items() if k != "ablation"} == \
               {k: w for k, w in job.config.items() if k != "ablation"}
        # another session sees the running (or queued) job, with Cancel
        other = new_page("/distill")
        card = other.locator(f'[class*="-card-{ablation.id}"]').first     # the job card, keyed by the job id
        wait_for(lambda: card.get_by_role("button", name="Cancel").count() or ws.jobs.get(ablation.id).is_final, 60,
                 "the other session to show the ablation with Cancel (or the ablation to finish)")
        other.close()
        wait_for(lambda: ws.jobs.get(ablation.id).is_final, 240, "the ablation to finish")
        expect(page.get_by_text(re.compile(r"After epoch 2 of 2: student accuracy .* agreement with the teacher"))
               .first).to_be_visible(timeout=30_000)
        assert ws.jobs.get(ablation.id).state == "done", ws.jobs.get(ablation.id).error
        made.append(ws.jobs.get(ablation.id).variant_id)

        # both done: the comparison, the gap closed, the verdict and the per-class chart
        expect(page.get_by_role("heading", name="Did distillation help?")).to_be_visible(timeout=60_000)
        verdict = page.get_by_text(re.compile(r"Distillation closed -?\d+% of the gap|Distillation did not help|"
                                              r"no gap for distillation to close"))
        expect(verdict).to_be_visible(timeout=60_000)
        assert re.fullmatch(r"-?\d+%|–", metric_value(page, "Gap closed"))
        titles = wait_for(lambda: [t for t in page.evaluate(PLOT_TITLES) if "Per-class test accuracy" in t], 60,
                          "the per-class chart")
        assert titles
        expect(page.get_by_text(re.compile(r"student against the teacher, batch 64")).first).to_be_visible()
    finally:
        for vid in made:
            if vid:
                ws.delete_variant(vid, cascade=True)
