"""The learned ``respect`` scheduler: valid plans by construction, fast splitting, safe checkpoints."""

from __future__ import annotations

import math
import random
import zipfile

import numpy as np
import pytest
import torch
from crafting import EMBEDDED
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import BRANCHY, examples, placed_dags, random_dags, relabel

from hardware import USB, stage_costs
from hardware.kernel import cost_arrays, map_period_s, map_stage_times, range_costs
from respect_pass.objectives import latency_key
from respect_pass.orders import has_unique_order, random_stage_map, random_topological_order, split_order
from respect_pass.policy.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, load_policy, save_checkpoint
from respect_pass.policy.decode import greedy_order, live_order, perturbed_orders, sample_orders
from respect_pass.policy.features import NUM_FEATURES, graph_arrays, node_features
from respect_pass.policy.labels import max_stages, stage_major_order
from respect_pass.policy.model import ModelConfig, PolicyNet, decode_tensors, order_log_probs, torch_scores
from respect_pass.schedulers.dp import best_cuts, dp_schedule
from respect_pass.schedulers.refine import improve_by_moves, movable_ops, range_stage_times, refine
from respect_pass.schedulers.respect import policy_scores, respect_exact_schedule, respect_schedule
from respect_pass.schedulers.split import best_split, best_written_split, bottleneck_value
from tflite_io import RespectPassError, StageMapError, contiguous_stage_map, read, validate_stage_map


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """An untrained policy saved like a real one: plans must be valid whatever the weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("policy") / "random_policy"
    save_checkpoint(PolicyNet(ModelConfig(hidden=16, layers=2)), path, train_args={"test": True})
    return path.with_suffix(".npz")


def is_topological(graph, order) -> bool:
    pos = {int(v): i for i, v in enumerate(order)}
    return sorted(pos) == list(range(graph.num_ops)) and all(pos[e.src] < pos[e.dst] for e in graph.edges)


def pinned_last(graph, order) -> bool:
    ga = graph_arrays(graph, USB)
    flags = ga.pinned[np.asarray(order)]
    return not np.any(flags[:-1] & ~flags[1:])


@settings(max_examples=examples(40), deadline=None)
@given(random_dags(max_ops=14), st.integers(1, 5), st.integers(0, 3), st.integers(0, 2**16))
def test_policy_plans_are_valid_monotone_maps(random_checkpoint, graph, k, samples, seed):
    k = min(k, max_stages(graph))
    for heuristics in (False, True):
        plan = respect_schedule(
            graph, k, USB, samples=samples, seed=seed, checkpoint=random_checkpoint, heuristics=heuristics
        )
        assert validate_stage_map(graph, plan.stages, k) == plan.stages  # valid as emitted: no repair step
        assert plan.scheduler == "respect" and plan.num_stages == k
        stats = dict(plan.stats)
        b, lat = latency_key(graph, plan.stages, k, USB)
        assert stats["bottleneck_ms"] == pytest.approx(b, rel=1e-9)
        assert stats["latency_ms"] == pytest.approx(lat, rel=1e-9)
        assert b >= stats["bound_ms"] * (1 - 1e-9)
    # the execution order is one of the candidates: never worse than dp (which may find no split at all)
    try:
        dp_b = dict(dp_schedule(graph, k, USB).stats)["bottleneck_ms"]
    except StageMapError:
        return
    assert b <= dp_b * (1 + 1e-9)


@settings(max_examples=examples(40), deadline=None)
@given(random_dags(max_ops=14), st.integers(2, 4), st.integers(0, 2**16))
def test_refine_moves_keep_plans_monotone_and_never_worsen(graph, k, seed):
    """Stage times of a map equal the cost model's; moves keep maps monotone; refine never loses."""
    rng = random.Random(seed)
    stages = random_stage_map(graph, k, rng)
    if stages is None:
        return
    ga = graph_arrays(graph, USB)
    st_arr = np.asarray(stages)
    want = [c.ms for c in stage_costs(graph, stages, k, USB)]
    assert 1e3 * map_stage_times(ga, st_arr, k) == pytest.approx(want, rel=1e-9)
    scores = np.random.default_rng(seed).normal(size=ga.n)
    order = greedy_order(scores, ga, st_arr)
    cuts = [int(np.searchsorted(st_arr[order], s)) for s in range(1, k)]
    assert tuple(split_order(order.tolist(), cuts, ga.n)) == tuple(stages)
    # a range of an order costs its ops in that sequence: the reference on the graph relabelled in the order
    sizes = [b - a for a, b in zip((0, *cuts), (*cuts, ga.n))]
    want_seq = [c.ms for c in stage_costs(relabel(graph, order.tolist()), contiguous_stage_map(sizes), k, USB)]
    assert 1e3 * range_stage_times(range_costs(ga, order), cuts, k) == pytest.approx(want_seq, rel=1e-9)
    for stage in range(k):
        for v, step in movable_ops(ga, st_arr, stage, k):
            m = st_arr.copy()
            m[v] += step
            assert 0 <= m[v] < k and all(m[e.src] <= m[e.dst] for e in graph.edges)
            assert not (ga.pinned[v] and m[v] != k - 1)
    moved, applied = improve_by_moves(ga, st_arr, k, limit=50, steps=10)
    if applied:
        validate_stage_map(graph, tuple(int(s) for s in moved), k)
        # moves lower (slowest stage, latency); the period may be the shared link's, which they do not see
        after, before = map_stage_times(ga, moved, k), map_stage_times(ga, st_arr, k)
        assert (after.max(), after.sum()) < (before.max(), before.sum())  # refine() below judges the period
    key = tuple(x / 1e3 for x in latency_key(graph, stages, k, USB))  # (period, latency) in s
    new_order, new_cuts, new_key, _ = refine(ga, scores, order, cuts, key, k, 4, np.random.default_rng(seed))
    plan = tuple(split_order(new_order.tolist(), new_cuts, ga.n))
    validate_stage_map(graph, plan, k)
    b, lat = latency_key(graph, plan, k, USB)
    assert b <= key[0] * 1e3 * (1 + 1e-9)
    assert b < key[0] * 1e3 * (1 - 1e-9) or lat <= key[1] * 1e3 * (1 + 1e-9)
    assert (b, lat) == (pytest.approx(new_key[0] * 1e3, rel=1e-9), pytest.approx(new_key[1] * 1e3, rel=1e-9))


