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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .features import NUM_FEATURES

__all__ = ["ModelConfig", "PolicyNet", "GraphBatch", "make_batch"]


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of :class:`PolicyNet` (saved next to the weights)."""

    in_dim: int = NUM_FEATURES
    hidden: int = 64
    layers: int = 4

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class GraphBatch:
    """A disjoint union of graphs as tensors: features, edges, per-op graph index and the mean weights."""

    x: torch.Tensor          # (N, in_dim) float32
    src: torch.Tensor        # (E,) int64, global op indices
    dst: torch.Tensor
    batch: torch.Tensor      # (N,) int64 graph of each op
    inv_in: torch.Tensor     # (N, 1) 1 / max(1, in-degree)
    inv_out: torch.Tensor    # (N, 1) 1 / max(1, out-degree)
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
    return GraphBatch(torch.cat(xs), src, dst, torch.cat(bs), (1 / indeg)[:, None], (1 / outdeg)[:, None],
                      (1 / counts.clamp_min(1))[:, None], tuple(offs))


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
        self.embed = nn.Sequential(nn.Linear(c.in_dim, c.hidden), nn.ReLU(), nn.Linear(c.hidden, c.hidden),
                                   nn.LayerNorm(c.hidden))
        self.blocks = nn.ModuleList(_Block(c.hidden) for _ in range(c.layers))
        self.head = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.ReLU(), nn.Linear(c.hidden, 1))

    def forward(self, gb: GraphBatch) -> torch.Tensor:
        """(N,) scores of all ops in the batch."""
        h = self.embed(gb.x)
        for block in self.blocks:
            h = block(h, gb)
        return self.head(h).squeeze(1)
