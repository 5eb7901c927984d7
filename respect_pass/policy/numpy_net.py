"""The policy network's forward pass in numpy: what the ``respect`` scheduler runs (no torch at inference).

:class:`NumpyPolicy` holds the checkpoint's weights (the ``state_dict`` arrays of
the torch :class:`~respect_pass.policy.model.PolicyNet`, read from the ``.npz``)
and computes the same function as that module on one graph, in float32 like
torch: ``embed`` (Linear, ReLU, Linear, LayerNorm) -> ``layers`` residual
blocks -> ``head`` (Linear, ReLU, Linear). Each block mixes an op's state with
the mean of its predecessors' (``pred`` Linear), the mean of its successors'
(``succ`` Linear) and the mean over the graph, then ``LayerNorm(h + update(.))``.

The per-edge sums of the torch ``index_add_`` are segment sums here: the edges
are sorted by target once per graph (:class:`EdgeIndex`) and summed with
``np.add.reduceat``. Only the summation order differs from torch, so scores
agree to float32 rounding (the tests hold them to 1e-5).

The forward pass runs under :func:`blas_single_thread`, the numpy twin of the
single-threaded torch it replaces: OpenBLAS spreads a product of a few hundred
rows over every core, and on a busy machine waiting for those threads costs
tens of times the arithmetic (measured: 100-250 ms instead of 2-20 ms for a
400-op graph with one other process spinning on a 2-core machine).

:class:`ModelConfig` (the hyperparameters saved with a checkpoint) lives here so
that reading a checkpoint needs no torch; :mod:`respect_pass.policy.model`
re-exports it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .features import NUM_FEATURES, GraphArrays, node_features

__all__ = ["ModelConfig", "NumpyPolicy", "EdgeIndex", "parameter_shapes", "blas_single_thread", "LAYER_NORM_EPS"]

#: ``torch.nn.LayerNorm``'s default epsilon, which :class:`PolicyNet` uses.
LAYER_NORM_EPS = 1e-5


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of the policy network (saved next to the weights)."""

    in_dim: int = NUM_FEATURES
    hidden: int = 64
    layers: int = 4

    def as_dict(self) -> dict[str, int]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every ``state_dict`` entry of a :class:`PolicyNet` with this config."""
    h = config.hidden
    shapes: dict[str, tuple[int, ...]] = {}

    def linear(name: str, fan_in: int, fan_out: int) -> None:
        shapes[f"{name}.weight"] = (fan_out, fan_in)
        shapes[f"{name}.bias"] = (fan_out,)

    def norm(name: str) -> None:
        shapes[f"{name}.weight"] = (h,)
        shapes[f"{name}.bias"] = (h,)

    linear("embed.0", config.in_dim, h)
    linear("embed.2", h, h)
    norm("embed.3")
    for i in range(config.layers):
        linear(f"blocks.{i}.pred", h, h)
        linear(f"blocks.{i}.succ", h, h)
        linear(f"blocks.{i}.update.0", 4 * h, 2 * h)
        linear(f"blocks.{i}.update.2", 2 * h, h)
        norm(f"blocks.{i}.norm")
    linear("head.0", h, h)
    linear("head.2", h, 1)
    return shapes


@dataclass(frozen=True)
class _Segments:
    """Sum rows of a (E, h) array into ``n`` targets: rows sorted by target, then ``reduceat`` per target."""

    order: np.ndarray  # (E,) edge permutation sorting the targets
    starts: np.ndarray  # (T,) first sorted row of each target that has edges
    targets: np.ndarray  # (T,) those targets

    @classmethod
    def of(cls, target: np.ndarray) -> _Segments:
        order = np.argsort(target, kind="stable")
        t = target[order]
        starts = np.flatnonzero(np.r_[True, t[1:] != t[:-1]]) if t.size else np.zeros(0, dtype=np.int64)
        return cls(order, starts, t[starts])

    def sum(self, rows: np.ndarray, n: int) -> np.ndarray:
        out = np.zeros((n, rows.shape[1]), dtype=rows.dtype)
        if self.order.size:
            out[self.targets] = np.add.reduceat(rows[self.order], self.starts, axis=0)
        return out


@dataclass(frozen=True)
class EdgeIndex:
    """One graph's edges prepared for message passing: ops ``n``, edges ``src -> dst``, mean weights."""

    n: int
    src: np.ndarray
    dst: np.ndarray
    into: _Segments  # sums over incoming edges (grouped by dst)
    out_of: _Segments  # sums over outgoing edges (grouped by src)
    inv_in: np.ndarray  # (n, 1) float32 1 / max(1, in-degree)
    inv_out: np.ndarray  # (n, 1) float32 1 / max(1, out-degree)

    @classmethod
    def of(cls, n: int, src: np.ndarray, dst: np.ndarray) -> EdgeIndex:
        """The index of a graph with ``n`` ops and edges ``src[i] -> dst[i]``."""
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        indeg = np.maximum(np.bincount(dst, minlength=n), 1).astype(np.float32)
        outdeg = np.maximum(np.bincount(src, minlength=n), 1).astype(np.float32)
        return cls(n, src, dst, _Segments.of(dst), _Segments.of(src), (1 / indeg)[:, None], (1 / outdeg)[:, None])


# (set, get) thread-count entry points of the OpenBLAS builds numpy ships (scipy-openblas, 64-bit ints) or links
_OPENBLAS_SYMBOLS = (
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)
_BLAS_LOCK = threading.Lock()


