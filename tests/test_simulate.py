import pytest

from hardware.simulate import measure_pipeline, simulate_pipeline


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
