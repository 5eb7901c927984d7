"""Run compiled segments on real Edge TPUs with Google's pycoral ``PipelinedModelRunner``.

pycoral cannot be installed from PyPI (the PyPI name ``pycoral`` belongs to an
unrelated Allen Coral Atlas tool), so it is imported lazily and every way it
can be missing ends in one :class:`CoralError` that says what to install.

The adapter follows pycoral 2.x: ``list_edge_tpus()``,
``make_interpreter(path, device=':i')`` and
``PipelinedModelRunner(interpreters)`` whose ``push`` takes and ``pop``
returns dicts keyed by tensor name; pushing ``{}`` ends the stream and
``pop`` then returns ``None`` once every result has been drained.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tflite_io import EDGETPU_CUSTOM_OP, RespectPassError, custom_op_codes
from tflite_io.verify import random_inputs

from .progress import ProgressFactory, no_progress

__all__ = ["CoralError", "Pycoral", "import_pycoral", "run_coral", "PYCORAL_HINT"]

log = logging.getLogger(__name__)

PYCORAL_HINT = ("install Google's pycoral 2.x and the Edge TPU runtime from Coral's repositories: "
                "'python3 -m pip install --extra-index-url https://google-coral.github.io/py-repo/ pycoral~=2.0' "
                "(wheels for Python 3.6-3.9) or 'apt-get install python3-pycoral libedgetpu1-std' "
                "(see coral.ai/software)")


class CoralError(RespectPassError):
    """pycoral is missing or wrong, there are too few Edge TPUs, or the pipeline misbehaved."""


@dataclass(frozen=True)
class Pycoral:
    """The two pycoral modules the adapter uses."""

    edgetpu: ModuleType
    pipeline: ModuleType


def import_pycoral() -> Pycoral:
    """Import Google's pycoral, or raise a CoralError that tells the user how to get it."""
    if importlib.util.find_spec("pycoral") is None:
        raise CoralError(f"Google's pycoral is not installed; {PYCORAL_HINT}")
    try:
        has_utils = importlib.util.find_spec("pycoral.utils") is not None
    except ImportError:
        has_utils = False
    if not has_utils:
        where = importlib.util.find_spec("pycoral").origin
        raise CoralError(f"the 'pycoral' package at {where} is not Google's Coral library (PyPI's 'pycoral' is an "
                         f"unrelated Allen Coral Atlas tool); 'pip uninstall pycoral', then {PYCORAL_HINT}")
    try:
        return Pycoral(importlib.import_module("pycoral.utils.edgetpu"),
                       importlib.import_module("pycoral.pipeline.pipelined_model_runner"))
    except ImportError as exc:
        raise CoralError(f"pycoral is installed but does not load ({exc}); {PYCORAL_HINT}") from None


def _check_compiled(paths: Sequence[Path]) -> None:
    for p in paths:
        if EDGETPU_CUSTOM_OP not in custom_op_codes(p.read_bytes(), str(p)):
            raise CoralError(f"{p.name} is not compiled for the Edge TPU (no {EDGETPU_CUSTOM_OP}); run "
                             "'respect-pass ... --compile' or edgetpu_compiler on the segments first")


def _names(details: Sequence[dict]) -> list[str]:
    return [d["name"] for d in details]


def _run_sequential(interpreters: Sequence[Any], feeds: dict[str, np.ndarray],
                    stage_s: list[list[float]] | None = None) -> dict[str, np.ndarray]:
    """Invoke the segments one after the other, binding inputs by name; return every produced tensor."""
    env = dict(feeds)
    for k, it in enumerate(interpreters):
        for d in it.get_input_details():
            it.set_tensor(d["index"], env[d["name"]])
        t0 = time.perf_counter()
        it.invoke()
        if stage_s is not None:
            stage_s[k].append(time.perf_counter() - t0)
        for d in it.get_output_details():
            env[d["name"]] = it.get_tensor(d["index"]).copy()
    return env


