"""The policy at inference runs in numpy: same scores and greedy orders as the torch network, valid plans, no torch.

The torch :class:`PolicyNet` stays the reference (training uses it); the numpy
:class:`NumpyPolicy` loaded from the same ``.npz`` must compute the same
function, and nothing on the path of ``respect-pass MODEL -n K``, ``respect-pass
inspect`` or ``run_pipeline`` may import torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from crafting import EMBEDDED
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import BRANCHY, examples, placed_dags, random_dags

from hardware import USB
from hardware.kernel import map_period_s
from respect_pass.generator import generate_suite
from respect_pass.objectives import latency_key
from respect_pass.orders import has_unique_order
from respect_pass.policy import decode
from respect_pass.policy.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint, load_policy, save_checkpoint
from respect_pass.policy.decode import greedy_order, perturbed_orders, sample_orders
from respect_pass.policy.features import graph_arrays
from respect_pass.policy.model import ModelConfig, PolicyNet, torch_scores
from respect_pass.policy.numpy_net import EdgeIndex, NumpyPolicy, blas_single_thread, parameter_shapes
from respect_pass.schedulers.respect import respect_schedule
from tflite_io import RespectPassError, read, validate_stage_map

ROOT = Path(__file__).resolve().parent.parent
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def shipped():
    """(torch PolicyNet, NumpyPolicy) of the shipped checkpoint."""
    return load_checkpoint(DEFAULT_CHECKPOINT)[0], load_policy()[0]


@pytest.fixture(scope="module")
def other_config(tmp_path_factory):
    """An untrained net of another shape, saved and loaded like a real one: the numpy net follows the config."""
    torch.manual_seed(3)
    model = PolicyNet(ModelConfig(hidden=16, layers=2)).eval()
    npz, _ = save_checkpoint(model, tmp_path_factory.mktemp("np") / "other")
    return model, load_policy(npz)[0]


def greedy_within(order: np.ndarray, scores: np.ndarray, ga, tol: float) -> bool:
    """Whether ``order`` is what greedy decoding of ``scores`` emits, ties within ``tol`` broken either way."""
    indeg = ga.indeg.copy()
    done = np.zeros(ga.n, dtype=bool)
    left = int((~ga.pinned).sum())
    for v in order:
        ready = (indeg == 0) & ~done
        if left:
            ready &= ~ga.pinned
        if not ready[v] or scores[v] < scores[ready].max() - tol:
            return False
        done[v] = True
        left -= int(not ga.pinned[v])
        for w in ga.succs[v]:
            indeg[w] -= 1
    return bool(done.all())


def check_same_greedy(a: np.ndarray, b: np.ndarray, ga) -> None:
    """numpy (``a``) and torch (``b``) scores decode to the same greedy order, up to float32 near-ties."""
    oa, ob = greedy_order(a, ga), greedy_order(b, ga)
    gaps = np.diff(np.sort(b))
    if gaps.size == 0 or gaps.min() > 1e-4:  # no near-tie: exactly the same order
        assert np.array_equal(oa, ob)
    else:
        assert greedy_within(oa, b, ga, 1e-4) and greedy_within(ob, a, ga, 1e-4)


@settings(max_examples=examples(60), deadline=None)
@given(st.one_of(random_dags(max_ops=30), placed_dags(max_ops=30)), st.integers(1, 8))
def test_numpy_forward_equals_torch_on_random_graphs(shipped, other_config, graph, k):
    ga = graph_arrays(graph, USB)
    for model, net in (shipped, other_config):
        want = torch_scores(model, ga, k)
        got = net.scores(ga, k)
        assert got.dtype == np.float64 and got.shape == (graph.num_ops,)
        np.testing.assert_allclose(got, want, **TOL)
        check_same_greedy(got, want, ga)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 8])
def test_numpy_scores_and_greedy_orders_equal_torch_on_real_and_large_graphs(shipped, k):
    model, net = shipped
    graphs = [read(BRANCHY), read(EMBEDDED)] + list(generate_suite(2, seed=2027, min_ops=150, max_ops=400))
    for graph in graphs:
        ga = graph_arrays(graph, USB)
        want, got = torch_scores(model, ga, k), net.scores(ga, k)
        np.testing.assert_allclose(got, want, **TOL)
        assert np.array_equal(greedy_order(got, ga), greedy_order(want, ga)), graph.name


def test_edge_index_sums_like_index_add():
    rng = np.random.default_rng(0)
    src, dst = np.array([0, 0, 1, 3, 2]), np.array([1, 2, 3, 4, 4])
    e = EdgeIndex.of(6, src, dst)  # op 5 has no edge at all
    rows = rng.normal(size=(5, 3)).astype(np.float32)
    want = np.zeros((6, 3), dtype=np.float32)
    np.add.at(want, dst, rows)
    np.testing.assert_allclose(e.into.sum(rows, 6), want, rtol=1e-6)
    assert e.inv_in[:, 0].tolist() == [1, 1, 1, 1, 0.5, 1] and e.inv_out[:, 0].tolist() == [0.5, 1, 1, 1, 1, 1]
    assert EdgeIndex.of(1, np.zeros(0, np.int64), np.zeros(0, np.int64)).into.sum(rows[:0], 1).shape == (1, 3)


def test_numpy_policy_refuses_mismatched_weights(tmp_path):
    config = ModelConfig(hidden=8, layers=1)
    weights = {k: np.zeros(s, np.float32) for k, s in parameter_shapes(config).items()}
    NumpyPolicy(config, weights)
    assert set(weights) == set(PolicyNet(config).state_dict())
    with pytest.raises(ValueError, match="missing"):
        NumpyPolicy(config, {k: v for k, v in weights.items() if k != "head.2.bias"})
    with pytest.raises(ValueError, match="shape"):
        NumpyPolicy(config, {**weights, "head.2.bias": np.zeros(2, np.float32)})
    # a checkpoint whose arrays do not fit its config is a RespectPassError, not a crash later
    npz, meta = save_checkpoint(PolicyNet(config), tmp_path / "bad")
    doc = json.loads(meta.read_text())
    doc["model"]["hidden"] = 16
    meta.write_text(json.dumps(doc))
    with pytest.raises(RespectPassError, match="cannot load weights"):
        load_policy(npz)


def test_blas_single_thread_restores_the_thread_count():
    from respect_pass.policy.numpy_net import _openblas_thread_controls

    before = [get() for _, get in _openblas_thread_controls()]
    with blas_single_thread():
        assert all(get() == 1 for _, get in _openblas_thread_controls())
    assert [get() for _, get in _openblas_thread_controls()] == before


def test_decode_serves_the_torch_names_training_imports():
    from respect_pass.policy import model

    assert decode.order_log_probs is model.order_log_probs and decode.decode_tensors is model.decode_tensors
    assert decode.DecodeTensors is model.DecodeTensors
    with pytest.raises(AttributeError):
        decode.no_such_name  # noqa: B018


def test_sampled_orders_are_seeded_and_deterministic():
    ga = graph_arrays(read(BRANCHY), USB)
    scores = load_policy()[0].scores(ga, 3)
    a = perturbed_orders(scores, ga, 4, np.random.default_rng(7))
    b = perturbed_orders(scores, ga, 4, np.random.default_rng(7))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    s1 = sample_orders(scores, ga, 5, np.random.default_rng(7))
    assert np.array_equal(s1, sample_orders(scores, ga, 5, np.random.default_rng(7)))


@pytest.mark.parametrize("k", [2, 3, 4, 6])
@pytest.mark.parametrize("samples", [0, 8])
def test_respect_plans_with_the_network_forced_are_valid_and_recost_equal(k, samples):
    """The branchy model runs the network whatever the shortcut; MobileNet only with the shortcut off."""
    for path, shortcut in ((BRANCHY, True), (BRANCHY, False), (EMBEDDED, False)):
        graph = read(path)
        plan = respect_schedule(graph, k, USB, samples=samples, seed=1, one_order_shortcut=shortcut)
        assert validate_stage_map(graph, plan.stages, k) == plan.stages
        stats = dict(plan.stats)
        assert stats["best_order"] != "unique" and stats["policy_ms"] > 0
        period, latency = map_period_s(graph_arrays(graph, USB), np.asarray(plan.stages), k)
        assert stats["bottleneck_ms"] == pytest.approx(period * 1e3, rel=1e-9)
        assert stats["latency_ms"] == pytest.approx(latency * 1e3, rel=1e-9)
        assert (stats["bottleneck_ms"], stats["latency_ms"]) == pytest.approx(
            latency_key(graph, plan.stages, k, USB), rel=1e-9
        )
        again = respect_schedule(graph, k, USB, samples=samples, seed=1, one_order_shortcut=shortcut)
        assert again.stages == plan.stages  # deterministic for a seed
    assert not has_unique_order(read(BRANCHY)) and has_unique_order(read(EMBEDDED))


NO_TORCH = textwrap.dedent("""
    import importlib.abc, sys, tempfile

    class NoTorch(importlib.abc.MetaPathFinder):
        tried = []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "ortools"):
                self.tried.append(name)
                raise ImportError(name + " is blocked: not on the default path")
            return None

    sys.meta_path.insert(0, NoTorch())
    import respect_pass.cli, respect_pass.run_pipeline
    from respect_pass.schedulers import get_scheduler
    from respect_pass.schedulers.respect import respect_schedule
    from hardware import USB
    from tflite_io import read

    for model in sys.argv[1:]:
        with tempfile.TemporaryDirectory() as out:
            assert respect_pass.cli.main([model, "-n", "4", "-o", out]) == 0
            assert respect_pass.run_pipeline.main([out, "--tpus", "4", "--count", "5"]) == 0
        assert respect_pass.cli.main(["inspect", model]) == 0
        graph = read(model)
        plan = get_scheduler("respect")(graph, 3, USB)
        forced = respect_schedule(graph, 3, USB, one_order_shortcut=False)
        assert forced.stats["policy_ms"] > 0, forced.stats
    assert not NoTorch.tried and "torch" not in sys.modules and "ortools" not in sys.modules, NoTorch.tried
    print("NO-TORCH-OK")
""")


def test_inference_path_never_imports_torch_or_ortools():
    """CLI partition (default scheduler), inspect, run_pipeline and the forced network, with torch and OR-Tools
    blocked (OR-Tools costs ~0.5 s to import: only ``exact`` and ``respect+exact`` load it)."""
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(EMBEDDED), str(BRANCHY)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert r.returncode == 0 and "NO-TORCH-OK" in r.stdout, r.stderr[-3000:]


def test_importing_the_cli_and_schedulers_loads_no_torch_or_ortools():
    code = (
        "import sys, respect_pass.cli, respect_pass.run_pipeline, respect_pass.schedulers.respect, "
        "respect_pass.policy.checkpoint, respect_pass.policy.decode; "
        "from respect_pass.schedulers import get_scheduler; get_scheduler('respect'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ortools')))"
    )
    r = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[]"
    imported = [line.rsplit("|", 1)[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")]
    assert "numpy" in imported and not [m for m in imported if m == "torch" or m.startswith("torch.")]
