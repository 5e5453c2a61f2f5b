"""core.viz: figures have the right traces, sizes and markings."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core import viz


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
    assert z.shape == (256, 768) and "block-reduced: each cell = 2x3 weights" in fig.layout.title.text
    assert len(fig.to_json()) < 3_000_000
    full = viz.weight_heatmap(w, full_resolution=True)
    assert [t.type for t in full.data] == ["image"]
    assert full.data[0].source.startswith("data:image/png;base64,")


def test_histogram_before_after_is_binned():
    before = torch.randn(100_000)
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
    assert fig.data[0].type == "bar" and list(fig.data[0].y) == [0.5, 0.0]
    assert fig.data[0].marker.color[1] == viz.BEFORE_COLOR
    grid = viz.mask_grid([("a", _pruned((300, 300))), ("b", _pruned((10, 20))), ("c", _pruned((5, 5)))], cols=2)
    assert [t.type for t in grid.data] == ["heatmap"] * 3
    assert np.asarray(grid.data[0].z).shape == (43, 43)           # blocks of ceil(300 / 48) = 7
    assert "75%" in grid.layout.annotations[0].text or "74%" in grid.layout.annotations[0].text


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
