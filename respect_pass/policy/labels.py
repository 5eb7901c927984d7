"""Training data: seeded synthetic graphs, labelled per (graph, K) by the ``exact`` scheduler.

Labels are computed in worker processes (``spawn``: the workers never import
torch) and cached on disk, one small JSON file per (graph, K, spec, teacher,
time limit), keyed by a hash of the graph's content, so an interrupted or
repeated run only solves what is missing. Results are collected in task
order, so the data set does not depend on which worker finished first. An
instance whose solver hit its time limit keeps the best plan found
(``optimal`` false); those are the only labels that may differ between
machines, and the cache pins them.

The imitation target of a label is its stage-major order
(:func:`stage_major_order`): stage 0's ops, then stage 1's, ..., within a
stage in execution order with pinned ops (model-output producers and their
descendants) last, which is exactly what the decoder's pinned rule emits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import random
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hardware import EdgeTpuSpec
from tflite_io import OpGraph, RespectPassError

__all__ = [
    "Label",
    "graph_key",
    "make_graphs",
    "choose_ks",
    "label_instances",
    "stage_major_order",
    "max_stages",
    "TEACHERS",
]

log = logging.getLogger(__name__)

TEACHERS = ("exact", "multiorder", "respect+exact")
_VERSION = 1


@dataclass(frozen=True)
class Label:
    """A teacher's plan of one (graph, K)."""

    graph: OpGraph
    num_stages: int
    stages: tuple[int, ...]
    bottleneck_ms: float
    latency_ms: float
    optimal: bool
    seconds: float


def graph_key(graph: OpGraph) -> str:
    """A content hash of a graph (ops, tensor sizes and buffers, inputs, outputs)."""
    h = hashlib.sha256()
    for op in graph.ops:
        h.update(repr((op.op_type, op.inputs, op.outputs, op.param_bytes, op.macs)).encode())
    h.update(repr([(t.nbytes, t.buffer) for t in graph.tensors]).encode())
    h.update(repr((graph.inputs, graph.outputs)).encode())
    return h.hexdigest()[:32]


def make_graphs(count: int, seed: int, min_ops: int, max_ops: int, families: Sequence[str] | None = None) -> list[OpGraph]:
    """``count`` synthetic graphs from :func:`respect_pass.generator.generate_suite` (deterministic in ``seed``)."""
    from ..generator import FAMILIES, generate_suite

    return generate_suite(count, seed, min_ops, max_ops, tuple(families or FAMILIES))


def max_stages(graph: OpGraph) -> int:
    """Ops that may leave the last stage, plus one: no plan has more stages."""
    pinned = set(graph.last_stage_ops)
    for v in range(graph.num_ops):
        if any(u in pinned for u in graph.preds[v]):
            pinned.add(v)
    return graph.num_ops - len(pinned) + 1


def choose_ks(graphs: Sequence[OpGraph], per_graph: int, k_min: int, k_max: int, seed: int) -> list[tuple[int, int]]:
    """(graph index, K) tasks: ``per_graph`` distinct K in [k_min, k_max] per graph, drawn with ``seed``."""
    rng = random.Random(seed)
    tasks = []
    for i, g in enumerate(graphs):
        ks = [k for k in range(k_min, k_max + 1) if k <= max_stages(g)]
        for k in sorted(rng.sample(ks, min(per_graph, len(ks)))):
            tasks.append((i, k))
    return tasks


def stage_major_order(graph: OpGraph, stages: Sequence[int]) -> np.ndarray:
    """The canonical order of a stage map: by stage, then unpinned before pinned, then execution order."""
    pinned = np.zeros(graph.num_ops, dtype=bool)
    for v in range(graph.num_ops):
        if v in graph.last_stage_ops or any(pinned[u] for u in graph.preds[v]):
            pinned[v] = True
    return np.lexsort((np.arange(graph.num_ops), pinned, np.asarray(stages))).astype(np.int64)


def _solve(job: tuple[OpGraph, int, EdgeTpuSpec, float, str]) -> dict | None:
    """Worker: one label (None when the graph has no valid K-stage plan)."""
    graph, k, spec, time_limit, teacher = job
    t0 = time.perf_counter()
    try:
        if teacher == "exact":
            from ..schedulers.exact import exact_schedule

            plan = exact_schedule(graph, k, spec, time_limit_s=time_limit, workers=1, seed=0)
        elif teacher == "respect+exact":  # CP-SAT from the shipped policy's plan: never worse than either alone
            from ..schedulers.respect import respect_exact_schedule

            plan = respect_exact_schedule(graph, k, spec, time_limit_s=time_limit, workers=1, seed=0)
        else:
            from ..schedulers.multiorder import multiorder_schedule

            plan = multiorder_schedule(graph, k, spec)
    except RespectPassError:
        return None
    from ..objectives import latency_key

    b, lat = latency_key(graph, plan.stages, k, spec)
    return {
        "stages": list(plan.stages),
        "bottleneck_ms": b,
        "latency_ms": lat,
        "optimal": bool(plan.optimal),
        "seconds": time.perf_counter() - t0,
    }


