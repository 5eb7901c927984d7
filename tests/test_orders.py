import itertools
import random

from conftest import chain_graph, diamond_graph
from hypothesis import given, settings
from strategies import examples, random_dags

from respect_pass.orders import has_unique_order, random_stage_map, random_topological_order, split_order
from tflite_io import validate_stage_map


def test_random_orders_are_topological_and_cover_both_diamond_orders():
    g = diamond_graph()
    seen = set()
    rng = random.Random(0)
    for _ in range(50):
        order = random_topological_order(g, rng)
        pos = {v: i for i, v in enumerate(order)}
        assert sorted(order) == [0, 1, 2, 3]
        assert all(pos[e.src] < pos[e.dst] for e in g.edges)
        seen.add(tuple(order))
    assert seen == {(0, 1, 2, 3), (0, 2, 1, 3)}


def test_split_order():
    assert split_order([0, 2, 1, 3], [1, 3], 4) == (0, 1, 1, 2)
    assert split_order([0, 2, 1, 3], [2, 3], 4) == (0, 1, 0, 2)  # op 2 before op 1
    assert split_order([0, 1, 2], [], 3) == (0, 0, 0)


def test_random_stage_maps_are_valid():
    rng = random.Random(3)
    for g, k in [(diamond_graph(), 3), (chain_graph([1] * 10), 5)]:
        for _ in range(20):
            m = random_stage_map(g, k, rng)
            assert validate_stage_map(g, m, k) == m
    assert random_stage_map(chain_graph([1, 1]), 3, rng) is None


def test_unique_order_is_detected_by_the_edges_between_neighbours():
    assert has_unique_order(chain_graph([10, 20, 30]))
    assert not has_unique_order(diamond_graph())  # its two branches can run in either order


@settings(max_examples=examples(60), deadline=None)
@given(random_dags(max_ops=7))
def test_unique_order_agrees_with_enumerating_topological_orders(graph):
    n = graph.num_ops
    count = sum(
        1 for perm in itertools.permutations(range(n)) if all(perm.index(e.src) < perm.index(e.dst) for e in graph.edges)
    )
    assert has_unique_order(graph) == (count == 1)
