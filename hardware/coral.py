"""Run compiled segments on K Edge TPUs and measure the pipeline honestly.

Two runners do the pipelining:

* ``litert``: :class:`hardware.runner.LiteRtPipelinedRunner`, which needs only
  LiteRT and the Edge TPU runtime ``libedgetpu.so.1`` (:mod:`hardware.devices`
  finds the TPUs and opens them);
* ``pycoral``: Google's ``PipelinedModelRunner`` (pycoral 2.x, wheels for
  Python 3.6-3.9 only), imported lazily; ``auto`` picks it when it imports.

pycoral's ``PipelinedModelRunner.__del__`` pushes ``{}`` again and then, in the
2022 sources (pycoral PR #80), ``print``s "Push empty request to stop the
pipeline..." and "The pipeline has already been closed successfully." to stdout;
the pycoral 2.0.0 release instead lets that second push raise ``RuntimeError``
("Pipeline was turned off before.") out of ``__del__`` (an "Exception ignored"
on stderr), and both print a WARNING for unconsumed results. The runner is
therefore made from a subclass whose ``__del__`` runs pycoral's with stdout sent
to ``logging`` and exceptions swallowed, so ``--json`` output stays clean.

Segments may run on several TPUs each (replicas, ``run_coral(replicas=...)``):
only our runner does that (each replica its own interpreter, TPU and thread);
pycoral's runner takes one interpreter per segment, so a replicated plan asks
for ``--runner litert`` or a plan made with ``--no-replicas``.

The figures (see :func:`run_coral`) come from three phases after warm-up:
each segment alone, single requests through the idle pipeline, and a closed
loop that keeps one request in flight per TPU.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from tflite_io import EDGETPU_CUSTOM_OP, custom_op_codes
from tflite_io.verify import random_inputs

from .devices import (
    CoralError,
    make_edgetpu_interpreter,
    parse_devices,
    require_edgetpu_runtime,
    select_devices,
)
from .progress import ProgressFactory, no_progress
from .runner import LiteRtPipelinedRunner, unwrap, watch
from .runtime import runtime_version
from .runtime_probe import probe_runtime

__all__ = [
    "PYCORAL_HINT",
    "RUNNERS",
    "CoralError",
    "InterpreterFactory",
    "Pycoral",
    "import_pycoral",
    "pycoral_available",
    "run_coral",
]

log = logging.getLogger(__name__)

PYCORAL_HINT = (
    "install Google's pycoral 2.x and the Edge TPU runtime from Coral's repositories: "
    "'python3 -m pip install --extra-index-url https://google-coral.github.io/py-repo/ pycoral~=2.0' "
    "(wheels for Python 3.6-3.9) or 'apt-get install python3-pycoral libedgetpu1-std' "
    "(see coral.ai/software)"
)
RUNNERS = ("auto", "litert", "pycoral")
#: ``factory(segment_path, device) -> interpreter`` (tflite Interpreter API); run_coral allocates its tensors.
InterpreterFactory = Callable[[Path, str], Any]


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
        found = importlib.util.find_spec("pycoral")
        where = found.origin if found is not None else "?"
        raise CoralError(
            f"the 'pycoral' package at {where} is not Google's Coral library (PyPI's 'pycoral' is an "
            f"unrelated Allen Coral Atlas tool); 'pip uninstall pycoral', then {PYCORAL_HINT}"
        )
    try:
        return Pycoral(
            importlib.import_module("pycoral.utils.edgetpu"),
            importlib.import_module("pycoral.pipeline.pipelined_model_runner"),
        )
    except ImportError as exc:
        raise CoralError(f"pycoral is installed but does not load ({exc}); {PYCORAL_HINT}") from None


def pycoral_available() -> Pycoral | None:
    """Google's pycoral when it imports, else None (the reason is logged)."""
    try:
        return import_pycoral()
    except CoralError as exc:
        log.info("not using pycoral: %s", exc)
        return None


