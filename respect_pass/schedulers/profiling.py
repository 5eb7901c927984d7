"""The ``profiling`` scheduler: libcoral's ``partition_with_profiling``, with the simulator as the device.

A port of ``ProfilingBasedPartitioner`` and ``BisectPartition`` (google-coral/libcoral,
``coral/tools/partitioner/profiling_based_partitioner.cc``, ``partition_with_profiling.cc``):

* ops are put in libcoral's ``TopologicalSort`` order and a partition is a
  list of op counts, one contiguous run per segment; the last segment always
  holds every op from the first sink on;
* initial bounds are the fastest and slowest segment of the compiler's own
  parameter-count split (``edgetpu_compiler --num_segments``, the ``compiler`` scheduler);
* bisection on a target latency: for each target, a greedy search gives each
  segment the most ops whose measured latency is <= target, backtracking
  (shrinking by ``partition_search_step``) when later segments cannot be
  placed; the last segment takes the rest, and only its latency is compared
  with the target (``< target``: new upper bound; else the lower bound moves);
  it stops when the bounds are within ``diff_threshold_ns``;
* "compile and benchmark on the device" measures the whole candidate and
  caches every segment's latency under (start, number of ops); candidates
  that cannot run (here: that break a pipeline rule) are remembered as
  failures, like segments that fail to compile.

The device is the cost model (``hardware.stage_cost``), in integer nanoseconds like libcoral.

libcoral's tool does not always end with segments. ``scheduler_stats.libcoral_outcome`` says what it
would do (found by running its loops literally, :class:`ProfilingPartitioner` with ``libcoral=True``,
on the same simulated device) and ``libcoral_would_abort`` whether it exits on a CHECK; respect-pass
returns its corrected result in every case:

* K = 1: ``LOG(FATAL)`` "num_segments must be at least 2"; we return the whole model;
* ``edgetpu_compiler --num_segments=K`` aborts (the ``compiler`` scheduler's ``libcoral_would_abort``):
  CHECK "Can not compile initial partition"; we start from the compiler scheduler's corrected split;
* initial bounds equal: ``CHECK_GT(upper_bound, lower_bound)``; bounds within ``diff_threshold_ns``:
  libcoral exits 0 without writing any segment ("not run"); we return the compiler split in both;
* too few ops for K segments of ``partition_search_step`` ops (``CHECK_GT(num_ops[0], 0)`` in
  ``PartitionOnTargetLatency``, ``CHECK_GT(candidate_partition[segment_index], 0)`` in
  ``SearchPartition``): we search with the largest step <= partition_search_step that fits;
* ``SearchPartition`` resets the segments after the current one with
  ``for (i = partition_search_step + 1; i < K - 1; ++i)``: from K >= partition_search_step + 4 on it
  sets segments already placed to partition_search_step ops, and where they held another number the
  candidate no longer covers the model, which ``GetStrategyFromNumOps`` (or ``PartitionOnTargetLatency``)
  CHECK-fails on; we reset from the next segment, as intended;
* no target gave a partition: CHECK "Failed to find valid partition that meets the latency target";
  we return the compiler split (its slowest segment is the best latency known).

``scheduler_stats.result`` says whether the plan came from the search or is the compiler split.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hardware import EdgeTpuSpec, as_spec, stage_costs
from hardware.kernel import cost_arrays, map_stage_times, range_costs
from tflite_io import OpGraph, StageMapError

from ..orders import libcoral_topological_order, split_order
from ..plan import Plan, PlanStats
from .compiler import CompilerSplit, compiler_split, libcoral_strategy_check

__all__ = ["INT64_MAX", "LibcoralAbort", "ProfilingPartitioner", "bisect_partition", "profiling_schedule"]

log = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1

#: measure(num_ops) -> per-segment latency in ns, or, when the candidate cannot run,
#: the indices of the segments that failed.
Measure = Callable[[list[int]], "list[int] | set[int]"]


class LibcoralAbort(Exception):
    """A CHECK libcoral's partitioner fails (raised only by ``ProfilingPartitioner(libcoral=True)``)."""


