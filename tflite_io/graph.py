"""The OpGraph IR: one immutable value per model (subgraph 0), or per synthetic graph.

Nodes are operators in execution order (a topological order); edges are
activation tensors produced by one op and read by another. Constants (weights,
biases) are not edges: they are folded into each op's ``param_bytes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

__all__ = ["Quantization", "TensorInfo", "Op", "Edge", "OpGraph", "distinct_constants"]


@dataclass(frozen=True)
class Quantization:
    """Affine quantization parameters of a tensor (per-tensor or per-axis)."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the model.

    ``buffer`` identifies the constant data (tensors sharing a buffer share
    their bytes); it is -1 for activations.
    """

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    buffer: int = -1
    quantization: Quantization | None = None

    @property
    def is_constant(self) -> bool:
        return self.buffer >= 0

    @property
    def num_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def distinct_constants(tensors: Sequence[TensorInfo], ids: Iterable[int]) -> dict[int, TensorInfo]:
    """Constant tensors among ``ids`` (-1 skipped), one per buffer: buffer -> first tensor reading it."""
    out: dict[int, TensorInfo] = {}
    for t in ids:
        if t >= 0 and tensors[t].is_constant:
            out.setdefault(tensors[t].buffer, tensors[t])
    return out


@dataclass(frozen=True)
class Op:
    """One operator. ``inputs``/``outputs`` are tensor indices (-1 = omitted optional input).

    ``op_type`` is the builtin operator name (``CUSTOM`` for custom operators,
    whose name is ``custom_code``).
    """

    index: int
    op_type: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    param_bytes: int
    macs: int
    custom_code: str = ""

    @property
    def label(self) -> str:
        """``op_type``, or ``CUSTOM(name)`` for a custom operator."""
        return f"CUSTOM({self.custom_code})" if self.op_type == "CUSTOM" else self.op_type


@dataclass(frozen=True)
class Edge:
    """Activation tensor ``tensor`` (``nbytes`` bytes) produced by op ``src`` and read by op ``dst``."""

    src: int
    dst: int
    tensor: int
    nbytes: int


@dataclass(frozen=True)
class OpGraph:
    """Immutable operator graph. ``ops[i].index == i`` and the op order is topological.

    ``host_ops`` are the ops that run on the host CPU rather than the Edge TPU
    (set by ``hardware.placement``; empty for a graph nobody placed). Host ops
    ahead of every TPU op go with the first pipeline stage, those after a TPU
    op (the CPU tail) with the last (:attr:`first_stage_ops`,
    :attr:`last_stage_ops`), as in Google's own pipelined SSD segments.
    """

    name: str
    ops: tuple[Op, ...]
    tensors: tuple[TensorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    host_ops: frozenset[int] = frozenset()
    #: (host op, seconds) pairs: host ops' times measured on the planning machine (``hardware.host_time``),
    #: sorted by op; a host op not listed is costed by the device model's table
    host_times: tuple[tuple[int, float], ...] = ()
    edges: tuple[Edge, ...] = field(init=False)

    def __post_init__(self) -> None:
        bad = sorted(v for v in self.host_ops if not 0 <= v < len(self.ops))
        if bad:
            raise ValueError(f"host ops {bad} are not op indices of a {len(self.ops)}-op graph")
        bad_times = [(v, t) for v, t in self.host_times if v not in self.host_ops or not 0 < t < float("inf")]
        if bad_times or list(self.host_times) != sorted(dict(self.host_times).items()):
            raise ValueError(
                "host_times must be sorted (host op, positive seconds) pairs, one per op; "
                f"bad: {bad_times or self.host_times}"
            )
        for i, op in enumerate(self.ops):
            if op.index != i:
                raise ValueError(f"op at position {i} has index {op.index}")
        producer: dict[int, int] = {}
        for op in self.ops:
            for t in op.outputs:
                producer[t] = op.index
        edges = []
        for op in self.ops:
            seen: set[int] = set()
            for t in op.inputs:
                if t < 0 or t in seen or t not in producer:
                    continue
                seen.add(t)
                src = producer[t]
                if src >= op.index:
                    raise ValueError(f"op {op.index} reads tensor {t} produced by later op {src}")
                edges.append(Edge(src, op.index, t, self.tensors[t].nbytes))
        object.__setattr__(self, "edges", tuple(edges))

    @property
    def num_ops(self) -> int:
        return len(self.ops)

    @cached_property
    def host_seconds(self) -> dict[int, float]:
        """Host op -> its measured time in seconds (:attr:`host_times` as a dict)."""
        return dict(self.host_times)

    @cached_property
    def producer(self) -> dict[int, int]:
        """Tensor index -> index of the op producing it (activations only)."""
        return {t: op.index for op in self.ops for t in op.outputs}

    @cached_property
    def consumers(self) -> dict[int, tuple[int, ...]]:
        """Tensor index -> ops reading it, in execution order, each op once."""
        out: dict[int, list[int]] = {}
        for op in self.ops:
            for t in dict.fromkeys(op.inputs):
                if t >= 0:
                    out.setdefault(t, []).append(op.index)
        return {t: tuple(v) for t, v in out.items()}

    @cached_property
    def preds(self) -> tuple[tuple[int, ...], ...]:
        """Predecessor ops of each op (distinct, sorted)."""
        p: list[set[int]] = [set() for _ in self.ops]
        for e in self.edges:
            p[e.dst].add(e.src)
        return tuple(tuple(sorted(s)) for s in p)

    @cached_property
    def succs(self) -> tuple[tuple[int, ...], ...]:
        """Successor ops of each op (distinct, sorted)."""
        s: list[set[int]] = [set() for _ in self.ops]
        for e in self.edges:
            s[e.src].add(e.dst)
        return tuple(tuple(sorted(x)) for x in s)

    @cached_property
    def output_ops(self) -> frozenset[int]:
        """Ops that produce a model output (pinned to the last pipeline stage)."""
        return frozenset(self.producer[t] for t in self.outputs if t in self.producer)

    @cached_property
    def _host_after_tpu(self) -> frozenset[int]:
        """Host ops with an Edge TPU op among their ancestors."""
        after = [False] * self.num_ops
        for v in range(self.num_ops):
            after[v] = any(after[u] or u not in self.host_ops for u in self.preds[v])
        return frozenset(v for v in self.host_ops if after[v])

    @cached_property
    def first_stage_ops(self) -> frozenset[int]:
        """Ops pinned to the first pipeline stage: host ops ahead of every Edge TPU op (no TPU ancestor)
        that do not produce a model output (those go last)."""
        return self.host_ops - self._host_after_tpu - self.output_ops

    @cached_property
    def last_stage_ops(self) -> frozenset[int]:
        """Ops pinned to the last pipeline stage: model-output producers and host ops after Edge TPU ops."""
        return self.output_ops | self._host_after_tpu

    @property
    def tpu_ops(self) -> tuple[int, ...]:
        """Ops that run on the Edge TPU, in execution order."""
        return tuple(i for i in range(self.num_ops) if i not in self.host_ops)

    @cached_property
    def activation_tensors(self) -> frozenset[int]:
        """Tensors that flow at run time: model inputs and op outputs."""
        return frozenset(self.inputs) | frozenset(self.producer)

    @property
    def total_param_bytes(self) -> int:
        """Bytes of all distinct constant buffers read by any op."""
        return self.param_bytes_of(range(self.num_ops))

    @property
    def total_param_elements(self) -> int:
        """Number of parameter values (weights + biases) over distinct constant buffers."""
        reads = (t for op in self.ops for t in op.inputs)
        return sum(t.num_elements for t in distinct_constants(self.tensors, reads).values())

    @property
    def total_macs(self) -> int:
        return sum(op.macs for op in self.ops)

    def param_bytes_of(self, ops) -> int:
        """Bytes of the distinct constant buffers that the op set ``ops`` reads.

        A constant shared by several ops counts once per set (once per segment).
        """
        reads = (t for i in ops for t in self.ops[i].inputs)
        return sum(t.nbytes for t in distinct_constants(self.tensors, reads).values())
