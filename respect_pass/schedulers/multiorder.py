"""The ``multiorder`` scheduler: ``dp`` over several topological orders, keep the best.

The cheap baseline a sceptic would try before a learned scheduler: the
optimal contiguous split (``dp``) of the model's execution order, of a few
heuristic orders (breadth-first by depth, depth-first, libcoral's
partitioner order) and of ``num_random`` seeded random topological orders.
On chain-like models every order is nearly the same; on branchy graphs
(Inception, NAS cells) other orders expose better non-contiguous plans.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator

from hardware import EdgeTpuSpec, as_spec
from hardware.kernel import cost_arrays
from tflite_io import OpGraph, StageMapError

from ..objectives import DEFAULT_ALPHA, check_objective
from ..orders import depth_first_order, depth_order, libcoral_topological_order, random_topological_order
from ..plan import Plan
from .dp import dp_schedule

__all__ = ["multiorder_schedule", "candidate_orders"]


def candidate_orders(graph: OpGraph, num_random: int, seed: int) -> list[tuple[str, list[int]]]:
    """(name, order) pairs: execution, depth, depth-first, libcoral, then ``num_random`` random orders."""
    orders = [
        ("execution", list(range(graph.num_ops))),
        ("depth", depth_order(graph)),
        ("depth_first", depth_first_order(graph)),
        ("libcoral", libcoral_topological_order(graph)),
    ]
    rng = random.Random(seed)
    orders += [(f"random{i}", random_topological_order(graph, rng)) for i in range(num_random)]
    return orders


def _orders(
    graph: OpGraph, num_random: int, seed: int, budget_s: float | None, t0: float
) -> Iterator[tuple[str, list[int]]]:
    """The heuristic orders, then random ones: ``num_random`` of them, or while ``budget_s`` lasts."""
    yield from candidate_orders(graph, 0, seed)
    rng = random.Random(seed)
    for i in itertools.count():
        if (i >= num_random) if budget_s is None else (time.perf_counter() - t0 >= budget_s):
            return
        yield f"random{i}", random_topological_order(graph, rng)


def multiorder_schedule(
    graph: OpGraph,
    num_stages: int,
    cost: EdgeTpuSpec | None = None,
    *,
    objective: str = "latency",
    alpha: float = DEFAULT_ALPHA,
    num_random: int = 16,
    seed: int = 0,
    time_budget_s: float | None = None,
) -> Plan:
    """The best ``dp`` plan over :func:`candidate_orders`; with ``time_budget_s`` the number of random
    orders is set by the clock instead of ``num_random`` (the four heuristic orders always run)."""
    t0 = time.perf_counter()
    check_objective(objective)
    if time_budget_s is not None and not time_budget_s >= 0:
        raise ValueError(f"time_budget_s must be >= 0, got {time_budget_s}")
    spec = as_spec(cost)
    arrays = cost_arrays(graph, spec)
    best: tuple[tuple[float, ...], str, Plan] | None = None
    tried = 0
    for name, order in _orders(graph, num_random, seed, time_budget_s, t0):
        tried += 1
        try:
            plan = dp_schedule(graph, num_stages, spec, objective=objective, alpha=alpha, order=order, arrays=arrays)
        except StageMapError:
            continue  # this order has no K-split (e.g. an output op too early)
        key: tuple[float, ...] = (
            (plan.stats.number("bottleneck_ms"), plan.stats.number("latency_ms"))
            if objective == "latency"
            else (plan.stats.number("objective_value"),)
        )
        if best is None or key < best[0]:
            best = (key, name, plan)
    if best is None:
        raise StageMapError(f"none of the candidate orders has a {num_stages}-stage split", num_stages)
    key, name, plan = best
    stats = plan.stats.with_(orders=tried, best_order=name)
    return Plan(
        plan.stages, num_stages, "multiorder", objective=objective, solve_seconds=time.perf_counter() - t0, stats=stats
    )