class ProfilingPartitioner:
    """libcoral's ProfilingBasedPartitioner over ``num_ops_total`` ops in execution order.

    ``first_output_index`` is the position of the first op the last segment must hold (libcoral: the
    first op nobody consumes). With ``libcoral=True`` the loops are libcoral's to the letter, CHECKs
    included (they raise :class:`LibcoralAbort`), and ``strategy_check(num_ops)`` (the CHECKs of
    ``GetStrategyFromNumOps``, the failing one or None) runs before every device run; otherwise the
    corrected version runs (see the module doc).
    """

    def __init__(
        self,
        num_ops_total: int,
        first_output_index: int,
        num_segments: int,
        measure: Measure,
        *,
        libcoral: bool = False,
        strategy_check: Callable[[list[int]], str | None] | None = None,
    ) -> None:
        self.num_ops_total = num_ops_total
        self.first_output_index = first_output_index
        self.num_segments = num_segments
        self.measure = measure
        self.libcoral = libcoral
        self.strategy_check = strategy_check
        self.cache: dict[tuple[int, int], int] = {}
        self.failures: set[tuple[int, int]] = set()
        self.partition: list[int] = []
        self.measurements = 0
        self.overwrote_placed_segments = False  # libcoral's reset loop changed a segment already placed

    def _check(self, ok: bool, what: str) -> None:
        if not ok:
            raise LibcoralAbort(what)

    def usable_step(self, step: int) -> int | None:
        """The corrected version's search step: the largest <= ``step`` that leaves every segment an op
        (libcoral CHECK-fails instead), None when even one op per segment does not fit."""
        n, first, k = self.num_ops_total, self.first_output_index, self.num_segments
        # SearchPartition's first segment: n - (k-2)*step - max(n - first, step) must be > 0
        cap = min(step, (n - 1) // (k - 1), (first - 1) // (k - 2) if k > 2 else step)
        return cap if cap >= 1 and first >= 1 else None

    def analyze(self, num_ops: list[int], k: int) -> int:
        """``PartitionCompileAndAnalyze``: latency of segment k of the candidate, -1 if it cannot run."""
        starts = [0]
        for n in num_ops[:-1]:
            starts.append(starts[-1] + n)
        key = (starts[k], num_ops[k])
        if key in self.cache:
            return self.cache[key]
        if any((s, n) in self.failures for s, n in zip(starts, num_ops)):
            return -1
        if self.strategy_check is not None:
            failed = self.strategy_check(list(num_ops))
            self._check(failed is None, f"{failed} (GetStrategyFromNumOps on candidate {list(num_ops)})")
        self.measurements += 1
        result = self.measure(list(num_ops))
        if isinstance(result, set):
            self.failures.update((starts[i], num_ops[i]) for i in result)
            return -1
        for s, n, latency in zip(starts, num_ops, result):
            self.cache[(s, n)] = latency
        return result[k]

    def search(self, candidate: list[int], target: int, k: int, step: int) -> bool:
        """``SearchPartition``: greedy longest segment k meeting ``target``, backtracking on failure."""
        last = self.num_segments - 1
        if k == last:
            return True
        searchable = sum(candidate[k:])
        candidate[last] = max(self.num_ops_total - self.first_output_index, step)
        # libcoral: for (int i = partition_search_step + 1; i < candidate_partition.size() - 1; ++i)
        for i in range(step + 1 if self.libcoral else k + 1, last):
            if i < k and candidate[i] != step:
                self.overwrote_placed_segments = True
            candidate[i] = step
        candidate[k] = searchable - (last - 1 - k) * step - candidate[last]
        if self.libcoral:
            self._check(
                candidate[k] > 0,
                f"CHECK_GT(candidate_partition[{k}], 0) failed in SearchPartition: "
                f"{candidate[k]} ({searchable} ops left, the last segment needs {candidate[last]}, "
                f"partition_search_step {step})",
            )
            self._check(
                sum(candidate[k:]) == searchable,
                f"CHECK_EQ(sum of candidate_partition[{k}:], {searchable}) failed in SearchPartition",
            )
        elif candidate[k] <= 0:
            return False
        trial = list(candidate)
        while trial[k] > 0:
            latency = self.analyze(trial, k)
            if 0 < latency <= target and self.search(trial, target, k + 1, step):
                candidate[:] = trial
                return True
            delta = min(trial[k], step)
            trial[k] -= delta
            trial[k + 1] += delta
        return False

    def on_target(self, target: int, step: int) -> int:
        """``PartitionOnTargetLatency``: the last segment's latency, or INT64_MAX if no candidate fits."""
        if not self.libcoral:
            usable = self.usable_step(step)
            if usable is None:
                raise StageMapError(
                    f"profiling: {self.num_ops_total} ops, the first {self.first_output_index} before the last "
                    f"segment, are too few for {self.num_segments} segments",
                    self.num_segments,
                )
            step = usable
        num_ops = [step] * self.num_segments
        num_ops[0] = self.num_ops_total - (self.num_segments - 1) * step
        if self.libcoral:
            self._check(
                num_ops[0] > 0,
                f"CHECK_GT(num_ops[0], 0) failed in PartitionOnTargetLatency: "
                f"{self.num_ops_total} ops are too few for {self.num_segments} segments with "
                f"partition_search_step {step}",
            )
        if not self.search(num_ops, target, 0, step):
            log.debug("no partition meets target %d ns", target)
            return INT64_MAX
        if self.libcoral:
            self._check(
                sum(num_ops) == self.num_ops_total,
                f"CHECK_EQ(sum of num_ops, total_num_ops) failed in PartitionOnTargetLatency: "
                f"{sum(num_ops)} != {self.num_ops_total}",
            )
        last = self.analyze(num_ops, self.num_segments - 1)
        if last <= 0:
            if self.libcoral:
                raise LibcoralAbort(f"CHECK_GT(last_segment_latency, 0) failed in PartitionOnTargetLatency: {last}")
            return INT64_MAX
        self.partition = list(num_ops)
        return last


def bisect_partition(
    partitioner: ProfilingPartitioner, lower: int, upper: int, diff_threshold_ns: int, step: int
) -> tuple[list[int], int]:
    """``BisectPartition``'s loop: the best op counts found (empty if none) and the number of targets tried.

    (The callers deal with libcoral's ``CHECK_GT(upper_bound, lower_bound)`` and bounds already close.)
    """
    best: list[int] = []
    targets = 0
    if upper <= lower or abs(upper - lower) <= diff_threshold_ns:
        return best, targets
    while abs(upper - lower) > diff_threshold_ns:
        target = (lower + upper) // 2
        targets += 1
        last = partitioner.on_target(target, step)
        if last < target:
            best, upper = list(partitioner.partition), target
        else:
            if last < upper:
                best, upper = list(partitioner.partition), last
            lower = target
    return best, targets


def _simulated_device(graph: OpGraph, order: Sequence[int], spec: EdgeTpuSpec) -> Measure:
    """The "compile and benchmark" stand-in: cost-model segment times (ns) from the range cost matrices.

    A segment no pipeline can run (an op pinned last before the last segment, a
    first segment not reading every model input or missing an op pinned first) fails,
    as a segment that does not compile fails in libcoral.
    """
    ca = cost_arrays(graph, spec)
    rc = range_costs(ca, order)  # only for which ranges a pipeline can run
    positions = np.asarray(order, dtype=np.int64)

    def measure(num_ops: list[int]) -> list[int] | set[int]:
        starts = [sum(num_ops[:i]) for i in range(len(num_ops))]
        runnable = [rc.time[s, s + n] for s, n in zip(starts[:-1], num_ops[:-1])] + [rc.time_last[starts[-1]]]
        failed = {i for i, t in enumerate(runnable) if not math.isfinite(t)}
        if len(num_ops) > 1 and num_ops[0] < rc.min_first_end:
            failed.add(0)
        if failed:
            return failed
        stages = np.empty(len(positions), dtype=np.int64)  # the segments as written: ops in execution order
        stages[positions] = np.repeat(np.arange(len(num_ops)), num_ops)
        return [round(float(t) * 1e9) for t in map_stage_times(ca, stages, len(num_ops))]

    return measure


def _libcoral_outcome(
    graph: OpGraph,
    order: list[int],
    measure: Measure,
    bounds: tuple[int, int],
    num_stages: int,
    diff_threshold_ns: int,
    step: int,
    compiler_abort: str | None,
) -> tuple[str, list[int] | None]:
    """What ``partition_with_profiling`` does here: (outcome, the partition it writes, if any)."""
    if compiler_abort:
        return (
            f"CHECK failure: Can not compile initial partition (edgetpu_compiler --num_segments={num_stages}: "
            f"{compiler_abort})"
        ), None
    lower, upper = bounds
    if not upper > lower:
        return f"CHECK failure: CHECK_GT(upper_bound, lower_bound) ({upper} <= {lower} ns)", None
    if abs(upper - lower) <= diff_threshold_ns:
        return (
            "not run: the initial bounds are within diff_threshold_ns; partition_with_profiling "
            "exits 0 without writing segments"
        ), None
    first_sink = next(i for i, v in enumerate(order) if not graph.succs[v])
    literal = ProfilingPartitioner(
        graph.num_ops,
        first_sink,
        num_stages,
        measure,
        libcoral=True,
        strategy_check=lambda num_ops: libcoral_strategy_check(graph, order, num_ops),
    )
    try:
        best, _ = bisect_partition(literal, lower, upper, diff_threshold_ns, step)
    except LibcoralAbort as abort:
        why = (
            f" (SearchPartition's reset loop, which starts at partition_search_step + 1, overwrote segments "
            f"already placed: K={num_stages} >= partition_search_step + 4)"
            if literal.overwrote_placed_segments
            else ""
        )
        return f"CHECK failure: {abort}{why}", None
    if not best:
        return "CHECK failure: Failed to find valid partition that meets the latency target", None
    return "ok", best


@dataclass(frozen=True)
class _Bisection:
    """The corrected search: best op counts (empty if none), targets tried, device runs, step used (None: none fits)."""

    best: list[int]
    targets: int
    device_runs: int
    step: int | None


def _check_search(num_stages: int, diff_threshold_ns: int, partition_search_step: int) -> None:
    """Raise StageMapError where libcoral would CHECK-fail (step 0) or loop forever (0 ns)."""
    if partition_search_step < 1 or diff_threshold_ns < 1:
        raise StageMapError(
            f"profiling: partition_search_step and diff_threshold_ns must be >= 1, got "
            f"{partition_search_step} and {diff_threshold_ns}",
            num_stages,
        )


def _whole_model_plan(baseline: CompilerSplit, started: float) -> Plan:
    """The K = 1 plan: the whole model, where libcoral stops with LOG(FATAL)."""
    return Plan(
        baseline.stages(),
        1,
        "profiling",
        solve_seconds=time.perf_counter() - started,
        stats=PlanStats(
            libcoral_outcome="fatal: num_segments must be at least 2", libcoral_would_abort=True, result="whole model"
        ),
    )


def _initial_bounds(
    graph: OpGraph, order: list[int], measure: Measure, baseline: CompilerSplit, num_stages: int, spec: EdgeTpuSpec
) -> tuple[int, int]:
    """(lower, upper) ns: the fastest and slowest segment of the compiler's split."""
    base = measure(list(baseline.num_ops)) if baseline.order == tuple(order) else set()
    if isinstance(base, set):  # not a split of libcoral's order (or not runnable there): the cost model directly
        base = [round(c.total_s * 1e9) for c in stage_costs(graph, baseline.stages(), num_stages, spec)]
    return min(base), max(base)


def _bisect(
    graph: OpGraph,
    order: list[int],
    measure: Measure,
    num_stages: int,
    bounds: tuple[int, int],
    diff_threshold_ns: int,
    partition_search_step: int,
) -> _Bisection:
    """The corrected ``BisectPartition`` between ``bounds`` (ns), with the largest step that fits."""
    # as libcoral, the last segment starts at the first sink at the latest; the device fails candidates
    # with an op pinned last before the last segment, and the search then grows the last segment
    first_sink = next(i for i, v in enumerate(order) if not graph.succs[v])
    partitioner = ProfilingPartitioner(graph.num_ops, first_sink, num_stages, measure)
    step = partitioner.usable_step(partition_search_step)
    best: list[int] = []
    targets = 0
    if step is not None:
        best, targets = bisect_partition(partitioner, bounds[0], bounds[1], diff_threshold_ns, step)
    return _Bisection(best, targets, partitioner.measurements, step)


def _fallback_reason(bounds: tuple[int, int], diff_threshold_ns: int, step: int | None) -> str:
    """Why the plan is the compiler split: the ``result`` stat where the search found nothing."""
    lower, upper = bounds
    if upper <= lower or upper - lower <= diff_threshold_ns:
        return "compiler split (the initial bounds are already within diff_threshold_ns)"
    if step is None:
        return "compiler split (fewer ops before the first sink than segments before the last)"
    return "compiler split (no target latency gave a partition)"


def _profiling_stats(
    search: _Bisection, outcome: str, libcoral_best: list[int] | None, result: str, partition_search_step: int
) -> PlanStats:
    """The plan's stats: search effort, what libcoral would do, where the plan came from."""
    stats: list[tuple[str, int | float | str]] = [
        ("targets", search.targets),
        ("device_runs", search.device_runs),
        ("libcoral_outcome", outcome),
        ("libcoral_would_abort", outcome.startswith(("CHECK", "fatal"))),
        ("result", result),
    ]
    if search.targets and search.step is not None and search.step != partition_search_step:
        stats.append(("partition_search_step_used", search.step))
    if libcoral_best is not None and libcoral_best != search.best:
        stats.append(("libcoral_partition", ",".join(map(str, libcoral_best))))
    return PlanStats(stats)


def profiling_schedule(
    graph: OpGraph,
    num_stages: int,
    cost: EdgeTpuSpec | None = None,
    *,
    diff_threshold_ns: int = 1_000_000,
    partition_search_step: int = 1,
    **options: object,
) -> Plan:
    """libcoral's profiling-based partition, with the cost model (``cost``, an EdgeTpuSpec) as the device."""
    started = time.perf_counter()
    spec = as_spec(cost)
    _check_search(num_stages, diff_threshold_ns, partition_search_step)
    baseline = compiler_split(graph, num_stages)
    if num_stages == 1:
        return _whole_model_plan(baseline, started)
    order = libcoral_topological_order(graph)
    measure = _simulated_device(graph, order, spec)
    bounds = _initial_bounds(graph, order, measure, baseline, num_stages, spec)
    outcome, libcoral_best = _libcoral_outcome(
        graph, order, measure, bounds, num_stages, diff_threshold_ns, partition_search_step, baseline.libcoral_abort
    )
    search = _bisect(graph, order, measure, num_stages, bounds, diff_threshold_ns, partition_search_step)
    log.info(
        "profiling: bounds %d..%d ns, %d targets, %d simulated compile+benchmark runs, best %s; libcoral: %s",
        *bounds,
        search.targets,
        search.device_runs,
        search.best or "none (compiler split)",
        outcome,
    )
    if search.best:
        stages = split_order(order, [sum(search.best[:i]) for i in range(1, num_stages)], graph.num_ops)
        result = "search"
    else:
        stages, result = baseline.stages(), _fallback_reason(bounds, diff_threshold_ns, search.step)
    stats = _profiling_stats(search, outcome, libcoral_best, result, partition_search_step)
    return Plan(stages, num_stages, "profiling", solve_seconds=time.perf_counter() - started, stats=stats)
