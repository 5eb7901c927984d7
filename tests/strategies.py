"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from hypothesis import strategies as st

from respect_pass.orders import random_stage_map
from tflite_io import Op, OpGraph, TensorInfo

BRANCHY = Path(__file__).resolve().parent / "data" / "tiny_inception_int8.tflite"
#: ``HYPOTHESIS_PROFILE=dev`` (``make test-fast``): a tenth of the examples, at least 3
DEV = os.environ.get("HYPOTHESIS_PROFILE") == "dev"


def examples(n: int) -> int:
    """``n`` hypothesis examples in the full suite, a tenth (at least 3) in the fast tier."""
    return max(3, n // 10) if DEV else n


@st.composite
def monotone_maps(draw, graph: OpGraph, min_stages: int = 2, max_stages: int = 6):
    """(K, stage map) pairs for ``graph``: any valid map, usually not contiguous on branchy graphs."""
    k = draw(st.integers(min_stages, max_stages))
    rng = draw(st.randoms(use_true_random=False))  # shrinkable, unlike a drawn seed
    m = random_stage_map(graph, k, rng)
    assert m is not None, f"no {k}-split of {graph.name}"
    return k, m


@st.composite
def random_dags(draw, min_ops: int = 3, max_ops: int = 14) -> OpGraph:
    """Small DNN-like DAGs: op 0 reads the model input, op i reads 1-3 earlier ops' outputs;
    every op nobody reads produces a model output. Parameter sizes span the 8 MiB cache."""
    n = draw(st.integers(min_ops, max_ops))
    tensors = [TensorInfo(0, "input", "int8", (64,), 64)]
    ops = []
    for i in range(n):
        preds = [0] if i == 0 else sorted(set(draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3))))
        act = draw(st.sampled_from([64, 4096, 65536, 2**20]))
        params = draw(st.sampled_from([0, 1000, 300_000, 3_000_000, 9_000_000]))
        out = len(tensors)
        tensors.append(TensorInfo(out, f"t{i}", "int8", (act,), act))
        inputs = [0] if i == 0 else [ops[p].outputs[0] for p in preds]
        if params:
            w = len(tensors)
            tensors.append(TensorInfo(w, f"w{i}", "int8", (params,), params, buffer=w))
            inputs.append(w)
        macs = draw(st.integers(0, 10**9))
        ops.append(Op(i, "CONV_2D" if params else "ADD", tuple(inputs), (out,), params, macs))
    read = {t for op in ops for t in op.inputs}
    outputs = tuple(op.outputs[0] for op in ops if op.outputs[0] not in read)
    return OpGraph(f"dag{n}", tuple(ops), tuple(tensors), (0,), outputs)


@st.composite
def placed_dags(draw, min_ops: int = 3, max_ops: int = 14) -> OpGraph:
    """:func:`random_dags` with host (CPU) ops as edgetpu_compiler leaves them: optionally op 0 (a head
    before the first TPU op) and every op from some point on (the tail after the first unmapped op)."""
    g = draw(random_dags(min_ops, max_ops))
    head = draw(st.integers(0, 1))
    tail = draw(st.integers(head + 1, g.num_ops))
    return dataclasses.replace(g, host_ops=frozenset(range(head)) | frozenset(range(tail, g.num_ops)))


def relabel(graph: OpGraph, order) -> OpGraph:
    """The same graph with op ``order[i]`` as op i, so that its execution order is ``order``: the device model
    costs a range of an order as a segment whose ops run in that sequence (its caching rule walks them so)."""
    pos = {v: i for i, v in enumerate(order)}
    ops = tuple(dataclasses.replace(graph.ops[v], index=i) for i, v in enumerate(order))
    return OpGraph(graph.name, ops, graph.tensors, graph.inputs, graph.outputs, frozenset(pos[v] for v in graph.host_ops))
