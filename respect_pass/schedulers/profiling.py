"""The ``profiling`` scheduler: libcoral's ``partition_with_profiling``, with the simulator as the device.

A line-by-line port of ``ProfilingBasedPartitioner`` and ``BisectPartition``
(google-coral/libcoral, ``coral/tools/partitioner/profiling_based_partitioner.cc``):

* ops are put in libcoral's ``TopologicalSort`` order and a partition is a
  list of op counts, one contiguous run per segment; the last segment always
  holds every op from the first sink on;
* initial bounds are the fastest and slowest segment of the compiler's own
  parameter-count split;
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

The device is the cost model (``hardware.stage_cost``), in integer
nanoseconds like libcoral. Where libcoral aborts (CHECK) this raises
:class:`StageMapError`; where it would write nothing (bounds already close,
or no partition found) the compiler's split is returned, as that is what a
libcoral user would be left with.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

from tflite_io import OpGraph, StageMapError

from hardware import USB, EdgeTpuSpec, stage_costs

from ..orders import libcoral_topological_order, split_order
from ..plan import Plan
from ..range_costs import range_costs
from .compiler import compiler_schedule

__all__ = ["ProfilingPartitioner", "bisect_partition", "profiling_schedule", "INT64_MAX"]

log = logging.getLogger(__name__)

INT64_MAX = 2**63 - 1

#: measure(num_ops) -> per-segment latency in ns, or, when the candidate cannot run,
#: the indices of the segments that failed.
Measure = Callable[[list[int]], "list[int] | set[int]"]


class ProfilingPartitioner:
    """libcoral's ProfilingBasedPartitioner over ``num_ops_total`` ops in execution order."""

    def __init__(self, num_ops_total: int, first_output_index: int, num_segments: int, measure: Measure) -> None:
        self.num_ops_total = num_ops_total
        self.first_output_index = first_output_index
        self.num_segments = num_segments
        self.measure = measure
        self.cache: dict[tuple[int, int], int] = {}
        self.failures: set[tuple[int, int]] = set()
        self.partition: list[int] = []
        self.measurements = 0

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
        for i in range(k + 1, last):  # libcoral's loop starts at step + 1; those entries already equal step
            candidate[i] = step
        candidate[k] = searchable - (last - 1 - k) * step - candidate[last]
        if candidate[k] <= 0:
            raise StageMapError(
                f"profiling: no room for segment {k} ({searchable} ops left, the last segment needs "
                f"{candidate[last]}, partition_search_step {step}); use fewer segments or a smaller step",
                self.num_segments)
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
        num_ops = [step] * self.num_segments
        num_ops[0] = self.num_ops_total - (self.num_segments - 1) * step
        if num_ops[0] <= 0:
            raise StageMapError(
                f"profiling: {self.num_ops_total} ops are too few for {self.num_segments} segments "
                f"with partition_search_step {step}", self.num_segments)
        if not self.search(num_ops, target, 0, step):
            log.debug("no partition meets target %d ns", target)
            return INT64_MAX
        last = self.analyze(num_ops, self.num_segments - 1)
        if last <= 0:
            raise StageMapError("profiling: the last segment of the partition found cannot run", self.num_segments)
        self.partition = list(num_ops)
        return last


def bisect_partition(partitioner: ProfilingPartitioner, lower: int, upper: int, diff_threshold_ns: int,
                     step: int) -> tuple[list[int], int]:
    """``BisectPartition``'s loop: the best op counts found (empty if none) and the number of targets tried."""
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

    A segment no pipeline can run (a model output before the last segment, a
    first segment not reading every model input) fails, as a segment that
    does not compile fails in libcoral.
    """
    rc = range_costs(graph, order, spec)

    def measure(num_ops: list[int]) -> list[int] | set[int]:
        starts = [sum(num_ops[:i]) for i in range(len(num_ops))]
        times = [rc.time[s, s + n] for s, n in zip(starts[:-1], num_ops[:-1])] + [rc.time_last[starts[-1]]]
        failed = {i for i, t in enumerate(times) if not math.isfinite(t)}
        if len(num_ops) > 1 and num_ops[0] < rc.min_first_end:
            failed.add(0)
        return failed if failed else [round(t * 1e9) for t in times]

    return measure


def profiling_schedule(graph: OpGraph, num_stages: int, cost: EdgeTpuSpec | None = None, *,
                       diff_threshold_ns: int = 1_000_000, partition_search_step: int = 1) -> Plan:
    """libcoral's profiling-based partition, with the cost model (``cost``, an EdgeTpuSpec) as the device."""
    t0 = time.perf_counter()
    spec = cost if isinstance(cost, EdgeTpuSpec) else USB
    if partition_search_step < 1 or diff_threshold_ns < 1:  # libcoral loops forever at 0
        raise StageMapError(f"profiling: partition_search_step and diff_threshold_ns must be >= 1, got "
                            f"{partition_search_step} and {diff_threshold_ns}", num_stages)
    baseline = compiler_schedule(graph, num_stages)
    if num_stages == 1:
        return Plan(baseline.stages, 1, "profiling", solve_seconds=time.perf_counter() - t0)
    order = libcoral_topological_order(graph)
    first_output = next((i for i, v in enumerate(order) if not graph.succs[v]), graph.num_ops - 1)
    measure = _simulated_device(graph, order, spec)
    base_costs = [round(c.total_s * 1e9) for c in stage_costs(graph, baseline.stages, num_stages, spec)]
    partitioner = ProfilingPartitioner(graph.num_ops, first_output, num_stages, measure)
    best, targets = bisect_partition(partitioner, min(base_costs), max(base_costs), diff_threshold_ns,
                                     partition_search_step)
    log.info("profiling: bounds %d..%d ns, %d targets, %d simulated compile+benchmark runs, best %s",
             min(base_costs), max(base_costs), targets, partitioner.measurements, best or "none (compiler split)")
    if best:
        cuts = [sum(best[:i]) for i in range(1, num_stages)]
        stages = split_order(order, cuts, graph.num_ops)
    else:
        stages = baseline.stages
    return Plan(stages, num_stages, "profiling", solve_seconds=time.perf_counter() - t0,
                stats=(("targets", targets), ("device_runs", partitioner.measurements)))

