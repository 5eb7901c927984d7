"""The policy network: a message-passing encoder over the DAG and a priority head.

Each op gets a score; the decoder (:mod:`respect_pass.policy.decode`) emits a
topological order by repeatedly choosing among the *ready* ops (all
predecessors emitted; model-output ops and their descendants only once
nothing else is left) with probability ``softmax(score / temperature)`` over
the ready set. A static score per op is enough to express any stage-major
order (score = minus the op's stage), so this Plackett-Luce-under-precedence
decoder can represent every exact plan, while greedy decoding costs one
network call and an O(n log n) list-scheduling pass.

Encoder: node features (and the K-dependent context columns, see
:mod:`respect_pass.policy.features`) -> MLP -> ``layers`` residual blocks, each
mixing an op's state with the mean of its predecessors', the mean of its
successors' and the mean over its graph; then an MLP head to one score.
Graphs are batched as one disjoint union (``batch`` gives each op's graph).

This is the torch side of the policy, imported only by training
(:mod:`respect_pass.policy.train`) and the tests: inference runs the same network
in numpy (:mod:`respect_pass.policy.numpy_net`, which also holds
:class:`ModelConfig`). Besides the network it holds the torch pieces of decoding
that training needs (:func:`order_log_probs`, re-exported by
:mod:`respect_pass.policy.decode`) and :func:`torch_scores`, the torch twin of
:meth:`NumpyPolicy.scores <respect_pass.policy.numpy_net.NumpyPolicy.scores>`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .features import GraphArrays, node_features
from .numpy_net import ModelConfig

__all__ = [
    "ModelConfig",
    "PolicyNet",
    "GraphBatch",
    "make_batch",
    "single_thread",
    "torch_scores",
    "DecodeTensors",
    "decode_tensors",
    "order_log_probs",
]


@dataclass(frozen=True)
class GraphBatch:
    """A disjoint union of graphs as tensors: features, edges, per-op graph index and the mean weights."""

    x: torch.Tensor  # (N, in_dim) float32
    src: torch.Tensor  # (E,) int64, global op indices
    dst: torch.Tensor
    batch: torch.Tensor  # (N,) int64 graph of each op
    inv_in: torch.Tensor  # (N, 1) 1 / max(1, in-degree)
    inv_out: torch.Tensor  # (N, 1) 1 / max(1, out-degree)
    inv_count: torch.Tensor  # (G, 1) 1 / ops per graph
    offsets: tuple[int, ...]  # first op of each graph, then N


def make_batch(items) -> GraphBatch:
    """Batch ``(features (n, F) numpy, src (E,), dst (E,))`` triples of several graphs."""
    xs, srcs, dsts, bs, offs = [], [], [], [], [0]
    for g, (x, src, dst) in enumerate(items):
        o = offs[-1]
        xs.append(torch.from_numpy(x))
        srcs.append(torch.from_numpy(src) + o)
        dsts.append(torch.from_numpy(dst) + o)
        bs.append(torch.full((x.shape[0],), g, dtype=torch.int64))
        offs.append(o + x.shape[0])
    n = offs[-1]
    src, dst = torch.cat(srcs), torch.cat(dsts)
    indeg = torch.bincount(dst, minlength=n).clamp_min(1).to(torch.float32)
    outdeg = torch.bincount(src, minlength=n).clamp_min(1).to(torch.float32)
    counts = torch.tensor([offs[i + 1] - offs[i] for i in range(len(items))], dtype=torch.float32)
    return GraphBatch(
        torch.cat(xs),
        src,
        dst,
        torch.cat(bs),
        (1 / indeg)[:, None],
        (1 / outdeg)[:, None],
        (1 / counts.clamp_min(1))[:, None],
        tuple(offs),
    )


class _Block(nn.Module):
    """One residual message-passing block: own state, mean of preds, mean of succs, mean of the graph."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.pred = nn.Linear(hidden, hidden)
        self.succ = nn.Linear(hidden, hidden)
        self.update = nn.Sequential(nn.Linear(4 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, h: torch.Tensor, gb: GraphBatch) -> torch.Tensor:
        m_in = torch.zeros_like(h).index_add_(0, gb.dst, self.pred(h)[gb.src]) * gb.inv_in
        m_out = torch.zeros_like(h).index_add_(0, gb.src, self.succ(h)[gb.dst]) * gb.inv_out
        g = torch.zeros((gb.inv_count.shape[0], h.shape[1]), dtype=h.dtype).index_add_(0, gb.batch, h) * gb.inv_count
        return self.norm(h + self.update(torch.cat([h, m_in, m_out, g[gb.batch]], dim=1)))


class PolicyNet(nn.Module):
    """Scores every op of a batch of graphs; higher = emitted earlier."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config or ModelConfig()
        c = self.config
        self.embed = nn.Sequential(
            nn.Linear(c.in_dim, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.hidden), nn.LayerNorm(c.hidden)
        )
        self.blocks = nn.ModuleList(_Block(c.hidden) for _ in range(c.layers))
        self.head = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.ReLU(), nn.Linear(c.hidden, 1))

    def forward(self, gb: GraphBatch) -> torch.Tensor:
        """(N,) scores of all ops in the batch."""
        h = self.embed(gb.x)
        for block in self.blocks:
            h = block(h, gb)
        return self.head(h).squeeze(1)


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's setting. The network is tiny: intra-op threads
    only add synchronisation, which on a busy machine costs up to a thousand times the work itself."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_scores(model: PolicyNet, ga: GraphArrays, num_stages: int) -> np.ndarray:
    """(n,) float64 scores of every op for a ``num_stages``-stage plan (no gradient, one thread)."""
    x = node_features(ga, num_stages)
    with torch.inference_mode(), single_thread():
        return model(make_batch([(x, ga.src, ga.dst)])).double().numpy()


@dataclass(frozen=True)
class DecodeTensors:
    """What :func:`order_log_probs` needs of one graph, as torch tensors."""

    n: int
    src: torch.Tensor
    dst: torch.Tensor
    pinned: torch.Tensor  # (n,) bool
    num_unpinned: int


def decode_tensors(ga: GraphArrays) -> DecodeTensors:
    """The :class:`DecodeTensors` of one graph."""
    return DecodeTensors(
        ga.n, torch.from_numpy(ga.src), torch.from_numpy(ga.dst), torch.from_numpy(ga.pinned), int((~ga.pinned).sum())
    )


def order_log_probs(scores: torch.Tensor, orders: torch.Tensor, dt: DecodeTensors, temperature: float = 1.0) -> torch.Tensor:
    """(B,) log-probability of each order in ``orders`` (B, n) under the decoder with these (n,) scores.

    Vectorised over steps: op v is ready at step t iff ``max(pos[preds(v)]) < t <= pos[v]`` (and, when
    pinned, t is past every unpinned op); see :mod:`respect_pass.policy.decode`.
    """
    b, n = orders.shape
    pos = torch.empty_like(orders)
    pos.scatter_(1, orders, torch.arange(n).expand(b, n))
    start = torch.zeros((b, n), dtype=torch.int64)
    if dt.src.numel():
        start.scatter_reduce_(1, dt.dst.expand(b, -1), pos[:, dt.src] + 1, reduce="amax", include_self=True)
    steps = torch.arange(n)[None, :, None]  # (1, T, 1)
    ready = (start[:, None, :] <= steps) & (steps <= pos[:, None, :])  # (B, T, n)
    ready &= ~(dt.pinned[None, None, :] & (steps < dt.num_unpinned))
    z = scores / temperature
    masked = torch.where(ready, z[None, None, :], torch.full((), -torch.inf))
    lse = torch.logsumexp(masked, dim=2)  # (B, T)
    return (z[orders] - lse).sum(dim=1)