def _cache_file(cache: Path, graph: OpGraph, k: int, spec: EdgeTpuSpec, time_limit: float, teacher: str) -> Path:
    key = hashlib.sha256(repr((_VERSION, graph_key(graph), k, spec.to_json(), time_limit, teacher)).encode())
    return cache / f"{teacher}_{key.hexdigest()[:32]}.json"


@dataclass(frozen=True)
class _Pending:
    """A task still to solve: its index in the task list and its cache file (None: no cache)."""

    index: int
    cache_file: Path | None


def _from_cache(
    graphs: Sequence[OpGraph],
    tasks: Sequence[tuple[int, int]],
    spec: EdgeTpuSpec,
    time_limit: float,
    teacher: str,
    cache_dir: Path | None,
) -> tuple[list[dict | None], list[_Pending]]:
    """Each task's cached result (None where none is cached or the graph has no plan), and the tasks to solve."""
    results: list[dict | None] = [None] * len(tasks)
    todo = []
    for j, (i, k) in enumerate(tasks):
        f = _cache_file(cache_dir, graphs[i], k, spec, time_limit, teacher) if cache_dir is not None else None
        if f is not None and f.is_file():
            try:
                cached = json.loads(f.read_text())
                results[j] = None if cached.get("none") else cached
                continue
            except (OSError, ValueError):
                log.warning("unreadable label cache %s: solving again", f)
        todo.append(_Pending(j, f))
    return results, todo


def _write_cache(cache_file: Path, result: dict | None) -> None:
    """Store one result (``{"none": true}`` for no plan) through a temporary file, atomically."""
    tmp = cache_file.with_name(cache_file.name + ".tmp")
    tmp.write_text(json.dumps(result if result is not None else {"none": True}))
    os.replace(tmp, cache_file)


def _solve_pending(
    jobs: list[tuple[OpGraph, int, EdgeTpuSpec, float, str]],
    todo: list[_Pending],
    workers: int,
    progress: bool,
    desc: str,
) -> dict[int, dict | None]:
    """Every job's result by task index, in ``workers`` spawned processes when > 1; each cached as it arrives."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False)
    outs: Iterator[dict | None]
    if workers <= 1:
        outs = map(_solve, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))
        outs = pool.map(_solve, jobs, chunksize=1)
    solved: dict[int, dict | None] = {}
    try:
        for pending, res in zip(todo, outs):
            solved[pending.index] = res
            if pending.cache_file is not None:
                _write_cache(pending.cache_file, res)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return solved


def _labels(graphs: Sequence[OpGraph], tasks: Sequence[tuple[int, int]], results: list[dict | None]) -> list[Label]:
    """The :class:`Label` of every task with a result, in task order."""
    return [
        Label(
            graphs[i],
            k,
            tuple(res["stages"]),
            float(res["bottleneck_ms"]),
            float(res["latency_ms"]),
            bool(res["optimal"]),
            float(res["seconds"]),
        )
        for (i, k), res in zip(tasks, results)
        if res is not None
    ]


def label_instances(
    graphs: Sequence[OpGraph],
    tasks: Sequence[tuple[int, int]],
    spec: EdgeTpuSpec,
    *,
    time_limit: float,
    workers: int,
    cache: str | os.PathLike[str] | None,
    teacher: str = "exact",
    progress: bool = True,
    desc: str = "labels",
) -> list[Label]:
    """Labels of every (graph index, K) task, in task order; cached in ``cache`` (None: no cache)."""
    if teacher not in TEACHERS:
        raise ValueError(f"unknown teacher {teacher!r} (known: {', '.join(TEACHERS)})")
    cache_dir = Path(cache) if cache is not None else None
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
    results, todo = _from_cache(graphs, tasks, spec, time_limit, teacher, cache_dir)
    log.info(
        "%s: %d of %d cached, %d to solve with %s (%g s limit, %d workers)",
        desc,
        len(tasks) - len(todo),
        len(tasks),
        len(todo),
        teacher,
        time_limit,
        workers,
    )
    if todo:
        jobs = [(graphs[tasks[p.index][0]], tasks[p.index][1], spec, time_limit, teacher) for p in todo]
        for index, res in _solve_pending(jobs, todo, workers, progress, desc).items():
            results[index] = res
    return _labels(graphs, tasks, results)