def _check_compiled(paths: Sequence[Path]) -> None:
    for p in paths:
        if EDGETPU_CUSTOM_OP not in custom_op_codes(p.read_bytes(), str(p)):
            raise CoralError(
                f"{p.name} is not compiled for the Edge TPU (no {EDGETPU_CUSTOM_OP}); run "
                "'respect-pass ... --compile' or edgetpu_compiler on the segments first"
            )


class _LogStream(io.TextIOBase):
    """A text stream that sends each line written to it to the log (stdout stand-in)."""

    def write(self, text: str) -> int:
        for line in text.splitlines():
            if line.strip():
                log.info("pycoral: %s", line.strip())
        return len(text)


_QUIET: dict[type, type] = {}


def _quiet_runner_class(cls: type) -> type:
    """``cls`` (pycoral's PipelinedModelRunner) with a ``__del__`` that neither prints nor raises."""
    if cls not in _QUIET:

        def __del__(self: Any) -> None:
            parent = getattr(cls, "__del__", None)
            if parent is None:
                return
            try:
                with contextlib.redirect_stdout(_LogStream()):
                    parent(self)
            except Exception as exc:  # pycoral 2.0.0 pushes {} again and lets the RuntimeError out
                log.debug("pycoral's PipelinedModelRunner.__del__: %s", exc)

        _QUIET[cls] = type(f"Quiet{cls.__name__}", (cls,), {"__del__": __del__, "__module__": __name__})
    return _QUIET[cls]


def _pycoral_devices(pc: Pycoral, num_segments: int, devices: str | Sequence[str] | None) -> list[str]:
    """Device strings (``usb:0``) from an explicit list or pycoral's ``list_edge_tpus()``."""
    if devices is not None:
        return select_devices(num_segments, devices)
    counts: dict[str, int] = {}
    found = []
    for tpu in pc.edgetpu.list_edge_tpus():
        kind = str(tpu.get("type", "usb"))
        found.append(f"{kind}:{counts.get(kind, 0)}")
        counts[kind] = counts.get(kind, 0) + 1
    if len(found) < num_segments:
        raise CoralError(
            f"found {len(found)} Edge TPU(s) but the pipeline has {num_segments} segments; "
            "connect more TPUs or partition with a smaller -n"
        )
    return found[:num_segments]


def _group(flat: Sequence[Any], replicas: Sequence[int]) -> list[list[Any]]:
    """Split a flat list in plan order (segment 0's replicas first) into one list per segment."""
    starts = [0, *itertools.accumulate(replicas)]
    return [list(flat[a:b]) for a, b in zip(starts[:-1], starts[1:])]


def _open(
    paths: Sequence[Path], replicas: Sequence[int], devices: Sequence[str], factory: InterpreterFactory
) -> list[list[Any]]:
    """Per segment, one interpreter (tensors allocated) per replica, each on its own device."""
    interpreters = []
    for p, dev in zip([p for p, r in zip(paths, replicas) for _ in range(r)], devices):
        try:
            it = factory(p, dev)
            it.allocate_tensors()
        except CoralError:
            raise
        except (ValueError, RuntimeError, OSError) as exc:
            reason = " ".join(str(exc).split())
            raise CoralError(f"{p.name} does not load on the Edge TPU {dev} ({reason})") from None
        interpreters.append(watch(it, f"{p.name} on {dev}", dev))  # invoke faults: one line
    return _group(interpreters, replicas)


def _run_sequential(
    interpreters: Sequence[Any], feeds: dict[str, np.ndarray], stage_s: list[list[float]] | None = None
) -> dict[str, np.ndarray]:
    """Invoke the segments one after the other, binding inputs by name; return every produced tensor."""
    env = dict(feeds)
    for k, it in enumerate(interpreters):
        for d in it.get_input_details():
            it.set_tensor(d["index"], env[d["name"]].reshape(d["shape"]))
        t0 = time.perf_counter()
        it.invoke()
        if stage_s is not None:
            stage_s[k].append(time.perf_counter() - t0)
        for d in it.get_output_details():
            env[d["name"]] = np.array(it.get_tensor(d["index"]), copy=True)
    return env


