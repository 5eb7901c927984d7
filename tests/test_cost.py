"""The cost model against hand-computed values."""
import pytest

from conftest import chain_graph, diamond_graph
from hardware import EdgeTpuSpec, bottleneck_ms, latency_ms, op_class, stage_costs

# Round numbers: 10-MAC conv ops at 1000 MAC/s x 0.5 = 0.02 s each.
SPEC = EdgeTpuSpec(
    name="hand", peak_macs_per_s=1000.0, efficiency={"conv": 0.5, "depthwise": 0.25, "elementwise": 0.1},
    t_invoke_s=1.0, t_op_s=0.1, cache_bytes=150, stream_bytes_per_s=10.0, io_bytes_per_s=100.0,
)


def test_chain_two_stages_hand_computed():
    g = chain_graph([100, 20, 300])  # activations of 100 bytes between ops
    s0, s1 = stage_costs(g, (0, 0, 1), 2, SPEC)
    # stage 0: compute 2 x 0.02, overhead 1 + 2 x 0.1, params 120 fit (no streaming), io (100 + 100) / 100
    assert s0.compute_s == pytest.approx(0.04)
    assert s0.overhead_s == pytest.approx(1.2)
    assert (s0.param_bytes, s0.on_chip_bytes, s0.off_chip_bytes, s0.stream_s) == (120, 120, 0, 0.0)
    assert s0.io_s == pytest.approx(2.0)
    assert s0.total_s == pytest.approx(3.24)
    # stage 1: compute 0.02, overhead 1.1, params 300 -> 150 streamed at 10 B/s = 15 s, io 2
    assert (s1.on_chip_bytes, s1.off_chip_bytes) == (150, 150)
    assert s1.stream_s == pytest.approx(15.0)
    assert s1.total_s == pytest.approx(18.12)
    assert bottleneck_ms([s0, s1]) == pytest.approx(18120.0)
    assert latency_ms([s0, s1]) == pytest.approx(21360.0)


def test_shared_constant_and_distinct_boundary_tensors():
    g = diamond_graph()  # x=10 a=20 b=30 c=40 y=50 bytes; w (1000 B) shared by ops 1 and 2
    c0, c1, c2 = stage_costs(g, (0, 1, 0, 2), 3, SPEC)
    assert (c0.param_bytes, c1.param_bytes, c2.param_bytes) == (1007, 1000, 0)
    # a is read by op 1 (stage 1) and op 2 (stage 0): it leaves stage 0 once.
    assert (c0.in_bytes, c0.out_bytes) == (10, 60)
    assert (c1.in_bytes, c1.out_bytes) == (20, 30)
    assert (c2.in_bytes, c2.out_bytes) == (70, 50)
    assert c2.compute_s == pytest.approx(1 / (1000 * 0.1))  # ADD: elementwise class
    assert c0.stream_s == pytest.approx((1007 - 150) / 10)


def test_one_stage_equals_whole_model():
    g = chain_graph([10, 10])
    (c,) = stage_costs(g, (0, 0), 1, SPEC)
    assert c.in_bytes == 100 and c.out_bytes == 100
    assert c.total_s == pytest.approx(1.0 + 0.2 + 0.04 + 0.0 + 2.0)


def test_op_classes():
    assert op_class("CONV_2D") == op_class("FULLY_CONNECTED") == "conv"
    assert op_class("DEPTHWISE_CONV_2D") == "depthwise"
    assert op_class("ADD") == op_class("MAX_POOL_2D") == "elementwise"


def test_as_json_keys():
    (c,) = stage_costs(chain_graph([10]), (0,), 1, SPEC)
    assert {"index", "ms", "param_bytes", "on_chip_bytes", "off_chip_bytes", "in_bytes", "out_bytes"} <= set(c.as_json())
