"""The device model's term table (hardware/terms.py): hand-computed values, floats and arrays alike, and
a term added in hardware/ alone reaching the reference, the kernel, the range matrices and a scheduler."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from conftest import chain_graph

from hardware import USB, USB_SEPARATE, stage_costs, terms
from hardware.cost import pipeline_period_ms
from hardware.kernel import cost_arrays, map_period_s, map_stage_times, range_costs
from respect_pass.schedulers import SCHEDULERS

CACHE = int(7.77 * 2**20)  # the USB preset's cache, 8147435 bytes


def test_hand_computed_terms_of_the_usb_preset():
    assert terms.cache_bytes(USB) == CACHE == 8147435
    assert terms.invoke_seconds(USB) == 148e-6
    # 1e6 MACs on 100 output channels, padded to 128, at 2e12 MAC/s x 0.877
    assert terms.mac_seconds(USB, "conv", 1e6, 100) == pytest.approx(1e6 * 1.28 / (2e12 * 0.877), rel=1e-15)
    assert terms.mac_seconds(USB, "depthwise", 1e6, 64) == pytest.approx(1e6 / (2e12 * 0.0339), rel=1e-15)
    assert terms.elementwise_seconds(USB, 1000) == pytest.approx(3.23e-7, rel=1e-15)
    # 1 us dispatch + 1e6 elements at 1e9/s + 8910 bytes at 89.1 MB/s = 1 + 1000 + 100 us
    assert terms.host_op_seconds(USB, 1e6, 8910) == pytest.approx(1.101e-3, rel=1e-12)
    assert terms.usable_cache_bytes(USB, 1e6) == CACHE - 0.31e6 == 7837435.0
    assert terms.usable_cache_bytes(USB, 1e9) == 0.0  # never negative
    assert terms.stream_tile_count(USB, 916) == 1 and terms.stream_tile_count(USB, 917) == 2
    assert terms.stream_seconds(USB, 4.42e8) == pytest.approx(1.0, rel=1e-15)
    assert terms.link_seconds(USB, 8.91e7) == pytest.approx(1.0, rel=1e-15)
    # invoke 148 us + compute 1 ms + 1 s of streaming + 0.5 s of link
    assert terms.stage_seconds(USB, 1e-3, 1.0, 8.91e7 / 2) == pytest.approx(1.501148, rel=1e-12)
    assert terms.own_seconds(USB, 1e-3, 4.42e8) == pytest.approx(1.001, rel=1e-12)


def test_the_std_clock_doubles_tpu_compute_and_nothing_else():
    std = USB.with_(clock="std")
    assert terms.clock_slowdown(USB) == 1.0 and terms.clock_slowdown(std) == 2.0
    assert terms.mac_seconds(std, "conv", 1e6, 64) == 2 * terms.mac_seconds(USB, "conv", 1e6, 64)
    assert terms.elementwise_seconds(std, 1000) == 2 * terms.elementwise_seconds(USB, 1000)
    assert terms.link_seconds(std, 1e6) == terms.link_seconds(USB, 1e6)  # the link is not the TPU's clock
    assert terms.stream_seconds(std, 1e6) == terms.stream_seconds(USB, 1e6)
    assert terms.invoke_seconds(std) == terms.invoke_seconds(USB)


def test_host_ops_measured_or_from_the_table_times_the_hosts_scale():
    slow = USB.with_(host_op_scale=4.0)
    # measured 250 us on the planning machine, 4x slower host, 8910 bytes at 89.1 MB/s (not scaled)
    assert terms.host_op_seconds(slow, 1e6, 8910, 250e-6) == pytest.approx(4 * 250e-6 + 100e-6, rel=1e-12)
    assert terms.host_op_seconds(USB, 1e6, 8910, 250e-6) == pytest.approx(350e-6, rel=1e-12)
    # the table: 1 us + 1e6 / 1e9 s, times 4
    assert terms.host_op_seconds(slow, 1e6, 0.0) == pytest.approx(4 * 1.001e-3, rel=1e-12)


def test_the_shared_link_binds_the_period_only_under_a_shared_controller():
    assert terms.shared_link_per_byte(USB) == 1 / 5e8 and terms.shared_link_per_byte(USB_SEPARATE) == 0.0
    assert terms.shared_link_seconds(USB, 1e9) == pytest.approx(2.0, rel=1e-15)
    assert terms.shared_link_seconds(USB_SEPARATE, 1e9) == 0.0
    assert terms.period_seconds(USB, [0.5, 1.5], 1e9) == pytest.approx(2.0, rel=1e-15)  # the link binds
    assert terms.period_seconds(USB, [0.5, 2.5], 1e9) == 2.5  # the slowest stage binds
    assert terms.period_seconds(USB_SEPARATE, [0.5, 1.5], 1e9) == 1.5


def test_every_term_takes_floats_and_arrays_alike():
    x = np.array([0.0, 1e3, 1e6, 3.3e7])
    for f in (terms.usable_cache_bytes, terms.stream_seconds, terms.link_seconds, terms.shared_link_seconds):
        arr = f(USB, x)
        assert arr.shape == x.shape
        assert [float(f(USB, float(v))) for v in x] == arr.tolist()  # bit for bit
    assert terms.stage_seconds(USB, x, x, x).tolist() == [terms.stage_seconds(USB, v, v, v) for v in x.tolist()]


def test_one_tpu_terms_add_up_to_its_stage_time():
    one = terms.one_tpu_terms(USB, 1e-3, 9e6, 2e5)
    assert one.cache == CACHE
    assert one.stream_s == pytest.approx((9e6 - CACHE) / 4.42e8, rel=1e-15)
    assert one.link_s == pytest.approx(2e5 / 8.91e7, rel=1e-15)
    assert one.total_s == pytest.approx(148e-6 + 1e-3 + one.stream_s + one.link_s, rel=1e-15)
    assert terms.one_tpu_terms(USB, 1e-3, 1e6, 0.0).stream_s == 0.0  # fits: nothing streams


def test_integer_terms_of_the_usb_preset():
    units = terms.integer_terms(USB, np.array([1e-3, 2e-4]), 2, 1e6, 3, 5e5)
    assert units.link == 2**20  # small graph: the largest multiplier
    assert units.unit_s == 1 / (8.91e7 * 2**20)
    assert units.stream == 211376  # round(2**20 * 8.91e7 / 4.42e8) = round(211375.84)
    assert units.shared_link == 186856  # round(2**20 * 8.91e7 / 5e8) = round(186856.24)
    assert units.invoke == 13827361997  # round(148e-6 * 8.91e7 * 2**20) = round(13827361996.8)
    assert units.op == (93428121600, 18685624320)  # 1e-3 s and 2e-4 s at 8.91e7 * 2**20 units per second
    assert units.cache == CACHE and units.share == Fraction(31, 100)
    assert terms.integer_terms(USB_SEPARATE, np.array([1e-3]), 2, 1e6, 3, 5e5).shared_link == 0
    big = terms.integer_terms(USB, np.array([1.0]), 8, 1e9, 100, 1e9)
    assert big.link < 2**20 and big.horizon < 2**53  # the multiplier shrinks to keep sums exact


def test_a_term_added_in_hardware_reaches_every_consumer(monkeypatch):
    """How to add a term (docs/ARCHITECTURE.md): change hardware/terms.py alone. A dummy per-stage term
    (1 ms more per stage) shows in the reference, the kernel's map and range costs, and dp's plan."""
    graph = chain_graph([4000, 9000, 2000, 7000, 1000, 5000], act_bytes=3000)
    k, stages = 3, [0, 0, 1, 1, 2, 2]

    def figures() -> tuple[float, np.ndarray, float, float, float]:
        ca = cost_arrays(graph, USB)
        ref = pipeline_period_ms(stage_costs(graph, stages, k, USB), USB)
        rc = range_costs(ca, list(range(graph.num_ops)))
        plan = SCHEDULERS["dp"](graph, k, USB)
        return (
            ref,
            map_stage_times(ca, np.asarray(stages), k),
            float(rc.time[0, 2]),
            float(rc.time_last[4]),
            plan.stats.number("bottleneck_ms"),
        )

    before = figures()
    stage_seconds = terms.stage_seconds
    monkeypatch.setattr(terms, "stage_seconds", lambda spec, c, s, io: stage_seconds(spec, c, s, io) + 1e-3)
    after = figures()
    assert after[0] == pytest.approx(before[0] + 1.0, rel=1e-12)  # ms
    assert after[1] == pytest.approx(before[1] + 1e-3, rel=1e-12)
    assert after[2] == pytest.approx(before[2] + 1e-3, rel=1e-12)
    assert after[3] == pytest.approx(before[3] + 1e-3, rel=1e-12)
    assert after[4] == pytest.approx(before[4] + 1.0, rel=1e-9)
    ca = cost_arrays(graph, USB)
    assert map_period_s(ca, np.asarray(stages), k)[0] * 1e3 == pytest.approx(after[0], rel=1e-12)
