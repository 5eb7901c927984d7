import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

from hardware.simulate import _push_and_leave, _Replicated, _service_times, measure_pipeline, simulate_pipeline


@pytest.mark.parametrize("stages", [[2.0, 5.0, 3.0], [4.0], [1.0, 1.0, 1.0, 1.0], [7.0, 1.0]])
def test_steady_state_matches_closed_form(stages):
    run = simulate_pipeline(stages, count=200)
    assert run.throughput_ips == pytest.approx(1000.0 / max(stages))
    assert run.first_latency_ms == pytest.approx(sum(stages))
    # everything pushed at t=0: the last request waits for all before it at the bottleneck
    assert run.makespan_ms == pytest.approx(sum(stages) + 199 * max(stages))


def test_paced_arrivals_below_capacity_have_no_queueing():
    run = simulate_pipeline([2.0, 5.0, 3.0], count=50, interval_ms=6.0)
    assert run.latency_p50_ms == pytest.approx(10.0) and run.latency_p99_ms == pytest.approx(10.0)


def test_blocking_with_queue_size_one():
    # a slow last stage backs up the fast first one: stage 0 can be at most 2 requests ahead
    run = simulate_pipeline([1.0, 10.0], count=20)
    assert run.throughput_ips == pytest.approx(100.0)
    assert run.stage_busy[1] > 0.95 and run.stage_busy[0] < 0.15


def test_jitter_is_seeded_and_spreads_latency():
    a = simulate_pipeline([2.0, 5.0], count=100, interval_ms=6.0, jitter=0.2, seed=1)
    b = simulate_pipeline([2.0, 5.0], count=100, interval_ms=6.0, jitter=0.2, seed=1)
    assert a == b and a.latency_p99_ms > a.latency_p50_ms


def test_count_must_be_positive():
    with pytest.raises(ValueError):
        simulate_pipeline([1.0], count=0)


@pytest.mark.parametrize("stages", [[2.0, 5.0, 3.0], [1.0, 10.0, 1.0], [4.0], [3.0, 3.0]])
def test_closed_loop_with_k_in_flight_reaches_the_slowest_stage(stages):
    run = simulate_pipeline(stages, count=100, in_flight=len(stages))
    assert run.throughput_ips == pytest.approx(1000.0 / max(stages))
    # Little's law: K requests in flight at one per period
    assert run.latency_p50_ms == pytest.approx(len(stages) * max(stages))


def test_one_request_in_flight_is_the_idle_latency():
    run = simulate_pipeline([2.0, 5.0, 3.0], count=20, in_flight=1)
    assert run.latency_p50_ms == pytest.approx(10.0) and run.throughput_ips == pytest.approx(100.0)


def test_measured_figures_separate_idle_latency_from_load():
    fig = measure_pipeline([2.0, 5.0, 3.0], count=50)
    assert fig.latency_ms == pytest.approx(10.0)
    assert fig.bottleneck_ms == pytest.approx(5.0) and fig.throughput_ips == pytest.approx(200.0)
    assert fig.latency_loaded_p50_ms == pytest.approx(15.0)
    # pushing everything at once would have reported queueing as latency
    assert simulate_pipeline([2.0, 5.0, 3.0], count=50).latency_p50_ms > 100


def test_a_shared_link_sets_the_period_when_it_is_slower_than_every_stage():
    fig = measure_pipeline([2.0, 5.0, 3.0], count=50, min_period_ms=8.0)
    assert fig.bottleneck_ms == pytest.approx(8.0) and fig.latency_ms == pytest.approx(10.0)
    assert measure_pipeline([2.0, 5.0, 3.0], count=50, min_period_ms=4.0).bottleneck_ms == pytest.approx(5.0)


def test_in_flight_must_be_positive():
    with pytest.raises(ValueError, match="in_flight"):
        simulate_pipeline([1.0], count=3, in_flight=0)


# --- stages on several TPUs (replicas) ---------------------------------------------------------------

#: (stage ms, replicas, shared-link period): the slowest stage per replica binds, or the link does
LAYOUTS = [
    ([2.0, 5.0, 3.0], [1, 2, 1], 0.0),
    ([2.0, 6.0, 3.0], [1, 3, 1], 0.0),
    ([10.0, 2.0], [4, 1], 0.0),
    ([4.0], [3], 0.0),
    ([7.5, 5.0, 0.3], [3, 2, 1], 0.0),
    ([0.5, 5.0, 3.0, 0.3], [1, 3, 2, 2], 0.0),
    ([2.0, 10.0, 7.5, 7.5, 0.5], [1, 3, 2, 2, 1], 0.0),
    ([3.0, 9.0, 4.0], [1, 3, 2], 0.0),  # three stages tied at 3 ms per request
    ([2.0, 5.0, 3.0], [1, 2, 1], 4.0),
    ([10.0, 2.0], [4, 1], 3.0),
]


def expected_period(stages, replicas, link):
    return max(max(t / r for t, r in zip(stages, replicas)), link)


