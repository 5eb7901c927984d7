"""The device model of a pool (hardware/pool.py) and its terms (hardware/terms.py's switch and reload, the cache
left by co-compiled models): hand-computed values, the interleave's proportions, the round robin of a shared
group, and the pool's predicted rates against the single-model period."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import chain_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

from hardware import USB, USB_SEPARATE, stage_costs, terms
from hardware.cost import pipeline_period_ms
from hardware.pool import (
    FREE,
    HORIZON,
    ROUND_ROBIN,
    PoolModel,
    PoolStage,
    cocompiled_costs,
    interleave,
    pool_rates,
    round_robin_busy,
    round_robin_tpus,
    whole_model_cost,
)

CACHE = int(7.77 * 2**20)  # the USB preset's cache, 8147435 bytes
#: chain_graph's default activations: 100 bytes in and 100 out of a whole model, 0.31 * 200 = 62 bytes of cache
USABLE = CACHE - 62


# -- the terms


def test_a_switch_reloads_at_the_streaming_rate_times_the_factor_plus_its_fixed_cost():
    assert USB.reload_rate_factor == 1.03 and USB.t_switch_s == 0.0  # the fitted presets
    # 4.42e6 bytes at 4.42e8 B/s are 10 ms; the reload runs 1.03 times as fast
    assert terms.reload_seconds(USB, 4.42e6) == pytest.approx(0.01 / 1.03, rel=1e-15)
    assert terms.switch_seconds(USB, 4.42e6) == pytest.approx(0.01 / 1.03, rel=1e-15)
    for f, t in [(1.0, 0.0), (0.5, 0.002), (2.0, 0.0137)]:
        spec = USB.with_(reload_rate_factor=f, t_switch_s=t)
        assert terms.reload_seconds(spec, 4.42e6) == pytest.approx(0.01 / f, rel=1e-15)
        assert terms.switch_seconds(spec, 4.42e6) == pytest.approx(t + 0.01 / f, rel=1e-15)
        assert terms.switch_seconds(spec, 0.0) == t  # co-compiled models keep their caches: the fixed cost only
    both = terms.switch_seconds(USB.with_(t_switch_s=0.001), np.array([0.0, 4.42e6, 8.84e6]))
    np.testing.assert_allclose(both, [0.001, 0.001 + 0.01 / 1.03, 0.001 + 0.02 / 1.03], rtol=1e-15)


def test_the_cache_models_co_compiled_before_take_is_not_usable():
    assert terms.usable_cache_bytes(USB, 1e6, 0.0) == terms.usable_cache_bytes(USB, 1e6) == CACHE - 0.31e6
    assert terms.usable_cache_bytes(USB, 1e6, 2e6) == CACHE - 0.31e6 - 2e6
    assert terms.usable_cache_bytes(USB, 0.0, 5e6) == CACHE - 5e6
    assert terms.usable_cache_bytes(USB, 1e6, 8e6) == 0.0  # never negative
    np.testing.assert_array_equal(
        terms.usable_cache_bytes(USB, np.array([0.0, 1e6, 1e6]), 3e6), [CACHE - 3e6, CACHE - 3.31e6, CACHE - 3.31e6]
    )


# -- co-compiled caches


def test_a_co_compiled_groups_first_model_costs_what_it_costs_alone():
    a, b = chain_graph([3_000_000, 2_000_000], name="a"), chain_graph([2_000_000, 2_000_000], name="b")
    first, _ = cocompiled_costs([a, b], USB)
    assert first == whole_model_cost(a, USB) == whole_model_cost(a, USB, 0.0)
    assert first.on_chip_bytes == 5_000_000 and first.streamed_bytes == 0
    # one segment of the whole model: the same as the one-stage pipeline's cost
    assert first == stage_costs(a, (0, 0), 1, USB)[0]


def test_a_later_model_gets_the_cache_the_earlier_ones_left():
    a, b = chain_graph([3_000_000, 2_000_000], name="a"), chain_graph([2_000_000, 2_000_000], name="b")
    alone = whole_model_cost(b, USB)
    assert alone.on_chip_bytes == 4_000_000 and alone.off_chip_bytes == 0 and alone.stream_s == 0  # fits alone
    _, second = cocompiled_costs([a, b], USB)
    # 5e6 bytes taken: USABLE - 5e6 = 3147373 bytes left, room for b's first layer only
    assert second == whole_model_cost(b, USB, 5_000_000)
    assert (second.on_chip_bytes, second.off_chip_bytes) == (2_000_000, 2_000_000)
    assert second.on_chip_bytes + second.off_chip_bytes == alone.on_chip_bytes + alone.off_chip_bytes == 4_000_000
    assert second.streamed_bytes == 2_000_000 > alone.streamed_bytes == 0  # 1-D outputs: one tile
    assert second.stream_s == pytest.approx(2e6 / 4.42e8, rel=1e-12)
    assert second.total_s == pytest.approx(alone.total_s + 2e6 / 4.42e8, rel=1e-12)
    assert (second.in_bytes, second.out_bytes, second.compute_s) == (alone.in_bytes, alone.out_bytes, alone.compute_s)


def test_the_compilers_order_decides_who_streams():
    a, b = chain_graph([3_000_000, 2_000_000], name="a"), chain_graph([2_000_000, 2_000_000], name="b")
    first, second = cocompiled_costs([b, a], USB)
    assert first.on_chip_bytes == 4_000_000
    # 4e6 taken: USABLE - 4e6 = 4147373 left: a's 3e6 layer fits, its 2e6 one does not
    assert (second.on_chip_bytes, second.off_chip_bytes) == (3_000_000, 2_000_000)


def test_from_the_first_layer_that_does_not_fit_every_later_one_streams():
    a = chain_graph([3_000_000, 2_000_000], name="a")
    c = chain_graph([3_500_000, 500_000], name="c")  # 3.5e6 > 3147373 left; 0.5e6 would fit, but streams too
    _, second = cocompiled_costs([a, c], USB)
    assert (second.on_chip_bytes, second.off_chip_bytes, second.streamed_bytes) == (0, 4_000_000, 4_000_000)


def test_three_co_compiled_models_take_the_cache_in_turn():
    graphs = [chain_graph([2_000_000], name="x"), chain_graph([3_000_000], name="y"), chain_graph([3_000_000], name="z")]
    x, y, z = cocompiled_costs(graphs, USB)
    assert (x.on_chip_bytes, y.on_chip_bytes, z.on_chip_bytes) == (2_000_000, 3_000_000, 3_000_000)
    # a fourth model of 3e6 would find USABLE - 8e6 = 147373 bytes left
    *_, w = cocompiled_costs([*graphs, chain_graph([3_000_000], name="w")], USB)
    assert (w.on_chip_bytes, w.off_chip_bytes) == (0, 3_000_000)
    assert cocompiled_costs([], USB) == ()


# -- the interleave


def _deviation(weights, count):
    """The largest |requests so far - prefix * weight share| over every prefix and model."""
    seq = interleave(weights, count)
    counts = np.eye(len(weights))[seq].cumsum(axis=0)
    share = np.arange(1, count + 1)[:, None] * np.asarray(weights, dtype=float) / sum(weights)
    return float(np.abs(counts - share).max())


def test_the_interleave_by_hand():
    assert interleave([1], 3).tolist() == [0, 0, 0]
    assert interleave([1, 1], 6).tolist() == [0, 1, 0, 1, 0, 1]
    assert interleave([1, 3], 8).tolist() == [1, 0, 1, 1, 1, 0, 1, 1]
    assert interleave([2, 1, 1], 8).tolist() == [0, 1, 2, 0, 0, 1, 2, 0]
    assert interleave([3, 1], 0).tolist() == []
    assert interleave([1, 1], 4).dtype == np.int64


def test_ties_go_to_the_lower_index():
    assert interleave([1, 1, 1], 6).tolist() == [0, 1, 2, 0, 1, 2]
    assert interleave([2.5, 2.5], 4).tolist() == [0, 1, 0, 1]
    assert interleave([1, 2, 2], 5).tolist() == [1, 2, 0, 1, 2]  # 1 and 2 tie ahead of 0: 1 first


def test_only_the_weights_ratios_matter():
    assert interleave([2, 6], 40).tolist() == interleave([1, 3], 40).tolist() == interleave([0.5, 1.5], 40).tolist()


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(st.one_of(st.integers(1, 20), st.floats(0.01, 100)), min_size=1, max_size=3),
    st.integers(1, 400),
)
def test_every_prefix_is_within_one_request_of_the_weights_share(weights, count):
    """With up to three models (with four or more the greedy can fall slightly more than one request behind:
    weights (82.27, 1, 82.30, 8) reach 1.018)."""
    assert _deviation(weights, count) < 1.0


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=6))
def test_integer_weights_repeat_exactly_every_sum_of_weights(weights):
    total = sum(weights)
    seq = interleave(weights, 3 * total)
    assert np.bincount(seq[:total], minlength=len(weights)).tolist() == weights
    assert seq[:total].tolist() == seq[total : 2 * total].tolist() == seq[2 * total :].tolist()


@pytest.mark.parametrize("weights", [[], [0], [1, 0], [1, -2], [float("nan")], [1, float("inf")], ["1"], [None], [1, -0.0]])
def test_bad_weights_raise(weights):
    with pytest.raises(ValueError, match="weights must be positive numbers"):
        interleave(weights, 4)


# -- the round robin of a shared group


def test_each_models_requests_go_round_robin_over_the_group():
    seq = np.array([0, 1, 0, 1, 0, 1])
    assert round_robin_tpus(seq, 2).tolist() == [0, 0, 1, 1, 0, 0]
    assert round_robin_tpus(seq, 1).tolist() == [0] * 6
    seq = interleave([1, 3], 8)  # [1, 0, 1, 1, 1, 0, 1, 1]
    assert round_robin_tpus(seq, 2).tolist() == [0, 0, 1, 0, 1, 1, 0, 1]
    assert round_robin_tpus(seq, 3).tolist() == [0, 0, 1, 2, 0, 1, 1, 2]


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.integers(1, 4), st.integers(1, 300))
def test_every_models_requests_spread_evenly_over_the_groups_tpus(weights, tpus, count):
    seq = interleave(weights, count)
    where = round_robin_tpus(seq, tpus)
    assert where.min() >= 0 and where.max() < tpus
    for k in range(len(weights)):
        per_tpu = np.bincount(where[seq == k], minlength=tpus)
        assert per_tpu.max() - per_tpu.min() <= 1
        assert per_tpu.tolist() == sorted(per_tpu.tolist(), reverse=True)  # the first TPUs get the extra ones


def test_one_tpu_two_models_every_request_after_the_first_switches():
    a, b, s0, s1 = 2.0, 3.0, 0.5, 0.25
    seq = interleave([1, 1], 10)  # 0 1 0 1 ...: five of each
    busy, switched = round_robin_busy(seq, [a, b], [s0, s1], 1)
    assert switched.tolist() == [4, 5]  # model 0's first request finds the TPU fresh
    assert busy.tolist() == pytest.approx([5 * a + 5 * b + 4 * s0 + 5 * s1])


def test_two_tpus_two_models_by_hand():
    a, b, s0, s1 = 2.0, 3.0, 0.5, 0.25
    # 0 1 0 1 0 1 0 1: each model's j-th request on TPU j mod 2, so TPU 0 gets requests 0 1 4 5 and TPU 1
    # requests 2 3 6 7, both the models 0 1 0 1 in turn: three switches each, two into model 1, one into 0
    busy, switched = round_robin_busy(interleave([1, 1], 8), [a, b], [s0, s1], 2)
    assert switched.tolist() == [2, 4]
    assert busy.tolist() == pytest.approx([2 * a + 2 * b + s0 + 2 * s1] * 2)


def test_two_tpus_weights_one_and_three_by_hand():
    a, b, s0, s1 = 2.0, 3.0, 0.5, 0.25
    # 1 0 1 1 1 0 1 1 on TPUs 0 0 1 0 1 1 0 1: TPU 0 runs 1 0 1 1, TPU 1 runs 1 1 0 1
    busy, switched = round_robin_busy(interleave([1, 3], 8), [a, b], [s0, s1], 2)
    assert switched.tolist() == [2, 2]
    assert busy.tolist() == pytest.approx([a + 3 * b + s0 + s1] * 2)


def test_one_model_never_switches_and_an_idle_tpu_is_not_busy():
    busy, switched = round_robin_busy(np.zeros(3, dtype=np.int64), [2.0], [9.0], 4)
    assert busy.tolist() == [2.0, 2.0, 2.0, 0.0] and switched.tolist() == [0]


# -- the pool's rates


def _own(name, weight, stage_s, devices, link_bytes=0.0, host_s=0.0):
    stages = tuple(PoolStage(s, d, FREE) for s, d in zip(stage_s, devices))
    return PoolModel(name, weight, stages, link_bytes=link_bytes, host_s=host_s)


def _shared(name, weight, seconds, devices, group=0, switch_s=0.0, reload_bytes=0.0, link_bytes=0.0):
    stage = PoolStage(seconds, tuple(devices), ROUND_ROBIN, group)
    return PoolModel(name, weight, (stage,), switch_s=switch_s, reload_bytes=reload_bytes, link_bytes=link_bytes)


@pytest.mark.parametrize("spec", [USB, USB_SEPARATE])
@pytest.mark.parametrize("weight", [1.0, 2.5])
@pytest.mark.parametrize(
    ("params", "stages", "replicas"),
    [
        ([3_000_000] * 4, (0, 1, 1, 1), (1, 2)),
        ([6_000_000, 6_000_000, 1_000_000], (0, 1, 2), (2, 1, 3)),
        ([10_000_000], (0,), (3,)),  # one model bigger than the cache, replicated
    ],
)
def test_one_own_model_runs_at_the_single_model_period(spec, weight, params, stages, replicas):
    graph = chain_graph(params, act_bytes=400_000)  # enough activation bytes that the shared link can bind
    costs = stage_costs(graph, stages, len(replicas), spec)
    devices, first = [], 0
    for r in replicas:
        devices.append(tuple(range(first, first + r)))
        first += r
    model = _own(
        "m",
        weight,
        [c.total_s for c in costs],
        devices,
        link_bytes=float(sum(c.link_bytes for c in costs)),
        host_s=float(sum(c.host_s for c in costs)),
    )
    rates = pool_rates([model], spec)
    period_s = pipeline_period_ms(costs, spec, replicas) / 1e3
    assert period_s == terms.period_seconds(
        spec, [c.total_s for c in costs], sum(c.link_bytes for c in costs), replicas, 0.0
    )
    assert rates.unit_s == pytest.approx(weight * period_s, rel=1e-12)
    assert rates.throughput_ips == pytest.approx((1 / period_s,), rel=1e-12)
    assert rates.switches == (0.0,)
    busy = [c.total_s / r * weight for c, r in zip(costs, replicas) for _ in range(r)]
    assert rates.tpu_busy_s == pytest.approx(tuple(busy), rel=1e-12)


def test_the_busiest_tpu_is_named():
    models = [_own("a", 1.0, [0.002, 0.005], [(0,), (1,)]), _own("b", 1.0, [0.003], [(2,)])]
    rates = pool_rates(models, USB_SEPARATE)
    assert rates.bound == "tpu 1" and rates.unit_s == pytest.approx(0.005)
    assert rates.tpu_busy_s == pytest.approx((0.002, 0.005, 0.003))


def test_the_shared_link_bound_is_named():
    # 1e7 bytes a request over USB's 5e8 B/s controller: 20 ms a request, above the 1 ms TPU
    models = [_own("a", 2.0, [0.001], [(0,)], link_bytes=1e7), _own("b", 1.0, [0.001], [(1,)], link_bytes=5e6)]
    rates = pool_rates(models, USB)
    assert rates.bound == "shared link"
    assert rates.unit_s == pytest.approx((2 * 1e7 + 5e6) / 5e8, rel=1e-12)
    assert pool_rates(models, USB_SEPARATE).bound == "tpu 0"  # separate links: no shared bound


def test_the_host_bound_is_named():
    # 0.2 s of host ops a request over 4 cores: 50 ms per request
    models = [_own("a", 1.0, [0.001], [(0,)], host_s=0.2), _own("b", 3.0, [0.001], [(1,)], host_s=0.01)]
    rates = pool_rates(models, USB_SEPARATE)
    assert rates.bound == "host"
    assert rates.unit_s == pytest.approx((0.2 + 3 * 0.01) / 4, rel=1e-12)


def test_throughput_is_proportional_to_the_weights():
    models = [_own("a", 1.0, [0.004], [(0,)]), _own("b", 3.0, [0.002], [(1, 2)]), _own("c", 0.5, [0.01], [(3,)])]
    rates = pool_rates(models, USB_SEPARATE)
    # per weighted unit: TPU 0 4 ms, TPUs 1-2 3 ms each, TPU 3 5 ms
    assert rates.tpu_busy_s == pytest.approx((0.004, 0.003, 0.003, 0.005)) and rates.bound == "tpu 3"
    assert rates.throughput_ips == pytest.approx((200.0, 600.0, 100.0))
    assert np.allclose(np.array(rates.throughput_ips) / [1.0, 3.0, 0.5], 1 / rates.unit_s)


def test_a_shared_tpu_pays_the_switches_by_hand():
    a, b, s0, s1 = 0.002, 0.003, 0.0005, 0.00025
    models = [_shared("a", 1.0, a, (0,), switch_s=s0), _shared("b", 1.0, b, (0,), switch_s=s1)]
    rates = pool_rates(models, USB_SEPARATE, horizon=10)
    # five of each: 5a + 5b + 4 s0 + 5 s1 in five weighted units
    assert rates.unit_s == pytest.approx(a + b + (4 * s0 + 5 * s1) / 5, rel=1e-12)
    assert rates.switches == pytest.approx((4 / 5, 1.0))
    long = pool_rates(models, USB_SEPARATE)  # over HORIZON requests the first switch no longer shows
    assert long.unit_s == pytest.approx(a + b + s0 + s1, rel=1e-3)
    # the same group on two TPUs: each TPU runs half of every model's requests
    two = pool_rates([_shared("a", 1.0, a, (0, 1), switch_s=s0), _shared("b", 1.0, b, (0, 1), switch_s=s1)], USB_SEPARATE)
    assert two.unit_s == pytest.approx((a + b + s0 + s1) / 2, rel=1e-3)
    assert two.tpu_busy_s[0] == pytest.approx(two.tpu_busy_s[1], rel=1e-3)


def test_reloads_cross_the_shared_link():
    reload = 4.42e6
    sw = float(terms.switch_seconds(USB, reload))
    models = [
        _shared("a", 1.0, 0.001, (0,), switch_s=sw, reload_bytes=reload, link_bytes=1000.0),
        _shared("b", 1.0, 0.001, (0,), switch_s=sw, reload_bytes=reload, link_bytes=1000.0),
    ]
    rates = pool_rates(models, USB, horizon=HORIZON)
    half = HORIZON // 2
    assert rates.switches == pytest.approx(((half - 1) / half, 1.0))
    # TPU: 2 ms + two switches of 0.01 / 1.03 s; link: 2000 bytes + two reloads over 5e8 B/s, which is more
    link_s = (2000 + reload * (2 - 1 / half)) / 5e8
    assert rates.unit_s == pytest.approx(max(link_s, 0.002 + 2 * sw), rel=1e-3)
    assert rates.bound == ("shared link" if link_s > 0.002 + 2 * sw else "tpu 0")
    # co-compiled: no reload, no switch
    cocompiled = [PoolModel(m.name, 1.0, m.stages, link_bytes=1000.0) for m in models]
    assert pool_rates(cocompiled, USB).unit_s == pytest.approx(0.002, rel=1e-12)


def test_a_mixed_pool():
    # a: own pipeline on TPUs 0-1; b and c share TPUs 2-3 round robin
    models = [
        _own("a", 2.0, [0.001, 0.002], [(0,), (1,)]),
        _shared("b", 1.0, 0.004, (2, 3), group=1, switch_s=0.001),
        _shared("c", 1.0, 0.002, (2, 3), group=1, switch_s=0.001),
    ]
    rates = pool_rates(models, USB_SEPARATE)
    # per unit: TPU 1 4 ms; TPUs 2-3 (4 + 2 + 2 switches of 1 ms) / 2 = 4 ms each (nearly: the first switch)
    assert rates.tpu_busy_s[:2] == pytest.approx((0.002, 0.004))
    assert rates.tpu_busy_s[2:] == pytest.approx((0.004, 0.004), rel=1e-3)
    assert rates.unit_s == pytest.approx(0.004, rel=1e-3)
    assert rates.switches[0] == 0.0 and rates.switches[1:] == pytest.approx((1.0, 1.0), rel=1e-3)


def test_a_shared_group_on_different_tpus_and_no_models_raise():
    models = [_shared("a", 1.0, 0.001, (0, 1)), _shared("b", 1.0, 0.001, (0,))]
    with pytest.raises(ValueError, match="share the same TPUs"):
        pool_rates(models, USB)
    with pytest.raises(ValueError, match="at least one model"):
        pool_rates([], USB)