@settings(max_examples=examples(40), deadline=None)
@given(random_dags(max_ops=8), st.integers(2, 3))
def test_lower_bound_and_optimal_flag_agree_with_brute_force(random_checkpoint, graph, k):
    from respect_pass.oracle import best_map

    k = min(k, max_stages(graph))
    best, _ = best_map(graph, k, USB)
    if best is None:
        return
    plan = respect_schedule(graph, k, USB, checkpoint=random_checkpoint)
    bottleneck = plan.stats["bottleneck_ms"]
    assert plan.lower_bound_ms <= best[0] * (1 + 1e-9)
    assert bottleneck >= best[0] * (1 - 1e-9)
    if plan.optimal:
        assert bottleneck == pytest.approx(best[0], rel=1e-9)


@settings(max_examples=examples(60), deadline=None)
@given(random_dags(max_ops=14), st.integers(0, 2**16))
def test_decoded_orders_are_topological_with_pinned_ops_last(graph, seed):
    ga = graph_arrays(graph, USB)
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=graph.num_ops) * 3
    orders = [greedy_order(scores, ga)] + perturbed_orders(scores, ga, 3, rng) + list(sample_orders(scores, ga, 4, rng))
    orders += [live_order(scores, ga), live_order(np.zeros(graph.num_ops), ga)]
    for order in orders:
        assert is_topological(graph, order) and pinned_last(graph, order)
    stages = random_stage_map(graph, 3, random.Random(seed))
    if stages is not None:  # with a stage map: a stage-major order of it
        order = live_order(scores, ga, np.asarray(stages))
        assert is_topological(graph, order)
        assert [stages[v] for v in order] == sorted(stages)


def _live_bytes(graph, prefix) -> float:
    """Activation bytes live after ``prefix``: produced in it (or model inputs) and still read outside it."""
    done = set(prefix)
    live = 0.0
    for t, readers in graph.consumers.items():
        made = t in graph.inputs or (t in graph.producer and graph.producer[t] in done)
        if made and any(r not in done for r in readers):
            live += graph.tensors[t].nbytes
    return live


