import math

import torch
import torch.nn as nn

from core.formats.encoding import encode_dense
from core.measure.metrics import (
    METRIC_NAMES,
    accuracy,
    count_macs,
    count_params,
    evaluate,
    layer_stats,
)


def _hand_built():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.ReLU(), nn.Linear(10, 10))
    with torch.no_grad():
        m[1].weight[:, :392] = 0        # 3,920 zeros
        m[3].bias.zero_()               # 10 zeros
    return m


def test_counts_match_a_hand_built_module():
    m = _hand_built()
    params, nonzero = count_params(m)
    assert params == 784 * 10 + 10 + 10 * 10 + 10
    assert nonzero == params - 3920 - 10
    assert count_macs(m, (1, 28, 28)) == 784 * 10 + 10 * 10
    rows = {r.name: r for r in layer_stats(m)}
    assert set(rows) == {"1", "3"}
    assert rows["1"].params == 7850 and rows["1"].nonzero == 7850 - 3920
    assert math.isclose(rows["1"].sparsity, 3920 / 7840)      # zeros among the weights, biases apart
    assert rows["3"].shape == (10, 10)


def test_conv_macs():
    m = nn.Conv2d(1, 4, 3)   # 26x26 outputs, 4 channels, 9 MACs each
    assert count_macs(m, (1, 28, 28)) == 26 * 26 * 4 * 9


def test_evaluate_reports_every_fixed_metric(tiny_data):
    m = _hand_built()
    metrics = evaluate(m, tiny_data.test, (1, 28, 28), device="cpu").to_dict()
    assert set(METRIC_NAMES) <= set(metrics)
    assert metrics["accuracy"] == accuracy(m, tiny_data.test)
    assert metrics["dense_size_bytes"] == len(encode_dense(m.state_dict()))
    assert metrics["size_bytes"] <= metrics["dense_size_bytes"]
    for b in (1, 64):   # a median with its interval, or (on a busy machine) NaN with the reason: never a guess
        ms, ci = metrics[f"latency_ms_b{b}"], metrics[f"latency_ms_b{b}_ci"]
        assert (ms > 0 and ci[0] <= ms <= ci[1]) or (math.isnan(ms) and ci is None and
                                                      metrics["latency_unmeasured"].startswith("not measurable now"))
    assert metrics["device"].startswith("cpu")


def test_accuracy_counts_the_whole_split(tiny_data):
    class Oracle(nn.Module):  # predicts class 0 always
        def forward(self, x):
            out = torch.zeros(x.shape[0], 10)
            out[:, 0] = 1
            return out
    metrics = evaluate(Oracle(), tiny_data.test, (1, 28, 28), device="cpu", latency=False)
    expected = int((tiny_data.test.labels == 0).sum()) / len(tiny_data.test)
    assert math.isclose(metrics.accuracy, expected)
