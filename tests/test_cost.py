"""The device model's reference (hardware.cost) against hand-computed values, term by term."""

import math

import pytest
from conftest import chain_graph, diamond_graph

from hardware import EdgeTpuSpec, bottleneck_ms, latency_ms, op_class, pipeline_period_ms, stage_costs
from hardware.cost import device_param_bytes, stream_tiles
from tflite_io import Op, OpGraph, TensorInfo

# Round numbers: 10-MAC conv ops at 1000 MAC/s x 0.5; chain_graph's 1-D outputs of 100 "channels" pad to 128.
SPEC = EdgeTpuSpec(
    name="hand",
    peak_macs_per_s=1000.0,
    efficiency={"conv": 0.5, "depthwise": 0.25},
    elementwise_s_per_byte=0.01,
    t_invoke_s=1.0,
    t_op_s=0.1,
    cache_bytes=150,
    cache_io_share=0.0,
    stream_bytes_per_s=10.0,
    io_bytes_per_s=100.0,
)
CONV_S = 10 * (128 / 100) / (1000 * 0.5)  # 0.0256 s


def test_chain_two_stages_hand_computed():
    g = chain_graph([100, 20, 300])  # activations of 100 bytes between ops
    s0, s1 = stage_costs(g, (0, 0, 1), 2, SPEC)
    # stage 0: compute 2 x 0.0256, overhead 1 + 2 x 0.1, params 120 fit (no streaming), io (100 + 100) / 100
    assert s0.compute_s == pytest.approx(2 * CONV_S)
    assert s0.overhead_s == pytest.approx(1.2)
    assert (s0.param_bytes, s0.on_chip_bytes, s0.off_chip_bytes, s0.stream_s) == (120, 120, 0, 0.0)
    assert s0.io_s == pytest.approx(2.0)
    assert s0.total_s == pytest.approx(3.2 + 2 * CONV_S)
    # stage 1: its one 300-byte layer does not fit the 150-byte cache: the whole layer streams, 30 s
    assert (s1.on_chip_bytes, s1.off_chip_bytes) == (0, 300)
    assert s1.stream_s == pytest.approx(30.0)
    assert s1.total_s == pytest.approx(1.1 + CONV_S + 30.0 + 2.0)
    assert bottleneck_ms([s0, s1]) == pytest.approx(s1.ms)
    assert latency_ms([s0, s1]) == pytest.approx(s0.ms + s1.ms)


def test_cache_is_whole_layers_in_order_and_shrinks_with_host_link_bytes():
    # layers of 100, 20 and 30 bytes: 100 + 20 fit a 140-byte cache, then 30 does not: only that one streams
    g = chain_graph([100, 20, 30])
    spec = SPEC.with_(cache_bytes=140)
    (c,) = stage_costs(g, (0, 0, 0), 1, spec)
    assert (c.on_chip_bytes, c.off_chip_bytes) == (120, 30)
    # with half a byte of cache lost per host-link byte: 140 - 0.5 * (100 + 100) = 40 usable; the first layer
    # (100) does not fit, so it and every later layer stream, though the 20-byte one would fit
    (c,) = stage_costs(g, (0, 0, 0), 1, spec.with_(cache_io_share=0.5))
    assert (c.on_chip_bytes, c.off_chip_bytes) == (0, 150)
    assert c.stream_s == pytest.approx(15.0)


def conv_graph() -> OpGraph:
    """input 1x8x8x3 -> CONV_2D (10 filters 3x3, int32 bias) -> 1x8x8x10 -> ADD (constant) -> 1x8x8x10."""
    T = (
        TensorInfo(0, "x", "int8", (1, 8, 8, 3), 192),
        TensorInfo(1, "w", "int8", (10, 3, 3, 3), 270, buffer=1),
        TensorInfo(2, "b", "int32", (10,), 40, buffer=2),
        TensorInfo(3, "y", "int8", (1, 8, 8, 10), 640),
        TensorInfo(4, "k", "int8", (10,), 10, buffer=3),
        TensorInfo(5, "z", "int8", (1, 8, 8, 10), 640),
    )
    ops = (Op(0, "CONV_2D", (0, 1, 2), (3,), 310, 8 * 8 * 10 * 27), Op(1, "ADD", (3, 4), (5,), 10, 640))
    return OpGraph("conv", ops, T, (0,), (5,))


