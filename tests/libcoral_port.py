"""A literal Python port of libcoral's partitioner loops, for the tests only (respect-pass does not use it).

Source: google-coral/libcoral at 6589d0bb49c7fdbc4194ce178d06f8cdc7b5df60, coral/tools/partitioner/:

* utils.cc: BuildEdgeList, BuildGraph, BuildReverseGraph, CalculateInDegree, CalculateOutDegree,
  TopologicalSort, CalculateParameterSizes, LocateSubgraphNodes;
* strategy.cc: GetStrategyFromNumOps;
* parameter_count_based_partitioner.cc: ParameterCountBasedPartitioner (GetStrategy, GetNumOpsPerSegment);
* profiling_based_partitioner.cc: ProfilingBasedPartitioner (PartitionCompileAndAnalyze, GetBounds,
  SearchPartition, PartitionOnTargetLatency), BisectPartition;
* partition_with_profiling.cc: main's checks around BisectPartition.

Function by function and statement by statement, std::vector as list, int/int64_t arithmetic on Python
ints (every division has non-negative operands, so ``//`` is C++'s ``/``). A failed ``CHECK``/``LOG(FATAL)``
raises :class:`Check`. The "model" is a tflite_io OpGraph (its ops' input/output tensor indices, its
tensors' constant buffers, as in the flatbuffer). Two things C++ leaves open:

* BuildEdgeList iterates an ``absl::flat_hash_set<int>`` of tensor indices, whose order is unspecified;
  ascending tensor index stands in for it (it only changes the child order of ops with several outputs);
* CalculateParameterSizes reads ``tensors->Get(input_index)`` for an omitted optional input (-1),
  out of bounds; such inputs are skipped.

Compiling and benchmarking are a ``device(num_ops) -> latencies (ns) | set of failed segment indices``
callable over the segments of ``exe_order_to_node_idx`` (what ``PartitionWithNumOps`` writes).
"""

from __future__ import annotations

INT64_MAX = 2**63 - 1
kGraphInputGenNode = -1


class Check(Exception):
    """A failed CHECK (or LOG(FATAL)): ``key`` names what failed, as the C++ source spells it."""

    def __init__(self, key: str, detail: str = "") -> None:
        self.key = key
        super().__init__(f"Check failed: {key} {detail}".strip())


def CHECK(cond: bool, key: str, detail: str = "") -> None:
    if not cond:
        raise Check(key, detail)


# ---------------------------------------------------------------------------------------------- utils.cc


def BuildEdgeList(model) -> list[tuple[int, int]]:
    tensor_consumers: dict[int, list[int]] = {}
    tensor_producers: dict[int, list[int]] = {}
    all_tensor_indices: set[int] = set()
    for i in range(len(model.ops)):
        for in_tensor_idx in model.ops[i].inputs:
            tensor_consumers.setdefault(in_tensor_idx, []).append(i)
            all_tensor_indices.add(in_tensor_idx)
        for out_tensor_idx in model.ops[i].outputs:
            tensor_producers.setdefault(out_tensor_idx, []).append(i)
            all_tensor_indices.add(out_tensor_idx)
    result = []
    for tensor_idx in sorted(all_tensor_indices):  # flat_hash_set order: unspecified
        if tensor_idx in tensor_consumers and tensor_idx in tensor_producers:
            for consumer_op_idx in tensor_consumers[tensor_idx]:
                for producer_op_idx in tensor_producers[tensor_idx]:
                    result.append((producer_op_idx, consumer_op_idx))
    return result


def BuildGraph(edges, num_nodes: int) -> list[list[int]]:
    graph: list[list[int]] = [[] for _ in range(num_nodes)]
    for first, second in edges:
        graph[first].append(second)
    return graph


def BuildReverseGraph(graph) -> list[list[int]]:
    reverse_graph: list[list[int]] = [[] for _ in range(len(graph))]
    for i in range(len(graph)):
        for child_node in graph[i]:
            reverse_graph[child_node].append(i)
    return reverse_graph