def _stream(runner: Any, inputs: Sequence[dict[str, np.ndarray]],
            progress: ProgressFactory = no_progress) -> tuple[list[float], list[float], list[dict]]:
    """Push ``inputs`` from a producer thread, then ``{}``; pop on this thread until ``None``."""
    pushed: list[float] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for feed in inputs:
                pushed.append(time.perf_counter())
                runner.push(feed)
        except BaseException as exc:  # reported on the main thread
            errors.append(exc)
        finally:
            runner.push({})

    producer = threading.Thread(target=produce, name="respect-pass-push", daemon=True)
    producer.start()
    popped: list[float] = []
    results: list[dict] = []
    with progress(total=len(inputs), desc="pipeline") as bar:
        while (out := runner.pop()) is not None:
            popped.append(time.perf_counter())
            results.append(out)
            bar.update(1)
    producer.join()
    if errors:
        raise CoralError(f"pushing to the pipeline failed: {errors[0]}")
    return pushed, popped, results


def run_coral(paths: Sequence[Path], count: int = 100, warmup: int = 10, seed: int = 0,
              pycoral: Pycoral | None = None, progress: ProgressFactory = no_progress) -> dict[str, Any]:
    """Run the K compiled segments on K Edge TPUs; report per-stage and end-to-end wall times.

    Per-stage times are medians of each segment invoked alone on its TPU
    (pycoral's runner exposes no per-segment timers); throughput and
    end-to-end latencies come from ``count`` requests streamed through
    ``PipelinedModelRunner``. The pipeline's outputs for the first request
    must equal those of the segments run one by one, or a CoralError is raised.
    """
    paths = [Path(p) for p in paths]
    _check_compiled(paths)
    pc = pycoral or import_pycoral()
    tpus = pc.edgetpu.list_edge_tpus()
    if len(tpus) < len(paths):
        raise CoralError(f"found {len(tpus)} Edge TPU(s) but the pipeline has {len(paths)} segments; "
                         "connect more TPUs or partition with a smaller -n")
    interpreters = []
    for i, p in enumerate(paths):
        it = pc.edgetpu.make_interpreter(str(p), device=f":{i}")
        it.allocate_tensors()
        interpreters.append(it)
    rng = np.random.default_rng(seed)
    in_details = interpreters[0].get_input_details()
    feeds = [random_inputs(in_details, rng) for _ in range(min(count, 8))]
    stage_s: list[list[float]] = [[] for _ in paths]
    for i in range(warmup + max(count // 5, 5)):
        env = _run_sequential(interpreters, feeds[i % len(feeds)], stage_s if i >= warmup else None)
        if i == 0:
            expected = {n: env[n] for n in _names(interpreters[-1].get_output_details())}
    runner = pc.pipeline.PipelinedModelRunner(interpreters)
    for i in range(warmup):  # one request at a time; the stream is ended only after the timed run
        runner.push(feeds[i % len(feeds)])
        if runner.pop() is None:
            raise CoralError("the pipeline stopped during warm-up")
    requests = [feeds[i % len(feeds)] for i in range(count)]
    pushed, popped, results = _stream(runner, requests, progress)
    if len(results) != count:
        raise CoralError(f"pushed {count} requests but popped {len(results)} results")
    for name, want in expected.items():
        got = results[0].get(name)
        if got is None or not np.array_equal(np.asarray(got).reshape(want.shape), want):
            raise CoralError(f"pipeline output '{name}' differs from running the segments one by one")
    latencies = np.array(popped) - np.array(pushed)
    stage_ms = [float(np.median(s)) * 1e3 for s in stage_s]
    return {
        "backend": "coral",
        "devices": [dict(t) for t in tpus[: len(paths)]],
        "num_segments": len(paths),
        "count": count,
        "bottleneck_ms": max(stage_ms),
        "latency_ms": sum(stage_ms),
        "latency_p50_ms": float(np.percentile(latencies, 50)) * 1e3,
        "latency_p99_ms": float(np.percentile(latencies, 99)) * 1e3,
        "throughput_ips": count / (popped[-1] - pushed[0]),
        "verified": None,
        "stages": [
            {"index": i, "ms": ms, "file": str(p),
             "in_bytes": sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in it.get_input_details()),
             "out_bytes": sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in it.get_output_details())}
            for i, (ms, p, it) in enumerate(zip(stage_ms, paths, interpreters))
        ],
    }
