"""Decoding the policy's scores into topological orders, and the log-probability of an order.

The decoder is autoregressive under a precedence mask: at step t it chooses
one *ready* op (every predecessor already emitted, not emitted itself) with
probability ``softmax(score / temperature)`` over the ready set. Ops that
produce a model output, and their descendants (*pinned*: every plan puts them
in the last stage), are ready only once every other op is emitted; the
unpinned ops form a down-set, so this never blocks. Every decoded sequence is
therefore a topological order whose ``dp`` split is a valid plan by
construction, with no repair step.

* :func:`greedy_order`: the most likely choice at every step (list scheduling by
  score with a heap, O(n log n)).
* :func:`sample_orders`: exact samples of the decoder, vectorised over samples
  (used by REINFORCE, where samples must come from the policy itself).
* :func:`live_order`: at every step the ready op that leaves the fewest activation bytes live
  (its outputs minus the inputs it reads last), the policy's score breaking ties: orders whose
  prefixes cut few bytes, which is what a stage boundary costs on the host link.
* :func:`perturbed_orders`: Gumbel-perturbed greedy decoding, a cheaper way to
  draw diverse orders at inference time (one noise vector per order).
* :func:`order_log_probs` (with :class:`DecodeTensors` and
  :func:`decode_tensors`): log-probability of given orders under the decoder,
  for training. These need torch, so they live in
  :mod:`respect_pass.policy.model` and are re-exported here lazily: importing
  this module (as the ``respect`` scheduler does) never imports torch.
"""

from __future__ import annotations

import heapq
import importlib
from typing import Any

import numpy as np

from .features import GraphArrays

__all__ = ["greedy_order", "live_order", "perturbed_orders", "sample_orders"]

#: torch-based names served from :mod:`respect_pass.policy.model` on first use
_TORCH_NAMES = frozenset({"DecodeTensors", "decode_tensors", "order_log_probs"})


def __getattr__(name: str) -> Any:
    if name in _TORCH_NAMES:
        return getattr(importlib.import_module(".model", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def greedy_order(scores: np.ndarray, ga: GraphArrays, stages: np.ndarray | None = None) -> np.ndarray:
    """The ready op with the highest score at every step (ties: lowest index); unpinned ops first.

    With ``stages`` (a monotone stage map), ready ops of lower stages come first: the result is a
    stage-major order of that map, each stage in score order.
    """
    n = ga.n
    indeg = ga.indeg.tolist()
    neg = (-np.asarray(scores, dtype=np.float64)).tolist()
    pinned = ga.pinned.tolist()
    if stages is not None:
        pinned = [(a, int(b)) for a, b in zip(pinned, stages)]
    succs = ga.succs
    heap = [(pinned[v], neg[v], v) for v in range(n) if indeg[v] == 0]
    heapq.heapify(heap)
    order = []
    push, pop = heapq.heappush, heapq.heappop
    while heap:
        v = pop(heap)[2]
        order.append(v)
        for w in succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                push(heap, (pinned[w], neg[w], w))
    return np.asarray(order, dtype=np.int64)


def live_order(scores: np.ndarray, ga: GraphArrays, stages: np.ndarray | None = None) -> np.ndarray:
    """The ready op that adds the fewest live activation bytes at every step, unpinned ops first; ties go
    to the higher score, then the lower index. With ``stages`` (a monotone stage map) ready ops of lower
    stages come first: a stage-major order of that map, each stage in live-bytes order.

    An op adds the bytes of the tensors it produces (those with readers) and frees those of the inputs it
    is the last remaining reader of (model inputs included). Every prefix of the order is a cut of the
    graph, and the live bytes after a prefix are what crosses that cut: this order keeps the crossing small
    where the ``dp`` split will look for cuts. O(n * ready set) Python work."""
    n = ga.n
    ins: list[list[int]] = [[] for _ in range(n)]  # per op: its distinct input tensors
    nbytes: dict[int, float] = {}
    readers: dict[int, int] = {}
    for t, r, b in zip(ga.in_tensor.tolist(), ga.in_reader.tolist(), ga.in_bytes_pair.tolist()):
        nbytes[t] = max(nbytes.get(t, 0.0), b)
        if t not in ins[r]:  # an op reading one tensor twice frees it once
            ins[r].append(t)
            readers[t] = readers.get(t, 0) + 1
    out = np.zeros(n)
    np.add.at(out, ga.out_producer, ga.out_bytes_t)
    added = out.tolist()
    neg = (-np.asarray(scores, dtype=np.float64)).tolist()
    pinned: list = ga.pinned.tolist()
    if stages is not None:
        pinned = [(a, int(b)) for a, b in zip(pinned, stages)]
    indeg = ga.indeg.tolist()
    succs = ga.succs
    ready = [v for v in range(n) if indeg[v] == 0]
    order = []
    while ready:
        best_i, best_key = 0, None
        for i, v in enumerate(ready):
            freed = sum(nbytes[t] for t in ins[v] if readers[t] == 1)
            key = (pinned[v], added[v] - freed, neg[v], v)
            if best_key is None or key < best_key:
                best_i, best_key = i, key
        v = ready.pop(best_i)
        order.append(v)
        for t in ins[v]:
            readers[t] -= 1
        for w in succs[v]:
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    return np.asarray(order, dtype=np.int64)


def perturbed_orders(
    scores: np.ndarray, ga: GraphArrays, num: int, rng: np.random.Generator, temperature: float = 1.0
) -> list[np.ndarray]:
    """``num`` greedy decodings of ``scores + temperature * Gumbel noise`` (a fresh noise vector each)."""
    g = rng.gumbel(size=(num, ga.n))
    return [greedy_order(scores + temperature * g[i], ga) for i in range(num)]


def sample_orders(
    scores: np.ndarray, ga: GraphArrays, num: int, rng: np.random.Generator, temperature: float = 1.0
) -> np.ndarray:
    """(num, n) orders drawn from the decoder's distribution (sequential softmax over the ready set)."""
    n = ga.n
    logits = np.asarray(scores, dtype=np.float64) / temperature
    adj = np.zeros((n, n), dtype=np.int32)
    adj[ga.src, ga.dst] = 1
    indeg = np.tile(ga.indeg.astype(np.int32), (num, 1))
    placed = np.zeros((num, n), dtype=bool)
    pinned = ga.pinned
    unpinned_left = np.full(num, int((~pinned).sum()))
    rows = np.arange(num)
    out = np.empty((num, n), dtype=np.int64)
    for t in range(n):
        ready = (indeg == 0) & ~placed
        ready &= ~(pinned[None, :] & (unpinned_left > 0)[:, None])
        z = np.where(ready, logits[None, :], -np.inf)
        z -= z.max(axis=1, keepdims=True)
        c = np.cumsum(np.exp(z), axis=1)
        u = rng.random(num) * c[:, -1]
        choice = np.minimum((c <= u[:, None]).sum(axis=1), n - 1)
        # guard against rounding picking an op that is not ready
        bad = ~ready[rows, choice]
        if bad.any():
            choice[bad] = np.argmax(np.where(ready[bad], z[bad], -np.inf), axis=1)
        out[:, t] = choice
        placed[rows, choice] = True
        indeg -= adj[choice]
        unpinned_left -= ~pinned[choice]
    return out