@pytest.mark.parametrize("stages,replicas,link", LAYOUTS)
def test_replicated_period_is_the_slowest_stage_per_replica(stages, replicas, link):
    period = expected_period(stages, replicas, link)
    k = sum(replicas)
    closed = simulate_pipeline(stages, count=120, in_flight=k, min_period_ms=link, replicas=replicas)
    at_once = simulate_pipeline(stages, count=120, min_period_ms=link, replicas=replicas)
    fig = measure_pipeline(stages, count=50, min_period_ms=link, replicas=replicas)
    for got in (1e3 / closed.throughput_ips, 1e3 / at_once.throughput_ips, fig.bottleneck_ms):
        assert got == pytest.approx(period, rel=1e-9)
    assert fig.latency_ms == pytest.approx(sum(stages)) and closed.first_latency_ms == pytest.approx(sum(stages))
    assert closed.reordered == at_once.reordered == 0  # equal times: first in, first out at every stage


@settings(max_examples=examples(150), deadline=None)
@given(
    layout=st.lists(
        st.tuples(st.sampled_from([0.3, 0.5, 1.0, 2.0, 3.0, 7.5]) | st.floats(0.1, 10.0), st.integers(1, 4)),
        min_size=1,
        max_size=5,
    ),
    link=st.sampled_from([0.0, 0.0, 1.0, 2.5]),
)
def test_replicated_period_on_random_layouts(layout, link):
    stages, replicas = [t for t, _ in layout], [r for _, r in layout]
    fig = measure_pipeline(stages, count=40, min_period_ms=link, replicas=replicas)
    assert fig.bottleneck_ms == pytest.approx(expected_period(stages, replicas, link), rel=1e-9)


@settings(max_examples=examples(200), deadline=None)
@given(
    stages=st.lists(st.sampled_from([0.5, 1.0, 2.0, 3.0, 5.0]) | st.floats(0.1, 10.0), min_size=1, max_size=6),
    count=st.integers(1, 40),
    interval=st.sampled_from([0.0, 1.5, 4.0]),
    jitter=st.sampled_from([0.0, 0.3]),
    seed=st.integers(0, 99),
    in_flight=st.none() | st.integers(1, 8),
    link=st.sampled_from([0.0, 2.5]),
)
def test_events_on_one_tpu_per_stage_are_the_recurrence_bit_for_bit(stages, count, interval, jitter, seed, in_flight, link):
    """The event-driven pipeline (replicas) with one TPU per stage gives the recurrence's times exactly."""
    service = _service_times(np.asarray(stages), count, jitter, seed)
    arrive, depart = _push_and_leave(service, interval, in_flight, link)
    events_arrive, events_depart = _Replicated(service, [1] * len(stages), link).run(interval, in_flight)
    assert np.array_equal(arrive, events_arrive) and np.array_equal(depart, events_depart)
    kw = dict(count=count, interval_ms=interval, jitter=jitter, seed=seed, in_flight=in_flight, min_period_ms=link)
    assert simulate_pipeline(stages, replicas=[1] * len(stages), **kw) == simulate_pipeline(stages, **kw)


def test_jittered_replicas_finish_out_of_order_and_leave_in_order():
    kw = dict(count=300, jitter=0.3, seed=4, in_flight=6)
    run = simulate_pipeline([1.0, 6.0, 1.0], replicas=[1, 4, 1], **kw)
    assert run.reordered > 0 and run == simulate_pipeline([1.0, 6.0, 1.0], replicas=[1, 4, 1], **kw)
    assert simulate_pipeline([1.0, 6.0, 1.0], **kw).reordered == 0  # one TPU per stage: in order anyway
    # noise costs some throughput with 6 requests in flight (1.5 ms per request without it)
    assert 1.5 < 1e3 / run.throughput_ips < 2.0


def test_replicated_bottleneck_is_busy_and_its_tpus_share_the_work():
    run = simulate_pipeline([1.0, 6.0, 1.0], count=400, in_flight=5, replicas=[1, 3, 1])
    assert 1e3 / run.throughput_ips == pytest.approx(2.0, rel=1e-9)
    assert run.stage_busy[1] > 0.99 and run.stage_busy[0] == pytest.approx(0.5, rel=0.01)


@pytest.mark.parametrize("replicas", [[1, 2], [1, 0, 1], [1, 1.5, 1]])
def test_replicas_must_be_one_positive_count_per_stage(replicas):
    with pytest.raises(ValueError, match="replicas"):
        simulate_pipeline([1.0, 2.0, 3.0], count=3, replicas=replicas)


def test_a_short_run_still_reports_a_period():
    """Fewer requests than fill the pipeline and one cycle of lcm(replicas) pops: the whole run is timed."""
    run = simulate_pipeline([3.0, 4.0], count=5, replicas=[3, 4])
    assert run.throughput_ips > 0 and math.isfinite(run.throughput_ips)