def test_padded_layers_compute_and_spatial_tiles():
    g = conv_graph()
    # the compiler's layout: ceil64(10) x (3 x 3 x ceil4(3) + 8) = 64 x 44 on the weights' buffer, bias included
    assert device_param_bytes(g, g.ops[0]) == {1: 2816, 2: 0}
    assert device_param_bytes(g, g.ops[1]) == {3: 10}
    spec = SPEC.with_(cache_bytes=1000, stream_tile_positions=16)
    assert stream_tiles(g, g.ops[0], spec) == 4 and stream_tiles(g, g.ops[1], spec) == 1  # 64 positions / 16
    (c,) = stage_costs(g, (0, 0), 1, spec)
    conv = 17280 * (64 / 10) / (1000 * 0.5)
    assert c.compute_s == pytest.approx(conv + 640 * 0.01)  # ADD: per output byte
    # 2816 > 1000: the conv layer streams once per tile; then ADD's 10 bytes stream too (prefix rule)
    assert (c.on_chip_bytes, c.off_chip_bytes) == (0, 2826)
    assert c.stream_s == pytest.approx((2816 * 4 + 10) / 10)
    assert c.io_s == pytest.approx((192 + 640) / 100)


def test_shared_constant_and_distinct_boundary_tensors():
    g = diamond_graph()  # x=10 a=20 b=30 c=40 y=50 bytes; w (1000 B) shared by ops 1 and 2
    c0, c1, c2 = stage_costs(g, (0, 1, 0, 2), 3, SPEC)
    assert (c0.param_bytes, c1.param_bytes, c2.param_bytes) == (1007, 1000, 0)
    # a is read by op 1 (stage 1) and op 2 (stage 0): it leaves stage 0 once.
    assert (c0.in_bytes, c0.out_bytes) == (10, 60)
    assert (c1.in_bytes, c1.out_bytes) == (20, 30)
    assert (c2.in_bytes, c2.out_bytes) == (70, 50)
    assert c2.compute_s == pytest.approx(50 * 0.01)  # ADD: 50 output bytes
    assert c0.stream_s == pytest.approx(1000 / 10)  # w0 (7 B) cached, then w (1000 B) streams whole


def test_shared_host_link_bounds_the_period():
    g = chain_graph([10, 10])
    costs = stage_costs(g, (0, 1), 2, SPEC)
    moved = sum(c.in_bytes + c.out_bytes for c in costs)  # 400 bytes
    assert pipeline_period_ms(costs, SPEC) == pytest.approx(bottleneck_ms(costs))
    slow_link = SPEC.with_(shared_link_bytes_per_s=moved / 100.0)  # 100 s for all of it
    assert pipeline_period_ms(costs, slow_link) == pytest.approx(100_000.0)
    assert math.isclose(latency_ms(costs), sum(c.ms for c in costs))


def test_host_ops_cost_host_time_and_keep_their_constants_off_the_tpu():
    import dataclasses

    g = dataclasses.replace(chain_graph([100, 20, 30]), host_ops=frozenset({2}))
    spec = SPEC.with_(cpu_op_s=0.5, cpu_macs_per_s=10.0)
    (c,) = stage_costs(g, (0, 0, 0), 1, spec)
    assert c.cpu_ops == (2,)
    # 0.5 + 10 MACs / 10 + 100 bytes read from the TPU op 1 over the link
    assert c.host_s == pytest.approx(0.5 + 1.0 + 100 / 100)
    assert c.param_bytes == 120 and device_param_bytes(g, g.ops[2]) == {}


def test_one_stage_equals_whole_model():
    g = chain_graph([10, 10])
    (c,) = stage_costs(g, (0, 0), 1, SPEC)
    assert c.in_bytes == 100 and c.out_bytes == 100
    assert c.total_s == pytest.approx(1.0 + 0.2 + 2 * CONV_S + 0.0 + 2.0)


def test_op_classes():
    assert op_class("CONV_2D") == op_class("FULLY_CONNECTED") == "conv"
    assert op_class("DEPTHWISE_CONV_2D") == "depthwise"
    assert op_class("ADD") == op_class("MAX_POOL_2D") == "elementwise"


def test_as_json_keys():
    (c,) = stage_costs(chain_graph([10]), (0,), 1, SPEC)
    assert {
        "index",
        "ms",
        "param_bytes",
        "on_chip_bytes",
        "off_chip_bytes",
        "in_bytes",
        "out_bytes",
        "host_ms",
        "cpu_ops",
    } <= set(c.as_json())