def _check(out: dict | None, want: dict[str, np.ndarray], what: str) -> None:
    if out is None:
        raise CoralError(f"the pipeline ended before {what}")
    for name, expected in want.items():
        got = out.get(name)
        if (
            got is None
            or np.asarray(got).size != expected.size
            or not np.array_equal(np.asarray(got).reshape(expected.shape), expected)
        ):
            raise CoralError(f"pipeline output '{name}' of {what} differs from running the segments one by one")


def _nbytes(details: Sequence[dict]) -> int:
    return sum(int(np.prod(d["shape"])) * np.dtype(d["dtype"]).itemsize for d in details)


def _measure(
    runner: Any, feeds: list[dict], expected: list[dict], k: int, count: int, warmup: int, progress: ProgressFactory
) -> dict[str, Any]:
    """Warm up, time single requests through the idle pipeline, then a closed loop with ``k`` in flight; end the stream."""
    n = len(feeds)
    for i in range(warmup):
        runner.push(feeds[i % n])
        _check(runner.pop(), expected[i % n], f"warm-up request {i}")
    idle = []
    with progress(total=count, desc="latency") as bar:
        for i in range(count):
            t0 = time.perf_counter()
            runner.push(feeds[i % n])
            out = runner.pop()
            idle.append(time.perf_counter() - t0)
            _check(out, expected[i % n], f"request {i}")
            bar.update(1)
    if hasattr(runner, "reset_stage_times"):
        runner.reset_stage_times()
    # closed loop (k: one request per TPU): k-1 untimed requests fill the pipeline
    # and k-1 more keep it full while the timed ones leave
    pad, total = k - 1, count + 2 * (k - 1)
    pushed: list[float] = []
    popped: list[float] = []

    def push_next() -> None:
        pushed.append(time.perf_counter())
        runner.push(feeds[(len(pushed) - 1) % n])

    with progress(total=count, desc="pipeline") as bar:
        for _ in range(min(k, total)):
            push_next()
        for j in range(total):
            out = runner.pop()
            popped.append(time.perf_counter())
            _check(out, expected[j % n], f"request {j} of the loaded pipeline")
            if len(pushed) < total:
                push_next()
            if pad <= j < pad + count:
                bar.update(1)
    runner.push({})
    if runner.pop() is not None:
        raise CoralError(f"the pipeline returned more results than the {total} requests pushed")
    anchor = popped[pad - 1] if pad else pushed[0]
    period = (popped[pad + count - 1] - anchor) / count
    loaded = np.array(popped[pad : pad + count]) - np.array(pushed[pad : pad + count])
    return {
        "latency_ms": float(np.median(idle)) * 1e3,
        "bottleneck_ms": period * 1e3,
        "throughput_ips": 1.0 / period,
        "latency_loaded_p50_ms": float(np.percentile(loaded, 50)) * 1e3,
        "latency_loaded_p99_ms": float(np.percentile(loaded, 99)) * 1e3,
    }


def _stop_pycoral(runner: Any) -> None:
    """End and drain a pycoral runner that did not finish normally (bounded, quiet)."""
    with contextlib.redirect_stdout(_LogStream()):
        try:
            runner.push({})
        except Exception as exc:  # already ended
            log.debug("pycoral push({}) while stopping: %s", exc)
        try:
            for _ in range(10_000):
                if runner.pop() is None:
                    break
        except Exception as exc:
            log.debug("pycoral pop() while stopping: %s", exc)


