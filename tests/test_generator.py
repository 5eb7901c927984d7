"""The synthetic graph generator: valid TFLite-like OpGraphs, deterministic, sized, structurally distinct families."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hardware import USB, stage_costs
from hardware.placement import op_support
from respect_pass.generator import FAMILIES, generate, generate_suite
from tflite_io import EDGETPU_CUSTOM_OP, OpGraph, contiguous_stage_map, validate_stage_map
from tflite_io.graph import distinct_constants
from tflite_io.macs import op_macs

SIZES = (20, 100, 400, 800)
CACHE = 7 * 2**20


def check_graph(g: OpGraph) -> None:
    """Everything a real int8 model's OpGraph satisfies (see the generator's module docstring)."""
    assert len(g.inputs) == 1 and 1 <= len(g.outputs) <= 2
    (model_in,) = g.inputs
    produced: set[int] = set()
    for op in g.ops:
        assert op_support(g, op) is None and op.op_type != EDGETPU_CUSTOM_OP  # every op maps to the Edge TPU
        assert len(op.outputs) == 1
        for t in op.inputs:
            assert t == -1 or t in produced or g.tensors[t].is_constant or (t == model_in and op.index == 0), (op, t)
        produced.update(op.outputs)
        distinct = distinct_constants(g.tensors, op.inputs)
        assert op.param_bytes == sum(t.nbytes for t in distinct.values()) == g.param_bytes_of([op.index])
        ins = [g.tensors[t].shape if t >= 0 else None for t in op.inputs]
        assert op.macs == op_macs(op.op_type, ins, [g.tensors[t].shape for t in op.outputs])
    assert g.ops[0].inputs[0] == model_in and g.consumers[model_in] == (0,)
    read = {t for op in g.ops for t in op.inputs}
    sinks = {op.outputs[0] for op in g.ops if op.outputs[0] not in read}
    assert sinks == set(g.outputs) and not read & set(g.outputs)
    buffers = [t.buffer for t in g.tensors if t.is_constant]
    assert len(buffers) == len(set(buffers)) and 0 not in buffers
    for t in g.tensors:
        size = {"int8": 1, "int32": 4}[t.dtype]
        assert t.nbytes == math.prod(t.shape) * size
        if not t.is_constant:
            assert t.dtype == "int8" and t.shape[0] == 1 and t.quantization is not None
    for e in g.edges:  # spatial size never grows along an edge, except through PAD and broadcasting MUL
        src, dst = g.tensors[e.tensor].shape, g.tensors[g.ops[e.dst].outputs[0]].shape
        broadcast = g.ops[e.dst].op_type == "MUL" and src[1:3] == (1, 1)
        if len(src) == 4 and len(dst) == 4 and g.ops[e.dst].op_type != "PAD" and not broadcast:
            assert dst[1] <= src[1]


def fanins(g: OpGraph) -> list[int]:
    return [len(p) for p in g.preds]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_and_size_builds_valid_graphs(family):
    for n in SIZES:
        for seed in range(3):
            g = generate(family, n, seed)
            assert g.num_ops == n
            check_graph(g)


@pytest.mark.parametrize("family", FAMILIES)
def test_resolution_shrinks_and_channels_grow_with_depth(family):
    g = generate(family, 400, 0)
    res = g.tensors[g.inputs[0]].shape[1]
    four_d = [g.tensors[op.outputs[0]].shape for op in g.ops if len(g.tensors[op.outputs[0]].shape) == 4]
    spatial = [s for s in four_d if s[1] > 1]
    assert spatial[-1][1] <= res / 16
    assert max(s[3] for s in spatial[len(spatial) // 2 :]) > 2 * spatial[0][3]


def test_deterministic_in_family_size_and_seed():
    for family in FAMILIES:
        a, b = generate(family, 150, 7), generate(family, 150, 7)
        assert a == b and a.ops == b.ops and a.tensors == b.tensors
        c = generate(family, 150, 8)
        assert c.ops != a.ops or c.tensors != a.tensors


def test_bad_arguments_are_value_errors_naming_the_value():
    with pytest.raises(ValueError, match="known: residual, inception"):
        generate("transformer", 100, 0)
    for n in (19, 801, 0, -5, 100.5, True):
        with pytest.raises(ValueError, match=str(n).replace(".", r"\.")):
            generate("residual", n, 0)
    with pytest.raises(ValueError):
        generate("residual", 100, -1)
    with pytest.raises(ValueError):
        generate_suite(-1, 0)
    with pytest.raises(ValueError):
        generate_suite(3, 0, min_ops=300, max_ops=200)
    with pytest.raises(ValueError, match="known"):
        generate_suite(3, 0, families=("residual", "nope"))


@pytest.mark.parametrize("family", FAMILIES)
def test_contiguous_splits_validate_and_cost(family):
    rng = np.random.default_rng(0)
    for n, seed in ((20, 1), (300, 2)):
        g = generate(family, n, seed)
        first_out = min(g.output_ops)
        for k in range(2, 9):
            cuts = np.sort(rng.choice(np.arange(1, first_out + 1), size=k - 1, replace=False))
            sizes = np.diff(np.concatenate([[0], cuts, [n]])).tolist()
            stages = contiguous_stage_map(sizes)
            assert validate_stage_map(g, stages, k) == stages
            costs = stage_costs(g, stages, k, USB)
            assert len(costs) == k and all(c.ms > 0 for c in costs)
            assert sum(c.param_bytes for c in costs) >= g.total_param_bytes


@pytest.mark.slow
def test_suite_mixes_families_and_spans_the_parameter_cache():
    suite = generate_suite(24, 3)
    assert len(suite) == 24 and suite == generate_suite(24, 3)
    assert {g.name.split("_")[0] for g in suite} == {f.split("_")[0] for f in FAMILIES}
    assert all(20 <= g.num_ops <= 800 for g in suite)
    mib = [g.total_param_bytes / 2**20 for g in suite]
    assert min(mib) < 7 < max(mib)
    assert sum(2 <= m <= 60 for m in mib) >= len(mib) // 2
    small = generate_suite(6, 0, min_ops=30, max_ops=40, families=("layered", "dense"))
    assert all(30 <= g.num_ops <= 40 for g in small)
    assert {g.name.split("_")[0] for g in small} == {"layered", "dense"}


@pytest.mark.slow
def test_parameter_totals_grow_with_size_and_span_the_cache():
    totals = {}
    for family in FAMILIES:
        small = [generate(family, 30, s).total_param_bytes for s in range(4)]
        large = [generate(family, 600, s).total_param_bytes for s in range(4)]
        assert np.median(large) > 1.5 * np.median(small), family
        totals[family] = small + large
    every = [t for ts in totals.values() for t in ts]
    assert min(every) < CACHE / 2 and max(every) > 4 * CACHE
    assert all(2**19 <= t <= 64 * 2**20 * 1.1 for t in every)


def test_families_differ_structurally():
    def graphs(family, n=300):
        return [generate(family, n, s) for s in range(4)]

    def types(g):
        return {op.op_type for op in g.ops}

    def mean_fanin(gs):
        return float(np.mean([np.mean(fanins(g)) for g in gs]))

    residual, nas = graphs("residual"), graphs("nas_cell")
    for g in residual:  # ADD skip connections, no concatenation
        assert "CONCATENATION" not in types(g)
        assert sum(op.op_type == "ADD" and len(g.preds[op.index]) == 2 for op in g.ops) >= 10
    for g in graphs("inception"):  # parallel branches joined by 3-4 way concatenations
        cat = [len(g.preds[op.index]) for op in g.ops if op.op_type == "CONCATENATION"]
        assert len(cat) >= 10 and max(cat) >= 3 and set(cat) <= {2, 3, 4}
    for g in graphs("dense"):  # each layer reads the concatenation of all earlier outputs: fan-in grows
        cat = [len(g.preds[op.index]) for op in g.ops if op.op_type == "CONCATENATION"]
        assert max(cat) >= 6
        assert any(cat[i] + 2 == cat[i + 1] + 1 == cat[i + 2] for i in range(len(cat) - 2))
    for g in graphs("squeeze_excite"):  # MEAN -> conv -> ... -> LOGISTIC -> MUL back into the main path
        gates = [
            op
            for op in g.ops
            if op.op_type == "MUL"
            and len(g.preds[op.index]) == 2
            and g.ops[max(g.preds[op.index])].op_type == "LOGISTIC"
            and g.tensors[g.ops[max(g.preds[op.index])].outputs[0]].shape[1:3] == (1, 1)
            and g.tensors[op.outputs[0]].shape[1] > 1
        ]
        assert len(gates) >= 5
        assert sum(op.op_type == "MEAN" for op in g.ops) >= len(gates)
    for g in nas:  # cells: pairwise ADDs of branches, one wide concatenation per cell
        cat = [len(g.preds[op.index]) for op in g.ops if op.op_type == "CONCATENATION"]
        assert max(cat) >= 5 and "DEPTHWISE_CONV_2D" in types(g)
    assert mean_fanin(nas) > mean_fanin(residual) + 0.15
    for g in graphs("layered"):  # every node but the first has 1-6 predecessors, several have more than 2
        f = fanins(g)
        assert f[0] == 0 and all(1 <= k <= 6 for k in f[1:])
        assert sum(k > 2 for k in f) >= 10
