"""Block moves and exchanges in the ``respect`` refinement (respect_pass/schedulers/refine.py): monotone maps,
pins kept, never worse, and a branch that only moves as a whole."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from strategies import examples, placed_dags, random_dags

import respect_pass.schedulers.refine as refine_mod
from hardware import USB
from hardware.kernel import map_period_s, map_stage_times
from respect_pass.objectives import latency_key
from respect_pass.orders import random_stage_map, split_order
from respect_pass.policy.decode import greedy_order, live_order
from respect_pass.policy.features import graph_arrays
from respect_pass.schedulers.refine import _best_swap, block_moves, improve_by_moves, refine
from tflite_io import Op, OpGraph, TensorInfo, validate_stage_map

dags = st.one_of(random_dags(max_ops=24), placed_dags(max_ops=24))


def _key(ga, stages, k):
    t = map_stage_times(ga, np.asarray(stages), k)
    return float(t.max()), float(t.sum())


def _monotone(graph, stages) -> bool:
    return all(stages[e.src] <= stages[e.dst] for e in graph.edges)


def _random_map(graph, k, rng):
    """(graph arrays, a random monotone K-stage map as an array), or None where the graph has no such map."""
    stages = random_stage_map(graph, k, rng)
    return None if stages is None else (graph_arrays(graph, USB), np.asarray(stages))


@settings(max_examples=examples(60), deadline=None)
@given(dags, st.integers(2, 5), st.randoms(use_true_random=False))
def test_every_block_move_keeps_the_map_monotone_and_pins_in_place(graph, k, rng):
    drawn = _random_map(graph, k, rng)
    if drawn is None:
        return
    ga, st_arr = drawn
    stages = tuple(int(s) for s in st_arr)
    last, first = graph.last_stage_ops, graph.first_stage_ops
    for stage in range(k):
        here = set(np.flatnonzero(st_arr == stage).tolist())
        for ops, step, work in block_moves(ga, st_arr, stage, k):
            block = set(ops.tolist())
            assert step in (-1, 1) and len(block) == len(ops) >= 2
            assert block < here  # ops of this stage only, never all of them
            m = st_arr.copy()
            m[ops] += step
            assert 0 <= m.min() and m.max() < k
            assert _monotone(graph, m)
            assert all(m[v] == k - 1 for v in last)  # ops pinned last never move back
            assert not (step < 0 and ga.pinned[ops].any())
            assert work == pytest.approx(float((ga.op_s + ga.param_bytes / USB.stream_bytes_per_s)[ops].sum()))
            # forward: the op and its descendants in the stage; backward: the op and its ancestors
            root = [
                v
                for v in block
                if (ga.ancestors[v, list(block)].sum() == 0 if step > 0 else ga.ancestors[list(block), v].sum() == 0)
            ]
            assert len(root) == 1
            if any(m[v] != 0 for v in first):
                assert stage == 0 and step > 0  # only a forward block out of stage 0 can carry them: the caller checks
    moved, applied = improve_by_moves(ga, st_arr, k, limit=8, steps=12, blocks=64, swaps=8)
    plan = tuple(int(s) for s in moved)
    assert validate_stage_map(graph, plan, k) == plan  # pins and stage 0's input readers included
    if applied:
        before, after = _key(ga, stages, k), _key(ga, plan, k)
        assert after[0] < before[0] * (1 - 1e-9) or (after[0] <= before[0] * (1 + 1e-9) and after[1] < before[1])
    else:
        assert plan == tuple(stages)


@settings(max_examples=examples(60), deadline=None)
@given(dags, st.integers(2, 4), st.randoms(use_true_random=False))
def test_an_exchange_trades_one_move_out_of_the_slowest_stage_for_one_move_in(graph, k, rng):
    drawn = _random_map(graph, k, rng)
    if drawn is None:
        return
    ga, st_arr = drawn
    times = map_stage_times(ga, st_arr, k)
    worst = int(np.argmax(times))
    own = ga.op_s + ga.param_bytes / USB.stream_bytes_per_s
    outs = [(v, s) for v, s in refine_mod.movable_ops(ga, st_arr, worst, k)]
    outs += [(ops, s) for ops, s, _ in block_moves(ga, st_arr, worst, k, own)]
    found = _best_swap(ga, st_arr, worst, k, times, own, outs, swaps=6)
    event("exchange found" if found is not None else "no improving exchange")
    if found is None:
        return
    new_times, m = found
    plan = tuple(int(s) for s in m)
    assert validate_stage_map(graph, plan, k) == plan  # monotone, pins kept, stage 0 keeps its input readers
    assert np.allclose(new_times, map_stage_times(ga, m, k), rtol=1e-12)
    assert _key(ga, plan, k)[0] < times.max() * (1 - 1e-9) or (
        _key(ga, plan, k)[0] <= times.max() * (1 + 1e-9) and _key(ga, plan, k)[1] < times.sum()
    )
    changed = np.flatnonzero(m != st_arr)
    assert set(st_arr[changed].tolist()) <= {worst, *(s for s in (worst - 1, worst + 1) if 0 <= s < k)}
    nb = [s for s in set(m[changed].tolist()) | set(st_arr[changed].tolist()) if s != worst]
    assert len(nb) == 1 and abs(nb[0] - worst) == 1  # one neighbour, ops crossing in both directions
    assert (st_arr[changed] == worst).any() and (st_arr[changed] == nb[0]).any()


@settings(max_examples=examples(60), deadline=None)
@given(dags, st.integers(2, 5), st.integers(0, 2**16), st.sampled_from([None, 0, 4, 1000]))
def test_refine_with_block_moves_never_returns_a_worse_plan(graph, k, seed, blocks):
    stages = random_stage_map(graph, k, random.Random(seed))
    if stages is None:
        return
    ga = graph_arrays(graph, USB)
    st_arr = np.asarray(stages)
    scores = np.random.default_rng(seed).normal(size=ga.n)
    order = greedy_order(scores, ga, st_arr)
    cuts = [int(np.searchsorted(st_arr[order], s)) for s in range(1, k)]
    key = map_period_s(ga, st_arr, k)
    new_order, new_cuts, new_key, rounds = refine(
        ga, scores, order, cuts, key, k, 4, np.random.default_rng(seed), blocks=blocks
    )
    plan = tuple(split_order(new_order.tolist(), new_cuts, ga.n))
    assert validate_stage_map(graph, plan, k) == plan
    b, lat = latency_key(graph, plan, k, USB)
    assert (b, lat) == (pytest.approx(new_key[0] * 1e3, rel=1e-9), pytest.approx(new_key[1] * 1e3, rel=1e-9))
    assert b <= key[0] * 1e3 * (1 + 1e-9)
    assert b < key[0] * 1e3 * (1 - 1e-9) or lat <= key[1] * 1e3 * (1 + 1e-9)
    if rounds == 0:
        assert plan == tuple(stages)


def two_branch_graph() -> OpGraph:
    """op 0 (cheap, small output) feeds two branches a1 -> a2 and b1 -> b2 (heavy convs, 1 MiB between the
    two ops of a branch), joined by an ADD that produces the model output. Op indices interleave the branches
    (1 = a1, 2 = b1, 3 = a2, 4 = b2) so that no stage-major order lists one branch as a contiguous suffix."""
    big, small = 2**20, 4096
    tensors = [TensorInfo(0, "input", "int8", (64,), 64)]
    ops: list[Op] = []

    def add_op(op_type, inputs, out_bytes, params, macs):
        i = len(ops)
        out = len(tensors)
        tensors.append(TensorInfo(out, f"t{i}", "int8", (out_bytes,), out_bytes))
        ins = list(inputs)
        if params:
            w = len(tensors)
            tensors.append(TensorInfo(w, f"w{i}", "int8", (params,), params, buffer=w))
            ins.append(w)
        ops.append(Op(i, op_type, tuple(ins), (out,), params, macs))
        return out

    t0 = add_op("CONV_2D", [0], small, 1000, 10**6)
    ta1 = add_op("CONV_2D", [t0], big, 1000, 10**9)
    tb1 = add_op("CONV_2D", [t0], big, 1000, 10**9)
    ta2 = add_op("CONV_2D", [ta1], small, 1000, 10**9)
    tb2 = add_op("CONV_2D", [tb1], small, 1000, 10**9)
    out = add_op("ADD", [ta2, tb2], small, 0, 0)
    return OpGraph("two_branches", tuple(ops), tuple(tensors), (0,), (out,))


def test_a_two_op_branch_moves_where_no_single_op_can():
    graph = two_branch_graph()
    ga = graph_arrays(graph, USB)
    k = 2
    start = np.asarray([0, 0, 0, 0, 0, 1])  # everything but the output ADD on the first TPU
    before = _key(ga, start, k)
    # single ops: only a2 or b2 can leave stage 0, and either drags a 1 MiB activation across the link
    for v, step in refine_mod.movable_ops(ga, start, 0, k):
        m = start.copy()
        m[v] += step
        assert _key(ga, m, k)[0] > before[0]
    same, applied = improve_by_moves(ga, start, k, limit=32, steps=8, blocks=0)
    assert applied == 0 and same.tolist() == start.tolist()
    moved, applied = improve_by_moves(ga, start, k, limit=32, steps=8, blocks=8)
    assert applied >= 1
    assert moved.tolist() in ([0, 1, 0, 1, 0, 1], [0, 0, 1, 0, 1, 1])  # one whole branch went to the second TPU
    after = _key(ga, moved, k)
    assert after[0] < 0.75 * before[0]

    # through refine, with or without block moves: the score order keeps the branches interleaved in every
    # stage-major order (far beyond the Gumbel noise), but the live-bytes re-ordering lists one branch
    # before the other, so a dp re-cut alone also splits a branch off
    scores = np.asarray([0.0, 100.0, 90.0, 80.0, 70.0, 0.0])
    order = greedy_order(scores, ga, start)
    assert order.tolist() == [0, 1, 2, 3, 4, 5]
    assert live_order(scores, ga, start).tolist() in ([0, 1, 3, 2, 4, 5], [0, 2, 4, 1, 3, 5])
    key = map_period_s(ga, start, k)
    for blocks in (0, None):
        new_order, new_cuts, new_key, _ = refine(ga, scores, order, [5], key, k, 4, np.random.default_rng(0), blocks=blocks)
        plan = tuple(split_order(new_order.tolist(), new_cuts, ga.n))
        assert new_key[0] < 0.75 * key[0]
        assert plan in ((0, 1, 0, 1, 0, 1), (0, 0, 1, 0, 1, 1))
        assert latency_key(graph, plan, k, USB)[0] == pytest.approx(new_key[0] * 1e3, rel=1e-9)


def test_block_moves_are_an_option_defaulting_on():
    graph = two_branch_graph()
    ga = graph_arrays(graph, USB)
    scores = np.asarray([0.0, 100.0, 90.0, 80.0, 70.0, 0.0])
    start = np.asarray([0, 0, 0, 0, 0, 1])
    order = greedy_order(scores, ga, start)
    key = map_period_s(ga, start, 2)
    on = refine(ga, scores, order, [5], key, 2, 4, np.random.default_rng(0))
    limit = refine(ga, scores, order, [5], key, 2, 4, np.random.default_rng(0), blocks=refine_mod.default_block_limit(ga.n))
    assert on.key == limit.key and on.order.tolist() == limit.order.tolist() and on.cuts == limit.cuts
    off = refine(ga, scores, order, [5], key, 2, 4, np.random.default_rng(0), blocks=0, swaps=0)
    assert off.key[0] >= on.key[0]