def CalculateInDegree(graph) -> list[int]:
    num_nodes = len(graph)
    in_degree = [0] * num_nodes
    for i in range(num_nodes):
        for child_node in graph[i]:
            in_degree[child_node] += 1
    return in_degree


def CalculateOutDegree(graph) -> list[int]:
    return CalculateInDegree(BuildReverseGraph(graph))


def TopologicalSortGraph(graph) -> list[int]:
    num_nodes = len(graph)
    to_visit: list[int] = []
    exe_order: list[int] = []
    in_degree = CalculateInDegree(graph)
    out_degree = CalculateOutDegree(graph)
    for i in range(num_nodes):
        if in_degree[i] == 0:
            to_visit.append(i)
    while to_visit:
        node = to_visit[-1]
        to_visit.pop()
        exe_order.append(node)
        for child_node in graph[node]:
            in_degree[child_node] -= 1
            if in_degree[child_node] == 0:
                if out_degree[child_node] == 0:
                    to_visit.insert(0, child_node)
                else:
                    to_visit.append(child_node)
    CHECK(len(exe_order) == num_nodes, "Graph is NOT DAG")
    return exe_order


def TopologicalSort(model) -> list[int]:
    edges = BuildEdgeList(model)
    num_nodes = len(model.ops)
    graph = BuildGraph(edges, num_nodes)
    return TopologicalSortGraph(graph)


def CalculateParameterSizes(model) -> list[int]:
    num_nodes = len(model.ops)
    parameter_sizes = [0] * num_nodes
    for i in range(num_nodes):
        op = model.ops[i]
        if op.op_type == "CUSTOM":  # IsCustomOp
            parameter_sizes[i] = 0
        else:
            num_non_weight_tensors = 0
            for input_index in op.inputs:
                if input_index < 0:  # tensors->Get(-1): out of bounds in C++
                    continue
                tensor = model.tensors[input_index]
                if not tensor.is_constant:  # !buffer->data()
                    num_non_weight_tensors += 1
                else:
                    parameter_sizes[i] += tensor.nbytes  # buffer->data()->size()
            CHECK(num_non_weight_tensors > 0, "num_non_weight_tensors > 0")
    return parameter_sizes


def LocateSubgraphNodes(edges, num_nodes: int, exe_order_to_node_idx, num_nodes_per_subgraph):
    graph = BuildGraph(edges, num_nodes)
    reverse_graph = BuildReverseGraph(graph)
    num_subgraphs = len(num_nodes_per_subgraph)
    node_idx_to_exe_order = [0] * num_nodes
    for i in range(num_nodes):
        node_idx_to_exe_order[exe_order_to_node_idx[i]] = i
    num_cumulative_ops = [0] * (num_subgraphs + 1)
    for i in range(num_subgraphs):
        num_cumulative_ops[i + 1] = num_cumulative_ops[i] + num_nodes_per_subgraph[i]
    subgraph_nodes_list = [{"all_nodes": [], "input_nodes": set(), "output_nodes": set()} for _ in range(num_subgraphs)]
    for i in range(num_subgraphs):
        subgraph_nodes = subgraph_nodes_list[i]
        input_boundary_num_ops_limit = num_cumulative_ops[i]
        output_boundary_num_ops_limit = num_cumulative_ops[i + 1]
        for j in range(input_boundary_num_ops_limit, output_boundary_num_ops_limit):
            cur_node = exe_order_to_node_idx[j]
            subgraph_nodes["all_nodes"].append(cur_node)
            if not reverse_graph[cur_node]:
                subgraph_nodes["input_nodes"].add(kGraphInputGenNode)
            else:
                for parent_node in reverse_graph[cur_node]:
                    if node_idx_to_exe_order[parent_node] < input_boundary_num_ops_limit:
                        subgraph_nodes["input_nodes"].add(parent_node)
            if not graph[cur_node]:
                subgraph_nodes["output_nodes"].add(cur_node)
            else:
                for child_node in graph[cur_node]:
                    if node_idx_to_exe_order[child_node] >= output_boundary_num_ops_limit:
                        subgraph_nodes["output_nodes"].add(cur_node)
    return subgraph_nodes_list


