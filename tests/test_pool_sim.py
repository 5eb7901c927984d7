"""The pool simulated request by request (hardware/pool_sim.py) against the device model's predicted rates
(hardware/pool.py's pool_rates): own pipelines with replicas, shared groups co-compiled or compiled
separately, mixed pools, and random small pools."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

from hardware import USB, USB_SEPARATE, terms
from hardware.pool import FREE, ROUND_ROBIN, PoolModel, PoolStage, pool_rates
from hardware.pool_sim import simulate_pool

RELOAD = 4.42e6  # bytes a switch reloads where a group is compiled separately: 10 ms at 1.03 x 4.42e8 B/s
SWITCH = float(terms.switch_seconds(USB, RELOAD))


def own(name, weight, stage_s, devices, link_bytes=0.0, host_s=0.0):
    stages = tuple(PoolStage(s, tuple(d), FREE) for s, d in zip(stage_s, devices))
    return PoolModel(name, weight, stages, link_bytes=link_bytes, host_s=host_s)


def shared(name, weight, seconds, devices, group=0, switch_s=0.0, reload_bytes=0.0, link_bytes=0.0):
    stage = PoolStage(seconds, tuple(devices), ROUND_ROBIN, group)
    return PoolModel(name, weight, (stage,), switch_s=switch_s, reload_bytes=reload_bytes, link_bytes=link_bytes)


POOLS = {
    "own pipelines with replicas": [own("a", 1, [0.002, 0.005], [(0,), (1, 2)]), own("b", 1, [0.003], [(3,)])],
    "own, weights 1 3": [own("a", 1, [0.002, 0.005], [(0,), (1, 2)]), own("b", 3, [0.003], [(3,)])],
    "co-compiled on 2 TPUs": [shared("a", 1, 0.004, (0, 1)), shared("b", 1, 0.002, (0, 1))],
    "separate on 2 TPUs, weights 1 3": [
        shared("a", 1, 0.004, (0, 1), switch_s=SWITCH, reload_bytes=RELOAD),
        shared("b", 3, 0.002, (0, 1), switch_s=SWITCH, reload_bytes=RELOAD),
    ],
    "separate on 1 TPU, link-bound reloads": [
        shared("a", 1, 0.001, (0,), switch_s=SWITCH, reload_bytes=RELOAD, link_bytes=1000.0),
        shared("b", 1, 0.001, (0,), switch_s=SWITCH, reload_bytes=RELOAD, link_bytes=1000.0),
    ],
    "mixed, weights 2 1 1": [
        own("a", 2, [0.001, 0.002], [(0,), (1,)]),
        shared("b", 1, 0.004, (2, 3), group=1, switch_s=0.001),
        shared("c", 1, 0.002, (2, 3), group=1, switch_s=0.001),
    ],
    "mixed, three groups, weights 2 1 1": [
        shared("a", 2, 0.003, (0, 1), group=0, switch_s=0.002),
        shared("b", 1, 0.006, (0, 1), group=0, switch_s=0.002),
        own("c", 1, [0.004, 0.004, 0.001], [(2,), (3, 4), (5,)]),
    ],
    "link-bound own models": [own("a", 1, [0.001], [(0,)], link_bytes=1e7), own("b", 1, [0.001], [(1,)], link_bytes=1e6)],
    "host-bound own models": [own("a", 1, [0.001], [(0,)], host_s=0.06), own("b", 2, [0.001], [(1,)], host_s=0.01)],
}


@pytest.mark.parametrize("spec", [USB, USB_SEPARATE, USB.with_(shared_link_bytes_per_s=2e8)], ids=lambda s: s.name)
@pytest.mark.parametrize("name", list(POOLS))
def test_the_deterministic_simulation_runs_at_the_predicted_rates(name, spec):
    models = POOLS[name]
    rates = pool_rates(models, spec)
    run = simulate_pool(models, spec, count=2000)
    for got, want in zip(run.models, rates.throughput_ips):
        assert got.throughput_ips == pytest.approx(want, rel=0.01), (name, rates.bound)


def test_a_pool_of_link_bound_and_host_bound_models_is_bounded_by_each_alone():
    """Model a needs 20 ms of the shared link a request, model b 20 ms of the host's 4 cores: the link and the
    cores are different resources, each busy 20 ms a weighted unit, and pool_rates predicts 50/s each."""
    models = [own("a", 1, [0.001], [(0,)], link_bytes=1e7), own("b", 1, [0.001], [(1,)], host_s=0.08)]
    rates = pool_rates(models, USB)
    assert rates.throughput_ips == pytest.approx((50.0, 50.0)) and rates.bound == "shared link"
    # one resource at a time, the simulation agrees
    assert simulate_pool(models, USB_SEPARATE).models[1].throughput_ips == pytest.approx(50.0, rel=0.01)
    assert simulate_pool(models, USB.with_(host_cores=1000)).models[0].throughput_ips == pytest.approx(50.0, rel=0.01)


def test_the_simulation_overlaps_one_models_link_with_anothers_host_ops():
    models = [own("a", 1, [0.001], [(0,)], link_bytes=1e7), own("b", 1, [0.001], [(1,)], host_s=0.08)]
    rates = pool_rates(models, USB)
    run = simulate_pool(models, USB, count=2000)
    for got, want in zip(run.models, rates.throughput_ips):
        assert got.throughput_ips == pytest.approx(want, rel=0.01)


def _composition(draw, total: int, parts: int) -> list[int]:
    if parts == 1:
        return [total]
    cuts = sorted(draw(st.lists(st.integers(1, total - 1), min_size=parts - 1, max_size=parts - 1, unique=True)))
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


@st.composite
def pools(draw):
    """1-3 models on 1-4 TPUs, split into groups as the planner does: a group of one model runs a pipeline
    with replicas on its TPUs (first free), a group of several shares its TPUs round robin with switches.
    Stage times 1-20 ms, switches 0-10 ms, no link or host bound."""
    n = draw(st.integers(1, 3))
    labels = draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))
    first_seen = list(dict.fromkeys(labels))
    labels = [first_seen.index(g) for g in labels]
    groups = len(first_seen)
    tpus = draw(st.integers(groups, max(groups, 4)))
    split = _composition(draw, tpus, groups)
    weights = [draw(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0])) for _ in range(n)]
    ms = st.floats(1.0, 20.0)
    models: list[PoolModel | None] = [None] * n
    first = 0
    for g, size in enumerate(split):
        members = [m for m in range(n) if labels[m] == g]
        devices = tuple(range(first, first + size))
        if len(members) == 1:
            reps = _composition(draw, size, draw(st.integers(1, size)))
            stage_devices, d = [], first
            for r in reps:
                stage_devices.append(tuple(range(d, d + r)))
                d += r
            m = members[0]
            models[m] = own(f"m{m}", weights[m], [draw(ms) / 1e3 for _ in reps], stage_devices)
        else:
            for m in members:
                models[m] = shared(f"m{m}", weights[m], draw(ms) / 1e3, devices, g, draw(st.floats(0.0, 10.0)) / 1e3)
        first += size
    return [m for m in models if m is not None]


@settings(max_examples=examples(120), deadline=None)
@given(pools())
def test_random_small_pools_simulate_within_five_percent_of_the_prediction(models):
    """Across thousands of random pools the largest gap seen is 1.6% (a weight-0.5 model with ~150 of the
    2000 requests: its first and last pops' edge effects)."""
    rates = pool_rates(models, USB_SEPARATE)
    run = simulate_pool(models, USB_SEPARATE, count=2000)
    assert [r.name for r in run.models] == [m.name for m in models]
    for got, want in zip(run.models, rates.throughput_ips):
        assert got.throughput_ips == pytest.approx(want, rel=0.05), rates.bound
    assert max(run.tpu_busy) <= 1.0 + 1e-9


def test_per_model_results_in_the_models_order():
    models = POOLS["mixed, weights 2 1 1"]
    run = simulate_pool(models, USB_SEPARATE, count=400)
    assert [m.name for m in run.models] == ["a", "b", "c"]
    assert [m.count for m in run.models] == [200, 100, 100] and run.count == 400
    assert run.models[0].switches == 0  # an own pipeline never switches
    assert len(run.tpu_busy) == 4
    reordered = simulate_pool(models[::-1], USB_SEPARATE, count=400)
    assert [m.name for m in reordered.models] == ["c", "b", "a"]


def test_one_request_in_flight_has_the_idle_latency():
    models = POOLS["mixed, weights 2 1 1"]
    run = simulate_pool(models, USB_SEPARATE, count=400, in_flight=1)
    a, b, c = run.models
    assert a.latency_ms == pytest.approx(3.0) and b.latency_ms == pytest.approx(5.0) and c.latency_ms == pytest.approx(3.0)
    for m in run.models:  # every request alone, a shared one after a switch (all but each TPU's first few)
        assert m.latency_p50_ms == pytest.approx(m.latency_ms) and m.latency_p99_ms == pytest.approx(m.latency_ms)
    # one request at a time: the rate is one request per idle latency, weighted
    assert a.throughput_ips == pytest.approx(2 / (2 * 3.0 + 5.0 + 3.0) * 1e3, rel=0.02)  # 2 a, b, c: 14 ms


def test_a_single_model_pool_is_a_pipeline():
    run = simulate_pool([own("a", 1, [0.002, 0.005, 0.001], [(0,), (1,), (2,)])], USB_SEPARATE, count=500, in_flight=1)
    assert run.models[0].latency_p50_ms == pytest.approx(8.0) and run.models[0].switches == 0
    full = simulate_pool([own("a", 1, [0.002, 0.005, 0.001], [(0,), (1,), (2,)])], USB_SEPARATE, count=500)
    assert full.models[0].throughput_ips == pytest.approx(200.0, rel=1e-9)  # the 5 ms stage


def test_jitter_is_seeded():
    models = POOLS["mixed, weights 2 1 1"]
    one = simulate_pool(models, USB_SEPARATE, count=400, jitter=0.2, seed=3)
    assert one == simulate_pool(models, USB_SEPARATE, count=400, jitter=0.2, seed=3)
    assert one != simulate_pool(models, USB_SEPARATE, count=400, jitter=0.2, seed=4)
    assert one.models[1].latency_p99_ms > one.models[1].latency_p50_ms


def test_too_few_requests_or_no_window_raise():
    models = POOLS["mixed, weights 2 1 1"]
    with pytest.raises(ValueError, match=r"at least two requests per model \(6\)"):
        simulate_pool(models, USB_SEPARATE, count=5)
    simulate_pool(models, USB_SEPARATE, count=6)
    with pytest.raises(ValueError, match="in_flight must be >= 1"):
        simulate_pool(models, USB_SEPARATE, count=100, in_flight=0)