def test_live_order_takes_the_ready_op_that_leaves_the_fewest_bytes_live():
    graph = read(BRANCHY)
    ga = graph_arrays(graph, USB)
    order = live_order(np.zeros(graph.num_ops), ga).tolist()
    for i, v in enumerate(order):
        done = set(order[:i])
        ready = [
            u for u in range(graph.num_ops) if u not in done and all(p in done for p in graph.preds[u]) and not ga.pinned[u]
        ]
        if not ready:
            continue
        after = {u: _live_bytes(graph, order[:i] + [u]) for u in ready}
        assert after[v] == pytest.approx(min(after.values()))
        assert v == min(u for u in ready if after[u] == pytest.approx(after[v]))  # ties: execution order


def test_greedy_follows_the_scores_among_ready_ops():
    graph = read(BRANCHY)
    ga = graph_arrays(graph, USB)
    scores = -np.arange(graph.num_ops, dtype=float)  # prefer execution order
    assert greedy_order(scores, ga).tolist() == stage_major_order(graph, [0] * graph.num_ops).tolist()


def all_decoder_orders(graph, ga):
    """Every order the decoder can emit (pinned ops only when nothing else is ready)."""

    def rec(prefix, placed):
        if len(prefix) == graph.num_ops:
            yield list(prefix)
            return
        ready = [v for v in range(graph.num_ops) if v not in placed and all(u in placed for u in graph.preds[v])]
        free = [v for v in ready if not ga.pinned[v]]
        for v in free or ready:
            yield from rec(prefix + [v], placed | {v})

    yield from rec([], frozenset())


@settings(max_examples=examples(25), deadline=None)
@given(random_dags(max_ops=7), st.integers(0, 2**16))
def test_order_log_probs_form_a_distribution(graph, seed):
    ga = graph_arrays(graph, USB)
    scores = torch.from_numpy(np.random.default_rng(seed).normal(size=graph.num_ops))
    orders = torch.tensor(list(all_decoder_orders(graph, ga)))
    logp = order_log_probs(scores, orders, decode_tensors(ga))
    assert float(torch.logsumexp(logp, 0)) == pytest.approx(0.0, abs=1e-9)


def fan_graph():
    """op0 reads the input; ops 1-3 read op0; op4 reads ops 1-3 (six decoder orders)."""
    from tflite_io import Op, OpGraph, TensorInfo

    tensors = [TensorInfo(i, f"t{i}", "int8", (8,), 8) for i in range(6)]
    ops = [
        Op(0, "ADD", (0,), (1,), 0, 1),
        Op(1, "ADD", (1,), (2,), 0, 1),
        Op(2, "ADD", (1,), (3,), 0, 1),
        Op(3, "ADD", (1,), (4,), 0, 1),
        Op(4, "ADD", (2, 3, 4), (5,), 0, 1),
    ]
    return OpGraph("fan", tuple(ops), tuple(tensors), (0,), (5,))


def test_sampler_draws_from_the_decoder_distribution():
    graph = fan_graph()
    ga = graph_arrays(graph, USB)
    scores = np.array([0.0, 1.0, 0.0, -1.0, 0.0])
    orders = list(all_decoder_orders(graph, ga))
    assert len(orders) == 6
    probs = torch.exp(order_log_probs(torch.from_numpy(scores), torch.tensor(orders), decode_tensors(ga))).numpy()
    draws = sample_orders(scores, ga, 20000, np.random.default_rng(0))
    freq = np.array([np.mean((draws == np.array(o)).all(axis=1)) for o in orders])
    assert np.abs(freq - probs).max() < 0.015


@settings(max_examples=examples(60), deadline=None)
@given(random_dags(max_ops=14), st.integers(0, 2**16), st.integers(1, 4))
def test_best_split_equals_the_dp_scheduler(graph, seed, k):
    """The policy's batched split (values only, then cuts) gives what the ``dp`` scheduler gives on one order."""
    ga = graph_arrays(graph, USB)
    order = random_topological_order(graph, random.Random(seed))
    rc = range_costs(ga, order)
    try:
        expected = best_cuts(rc, k)
    except StageMapError:
        return
    _, cuts, bott, lat = best_split([rc], k)
    assert bott == pytest.approx(expected[1], rel=1e-12) and lat == pytest.approx(expected[2], rel=1e-9)