# ------------------------------------------------------------------------------------------- strategy.cc


def GetStrategyFromNumOps(model, exe_order_to_node_idx, num_ops_per_segment) -> list[list[int]]:
    """The segments' target_nodes (the CHECKs are the point; inputs/outputs are not built)."""
    num_segments = len(num_ops_per_segment)
    CHECK(num_segments > 1, "num_segments > 1", "num_segments must be >1.")
    for num_ops in num_ops_per_segment:
        CHECK(num_ops > 0, "num_ops > 0", "each segment needs at least one operator.")
    edges = BuildEdgeList(model)
    num_nodes = len(model.ops)
    CHECK(num_segments <= num_nodes, "num_segments <= num_nodes")
    CHECK(sum(num_ops_per_segment) == num_nodes, "Sum of num_segment_ops must be equal to model's nodes number.")
    segment_nodes_list = LocateSubgraphNodes(edges, num_nodes, exe_order_to_node_idx, num_ops_per_segment)
    CHECK(len(segment_nodes_list) == num_segments, "segment_nodes_list.size() == num_segments")
    ops = model.ops
    for i in range(num_segments):
        segment_nodes = segment_nodes_list[i]
        for op_index in segment_nodes["input_nodes"]:
            if op_index != kGraphInputGenNode:
                CHECK(len(ops[op_index].outputs) == 1, "Only one output tensor per operator.", f"op_index: {op_index}")
        for op_index in segment_nodes["output_nodes"]:
            if op_index < num_nodes - 1:
                CHECK(len(ops[op_index].outputs) == 1, "Only one output tensor per operator.", f"op_index: {op_index}")
    return [s["all_nodes"] for s in segment_nodes_list]


# ------------------------------------------------------------------------ parameter_count_based_partitioner.cc


