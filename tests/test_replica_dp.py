"""replica_dp: cuts and replica counts together, against brute force over every split and replica vector."""

import itertools

import numpy as np
import pytest
from conftest import chain_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples, random_dags

from hardware import USB, USB_SEPARATE
from hardware.kernel import cost_arrays, map_period_s, range_costs
from respect_pass.orders import split_order
from respect_pass.schedulers.replica_dp import replica_split
from tflite_io import StageMapError, validate_stage_map


def replica_vectors(stages: int, tpus: int):
    """Every (r_0, ..., r_{S-1}) with r_s >= 1 and sum <= tpus."""
    for reps in itertools.product(range(1, tpus + 1), repeat=stages):
        if sum(reps) <= tpus:
            yield reps


def brute_force(graph, order, tpus, spec):
    """The least (period, latency) over every valid contiguous split of ``order`` and every replica vector,
    each plan costed as its written segments are (map_period_s)."""
    ca = cost_arrays(graph, spec)
    best = None
    for s in range(1, min(tpus, graph.num_ops) + 1):
        for cuts in itertools.combinations(range(1, graph.num_ops), s - 1):
            stages = split_order(order, cuts, graph.num_ops)
            try:
                validate_stage_map(graph, stages, s)
            except StageMapError:
                continue
            for reps in replica_vectors(s, tpus):
                key = map_period_s(ca, np.asarray(stages), s, reps)
                best = key if best is None or key[0] < best[0] * (1 - 1e-9) else best
    return best


@settings(max_examples=examples(80), deadline=None)
@given(random_dags(max_ops=8), st.integers(1, 4), st.sampled_from([USB, USB_SEPARATE]))
def test_the_split_with_replicas_is_the_best_of_every_split_and_replica_vector(graph, tpus, spec):
    order = list(range(graph.num_ops))  # the execution order: within a range, its ops run as written
    ca = cost_arrays(graph, spec)
    found = replica_split(range_costs(ca, order), tpus, spec, ca.host_s)
    assert sum(found.replicas) <= tpus and len(found.cuts) == len(found.replicas) - 1
    stages = split_order(order, list(found.cuts), graph.num_ops)
    validate_stage_map(graph, stages, len(found.replicas))
    written = map_period_s(ca, np.asarray(stages), len(found.replicas), found.replicas)
    assert written[0] == pytest.approx(found.period_s, rel=1e-9)
    want = brute_force(graph, order, tpus, spec)
    assert found.period_s == pytest.approx(want[0], rel=1e-9)


def test_a_model_that_fits_one_tpu_runs_as_one_copy_per_tpu():
    graph = chain_graph([20000] * 6, act_bytes=200)
    ca = cost_arrays(graph, USB_SEPARATE)
    found = replica_split(range_costs(ca, list(range(6))), 4, USB_SEPARATE)
    assert found.replicas == (4,) and found.cuts == ()
    whole = map_period_s(ca, np.zeros(6, dtype=np.int64), 1)
    assert found.period_s == pytest.approx(whole[0] / 4, rel=1e-12)
    assert found.latency_s == pytest.approx(whole[1], rel=1e-12)


def test_the_slowest_stage_gets_the_spare_tpus():
    # one op far slower than the rest (a huge layer that streams): a pipeline puts it alone and replicates it
    graph = chain_graph([1000, 30_000_000, 1000, 1000], act_bytes=100)
    ca = cost_arrays(graph, USB_SEPARATE)
    found = replica_split(range_costs(ca, list(range(4))), 5, USB_SEPARATE)
    heavy = [i for i, c in enumerate([0, *found.cuts]) if c <= 1 < ([*found.cuts, 4][i])]
    assert found.replicas[heavy[0]] == max(found.replicas) >= 2
    brute = brute_force(graph, list(range(4)), 5, USB_SEPARATE)
    assert found.period_s == pytest.approx(brute[0], rel=1e-9)


def test_the_shared_link_bounds_whole_model_copies():
    # large activations: K copies of the whole model would each move them; the shared link caps the period
    graph = chain_graph([1000] * 4, act_bytes=2_000_000)
    ca = cost_arrays(graph, USB)
    found = replica_split(range_costs(ca, list(range(4))), 8, USB, ca.host_s)
    brute = brute_force(graph, list(range(4)), 8, USB)
    assert found.period_s == pytest.approx(brute[0], rel=1e-9)
    assert found.period_s >= 4_000_000 / USB.shared_link_bytes_per_s  # the model's input and output, at least


def test_no_tpu_is_an_error():
    graph = chain_graph([1000] * 3)
    ca = cost_arrays(graph, USB)
    with pytest.raises(StageMapError, match="at least one TPU"):
        replica_split(range_costs(ca, [0, 1, 2]), 0, USB)