@settings(max_examples=examples(60), deadline=None)
@given(placed_dags(max_ops=16), st.integers(0, 2**16), st.integers(2, 4), st.integers(1, 5))
def test_best_written_split_beats_the_best_range_split_as_written(graph, seed, k, top):
    """The winner is the best written (period, latency) of the ``top`` lowest range bottlenecks, so never worse
    as written than the range winner, which comes second where it is another candidate."""
    ga = graph_arrays(graph, USB)
    rng = random.Random(seed)
    rcs = [range_costs(ga, random_topological_order(graph, rng)) for _ in range(5)]
    bott = [bottleneck_value(rc, k) for rc in rcs]
    if not np.isfinite(bott).any():
        with pytest.raises(ValueError):
            best_written_split(ga, rcs, k, top)
        return
    picks = best_written_split(ga, rcs, k, top)
    assert 1 <= len(picks) <= 2
    for i, cuts, period, latency in picks:
        stages = split_order(rcs[i].order, cuts, graph.num_ops)
        assert validate_stage_map(graph, stages, k) == stages
        assert (period, latency) == map_period_s(ga, np.asarray(stages), k)
        assert bott[i] <= sorted(bott)[min(top, len(bott)) - 1]  # among the top range bottlenecks
    range_best = int(np.argmin(bott))
    assert picks[-1][0] == range_best
    assert picks[0][2:] <= picks[-1][2:]


def test_features_are_finite_and_scale_free():
    graph = read(BRANCHY)
    ga = graph_arrays(graph, USB)
    for k in (1, 2, 8):
        x = node_features(ga, k)
        assert x.shape == (graph.num_ops, NUM_FEATURES) and x.dtype == np.float32 and np.isfinite(x).all()
    # a slower TPU of the same shape changes no time ratio
    slow = USB.with_(
        peak_macs_per_s=USB.peak_macs_per_s / 2,
        t_invoke_s=USB.t_invoke_s * 2,
        stream_bytes_per_s=USB.stream_bytes_per_s / 2,
        io_bytes_per_s=USB.io_bytes_per_s / 2,
        elementwise_s_per_byte=USB.elementwise_s_per_byte * 2,
        cpu_op_s=USB.cpu_op_s * 2,
        cpu_macs_per_s=USB.cpu_macs_per_s / 2,
        shared_link_bytes_per_s=USB.shared_link_bytes_per_s / 2,
    )
    assert np.allclose(node_features(graph_arrays(graph, slow), 3), node_features(ga, 3), atol=1e-6)


def test_checkpoint_round_trip_without_pickle(tmp_path):
    torch.manual_seed(1)
    model = PolicyNet(ModelConfig(hidden=8, layers=1))
    npz, meta = save_checkpoint(model, tmp_path / "ck", train_args={"seed": 1}, metrics={"gap": 0.5})
    with np.load(npz, allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    loaded, doc = load_checkpoint(npz)
    assert doc["train_args"] == {"seed": 1} and doc["model"]["hidden"] == 8
    ga = graph_arrays(read(BRANCHY), USB)
    want = torch_scores(model.eval(), ga, 3)
    assert np.allclose(want, torch_scores(loaded, ga, 3))
    assert np.allclose(want, policy_scores(load_policy(npz)[0], ga, 3), rtol=1e-5, atol=1e-5)  # the numpy net
    # a pickled object array inside the npz is refused, not executed
    with zipfile.ZipFile(npz, "a") as z:
        np.save(tmp_path / "evil.npy", np.array([object()], dtype=object), allow_pickle=True)
        z.write(tmp_path / "evil.npy", "evil.npy")
    with pytest.raises(RespectPassError):
        load_checkpoint(npz)
    with pytest.raises(RespectPassError, match="not found"):
        load_checkpoint(tmp_path / "missing.npz")


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="no shipped checkpoint yet")
def test_shipped_checkpoint_loads_without_pickle_and_schedules_a_branchy_model(monkeypatch):
    import pickle

    def no_pickle(*args, **kwargs):
        raise AssertionError("a checkpoint load must not unpickle anything")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    with np.load(DEFAULT_CHECKPOINT, allow_pickle=False) as data:
        assert data.files
    model, doc = load_checkpoint(DEFAULT_CHECKPOINT)
    assert doc["train_args"]["max_ops"] <= 120
    assert load_policy() is load_policy()  # cached: loaded once per process
    # a branchy graph, the shortcut off and no heuristic orders or refinement: the plan is the network's
    graph = read(BRANCHY)
    assert not has_unique_order(graph)
    for k in (2, 3, 4):
        plan = respect_schedule(graph, k, USB, samples=0, heuristics=False, refine_rounds=0, one_order_shortcut=False)
        validate_stage_map(graph, plan.stages, k)
        assert plan.stats.number("policy_ms") > 0 and plan.stats["candidates"] == 1  # the greedy order alone
        assert plan.stats["best_order"] in ("greedy", "execution")  # the network's order, or the dp floor
        period, _ = map_period_s(cost_arrays(graph, USB), np.asarray(plan.stages), k)
        assert plan.stats.number("bottleneck_ms") == pytest.approx(period * 1e3, rel=1e-9)
        if plan.stats["best_order"] == "greedy":
            assert plan.stats.number("bottleneck_ms") < dp_schedule(graph, k, USB).stats.number("bottleneck_ms") * (
                1 - 1e-9
            )  # it replaced the floor only by being strictly better


