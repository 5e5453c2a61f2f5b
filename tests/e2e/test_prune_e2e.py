"""In a real browser: move the Prune page's amount slider, see the numbers and the heatmap change,
Apply, and find the new variant in the sidebar picker."""
from __future__ import annotations

import pytest
from e2e_helpers import metric_value, wait_for
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

HEATMAP_PRUNED_FRACTION = """() => {
  const plots = [...document.querySelectorAll('.js-plotly-plot')];
  const heat = plots.find(p => p.data && p.data[0] && p.data[0].type === 'heatmap'
                         && ((p.layout.title || {}).text || '').includes('fraction pruned'));
  if (!heat) return -1;
  const z = heat._fullData[0].z;   // decoded rows of cells: the fraction of each block that is pruned
  let sum = 0, n = 0;
  for (const row of z) for (const v of row) { sum += v; n++; }
  return sum / n;
}"""


def test_slider_updates_numbers_and_heatmap_then_apply_makes_a_variant(new_page, e2e_workspace, lenet5_variant,
                                                                      settle):
    v = lenet5_variant
    page = new_page(f"/prune?variant={v.id}")
    expect(page.get_by_text("Preview: L1 global 50%")).to_be_visible(timeout=60_000)
    assert metric_value(page, "Sparsity") == "50.0%"
    size_50 = metric_value(page, "File size")
    # fc1 (500 x 800) is drawn block-reduced: each cell is coloured by the fraction of its block pruned
    pruned_50 = wait_for(lambda: max(page.evaluate(HEATMAP_PRUNED_FRACTION), 0), 30, "the heatmap to draw")

    # move the amount slider with the keyboard: 0.50 -> 0.90 in steps of 0.05
    thumb = page.get_by_test_id("stSlider").filter(has_text="Amount").first.get_by_role("slider")
    thumb.focus()
    for _ in range(8):
        thumb.press("ArrowRight")
    settle(page)
    expect(page.get_by_text("Preview: L1 global 90%")).to_be_visible(timeout=60_000)
    assert metric_value(page, "Sparsity") == "90.0%"
    assert metric_value(page, "File size") != size_50
    pruned_90 = wait_for(lambda: (n := page.evaluate(HEATMAP_PRUNED_FRACTION)) > pruned_50 + 0.2 and n, 30,
                         "the heatmap to show more of fc1 pruned")
    from core.compress.pruning.prune import PruneConfig, prune

    _, report = prune(e2e_workspace.load_model(v.id), PruneConfig(amount=0.9, scope="global"))
    assert pruned_90 == pytest.approx(report.layer("fc1").sparsity_after, abs=1e-3)   # the cells add up

    before = {c.id for c in e2e_workspace.children(v.id)}
    page.get_by_role("button", name="Apply: save as a child variant").click()
    settle(page)
    # the success box (not the Truth panel's "saved only by..." text, which is always there)
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text="Saved")).to_be_visible(timeout=120_000)
    new = [c for c in e2e_workspace.children(v.id) if c.id not in before]
    try:
        assert len(new) == 1 and new[0].kind["masked"]
        assert new[0].metrics["sparsity"] == pytest.approx(0.9, abs=1e-4)
        # the sidebar's picker lists it
        page.get_by_test_id("stSidebar").get_by_test_id("stSelectbox").click()
        expect(page.get_by_role("option", name=new[0].name, exact=False).first).to_be_visible()
        page.keyboard.press("Escape")
        # and the success box's button makes it the active variant
        page.get_by_role("button", name=f"Make {new[0].name} active").click()
        settle(page)
        wait_for(lambda: f"variant={new[0].id}" in page.url, 30, "the URL to follow the active variant")
    finally:
        for c in new:
            e2e_workspace.delete_variant(c.id, cascade=True)