class ParameterCountBasedPartitioner:
    def __init__(self, model) -> None:
        self.model_ = model
        self.exe_order_to_node_idx_ = TopologicalSort(model)

    def GetStrategy(self, num_segments: int) -> list[list[int]]:
        CHECK(num_segments > 1, "num_segments > 1", "num_segments must be >1.")
        num_ops_per_segment = self.GetNumOpsPerSegment(num_segments)
        return GetStrategyFromNumOps(self.model_, self.exe_order_to_node_idx_, num_ops_per_segment)

    def GetNumOpsPerSegment(self, num_segments: int) -> list[int]:
        parameter_sizes = CalculateParameterSizes(self.model_)
        total_size = sum(parameter_sizes)
        average_size = (total_size // num_segments) + 1

        num_nodes = len(parameter_sizes)
        edges = BuildEdgeList(self.model_)
        graph = BuildGraph(edges, num_nodes)
        out_degree = CalculateOutDegree(graph)
        exe = self.exe_order_to_node_idx_
        first_output_node_exe_idx = 0
        while out_degree[exe[first_output_node_exe_idx]] != 0:
            first_output_node_exe_idx += 1
            CHECK(first_output_node_exe_idx < len(exe), "first_output_node_exe_idx < exe_order_to_node_idx_.size()")

        num_ops_per_segment = [0] * num_segments
        segment_sizes = [0] * num_segments
        allocated_parameter_size = 0
        node_i = 0
        for segment_i in range(num_segments - 1):
            max_segment_end_exe_idx = first_output_node_exe_idx - (num_segments - segment_i - 1)
            CHECK(max_segment_end_exe_idx >= node_i, "max_segment_end_exe_idx >= node_i")
            while node_i <= max_segment_end_exe_idx:
                cur_size = parameter_sizes[exe[node_i]]
                if (segment_sizes[segment_i] + cur_size) > average_size:
                    break
                allocated_parameter_size += cur_size
                segment_sizes[segment_i] += cur_size
                num_ops_per_segment[segment_i] += 1
                node_i += 1
        CHECK(node_i <= first_output_node_exe_idx, "node_i <= first_output_node_exe_idx")
        num_ops_per_segment[num_segments - 1] = num_nodes - node_i
        segment_sizes[num_segments - 1] = total_size - allocated_parameter_size

        for i in range(num_segments):
            CHECK(num_ops_per_segment[i] > 0, "num_ops_per_segment[i] > 0")
        CHECK(num_nodes == sum(num_ops_per_segment), "num_nodes == sum(num_ops_per_segment)")
        return num_ops_per_segment


# ------------------------------------------------------------------------------ profiling_based_partitioner.cc


class ProfilingBasedPartitioner:
    def __init__(self, model, num_segments: int, device) -> None:
        self.model_ = model
        self.num_segments_ = num_segments
        self.device = device
        self.exe_order_to_node_idx_ = TopologicalSort(model)
        self.segment_latency_cache_: dict[tuple[int, int], int] = {}
        self.compilation_failure_segments_: set[tuple[int, int]] = set()
        self.partition_: list[int] = []
        edges = BuildEdgeList(model)
        graph = BuildGraph(edges, len(self.exe_order_to_node_idx_))
        out_degree = CalculateOutDegree(graph)
        self.first_output_node_exe_idx_ = 0
        while self.first_output_node_exe_idx_ < len(self.exe_order_to_node_idx_):
            if out_degree[self.exe_order_to_node_idx_[self.first_output_node_exe_idx_]] == 0:
                break
            self.first_output_node_exe_idx_ += 1

    def PartitionCompileAndAnalyze(self, num_ops: list[int], segment_index: int) -> int:
        segment_starts = [0] * len(num_ops)
        for i in range(1, len(num_ops)):
            segment_starts[i] = segment_starts[i - 1] + num_ops[i - 1]
        key = (segment_starts[segment_index], num_ops[segment_index])
        if key in self.segment_latency_cache_:  # kUseCache
            return self.segment_latency_cache_[key]
        for i in range(len(num_ops)):
            if (segment_starts[i], num_ops[i]) in self.compilation_failure_segments_:
                return -1
        # PartitionWithNumOps: GetStrategyFromNumOps, ExtractModelSegment, write.
        GetStrategyFromNumOps(self.model_, self.exe_order_to_node_idx_, num_ops)
        result = self.device(list(num_ops))  # compile every segment, benchmark if all compiled
        success = not isinstance(result, set)
        if not success:
            for i in sorted(result):
                self.compilation_failure_segments_.add((segment_starts[i], num_ops[i]))
        latencies: list[int] = []
        if success:
            latencies = result
            for i in range(self.num_segments_):
                self.segment_latency_cache_[(segment_starts[i], num_ops[i])] = latencies[i]
        return latencies[segment_index] if success else -1

    def GetBounds(self) -> tuple[int, int]:
        # CompileModel(edgetpu_compiler --num_segments=K): the compiler's ParameterCountBasedPartitioner.
        try:
            segments = ParameterCountBasedPartitioner(self.model_).GetStrategy(self.num_segments_)
        except Check:
            raise Check("Can not compile initial partition.") from None
        result = self.device([len(s) for s in segments])
        CHECK(not isinstance(result, set), "Can not compile initial partition.")
        lower_bound, upper_bound = INT64_MAX, 0
        for latency in result:
            lower_bound = min(lower_bound, latency)
            upper_bound = max(upper_bound, latency)
        return lower_bound, upper_bound

    def SearchPartition(
        self, candidate_partition: list[int], target_latency: int, segment_index: int, partition_search_step: int
    ) -> bool:
        if segment_index == len(candidate_partition) - 1:
            return True
        searchable_total_num_ops = sum(candidate_partition[segment_index:])
        candidate_partition[len(candidate_partition) - 1] = max(
            len(self.exe_order_to_node_idx_) - self.first_output_node_exe_idx_, partition_search_step
        )
        i = partition_search_step + 1
        while i < len(candidate_partition) - 1:
            candidate_partition[i] = partition_search_step
            i += 1
        candidate_partition[segment_index] = (
            searchable_total_num_ops
            - (len(candidate_partition) - 2 - segment_index) * partition_search_step
            - candidate_partition[len(candidate_partition) - 1]
        )
        CHECK(candidate_partition[segment_index] > 0, "candidate_partition[segment_index] > 0")
        CHECK(
            sum(candidate_partition[segment_index:]) == searchable_total_num_ops,
            "sum(candidate_partition[segment_index:]) == searchable_total_num_ops",
        )

        tmp_partition = list(candidate_partition)
        while tmp_partition[segment_index] > 0:
            segment_latency = self.PartitionCompileAndAnalyze(tmp_partition, segment_index)
            if segment_latency > 0 and segment_latency <= target_latency:
                if self.SearchPartition(tmp_partition, target_latency, segment_index + 1, partition_search_step):
                    candidate_partition[:] = tmp_partition
                    return True
            delta = min(tmp_partition[segment_index], partition_search_step)
            tmp_partition[segment_index] -= delta
            tmp_partition[segment_index + 1] += delta
        return False

    def PartitionOnTargetLatency(self, target_latency: int, partition_search_step: int) -> int:
        CHECK(partition_search_step > 0, "partition_search_step > 0")
        total_num_ops = len(self.exe_order_to_node_idx_)
        num_ops = [partition_search_step] * self.num_segments_
        num_ops[0] = total_num_ops - (self.num_segments_ - 1) * partition_search_step
        CHECK(num_ops[0] > 0, "num_ops[0] > 0")
        if not self.SearchPartition(num_ops, target_latency, 0, partition_search_step):
            return INT64_MAX
        CHECK(sum(num_ops) == total_num_ops, "sum(num_ops) == total_num_ops")
        last_segment_latency = self.PartitionCompileAndAnalyze(num_ops, self.num_segments_ - 1)
        CHECK(last_segment_latency > 0, "last_segment_latency > 0")
        self.partition_ = num_ops
        return last_segment_latency


def BisectPartition(
    model,
    device,
    num_segments: int,
    diff_threshold_ns: int,
    partition_search_step: int,
    initial_bounds: tuple[int, int] = (-1, -1),
) -> tuple[bool, list[int] | None]:
    """(BisectPartition's return value, the partition it writes to output_dir or None)."""
    partitioner = ProfilingBasedPartitioner(model, num_segments, device)
    bounds = initial_bounds if (initial_bounds[0] >= 0 and initial_bounds[1] >= 0) else partitioner.GetBounds()
    lower_bound, upper_bound = bounds
    CHECK(upper_bound > lower_bound, "upper_bound > lower_bound")
    best_partition: list[int] = []
    if abs(upper_bound - lower_bound) <= diff_threshold_ns:
        return True, None  # "Profiling based partitioner is not run."
    while abs(upper_bound - lower_bound) > diff_threshold_ns:
        target_latency = (lower_bound + upper_bound) // 2
        last_segment_latency = partitioner.PartitionOnTargetLatency(target_latency, partition_search_step)
        if last_segment_latency < target_latency:
            best_partition = list(partitioner.partition_)
            CHECK(bool(best_partition), "!best_partition.empty()")
            upper_bound = target_latency
        else:
            if last_segment_latency < upper_bound:
                best_partition = list(partitioner.partition_)
                CHECK(bool(best_partition), "!best_partition.empty()")
                upper_bound = last_segment_latency
            lower_bound = target_latency
    if not best_partition:
        return False, None
    return True, best_partition


# -------------------------------------------------------------------------------- partition_with_profiling.cc


def partition_with_profiling(
    model, device, num_segments: int, diff_threshold_ns: int = 1000000, partition_search_step: int = 1
) -> list[int] | None:
    """main(): the partition written (ops per segment along TopologicalSort), None if nothing is written."""
    CHECK(num_segments >= 2, "num_segments must be at least 2.")
    ok, partition = BisectPartition(model, device, num_segments, diff_threshold_ns, partition_search_step)
    CHECK(ok, "Failed to find valid partition that meets the latency target.")
    return partition
