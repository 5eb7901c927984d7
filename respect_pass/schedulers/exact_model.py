"""The CP-SAT model of the ``exact`` scheduler: variables, constraints, objectives, hints.

Downset encoding (DESIGN.md): Booleans ``y[v][k] = [stage(v) <= k]`` for k < K-1
(``y[v][K-1] = 1``), ``y[v][k] <= y[v][k+1]``, ``y[u][k] >= y[v][k]`` per edge u->v,
membership ``x[v][k] = y[v][k] - y[v][k-1]``; every stage non-empty, model-output
producers in the last stage, every model input read in stage 0. ``y`` is a constant
where :func:`stage_ranges` fixes it. Stage times follow :func:`hardware.stage_cost`
term by term where it is linear: per-op time (:func:`hardware.op_seconds`), ``t_invoke``,
and the bytes of distinct tensors entering (``in[t][k] >= x[c][k] +
y[u][k-1] - 1``, reader c, producer u; model inputs always enter stage 0 and enter
k > 0 iff read there) and leaving (``out[t][k] >= x[u][k] - y[c][k]``; the last
stage's outputs are the model outputs). Indicators have lower bounds only: they can
only raise a stage's time, so at an optimum they are exact. Streaming is not linear
(whole layers are cached in execution order until a usable cache that shrinks with the
stage's host-link bytes is full; a conv re-streams per spatial tile), so it is relaxed
to a lower bound: at least ``P_k - cache + share * io_k`` bytes (``P_k`` the padded
parameter bytes, a buffer once per stage: ``z[b][k] >= x[v][k]`` per reader v), each
streamed once. The shared host link adds ``B >= sum_k (io_k + excess_k) / shared`` (activations and
at least the streamed bytes), the host ``B >=`` its host ops' time over its cores. The relaxed
optimum is therefore a valid lower bound of the true one; :func:`exact_schedule`
re-costs every plan with the device model and claims optimality only when the plan
meets that bound.

Integers: one time unit is ``1 / (io_bytes_per_s * M)`` s, M the largest power of two
<= 2**20 keeping every sum of stage times below 2**53, so activation bytes (and
streamed bytes when both bandwidths are equal, as in the presets) cost exactly M
units each; per-op compute and ``t_invoke`` are rounded to the unit (2.1 fs on USB,
relative error < 1e-8 per stage). Latency: minimum bottleneck B*, then minimum sum
of stage times with ``B <= B* (1 + 1e-9)`` (the tolerance of :mod:`respect_pass.oracle`).
Memory: ``p * P_max + q * crossings`` with ``alpha = p / q`` exactly when that stays
below 2**53 (every dyadic alpha like the default 2**-20), else q the largest power of
two <= 2**40 that does and ``p = round(alpha * q)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from functools import partial

from ortools.sat.python import cp_model

from hardware import EdgeTpuSpec, op_seconds
from hardware.cost import device_param_bytes, link_bytes, stream_tiles
from hardware.terms import integer_terms
from tflite_io import OpGraph, SegmentInterface, segment_interfaces
from tflite_io.graph import distinct_constants

from ..objectives import crossing_count

__all__ = ["ExactModel", "stage_ranges"]

_MAX_UNITS = 2**53


# Values of the model's auxiliary variables for a given stage map ``s`` (for hints and checks).
def _at_most(v: int, k: int, s: Sequence[int]) -> int:
    return int(s[v] <= k)


def _any_at(rs: tuple[int, ...], k: int, s: Sequence[int]) -> int:
    return int(any(s[c] == k for c in rs))


def _enters_from_before(u: int, rs: tuple[int, ...], k: int, s: Sequence[int]) -> int:
    return int(s[u] < k and any(s[c] == k for c in rs))


def _leaves_to_later(u: int, rs: tuple[int, ...], k: int, s: Sequence[int]) -> int:
    return int(s[u] == k and any(s[c] > k for c in rs))


def _crosses_cut(u: int, rs: tuple[int, ...], k: int, s: Sequence[int]) -> int:
    return int(s[u] <= k < max(s[r] for r in rs))


def _flip(f: Callable[[Sequence[int], int], int], k: int, s: Sequence[int]) -> int:
    return f(s, k)


def stage_ranges(graph: OpGraph, num_stages: int) -> tuple[list[int], list[int]]:
    """Per op, the lowest and highest stage of any valid map (lo > hi for some op: no valid map).

    Model-output producers and their descendants sit in the last stage, the only reader of a
    model input and its ancestors in stage 0. Op v in stage k needs k ops for stages 0..k-1 that
    are neither its descendants nor pinned last, and K-1-k for the stages after it that are not
    its ancestors. Bounds then propagate along edges.
    """
    n, last = graph.num_ops, num_stages - 1
    desc, anc = [0] * n, [0] * n
    for v in reversed(range(n)):
        for w in graph.succs[v]:
            desc[v] |= desc[w] | (1 << w)
    for v in range(n):
        for u in graph.preds[v]:
            anc[v] |= anc[u] | (1 << u)
    pinned, first, full = 0, 0, (1 << n) - 1
    for v in graph.last_stage_ops:
        pinned |= (1 << v) | desc[v]
    for readers in [graph.consumers.get(t, ()) for t in graph.inputs] + [(v,) for v in graph.first_stage_ops]:
        if len(readers) == 1:
            first |= (1 << readers[0]) | anc[readers[0]]
    lo, hi = [0] * n, [last] * n
    for v in range(n):
        bit = 1 << v
        hi[v] = min(0 if first & bit else last, (full & ~desc[v] & ~bit & ~pinned).bit_count())
        lo[v] = max(last if pinned & bit else 0, last - (full & ~anc[v] & ~bit & ~first).bit_count())
    for v in range(n):
        lo[v] = max([lo[v]] + [lo[u] for u in graph.preds[v]])
    for v in reversed(range(n)):
        hi[v] = min([hi[v]] + [hi[w] for w in graph.succs[v]])
    return lo, hi


class ExactModel:
    """The CP-SAT model of one (graph, K): y, indicators and objectives. Every variable is
    recorded in ``defs`` with its value as a function of a stage map, for complete hints."""

    def __init__(self, graph: OpGraph, num_stages: int, spec: EdgeTpuSpec, objective: str, alpha: float) -> None:
        g, K, n = graph, num_stages, graph.num_ops
        self.graph, self.K, self.spec = g, K, spec
        m = self.m = cp_model.CpModel()
        self.defs: list[tuple[cp_model.IntVar, Callable[[Sequence[int]], int]]] = []
        self.lo, self.hi = lo, hi = stage_ranges(g, K)
        if any(a > b for a, b in zip(lo, hi)):
            m.add(0 >= 1)  # some op has no possible stage: infeasible
        self.y: list[list] = [
            [int(k >= hi[v]) if k < lo[v] or k >= hi[v] else m.new_bool_var(f"y{v}_{k}") for k in range(K - 1)] + [1]
            for v in range(n)
        ]
        for v, k in ((v, k) for v in range(n) for k in range(K - 1) if not isinstance(self.y[v][k], int)):
            self.defs.append((self.y[v][k], partial(_at_most, v, k)))
            if not isinstance(self.y[v][k + 1], int):
                m.add(self.y[v][k] <= self.y[v][k + 1])
        for e, k in ((e, k) for e in g.edges for k in range(K - 1)):
            if not (isinstance(self.y[e.src][k], int) and isinstance(self.y[e.dst][k], int)):
                m.add(self.y[e.src][k] >= self.y[e.dst][k])
        for k in range(K):
            m.add(sum(self.x(v, k) for v in range(n)) >= 1)
        for t in g.inputs:
            m.add(sum(self.x(r, 0) for r in g.consumers.get(t, ())) >= 1)
        # buffer -> (bytes, reader ops): the device's padded layer bytes for latency,
        # raw bytes for RESPECT's memory objective
        self.buffers: dict[int, tuple[int, list[int]]] = {}
        for op in g.ops:
            sizes = (
                {b: t.nbytes for b, t in distinct_constants(g.tensors, op.inputs).items()}
                if objective == "memory"
                else device_param_bytes(g, op)
            )
            for b, nbytes in sizes.items():
                if nbytes:
                    self.buffers.setdefault(b, (nbytes, []))[1].append(op.index)
        self.total_params = sum(nbytes for nbytes, _ in self.buffers.values())
        if objective == "memory" or self.total_params > 0:
            self.params = [self._params(k) for k in range(K)]
        if objective == "memory":
            self._memory(alpha)
        else:
            self._latency()

    def x(self, v: int, k: int):
        """Stage membership [stage(v) == k] as a linear expression of y."""
        return self.y[v][k] - (self.y[v][k - 1] if k else 0)

    def _indicator(self, name: str, lower: list, value: Callable[[Sequence[int]], int]):
        """A Boolean >= every expression of ``lower`` (0 when none can be positive); ``value`` defines it."""
        lower = [e for e in lower if not isinstance(e, int) or e > 0]
        if not lower:
            return 0
        w = self.m.new_bool_var(name)
        for e in lower:
            self.m.add(w >= e)
        self.defs.append((w, value))
        return w

    def _params(self, k: int):
        """P_k: bytes of distinct constant buffers read by stage k (an indicator per shared buffer)."""
        terms = []
        for b, (nbytes, readers) in self.buffers.items():
            if len(readers) == 1:
                terms.append(nbytes * self.x(readers[0], k))
            else:
                terms.append(
                    nbytes
                    * self._indicator(f"z{b}_{k}", [self.x(v, k) for v in readers], partial(_any_at, tuple(readers), k))
                )
        return sum(terms)

    def _latency(self) -> None:
        """Stage times as the kernel's, with the streaming term relaxed to a linear lower bound: a stage
        streams at least ``P_k - usable_k = P_k - cache + share * io_k`` bytes (whole layers stream past that),
        each at least once. The shared host link adds ``B >= sum_k io_k / shared``."""
        g, K, spec, m, total_params = self.graph, self.K, self.spec, self.m, self.total_params
        act = sum(g.tensors[t].nbytes for t in g.activation_tensors | set(g.outputs))
        max_tiles = max((stream_tiles(g, op, spec) for op in g.ops), default=1)
        op_s = op_seconds(g, spec)
        host_s = float(sum(op_s[v] for v in sorted(g.host_ops)))
        units = integer_terms(spec, op_s, K, total_params, max_tiles, act, host_s)
        self.host_floor = units.host_floor
        self.unit_s, self.io_c, self.stream_c, self.link_c = units.unit_s, units.link, units.stream, units.shared_link
        self.share, self.invoke, self.op_c, self.cache = units.share, units.invoke, list(units.op), units.cache
        bound = units.horizon
        self.times = []
        excesses = []
        io = [self._io_bytes(k) for k in range(K)]
        for k in range(K):
            expr = self.invoke + sum(c * self.x(v, k) for v, c in enumerate(self.op_c)) + self.io_c * io[k]
            if total_params > 0:
                q, sq = self.share.denominator, self.share.numerator
                excess = m.new_int_var(0, total_params, f"excess{k}")
                m.add(q * excess >= q * self.params[k] - q * self.cache + sq * io[k])
                self.defs.append((excess, partial(_flip, self._excess, k)))
                expr += self.stream_c * excess
                excesses.append(excess)
            self.times.append(expr)
        # Redundant bound: the stage of op v costs at least its invoke and compute.
        lower = max(self.invoke + self.op_c[v] for v in range(g.num_ops))
        self.bottleneck = m.new_int_var(min(max(lower, self.host_floor), bound), bound, "B")
        self.defs.append((self.bottleneck, lambda s: self.scaled_period(s)))
        for expr in self.times:
            m.add(expr <= self.bottleneck)
        if self.link_c:  # the shared link carries activations and streamed parameters (at least the excess)
            m.add(self.link_c * (sum(io) + sum(excesses)) <= self.bottleneck)
        self.total = sum(self.times)

    @property
    def rounding(self) -> float:
        """The largest relative error the rounding of the per-byte coefficients to whole units gives a stage
        time (half a unit per byte over a rounded coefficient); the activation link's is exact."""
        return max((0.5 / c for c in (self.stream_c, self.link_c) if c > 0), default=0.0)

    def _stage_io(self, stages: Sequence[int], k: int) -> int:
        return self._seg_io(segment_interfaces(self.graph, stages, self.K)[k])

    def _seg_io(self, seg: SegmentInterface) -> int:
        """Host-link bytes of a segment, as :func:`hardware.stage_cost` counts them."""
        return sum(link_bytes(self.graph, t, True) for t in seg.inputs) + sum(
            link_bytes(self.graph, t, False) for t in seg.outputs
        )

    def _excess(self, stages: Sequence[int], k: int) -> int:
        """The relaxation's streamed bytes of stage k: ``max(0, ceil(P_k - cache + share * io_k))``."""
        q, sq = self.share.denominator, self.share.numerator
        need = q * self._stage_params(stages, k) - q * self.cache + sq * self._stage_io(stages, k)
        return max(0, -(-need // q))

    def _stage_params(self, stages: Sequence[int], k: int) -> int:
        return sum(nbytes for nbytes, readers in self.buffers.values() if any(stages[v] == k for v in readers))

    def _io_bytes(self, k: int):
        """In_k + Out_k in bytes, as a linear expression of indicators (constants for the model's I/O)."""
        g, K, y, x, inputs = self.graph, self.K, self.y, self.x, set(self.graph.inputs)
        terms = [
            sum(link_bytes(g, t, True) for t in g.inputs) if k == 0 else 0,
            sum(link_bytes(g, t, False) for t in g.outputs) if k == K - 1 else 0,
        ]
        for t, rs in g.consumers.items():
            nbytes, u = link_bytes(g, t, True), g.producer.get(t)
            if t in inputs:  # always enters stage 0 (a pipeline rule); enters k > 0 iff read there
                if k > 0:
                    terms.append(
                        nbytes * self._indicator(f"in{t}_{k}", [x(c, k) for c in rs], partial(_any_at, tuple(rs), k))
                    )
                continue
            if u is None:
                continue
            if k > 0:
                terms.append(
                    nbytes
                    * self._indicator(
                        f"in{t}_{k}", [x(c, k) + y[u][k - 1] - 1 for c in rs], partial(_enters_from_before, u, tuple(rs), k)
                    )
                )
            if k < K - 1:
                terms.append(
                    link_bytes(g, t, False)
                    * self._indicator(
                        f"out{t}_{k}", [x(u, k) - y[c][k] for c in rs], partial(_leaves_to_later, u, tuple(rs), k)
                    )
                )
        return sum(terms)

    def _memory(self, alpha: float) -> None:
        g, K, m, y = self.graph, self.K, self.m, self.y
        total = self.total_params
        most = (K - 1) * len(g.consumers)  # crossings
        frac = Fraction(alpha)
        if frac.numerator * total + frac.denominator * most > _MAX_UNITS:
            q = 2**40
            while q > 1 and alpha * q * total + q * most > _MAX_UNITS:
                q //= 2
            frac = Fraction(round(alpha * q), q)
        self.alpha_pq = (frac.numerator, frac.denominator)
        # Redundant bounds: some stage holds at least 1/K of the parameters, and every op's own.
        lower = max([-(-total // K)] + [g.param_bytes_of([v]) for v in range(g.num_ops)])
        pmax = m.new_int_var(min(lower, total), total, "Pmax")
        for p in self.params:
            m.add(pmax >= p)
        self.defs.append((pmax, lambda s: max(self._stage_params(s, k) for k in range(K))))
        crossings: list[list] = [[] for _ in range(K - 1)]
        for t, rs in ((t, rs) for t, rs in g.consumers.items() if t in g.producer):
            u = g.producer[t]
            for k in range(K - 1):
                crossings[k].append(
                    self._indicator(f"cross{t}_{k}", [y[u][k] - y[r][k] for r in rs], partial(_crosses_cut, u, tuple(rs), k))
                )
        if all(self.hi[v] == 0 for v in range(g.num_ops) if not g.preds[v]):
            # Redundant: with every source op in stage 0, a path into stage k+1 crosses cut k.
            for cut in crossings:
                m.add(sum(cut) >= 1)
        self.memory = frac.numerator * pmax + frac.denominator * sum(sum(cut) for cut in crossings)

    def hint(self, stages: Sequence[int]) -> None:
        """Hint every variable with its value under a valid stage map."""
        self.m.clear_hints()
        for var, value in self.defs:
            self.m.add_hint(var, value(stages))

    def stages(self, solver: cp_model.CpSolver) -> tuple[int, ...]:
        """The stage map of the solver's solution: stage(v) = first k with y[v][k] = 1."""

        def one(y) -> bool:
            return bool(y) if isinstance(y, int) else solver.boolean_value(y)

        return tuple(next(k for k in range(self.K) if one(self.y[v][k])) for v in range(self.graph.num_ops))

    def scaled_times(self, stages: Sequence[int]) -> list[int]:
        """Integer stage times of a valid map, term by term as the encoding counts them at an optimum."""
        return [
            self.invoke
            + sum(self.op_c[v] for v in seg.ops)
            + self.io_c * self._seg_io(seg)
            + (self.stream_c * self._excess(stages, seg.index) if self.total_params > 0 else 0)
            for seg in segment_interfaces(self.graph, stages, self.K)
        ]

    def scaled_period(self, stages: Sequence[int]) -> int:
        """The encoding's bottleneck of a valid map: the slowest stage, the shared host link or the host."""
        link = 0
        if self.link_c:
            excess = sum(self._excess(stages, k) for k in range(self.K)) if self.total_params > 0 else 0
            link = self.link_c * (sum(self._stage_io(stages, k) for k in range(self.K)) + excess)
        return max(max(self.scaled_times(stages)), link, self.host_floor)

    def minimize(self, kind: str) -> None:
        """Set the objective: ``bottleneck``, ``total`` (latency) or ``memory``."""
        self.kind = kind
        self.m.minimize(getattr(self, kind))

    def value(self, stages: Sequence[int]) -> int:
        """The exact integer value of the current objective on a valid map."""
        if self.kind != "memory":
            return self.scaled_period(stages) if self.kind == "bottleneck" else sum(self.scaled_times(stages))
        p, q = self.alpha_pq
        pmax = max(self._stage_params(stages, k) for k in range(self.K))
        return p * pmax + q * crossing_count(self.graph, stages, self.K)