def run_coral(
    segment_paths: Sequence[str | Path],
    count: int = 100,
    warmup: int = 10,
    seed: int = 0,
    runner: str = "auto",
    devices: str | Sequence[str] | None = None,
    progress: ProgressFactory = no_progress,
    interpreter_factory: InterpreterFactory | None = None,
    pycoral: Pycoral | None = None,
    replicas: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Run the S compiled segments on Edge TPUs as a pipeline and report what was measured.

    ``replicas``: TPUs per segment (None: one each; a request goes to one replica of each segment).
    ``runner``: ``litert`` (:class:`LiteRtPipelinedRunner`), ``pycoral`` (Google's ``PipelinedModelRunner``,
    one TPU per segment only; ``pycoral`` injects its modules) or ``auto`` (pycoral when it imports and
    nothing is replicated, else litert). ``devices``: ``"usb:0,usb:1"`` or a list, one per TPU in plan
    order (segment 0's replicas first), exactly sum(replicas) with ``replicas``; default: the first found.
    ``interpreter_factory(path, device)`` replaces the Edge TPU interpreter (tests: LiteRT on the CPU);
    only then are the compiled-segment and runtime checks skipped.

    Returned keys: ``latency_ms`` (median of ``count`` single requests through the idle pipeline,
    each pushed after the previous one was popped), ``bottleneck_ms`` and ``throughput_ips``
    (steady-state period of a closed loop keeping one request per TPU in flight),
    ``latency_loaded_p50_ms``/``_p99_ms`` (push-to-pop time in that loop), and per stage ``ms``
    (median invoke of the segment alone, first replica), ``ms_in_pipeline`` (median invoke in the loop,
    all replicas; None with pycoral), ``replicas``, ``devices``; ``runtime``: the Edge TPU runtime's
    ``edgetpu_version()`` (None with ``interpreter_factory`` or where it is unknown). With the litert
    runner, before the first interpreter opens, the (runtime, LiteRT) pair is probed in a child process
    (:func:`hardware.runtime_probe.probe_runtime`), so a runtime that crashes with this LiteRT is a
    CoralError, not a dead process (pycoral loads the runtime with its own tflite_runtime). Every result
    (and every replica's, each checked alone) must equal running the segments one by one, in order, or a
    CoralError is raised.
    """
    paths = [Path(p) for p in segment_paths]
    _check_arguments(paths, count, warmup, runner)
    counts = _check_replicas(len(paths), replicas, runner)
    if interpreter_factory is None:
        _check_compiled(paths)
    choice = _choose_runner(runner, counts, replicas is not None, devices, interpreter_factory, pycoral)
    log.info("running %d segments on %s with the %s runner", len(paths), choice.devices, choice.kind)
    runtime = None  # our runner: a runtime built for another LiteRT may crash the process, so try it in a child first
    if interpreter_factory is None and choice.kind == "litert":
        runtime = probe_runtime(paths, choice.devices[0]).runtime
    elif interpreter_factory is None:
        runtime = _runtime_version()
    groups = _open(paths, counts, choice.devices, choice.factory)
    leads = [group[0] for group in groups]
    requests = _reference_requests(leads, count, seed)
    alone = _time_alone(leads, requests.feeds, count, warmup)
    placed = _group(choice.devices, counts)
    _warm_replicas(groups, paths, placed, requests.feeds, warmup)
    if choice.kind == "litert":
        figures, in_pipeline = _measure_litert(groups, paths, placed, requests, count, warmup, progress)
    else:
        assert choice.pycoral is not None
        figures = _measure_pycoral(choice.pycoral, leads, requests, count, warmup, progress)
        in_pipeline = [None] * len(paths)
    return {
        "backend": "coral",
        "runner": choice.kind,
        "runtime": runtime,
        "devices": list(choice.devices),
        "num_segments": len(paths),
        "count": count,
        **figures,
        "verified": None,
        "stages": _stage_reports(paths, leads, placed, alone, in_pipeline),
    }


def _runtime_version() -> str | None:
    """The runtime's ``edgetpu_version()``, or None where it does not load or export it (pycoral loads it itself)."""
    try:
        return runtime_version()
    except CoralError as exc:
        log.debug("no Edge TPU runtime version: %s", exc)
        return None


def _check_arguments(paths: Sequence[Path], count: int, warmup: int, runner: str) -> None:
    """Refuse no segments, a count below 1, a negative warm-up or an unknown runner."""
    if not paths:
        raise CoralError("no segments to run")
    if count < 1 or warmup < 0:
        raise CoralError(f"count must be at least 1 and warmup at least 0, got {count} and {warmup}")
    if runner not in RUNNERS:
        raise CoralError(f"unknown runner {runner!r}; use one of {', '.join(RUNNERS)}")


def _check_replicas(num_segments: int, replicas: Sequence[int] | None, runner: str) -> list[int]:
    """The TPU count of each segment (one each when None); pycoral's runner refuses replicas."""
    if replicas is None:
        return [1] * num_segments
    counts = list(replicas)
    if len(counts) != num_segments:
        raise CoralError(f"replicas gives {len(counts)} count(s) for {num_segments} segment(s)")
    if any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1 for r in counts):
        raise CoralError(f"replicas must be whole numbers of at least 1, got {counts}")
    counts = [int(r) for r in counts]
    replicated = [(s, r) for s, r in enumerate(counts) if r > 1]
    if runner == "pycoral" and replicated:
        s, r = replicated[0]
        raise CoralError(
            f"pycoral's PipelinedModelRunner runs one TPU per segment, but the plan runs segment {s} on {r} "
            "TPUs; use --runner litert (or auto), or partition with --no-replicas"
        )
    return counts


def _plan_devices(counts: Sequence[int], devices: str | Sequence[str] | None) -> tuple[str | None, list[str] | None]:
    """For a plan with replicas: what it needs (for messages) and the ``devices`` named, one per TPU, if any."""
    total = sum(counts)
    demand = f"{len(counts)} segments on {total} TPUs (replicas {'+'.join(map(str, counts))})"
    if devices is None:
        return demand, None
    named = parse_devices(devices)
    if len(named) != total:
        raise CoralError(
            f"--devices names {len(named)} Edge TPU(s) but the pipeline has {demand}; "
            "name one per TPU, in plan order (segment 0's replicas first)"
        )
    return demand, named


@dataclass(frozen=True)
class _RunnerChoice:
    """The runner that pipelines the segments, its pycoral modules, the devices, and the interpreter factory."""

    kind: str
    pycoral: Pycoral | None
    devices: list[str]
    factory: InterpreterFactory


def _choose_runner(
    runner: str,
    counts: Sequence[int],
    planned: bool,
    devices: str | Sequence[str] | None,
    interpreter_factory: InterpreterFactory | None,
    pycoral: Pycoral | None,
) -> _RunnerChoice:
    """Pick litert or pycoral (``auto``: pycoral when it imports and nothing is replicated), the device of
    each TPU in plan order, and the factory. ``planned``: the replica counts were given (devices must
    then match their sum)."""
    replicated = any(r > 1 for r in counts)
    demand, named = _plan_devices(counts, devices) if planned else (None, None)
    wanted = named if named is not None else devices
    pc = pycoral
    if runner == "pycoral" and pc is None:
        pc = import_pycoral()
    elif runner == "auto" and pc is None and not replicated:
        pc = pycoral_available()
    if runner == "litert" or pc is None or replicated:
        if interpreter_factory is None:
            require_edgetpu_runtime()
        chosen = select_devices(sum(counts), wanted, demand=demand)
        return _RunnerChoice("litert", None, chosen, interpreter_factory or make_edgetpu_interpreter)
    modules = pc
    chosen = _pycoral_devices(modules, len(counts), wanted)
    factory = interpreter_factory or (lambda p, d: modules.edgetpu.make_interpreter(str(p), device=d))
    return _RunnerChoice("pycoral", modules, chosen, factory)


@dataclass(frozen=True)
class _Requests:
    """The requests' inputs and, for each, the outputs of the segments run one by one."""

    feeds: list[dict[str, np.ndarray]]
    expected: list[dict[str, np.ndarray]]


def _reference_requests(interpreters: Sequence[Any], count: int, seed: int) -> _Requests:
    """Up to 8 random inputs and the last segment's outputs for each, from the segments run one by one."""
    rng = np.random.default_rng(seed)
    feeds = [random_inputs(interpreters[0].get_input_details(), rng) for _ in range(min(count, 8))]
    out_names = [d["name"] for d in interpreters[-1].get_output_details()]
    expected = []
    for feed in feeds:
        env = _run_sequential(interpreters, feed)
        expected.append({name: env[name] for name in out_names})
    return _Requests(feeds, expected)


def _time_alone(
    interpreters: Sequence[Any], feeds: Sequence[dict[str, np.ndarray]], count: int, warmup: int
) -> list[list[float]]:
    """Each segment's invoke times (seconds) run one by one, after ``warmup`` untimed passes."""
    alone: list[list[float]] = [[] for _ in interpreters]
    for i in range(warmup + max(count // 5, 5)):
        _run_sequential(interpreters, feeds[i % len(feeds)], alone if i >= warmup else None)
    return alone


def _warm_replicas(
    groups: list[list[Any]], paths: Sequence[Path], placed: list[list[str]], feeds: Sequence[dict], warmup: int
) -> None:
    """Invoke every replica but the first of each segment ``warmup`` times (at least once) on the inputs the
    segments run one by one give it (so no TPU loads its parameters while timed), and check its outputs."""
    for i in range(max(warmup, 1)):
        env = _run_sequential([group[0] for group in groups], feeds[i % len(feeds)])
        for s, group in enumerate(groups):
            for j, it in enumerate(group[1:], 1):
                for d in it.get_input_details():
                    it.set_tensor(d["index"], env[d["name"]].reshape(d["shape"]))
                it.invoke()
                for d in it.get_output_details():
                    if not np.array_equal(it.get_tensor(d["index"]), env[d["name"]]):
                        raise CoralError(
                            f"segment {s} ({paths[s].name}) replica {j} on {placed[s][j]} gives another "
                            f"'{d['name']}' than replica 0 on {placed[s][0]} for the same inputs"
                        )


def _measure_litert(
    groups: list[list[Any]],
    paths: Sequence[Path],
    placed: list[list[str]],
    requests: _Requests,
    count: int,
    warmup: int,
    progress: ProgressFactory,
) -> tuple[dict[str, Any], list[float | None]]:
    """The pipeline's figures with our runner (every replica on its device), and each stage's median invoke
    (ms, over its replicas) in the loaded loop."""
    names = [f"segment {i} ({p.name})" for i, p in enumerate(paths)]
    labels = [[f"on {d}" if len(devs) == 1 else f"replica {j} on {d}" for j, d in enumerate(devs)] for devs in placed]
    k = sum(map(len, groups))
    with LiteRtPipelinedRunner(groups, names, replica_names=labels) as ours:
        figures = _measure(ours, requests.feeds, requests.expected, k, count, warmup, progress)
        in_pipeline = [float(np.median(t)) * 1e3 if t else None for t in ours.stage_times_s()]
    return figures, in_pipeline


def _measure_pycoral(
    pc: Pycoral, interpreters: list[Any], requests: _Requests, count: int, warmup: int, progress: ProgressFactory
) -> dict[str, Any]:
    """The pipeline's figures with pycoral's runner, stopped and drained quietly if measuring fails."""
    try:
        theirs = _quiet_runner_class(pc.pipeline.PipelinedModelRunner)([unwrap(it) for it in interpreters])
    except ValueError as exc:
        raise CoralError(f"pycoral's PipelinedModelRunner rejects the segments ({exc})") from None
    try:
        return _measure(theirs, requests.feeds, requests.expected, len(interpreters), count, warmup, progress)
    except BaseException:
        _stop_pycoral(theirs)
        raise
    finally:
        del theirs


def _stage_reports(
    paths: Sequence[Path],
    interpreters: Sequence[Any],
    placed: list[list[str]],
    alone: list[list[float]],
    in_pipeline: list[float | None],
) -> list[dict[str, Any]]:
    """One record per stage: median invoke alone and in the pipeline (ms), replicas and their devices, file,
    and bytes in and out."""
    return [
        {
            "index": i,
            "ms": float(np.median(alone[i])) * 1e3,
            "ms_in_pipeline": in_pipeline[i],
            "replicas": len(placed[i]),
            "devices": list(placed[i]),
            "file": str(p),
            "in_bytes": _nbytes(it.get_input_details()),
            "out_bytes": _nbytes(it.get_output_details()),
        }
        for i, (p, it) in enumerate(zip(paths, interpreters))
    ]
