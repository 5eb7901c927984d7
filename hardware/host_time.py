"""Host (CPU) op times measured with LiteRT on this machine, cached on disk.

Each op becomes a one-op model (:func:`tflite_io.submodel.submodel`, constants inside, activation
inputs as model inputs) run in LiteRT on seeded random inputs: one warm-up invoke, then the median wall
time of ``runs`` invokes. An op LiteRT cannot build, prepare or run (a custom op with no kernel there,
such as ``PosenetDecoderOp``) is reported in :attr:`HostTimes.unmeasured` with the reason, never
raised, so the caller can fall back to the table of :mod:`hardware.cost` for it.

Results are cached, one JSON file per op, in ``<cache>/host_times/`` (``<cache>``: ``cache_dir`` or
:func:`default_cache_dir`), keyed by the model file's sha256, the op (index, type, tensor types and
shapes), :func:`host_id`, the LiteRT version, ``threads`` and ``runs``. A cache in the respect-pass
source tree or the model's directory is refused (one warning; times are still measured). The model is only read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from tflite_io import OpGraph, SegmentInterface
from tflite_io.submodel import submodel
from tflite_io.verify import random_inputs

from .runtime import litert_version
from .spec import EdgeTpuSpec

__all__ = [
    "HOST_TIME_SOURCES",
    "HostTimes",
    "with_host_times",
    "cpu_only_seconds",
    "store_json",
    "localized",
    "measure_host_ops",
    "time_edge_ops",
    "time_copy",
    "edge_ops",
    "op_interface",
    "host_id",
    "litert_version",
    "default_cache_dir",
]

log = logging.getLogger(__name__)

_FORMAT = 1  # bump when the measuring procedure changes: older cache entries then never match
_SEED = 20230723
_QDQ = frozenset({"QUANTIZE", "DEQUANTIZE"})
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class HostTimes:
    """Measured host op times: ``seconds`` (op -> median seconds per invoke) and ``unmeasured``
    (op -> why LiteRT could not time it), both read-only, on ``host`` with LiteRT ``litert``."""

    seconds: Mapping[int, float]
    unmeasured: Mapping[int, str]
    host: str
    litert: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "seconds", MappingProxyType(dict(sorted(self.seconds.items()))))
        object.__setattr__(self, "unmeasured", MappingProxyType(dict(sorted(self.unmeasured.items()))))


def host_id() -> str:
    """This machine: architecture, CPU model (from ``/proc/cpuinfo`` where there is one) and CPU count."""
    model = ""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for key, _, value in (line.partition(":") for line in lines):
        if not model and key.strip() in ("model name", "Model", "Hardware", "cpu model"):
            model = " ".join(value.split())
    return f"{platform.machine() or 'unknown'}; {model or platform.processor() or 'unknown cpu'}; {os.cpu_count()} cpus"


def default_cache_dir() -> Path:
    """``$RESPECT_PASS_CACHE``, else ``$XDG_CACHE_HOME/respect-pass``, else ``~/.cache/respect-pass``."""
    if os.environ.get("RESPECT_PASS_CACHE"):
        return Path(os.environ["RESPECT_PASS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "respect-pass"


def op_interface(graph: OpGraph, v: int) -> SegmentInterface:
    """The interface of op ``v`` alone: its distinct activation inputs (model inputs or other ops' outputs)
    in, its outputs out; constants and variable tensors stay inside the one-op model."""
    op = graph.ops[v]
    acts = set(graph.inputs) | set(graph.producer)
    inputs = tuple(t for t in dict.fromkeys(op.inputs) if t >= 0 and t in acts)
    return SegmentInterface(-1, (v,), inputs, tuple(dict.fromkeys(op.outputs)), graph.param_bytes_of((v,)))


def edge_ops(graph: OpGraph) -> tuple[int, ...]:
    """QUANTIZE / DEQUANTIZE ops at the model's edges: host ops, or ops that read a model input or a host
    op's output, or write a model output or a tensor a host op reads."""
    host_made = set(graph.inputs) | {t for t, p in graph.producer.items() if p in graph.host_ops}
    host_read = set(graph.outputs) | {t for t, rs in graph.consumers.items() if any(r in graph.host_ops for r in rs)}
    return tuple(
        op.index
        for op in graph.ops
        if op.op_type in _QDQ and (op.index in graph.host_ops or host_made & set(op.inputs) or host_read & set(op.outputs))
    )


def _interpreter(data: bytes, threads: int) -> Any:
    """A LiteRT interpreter over ``data`` (the one place interpreters are built: tests count calls)."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=data, num_threads=threads)


def _median_time(fn: Callable[[], object], runs: int) -> float:
    """Median wall seconds of ``runs`` calls of ``fn`` after one warm-up call (at least 1 ns)."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return max(statistics.median(times), 1e-9)


def _median_invoke(data: bytes, threads: int, runs: int, seed: int) -> float:
    """Median seconds of ``runs`` invokes of model ``data`` after one warm-up, on seeded random inputs."""
    stage = "load"
    try:
        it = _interpreter(data, threads)
        stage = "prepare"
        it.allocate_tensors()
        details = it.get_input_details()
        feeds = random_inputs(details, np.random.default_rng([_SEED, seed]))
        for d in details:
            it.set_tensor(d["index"], feeds[d["name"]])
        stage = "run"
        return _median_time(it.invoke, runs)
    except Exception as exc:
        msg = " ".join(str(exc).split())
        if "unresolved custom op" in msg:
            name = msg.split("unresolved custom op:", 1)[1].strip().split()[0].rstrip(".")
            raise RuntimeError(f"LiteRT has no kernel for custom op {name}") from None
        raise RuntimeError(f"LiteRT cannot {stage} it ({type(exc).__name__}: {msg[:200]})") from None


def _key(graph: OpGraph, v: int, sha: str, host: str, litert: str, threads: int, runs: int) -> dict[str, Any]:
    op = graph.ops[v]

    def sig(ts: Iterable[int]) -> list[Any]:
        return [[graph.tensors[t].dtype, list(graph.tensors[t].shape)] if t >= 0 else None for t in ts]

    key = dict(format=_FORMAT, model_sha256=sha, op=v, op_type=op.label, inputs=sig(op.inputs), outputs=sig(op.outputs))
    return key | dict(host=host, litert=litert, threads=threads, runs=runs)


def _cache_file(root: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return root / f"{key['model_sha256'][:16]}-op{key['op']}-{digest}.json"


def _load(path: Path, key: dict[str, Any]) -> tuple[str, float | str] | None:
    """The cached ``("seconds", s)`` or ``("unmeasured", reason)`` for ``key``, or None (missing, stale, corrupt)."""
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text())
        if entry["key"] != key:
            raise ValueError("key differs")
        if "seconds" in entry:
            s = float(entry["seconds"])
            if not (math.isfinite(s) and s > 0):
                raise ValueError(f"bad time {s!r}")
            return ("seconds", s)
        return ("unmeasured", str(entry["unmeasured"]))
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        log.debug("ignoring cache file %s (%s: %s)", path, type(exc).__name__, exc)
        return None


def store_json(path: Path, entry: dict[str, Any], what: str = "host time cache") -> bool:
    """Write ``entry`` to ``path`` atomically (temporary file + ``os.replace``); False where that fails, with
    one warning naming ``what`` (the caches of this module and :mod:`hardware.runtime_probe`)."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            tmp = f.name
            json.dump(entry, f, sort_keys=True)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning("cannot write the %s %s, not caching: %s", what, path, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return False


def _cache_root(cache_dir: Path | None, model_path: Path) -> Path | None:
    """``<cache>/host_times`` or None where that lies in the source tree or the model's directory."""
    root = ((cache_dir if cache_dir is not None else default_cache_dir()) / "host_times").resolve()
    in_source = (_SOURCE_ROOT / "pyproject.toml").is_file() and root.is_relative_to(_SOURCE_ROOT)
    if in_source or root == model_path.resolve().parent:
        log.warning("not caching host op times in %s (inside the source tree or next to the model)", root)
        return None
    return root


def _model_tree(data: bytes, graph: OpGraph, model_path: Path) -> Any:
    """The object-API tree of the model bytes, checked to have ``graph``'s ops."""
    from ai_edge_litert import schema_py_generated as schema

    tree = schema.ModelT.InitFromPackedBuf(data, 0)
    n = len(tree.subgraphs[0].operators or []) if tree.subgraphs else 0
    if n != graph.num_ops:
        raise ValueError(f"{model_path} has {n} ops, not the {graph.num_ops} ops of graph {graph.name}")
    return tree


def measure_host_ops(
    model_path: Path,
    graph: OpGraph,
    ops: Iterable[int] | None = None,
    *,
    runs: int = 7,
    cache_dir: Path | None = None,
    threads: int = 1,
) -> HostTimes:
    """Time ``ops`` (default: ``graph.host_ops``) of the model at ``model_path`` (whose graph is ``graph``) in
    LiteRT, one op at a time; cached results are reused without building anything."""
    if runs < 1 or threads < 1:
        raise ValueError(f"runs and threads must be at least 1, got runs={runs}, threads={threads}")
    model_path = Path(model_path)
    wanted = sorted(set(graph.host_ops if ops is None else ops))
    bad = [v for v in wanted if not 0 <= v < graph.num_ops]
    if bad:
        raise ValueError(f"ops {bad} are not op indices of the {graph.num_ops}-op graph {graph.name}")
    data = model_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    host, litert = host_id(), litert_version()
    root = _cache_root(Path(cache_dir) if cache_dir is not None else None, model_path)
    seconds: dict[int, float] = {}
    unmeasured: dict[int, str] = {}
    tree: Any = None
    for v in wanted:
        key = _key(graph, v, sha, host, litert, threads, runs)
        path = _cache_file(root, key) if root is not None else None
        hit = _load(path, key) if path is not None else None
        if hit is None:
            if tree is None:
                tree = _model_tree(data, graph, model_path)
            try:
                one = submodel(tree, op_interface(graph, v))
            except Exception as exc:
                hit = ("unmeasured", f"op {v} ({graph.ops[v].label}): cannot build its one-op model: {exc!r}")
            else:
                try:
                    hit = ("seconds", _median_invoke(one, threads, runs, v))
                except RuntimeError as exc:
                    hit = ("unmeasured", f"op {v} ({graph.ops[v].label}): {exc}")
            if path is not None and not store_json(path, {"key": key, hit[0]: hit[1]}):
                root = None  # one warning, then no more writes
        if hit[0] == "seconds":
            seconds[v] = float(hit[1])
        else:
            unmeasured[v] = str(hit[1])
            log.debug("host op %d not measured: %s", v, hit[1])
    return HostTimes(seconds, unmeasured, host, litert)


def time_edge_ops(
    model_path: Path, graph: OpGraph, *, runs: int = 7, cache_dir: Path | None = None, threads: int = 1
) -> HostTimes:
    """:func:`measure_host_ops` of the model's edge QUANTIZE / DEQUANTIZE ops (:func:`edge_ops`)."""
    return measure_host_ops(model_path, graph, edge_ops(graph), runs=runs, cache_dir=cache_dir, threads=threads)


def time_copy(nbytes: int, *, runs: int = 7) -> float:
    """Median seconds of the runner's extra host work per pipeline hop for an activation of ``nbytes`` bytes:
    copying it out of one interpreter (``np.array(get_tensor(...), copy=True)``) and into the next
    (``set_tensor``, a ``np.copyto`` into the input buffer)."""
    if nbytes < 0 or runs < 1:
        raise ValueError(f"need nbytes >= 0 and runs >= 1, got nbytes={nbytes}, runs={runs}")
    src = np.random.default_rng(_SEED).integers(0, 256, size=max(nbytes, 1), dtype=np.uint8)
    dst = np.empty_like(src)
    return _median_time(lambda: np.copyto(dst, np.array(src, copy=True)), runs)


#: The ways host ops are costed: timed by LiteRT on this machine, or the device model's table
HOST_TIME_SOURCES = ("measured", "table")


def with_host_times(model_path: Path, graph: OpGraph, source: str = "measured", **options: Any) -> OpGraph:
    """``graph`` with its host ops' times measured by :func:`measure_host_ops` (``source`` "measured"), or as
    it is ("table": the device model's table costs them). An op LiteRT cannot run keeps the table, with one
    warning line for all of them. ``options`` go to :func:`measure_host_ops`."""
    if source not in HOST_TIME_SOURCES:
        raise ValueError(f"host time source must be one of {HOST_TIME_SOURCES}, got {source!r}")
    if source == "table" or not graph.host_ops:
        return graph
    times = measure_host_ops(model_path, graph, **options)
    if times.unmeasured:
        first = next(iter(times.unmeasured.values()))
        log.warning(
            "%d host op(s) not timed by LiteRT here (%s); the device model's table costs them",
            len(times.unmeasured),
            first if len(times.unmeasured) == 1 else f"{first}; ...",
        )
    return replace(graph, host_times=tuple(times.seconds.items()))


def cpu_only_seconds(model_path: Path, *, runs: int = 5, threads: int = 1, cache_dir: Path | None = None) -> float:
    """Median seconds of one invoke of the whole model at ``model_path`` in LiteRT on this machine's CPU (no
    Edge TPU), cached like the op times: how fast this machine runs LiteRT kernels, to compare with a
    host's CPU-only figure. Raises :class:`RuntimeError` where LiteRT cannot run the model."""
    model_path = Path(model_path)
    data = model_path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = dict(format=_FORMAT, model_sha256=sha, op="all", host=host_id(), litert=litert_version())
    key |= dict(threads=threads, runs=runs)
    root = _cache_root(Path(cache_dir) if cache_dir is not None else None, model_path)
    path = _cache_file(root, key) if root is not None else None
    hit = _load(path, key) if path is not None else None
    if hit is not None and hit[0] == "seconds":
        return float(hit[1])
    seconds = _median_invoke(data, threads, runs, 0)
    if path is not None:
        store_json(path, {"key": key, "seconds": seconds})
    return seconds


def localized(spec: EdgeTpuSpec, reference: Path) -> EdgeTpuSpec:
    """``spec`` with ``host_op_scale`` set for this planning machine: the spec's host's time for the
    reference workload (``host_ref_ms``) over this machine's (:func:`cpu_only_seconds` of the model at
    ``reference``, cached); ``spec`` itself where ``host_ref_ms`` is 0 (the host is this machine) or the
    reference cannot run here (one warning)."""
    if spec.host_ref_ms <= 0:
        return spec
    try:
        here_ms = cpu_only_seconds(reference) * 1e3
    except (OSError, RuntimeError) as exc:
        log.warning("cannot time the reference workload %s here (%s): host ops costed as on this machine", reference, exc)
        return spec
    return spec.with_(host_op_scale=spec.host_ref_ms / here_ms)