def _loaded_openblas_paths() -> list[str]:
    """Paths of the OpenBLAS libraries loaded in this process (Linux), else those bundled with numpy."""
    try:
        with open("/proc/self/maps") as maps:
            fields = [line.split(None, 5) for line in maps if "openblas" in line]
        return sorted({f[5].strip() for f in fields if len(f) == 6 and os.path.isfile(f[5].strip())})
    except OSError:
        here = os.path.dirname(np.__file__)
        return sorted(
            glob.glob(os.path.join(here + ".libs", "*openblas*")) + glob.glob(os.path.join(here, ".dylibs", "*openblas*"))
        )


@lru_cache(maxsize=1)
def _openblas_thread_controls() -> tuple[tuple[Callable[[int], None], Callable[[], int]], ...]:
    """(set, get) ctypes functions of every loaded OpenBLAS; empty when there is none (other BLAS: no-op)."""
    controls: list[tuple[Callable[[int], None], Callable[[], int]]] = []
    for path in _loaded_openblas_paths():
        try:
            lib = ctypes.CDLL(path)  # already loaded by numpy: the same handle, nothing new runs
        except OSError:
            continue
        for set_name, get_name in _OPENBLAS_SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype, getter.argtypes, getter.restype = [ctypes.c_int], None, [], ctypes.c_int
                controls.append((setter, getter))
                break
    return tuple(controls)


@contextmanager
def blas_single_thread() -> Iterator[None]:
    """Run OpenBLAS on the calling thread only, then restore its thread count (a no-op for other BLAS)."""
    controls = _openblas_thread_controls()
    if not controls:
        yield
        return
    with _BLAS_LOCK:
        before = [get() for _, get in controls]
        for setter, _ in controls:
            setter(1)
        try:
            yield
        finally:
            for (setter, _), n in zip(controls, before):
                setter(n)


def _layer_norm(h: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mu = h.mean(axis=1, keepdims=True)
    d = h - mu
    var = (d * d).mean(axis=1, keepdims=True)
    return d / np.sqrt(var + np.float32(LAYER_NORM_EPS)) * weight + bias


class NumpyPolicy:
    """The policy network on numpy arrays; scores every op of one graph (higher = emitted earlier)."""

    def __init__(self, config: ModelConfig, weights: Mapping[str, np.ndarray]) -> None:
        """``weights``: the ``state_dict`` arrays; exactly the names and shapes :func:`parameter_shapes` gives."""
        want = parameter_shapes(config)
        if set(weights) != set(want):
            missing, extra = sorted(set(want) - set(weights)), sorted(set(weights) - set(want))
            raise ValueError(f"weights do not match the model: missing {missing}, unexpected {extra}")
        for name, shape in want.items():
            if tuple(np.shape(weights[name])) != shape:
                raise ValueError(f"weight {name}: shape {tuple(np.shape(weights[name]))}, expected {shape}")
            if np.asarray(weights[name]).dtype.kind != "f":
                raise ValueError(f"weight {name}: dtype {np.asarray(weights[name]).dtype}, expected floating point")
        self.config = config
        # Linear weights transposed once, so that every layer is ``x @ w + b``
        self._w = {
            k: np.ascontiguousarray(
                (np.asarray(v).T if k.endswith(".weight") and np.ndim(v) == 2 else np.asarray(v)), dtype=np.float32
            )
            for k, v in weights.items()
        }

    def _linear(self, name: str, x: np.ndarray) -> np.ndarray:
        return x @ self._w[f"{name}.weight"] + self._w[f"{name}.bias"]

    def _norm(self, name: str, x: np.ndarray) -> np.ndarray:
        return _layer_norm(x, self._w[f"{name}.weight"], self._w[f"{name}.bias"])

    def forward(self, x: np.ndarray, edges: EdgeIndex) -> np.ndarray:
        """(n,) float32 scores of the ops of one graph with (n, in_dim) features ``x``."""
        x = np.asarray(x, dtype=np.float32)
        if x.shape != (edges.n, self.config.in_dim):
            raise ValueError(f"features of shape {x.shape}, expected {(edges.n, self.config.in_dim)}")
        with blas_single_thread():
            return self._forward(x, edges)

    def _forward(self, x: np.ndarray, edges: EdgeIndex) -> np.ndarray:
        n = edges.n
        h = np.maximum(self._linear("embed.0", x), 0)
        h = self._norm("embed.3", self._linear("embed.2", h))
        for i in range(self.config.layers):
            b = f"blocks.{i}"
            m_in = edges.into.sum(self._linear(f"{b}.pred", h)[edges.src], n) * edges.inv_in
            m_out = edges.out_of.sum(self._linear(f"{b}.succ", h)[edges.dst], n) * edges.inv_out
            g = np.broadcast_to(h.sum(axis=0, keepdims=True) * np.float32(1 / max(n, 1)), h.shape)
            u = np.maximum(self._linear(f"{b}.update.0", np.concatenate([h, m_in, m_out, g], axis=1)), 0)
            h = self._norm(f"{b}.norm", h + self._linear(f"{b}.update.2", u))
        return self._linear("head.2", np.maximum(self._linear("head.0", h), 0))[:, 0]

    def __call__(self, x: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """(n,) float32 scores of one graph given its features and edge arrays."""
        x = np.asarray(x)
        return self.forward(x, EdgeIndex.of(x.shape[0], src, dst))

    def scores(self, ga: GraphArrays, num_stages: int) -> np.ndarray:
        """(n,) float64 scores of every op of ``ga`` for a ``num_stages``-stage plan."""
        return self(node_features(ga, num_stages), ga.src, ga.dst).astype(np.float64)