def test_respect_exact_uses_the_policy_plan_as_hint(random_checkpoint):
    graph = read(BRANCHY)
    plan = respect_exact_schedule(graph, 3, USB, time_limit_s=10, workers=1, checkpoint=random_checkpoint)
    validate_stage_map(graph, plan.stages, 3)
    assert plan.scheduler == "respect+exact"
    stats = dict(plan.stats)
    assert latency_key(graph, plan.stages, 3, USB)[0] <= stats["respect_bottleneck_ms"] * (1 + 1e-9)


def test_memory_objective_and_bad_k(random_checkpoint):
    graph = read(BRANCHY)
    plan = respect_schedule(graph, 3, USB, objective="memory", checkpoint=random_checkpoint)
    validate_stage_map(graph, plan.stages, 3)
    assert math.isfinite(plan.stats["objective_value"])
    with pytest.raises(StageMapError):
        respect_schedule(graph, graph.num_ops + 1, USB, checkpoint=random_checkpoint)
    with pytest.raises(RespectPassError):
        respect_schedule(graph, 2, USB, objective="speed", checkpoint=random_checkpoint)


def test_stage_major_order_lists_stages_in_turn():
    graph = read(BRANCHY)
    plan = dp_schedule(graph, 3, USB, order=random_topological_order(graph, random.Random(3)))
    order = stage_major_order(graph, plan.stages)
    assert is_topological(graph, order)
    assert [plan.stages[v] for v in order] == sorted(plan.stages)
    assert sorted(order) == list(range(graph.num_ops)) and pinned_last(graph, order)  # every op once


def test_a_graph_with_one_order_gets_the_dp_split_as_proven_optimal(random_checkpoint):
    g = read(EMBEDDED)  # MobileNet v2: every op feeds the next, so every plan splits the execution order
    for k in (2, 4):
        plan = respect_schedule(g, k, USB, checkpoint=random_checkpoint)
        assert plan.optimal is True and plan.stats["best_order"] == "unique"
        assert plan.stages == dp_schedule(g, k, USB).stages
        assert plan.lower_bound_ms == pytest.approx(latency_key(g, plan.stages, k, USB)[0], rel=1e-9)
        warm = respect_exact_schedule(g, k, USB, checkpoint=random_checkpoint)
        assert warm.scheduler == "respect+exact" and warm.optimal is True and warm.stages == plan.stages


def test_extra_samples_spend_only_where_the_bound_leaves_room_and_never_worsen():
    from respect_pass.generator import generate

    graph = generate("nas_cell", 200, 1)
    for k in (2, 4):
        plain = respect_schedule(graph, k, USB)
        more = respect_schedule(graph, k, USB, extra_samples=6)
        validate_stage_map(graph, more.stages, k)
        assert latency_key(graph, more.stages, k, USB) <= latency_key(graph, plain.stages, k, USB)
        gap = plain.stats.number("bottleneck_ms") / plain.stats.number("bound_ms") - 1
        if gap > 0.02:  # the bound leaves room even after refinement: the extra budget was spent
            assert more.stats["extra_candidates"] > 0
        assert plain.stats["extra_candidates"] == 0
