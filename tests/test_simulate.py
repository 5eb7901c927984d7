import pytest

from hardware import simulate_pipeline


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
