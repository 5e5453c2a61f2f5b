"""Latency figures stored before the measurement lane are retired, kept aside, and read as not
measured here until they are measured again (issue 22: one device per machine)."""
import math

from core.measure.lane import device_label
from core.measure.speed import legacy_latency_update, needs_measuring
from core.store.migrate import LANE_MARKER
from core.store.workspace import Workspace


def test_shipped_baselines_arrive_without_pre_lane_figures(tmp_path):
    ws = Workspace(tmp_path)
    bases = ws.list_variants()
    assert bases
    for v in bases:
        m = v.metrics
        assert math.isnan(m["latency_ms_b64"]) and m["device"] == device_label("cpu")
        assert m["legacy_latency"]["device"] and "measure again" in m["latency_unmeasured"]
        assert needs_measuring(m).startswith("not measured here yet")


def test_an_old_workspace_is_migrated_once_and_lane_figures_are_left_alone(tmp_path):
    ws = Workspace(tmp_path, seed_baselines=False)
    base = {"accuracy": 0.9, "params": 1, "nonzero_params": 1, "size_bytes": 1, "dense_size_bytes": 1, "macs": 1}
    old = ws.add_variant({}, name="old", dataset="fashion-mnist", arch={"name": "lenet5", "kwargs": {}}, recipe=[],
                         metrics=base | {"latency_ms_b1": 0.4, "latency_ms_b64": 11.2, "device": "cpu: x86_64, 2 threads",
                                         "reference_latency_ms_b64": 30.0, "latency_busy": True})
    lane = ws.add_variant({}, name="new", dataset="fashion-mnist", arch={"name": "lenet5", "kwargs": {}}, recipe=[],
                          metrics=base | {"latency_ms_b1": 0.3, "latency_ms_b64": 9.0, "device": device_label("cpu")})
    (tmp_path / LANE_MARKER).unlink()      # as a workspace made before the lane
    ws = Workspace(tmp_path, seed_baselines=False)
    m = ws.get_variant(old.id).metrics
    assert math.isnan(m["latency_ms_b64"]) and m["reference_latency_ms_b64"] is None and not m["latency_busy"]
    assert m["legacy_latency"]["latency_ms_b64"] == 11.2 and m["legacy_latency"]["device"] == "cpu: x86_64, 2 threads"
    assert ws.get_variant(lane.id).metrics["latency_ms_b64"] == 9.0 and needs_measuring(ws.get_variant(lane.id).metrics) == ""
    assert legacy_latency_update(ws.get_variant(lane.id).metrics) is None
    other_cpu = base | {"latency_ms_b64": 9.0, "device": "cpu: Intel Xeon, AVX2 kernels, 1 thread"}
    assert needs_measuring(other_cpu).startswith("measured on another machine")
