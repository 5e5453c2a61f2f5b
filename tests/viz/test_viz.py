"""core.viz.charts: figures have the right traces, sizes and markings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.viz import charts as viz


def _pruned(shape, sparsity=0.75, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(*shape, generator=g)
    w[torch.rand(*shape, generator=g) < sparsity] = 0
    return w


def test_as_matrix_flattens_conv_kernels():
    assert viz.as_matrix(torch.zeros(20, 3, 5, 5)).shape == (20, 75)
    assert viz.as_matrix(torch.zeros(7)).shape == (1, 7)
    assert viz.as_matrix(np.zeros((4, 6))).dtype == np.float32


def test_block_reduce_means_and_handles_ragged_edges():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    out, (by, bx) = viz.block_reduce(a, (2, 2))
    assert (by, bx) == (2, 2) and out.shape == (2, 2)
    assert out[0, 0] == pytest.approx(np.mean([0, 1, 4, 5]))
    assert out[1, 1] == pytest.approx(np.mean([10, 11]))     # last row block has one real row
    same, block = viz.block_reduce(a, (10, 10))
    assert block == (1, 1) and same is a


def test_small_layer_heatmap_is_full_size_with_pruned_marked():
    w = _pruned((20, 1, 5, 5))
    fig = viz.weight_heatmap(w)
    assert [t.type for t in fig.data] == ["heatmap"]
    z = np.asarray(fig.data[0].z)
    assert z.shape == (20, 25) and z.dtype == np.float32
    pruned = viz.as_matrix(w) == 0
    # pruned cells carry the sentinel below zero that the colour scale paints red
    assert (z[pruned] < 0).all() and (z[~pruned] > 0).all()
    assert fig.data[0].zmin == pytest.approx(z.min())
    scale = fig.data[0].colorscale
    assert scale[0] == (0.0, viz.PRUNED_COLOR) and scale[-1][0] == 1.0      # plotly.js needs exact ends
    assert all(a[0] < b[0] for a, b in zip(scale[1:], scale[2:], strict=False))
    assert (np.asarray(fig.data[0].customdata)[pruned] == 100).all()


def test_large_layer_is_block_reduced_and_full_resolution_is_an_image():
    w = _pruned((512, 256, 3, 3))              # 512 x 2304 = 1.2 M weights
    fig = viz.weight_heatmap(w)
    z = np.asarray(fig.data[0].z)
    assert z.shape[0] <= viz.MAX_CELLS[0] and z.shape[1] <= viz.MAX_CELLS[1]
    assert z.shape == (256, 768) and "each cell = 2x3 weights" in fig.layout.title.text
    assert len(fig.to_json()) < 3_000_000
    full = viz.weight_heatmap(w, full_resolution=True)
    assert [t.type for t in full.data] == ["image"]
    assert full.data[0].source.startswith("data:image/png;base64,")


def test_a_block_reduced_sparse_layer_is_coloured_by_the_fraction_pruned():
    # a 92%-sparse layer used to look about half red: a cell was red only when its whole block was pruned
    w = _pruned((500, 800), sparsity=0.92, seed=3)
    fig = viz.weight_heatmap(w, max_cells=(128, 400))
    z = np.asarray(fig.data[0].z, dtype=np.float64)
    assert "fraction pruned" in fig.layout.title.text and (fig.data[0].zmin, fig.data[0].zmax) == (0, 1)
    assert z.mean() == pytest.approx(float((w == 0).float().mean()), abs=0.01)
    assert fig.data[0].colorscale[-1][1] == viz.PRUNED_COLOR
    # an unpruned large layer still shows mean |w| per block
    dense = viz.weight_heatmap(torch.randn(500, 800), max_cells=(128, 400))
    assert "mean |w|" in dense.layout.title.text and np.asarray(dense.data[0].z).min() > 0


def test_percent_ticks_have_enough_decimals_to_differ():
    assert viz.pct_tickformat([0.9185, 0.9195]) == ".2%"       # was .1%: "91.9%, 91.9%, 91.9%"
    assert viz.pct_tickformat([0.5, 0.9]) == ".0%"
    assert viz.pct_tickformat([0.91851, 0.91859]) == ".3%"
    assert viz.pct_tickformat([0.9]) == ".1%"
    curve = viz.accuracy_sparsity_curve([{"sparsity": 0.0, "val_accuracy": 0.9188, "phase": "start"},
                                         {"sparsity": 0.5, "val_accuracy": 0.9191, "phase": "recovered"}])
    fmt = curve.layout.yaxis.tickformat
    ticks = np.linspace(0.9188, 0.9191, 4)
    assert len({f"{t * 100:.{int(fmt[1])}f}" for t in ticks}) == 4


def test_histogram_before_after_is_binned():
    before = torch.randn(100_000, generator=torch.Generator().manual_seed(0))   # seeded: the bin edges move with the range
    after = before.clone()
    after[after.abs() < 0.5] = 0
    fig = viz.weight_histogram(before, after, bins=50)
    assert [t.type for t in fig.data] == ["bar", "bar"]
    assert len(fig.data[0].y) == 50
    assert "pruned" in fig.data[1].name
    # the pruned centre is empty after, and zeros are not drawn
    centers = np.asarray(fig.data[1].x)
    assert np.asarray(fig.data[1].y)[np.abs(centers) < 0.4].sum() == 0
    assert np.asarray(fig.data[0].y).sum() == 100_000


def test_channel_charts_mark_removed_channels():
    w = torch.randn(8, 4, 3, 3)
    fig = viz.channel_norms(w, removed=[1, 5])
    colors = list(fig.data[0].marker.color)
    assert fig.data[0].type == "bar" and len(colors) == 8
    assert [i for i, c in enumerate(colors) if c == viz.PRUNED_COLOR] == [1, 5]
    layers = [{"name": "a", "shape_before": [8, 4, 3, 3]}, {"name": "b", "shape_before": [16, 8]}]
    fig = viz.removed_channels_chart(layers, {"a": [1, 5]})
    assert [t.name for t in fig.data] == ["kept", "removed"]
    assert list(fig.data[0].x) == [6, 16] and list(fig.data[1].x) == [2, 0]


def test_sparsity_bars_and_mask_grid():
    rows = [{"name": "conv1", "sparsity": 0.5, "weights": 500, "target": 0.5},
            {"name": "fc2", "sparsity": 0.0, "weights": 5000, "excluded": True}]
    fig = viz.sparsity_bars(rows)
    assert fig.data[0].type == "bar" and list(fig.data[0].x) == [0.5, 0.0] and list(fig.data[0].y) == ["conv1", "fc2"]
    assert fig.data[0].marker.color[1] == viz.BEFORE_COLOR and list(fig.data[0].text) == ["50.0%", "0.0% (excluded)"]
    grid = viz.mask_grid([("a", _pruned((300, 300))), ("b", _pruned((10, 20))), ("c", _pruned((5, 5)))], cols=2)
    assert [t.type for t in grid.data] == ["heatmap"] * 3
    assert np.asarray(grid.data[0].z).shape == (43, 43)           # blocks of ceil(300 / 48) = 7
    pruned = float((viz.as_matrix(_pruned((300, 300))) == 0).mean())
    assert f"({pruned:.1%} pruned)" in grid.layout.annotations[0].text


def test_channel_bars_split_own_channels_from_inputs_and_label_the_excluded_classifier():
    rows = [{"name": "fc1", "sparsity": 0.99, "weights": 40, "target": 0.9, "removed_out": 0.9, "removed_in": 0.09},
            {"name": "fc2", "sparsity": 0.9, "weights": 500, "excluded": True, "removed_out": 0.0, "removed_in": 0.9}]
    fig = viz.sparsity_bars(rows)
    assert fig.layout.barmode == "stack"
    own, inputs = fig.data
    assert list(own.x) == [0.9, 0.0] and list(inputs.x) == [0.09, 0.9]
    assert "inputs" in inputs.name and list(inputs.text) == ["99.0%", "90.0% (excluded: outputs kept)"]


def test_sensitivity_and_recover_charts():
    sens = {"amounts": [0.5, 0.9], "baseline_accuracy": 0.9, "val_samples": 1000, "layers": [
        {"name": "conv1", "weights": 500, "accuracy": [0.8, 0.5]},
        {"name": "fc1", "weights": 400_000, "accuracy": [0.9, 0.88]}]}
    lines = viz.sensitivity_chart(sens)
    assert [t.type for t in lines.data] == ["scatter", "scatter"]
    assert list(lines.data[0].y) == [0.9, 0.8, 0.5] and "1000-image validation subset" in lines.layout.title.text
    heat = viz.sensitivity_chart(sens, kind="heatmap")
    assert heat.data[0].type == "heatmap" and np.asarray(heat.data[0].z).shape == (2, 2)
    points = [{"sparsity": 0.0, "val_accuracy": 0.9, "phase": "start"},
              {"sparsity": 0.5, "val_accuracy": 0.8, "phase": "pruned"},
              {"sparsity": 0.5, "val_accuracy": 0.89, "phase": "recovered"}]
    curve = viz.accuracy_sparsity_curve(points, dense_accuracy=0.9)
    assert [t.name for t in curve.data] == ["after pruning", "after fine-tuning"]
    assert list(curve.data[0].x) == [0.0, 0.5] and list(curve.data[1].y) == [0.9, 0.89]


# ---------------------------------------------------------------- training curves
def _stage(stage, total, steps, val):
    evs = [{"stage": stage, "kind": "batch_end", "step": s, "total_steps": total, "loss": 1.0 / s, "accuracy": 0.5}
           for s in steps]
    return evs + [{"stage": stage, "kind": "epoch_end", "step": total, "total_steps": total, "loss": 0.2,
                   "accuracy": 0.6, "val_accuracy": val, "epoch": 1}]


def test_single_stage_curves_span_the_whole_run():
    fig = viz.training_curves(_stage("train", 100, [20, 40], 0.7))
    loss = next(t for t in fig.data if t.name == "train loss")
    assert list(loss.x) == [20, 40]
    assert list(fig.layout.xaxis.range) == [0, 100]


def test_stages_are_laid_end_to_end():
    events = _stage("fine-tune 1/2", 50, [20, 40], 0.8) + _stage("fine-tune 2/2", 50, [20, 40], 0.85)
    assert viz.has_curves(events)
    fig = viz.training_curves(events)
    loss = next(t for t in fig.data if t.name == "train loss")
    assert list(loss.x) == [20, 40, 70, 90]
    val = next(t for t in fig.data if t.name == "validation accuracy")
    assert list(val.x) == [50, 100] and list(val.y) == [0.8, 0.85]
    assert any(shape.x0 == 50 for shape in fig.layout.shapes)   # the stage boundary


def test_quant_error_chart_groups_weight_and_output_sqnr_and_names_the_lowest():
    from core.compress.quant.quantize import LayerError

    errors = [LayerError("conv1", "Conv2d", 40.0, 12.5), LayerError("fc1", "Linear", 30.0, float("inf")),
              {"name": "fc2", "type": "Linear", "weight_sqnr_db": None, "output_sqnr_db": 20.0}]
    fig = viz.quant_error_chart(errors)
    weight, output = fig.data
    assert fig.layout.barmode == "group" and (weight.name, output.name) == ("weight SQNR", "output SQNR")
    assert list(output.y) == ["conv1", "fc1", "fc2"] and output.orientation == "h"
    assert list(output.x) == [12.5, viz.SQNR_CAP_DB, 20.0]        # an exact layer drawn capped, not dropped
    assert weight.x[2] is None                                    # unknown: a gap
    assert "lowest output: conv1 (12.5 dB)" in fig.layout.title.text


def test_quant_grid_histogram_draws_every_grid_value_behind_shares_of_weights():
    w = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    levels = np.linspace(-1, 1, 15)
    fig = viz.quant_grid_histogram(w, levels, channel_weight=w[3], title="fc: channel 3")
    layer, channel, legend = fig.data
    assert sum(layer.y) == pytest.approx(1.0) and sum(channel.y) == pytest.approx(1.0)   # shares, one axis
    (grid,) = fig.layout.shapes
    assert grid.layer == "below" and grid.path.count("M ") == 15
    assert "15 values" in legend.name and "the 15 values the channel can store" in fig.layout.title.text
    # a grid wider than the weights stays fully in view; no grid (fp16) says so
    wide = viz.quant_grid_histogram(w, np.array([-10.0, 10.0]))
    assert wide.data[0].x[0] < -9 and wide.data[0].x[-1] > 9
    assert "no integer grid" in viz.quant_grid_histogram(w, None).layout.title.text
