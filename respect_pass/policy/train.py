"""Training the policy: imitation of exact plans, then REINFORCE on the true bottleneck.

1. Data: ``graphs`` seeded synthetic graphs (:mod:`respect_pass.generator`, at
   most ``max_ops`` ops) plus ``val_graphs`` validation graphs from another
   seed, each labelled for ``ks_per_graph`` values of K in [k_min, k_max] by
   ``exact`` (:mod:`respect_pass.policy.labels`: parallel, cached).
2. Imitation, teacher-forced along each label's stage-major order (stage 0's
   ops, then stage 1's, ..., execution order inside a stage): cross-entropy
   towards the order's next op (``--loss canonical``), or towards *any* ready
   op of the current stage (``--loss stage_set``, the default: every such op
   continues a stage-major order of the same plan, so the order inside a
   stage, which ``dp`` ignores, is not penalised; it validated better).
3. REINFORCE: ``rl_samples`` orders sampled from the decoder per instance, each
   split by ``dp``; the advantage is the bottleneck relative to the greedy
   decoding's (greedy-rollout baseline), plus a small imitation term.

After every epoch the validation gap (geometric mean of greedy-policy
bottleneck / exact bottleneck, minus 1) is logged with the epoch's ``loss``
(imitation: the mean cross-entropy per step; REINFORCE: the mean gap of the
sampled orders to the labels); the best epoch's weights are kept. Finally
the sampling temperature is picked on the validation set and
``<out>/respect_policy.{npz,json}`` and ``<out>/args.json`` are written.
Deterministic for a seed (single-threaded torch by default; labels that hit
the solver's time limit are pinned by the cache).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hardware import USB
from hardware.kernel import range_costs

from ..schedulers.split import bottleneck_value
from .checkpoint import load_checkpoint, save_checkpoint
from .decode import DecodeTensors, decode_tensors, greedy_order, order_log_probs, perturbed_orders, sample_orders
from .features import GraphArrays, graph_arrays, node_features
from .labels import Label, choose_ks, label_instances, make_graphs, stage_major_order
from .model import ModelConfig, PolicyNet, make_batch

__all__ = ["TrainConfig", "QUICK", "train", "Prepared", "prepare", "evaluate"]

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every knob of a training run (saved as ``args.json``)."""

    out: str = "out/respect_policy"
    seed: int = 0
    quick: bool = False
    graphs: int = 1280
    val_graphs: int = 64
    min_ops: int = 20
    max_ops: int = 120
    ks_per_graph: int = 2
    k_min: int = 2
    k_max: int = 8
    families: tuple[str, ...] = ("residual", "inception", "dense", "squeeze_excite", "nas_cell", "layered")
    epochs: int = 30
    rl_epochs: int = 12
    batch: int = 16
    lr: float = 2e-3
    rl_lr: float = 3e-4
    rl_samples: int = 8
    rl_imitation: float = 0.1
    loss: str = "stage_set"
    hidden: int = 64
    layers: int = 4
    workers: int = 2
    time_limit: float = 10.0
    teacher: str = "exact"
    cache: str = ".cache/respect_labels"
    threads: int = 1
    progress: bool = True
    init: str = ""


#: Overrides of ``--quick``: a tiny model on tiny graphs in about a minute.
QUICK: dict[str, Any] = dict(
    graphs=40,
    val_graphs=12,
    min_ops=20,
    max_ops=36,
    epochs=8,
    rl_epochs=1,
    hidden=32,
    layers=2,
    batch=8,
    time_limit=2.0,
    rl_samples=4,
)


@dataclass
class Prepared:
    """One labelled instance with everything training needs precomputed."""

    label: Label
    ga: GraphArrays
    x: np.ndarray
    dt: DecodeTensors
    target: torch.Tensor  # (1, n) stage-major order
    stage_of: torch.Tensor  # (n,) label stage of each op
    cuts: torch.Tensor  # (n,) stage of each step of the target order


def prepare(label: Label) -> Prepared:
    """Arrays, features and imitation target of one label."""
    ga = graph_arrays(label.graph, USB)
    order = stage_major_order(label.graph, label.stages)
    stage_of = torch.tensor(label.stages, dtype=torch.int64)
    return Prepared(
        label,
        ga,
        node_features(ga, label.num_stages),
        decode_tensors(ga),
        torch.from_numpy(order)[None, :],
        stage_of,
        stage_of[torch.from_numpy(order)],
    )


def _imitation_loss(scores: torch.Tensor, p: Prepared, kind: str) -> torch.Tensor:
    """Per-step mean cross-entropy towards the label (``canonical`` order or ``stage_set``)."""
    if kind == "canonical":
        return -order_log_probs(scores, p.target, p.dt)[0] / p.ga.n
    n, dt = p.ga.n, p.dt
    order = p.target[0]
    pos = torch.empty_like(order)
    pos[order] = torch.arange(n)
    start = torch.zeros(n, dtype=torch.int64)
    if dt.src.numel():
        start.scatter_reduce_(0, dt.dst, pos[dt.src] + 1, reduce="amax", include_self=True)
    steps = torch.arange(n)[:, None]
    ready = (start[None, :] <= steps) & (steps <= pos[None, :])
    ready &= ~(dt.pinned[None, :] & (steps < dt.num_unpinned))
    good = ready & (p.stage_of[None, :] == p.cuts[:, None])
    z = scores[None, :].expand(n, n)
    ninf = torch.full((), -torch.inf)
    lse_all = torch.logsumexp(torch.where(ready, z, ninf), dim=1)
    lse_good = torch.logsumexp(torch.where(good, z, ninf), dim=1)
    return (lse_all - lse_good).mean()


def _scores(model: PolicyNet, items: list[Prepared]) -> tuple[torch.Tensor, tuple[int, ...]]:
    gb = make_batch([(p.x, p.ga.src, p.ga.dst) for p in items])
    return model(gb), gb.offsets


def _bottleneck_ms(p: Prepared, order: np.ndarray) -> float:
    return bottleneck_value(range_costs(p.ga, order), p.label.num_stages) * 1e3


def evaluate(
    model: PolicyNet, items: list[Prepared], samples: int = 0, temperature: float = 1.0, seed: int = 0, chunk: int = 32
) -> dict[str, float]:
    """Greedy (or best of greedy + ``samples`` perturbed decodings) gap to the labels: geomean - 1, worst."""
    ratios = []
    rng = np.random.default_rng(seed)
    model.eval()
    with torch.inference_mode():
        for c in range(0, len(items), chunk):
            part = items[c : c + chunk]
            scores, offs = _scores(model, part)
            for i, p in enumerate(part):
                s = scores[offs[i] : offs[i + 1]].double().numpy()
                orders = [greedy_order(s, p.ga)]
                if samples:
                    orders += perturbed_orders(s, p.ga, samples, rng, temperature)
                best = min(_bottleneck_ms(p, o) for o in orders)
                ratios.append(best / p.label.bottleneck_ms)
    r = np.asarray(ratios)
    return {
        "gap": float(np.exp(np.log(r).mean()) - 1),
        "worst": float(r.max() - 1),
        "share_within_1pct": float((r <= 1.01).mean()),
    }


def _baseline_gaps(items: list[Prepared]) -> dict[str, float]:
    """Gaps of ``dp`` (execution order) and ``multiorder`` on the same instances, for the log."""
    from ..schedulers.multiorder import multiorder_schedule

    dp_r, mo_r = [], []
    for p in items:
        dp_r.append(_bottleneck_ms(p, np.arange(p.ga.n)) / p.label.bottleneck_ms)
        plan = multiorder_schedule(p.label.graph, p.label.num_stages, USB)
        mo_r.append(plan.stats.number("bottleneck_ms") / p.label.bottleneck_ms)
    return {"dp_gap": float(np.exp(np.log(dp_r).mean()) - 1), "multiorder_gap": float(np.exp(np.log(mo_r).mean()) - 1)}


def _shuffled_batches(items: list, batch: int, rng: random.Random) -> list[list]:
    """``items`` in ``rng``-shuffled order, cut into batches of ``batch``."""
    idx = list(range(len(items)))
    rng.shuffle(idx)
    return [[items[i] for i in idx[j : j + batch]] for j in range(0, len(idx), batch)]


def _imitation_epoch(model, opt, items, cfg, rng: random.Random, bar_desc: str) -> float:
    from tqdm import tqdm

    model.train()
    total, count = 0.0, 0
    for part in tqdm(_shuffled_batches(items, cfg.batch, rng), desc=bar_desc, disable=not cfg.progress, leave=False):
        scores, offs = _scores(model, part)
        loss = torch.stack([_imitation_loss(scores[offs[i] : offs[i + 1]], p, cfg.loss) for i, p in enumerate(part)]).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        total += loss.item() * len(part)
        count += len(part)
    return total / max(count, 1)


def _rl_epoch(model, opt, items, cfg, rng: random.Random, nrng: np.random.Generator, bar_desc: str) -> float:
    from tqdm import tqdm

    model.train()
    total, count = 0.0, 0
    for part in tqdm(_shuffled_batches(items, cfg.batch, rng), desc=bar_desc, disable=not cfg.progress, leave=False):
        scores, offs = _scores(model, part)
        terms = []
        for i, p in enumerate(part):
            s = scores[offs[i] : offs[i + 1]]
            s_np = s.detach().double().numpy()
            base = _bottleneck_ms(p, greedy_order(s_np, p.ga))
            orders = sample_orders(s_np, p.ga, cfg.rl_samples, nrng)
            costs = np.array([_bottleneck_ms(p, o) for o in orders])
            if not math.isfinite(base):
                continue
            costs = np.where(np.isfinite(costs), costs, 2 * base)
            adv = torch.from_numpy((costs - base) / base).float()
            logp = order_log_probs(s, torch.from_numpy(orders), p.dt)
            term = (adv * logp).mean()
            if cfg.rl_imitation:
                term = term + cfg.rl_imitation * _imitation_loss(s, p, cfg.loss)
            terms.append(term)
            total += float(costs.mean() / p.label.bottleneck_ms)
            count += 1
        if not terms:
            continue
        loss = torch.stack(terms).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return total / max(count, 1) - 1


def _data(cfg: TrainConfig) -> tuple[list[Prepared], list[Prepared], dict[str, Any]]:
    t0 = time.perf_counter()
    train_graphs = make_graphs(cfg.graphs, cfg.seed, cfg.min_ops, cfg.max_ops, cfg.families)
    val_graphs = make_graphs(cfg.val_graphs, cfg.seed + 10_007, cfg.min_ops, cfg.max_ops, cfg.families)
    tasks = choose_ks(train_graphs, cfg.ks_per_graph, cfg.k_min, cfg.k_max, cfg.seed)
    val_tasks = choose_ks(val_graphs, cfg.ks_per_graph, cfg.k_min, cfg.k_max, cfg.seed + 1)
    common: dict[str, Any] = dict(
        time_limit=cfg.time_limit, workers=cfg.workers, cache=cfg.cache, teacher=cfg.teacher, progress=cfg.progress
    )
    val = label_instances(val_graphs, val_tasks, USB, desc="validation labels", **common)
    train = label_instances(train_graphs, tasks, USB, desc="training labels", **common)
    t1 = time.perf_counter()
    optimal = sum(lb.optimal for lb in train + val) / max(1, len(train) + len(val))
    log.info(
        "labels: %d training and %d validation instances in %.1f s (%.0f%% proven optimal)",
        len(train),
        len(val),
        t1 - t0,
        100 * optimal,
    )
    return [prepare(lb) for lb in train], [prepare(lb) for lb in val], {"label_s": t1 - t0, "label_optimal_share": optimal}


class _Validation:
    """The validation history of a run and the best epoch so far: its gap, weights and name."""

    def __init__(self, model: PolicyNet, val_items: list[Prepared], fine_tuning: bool) -> None:
        self.model = model
        self.val_items = val_items
        start = evaluate(model, val_items)
        self.history: list[dict[str, Any]] = [{"phase": "init", "epoch": 0, **start}]
        log.info("%s: validation gap %.2f%%", "initial" if fine_tuning else "untrained", 100 * start["gap"])
        self.best_gap = math.inf
        self.best_state = copy.deepcopy(model.state_dict())
        self.best_epoch = "init"

    def after_epoch(self, phase: str, epoch: int, loss: float, seconds: float) -> None:
        """Validate the model, log the epoch, and keep its weights if its gap is the best so far."""
        v = evaluate(self.model, self.val_items)
        self.history.append({"phase": phase, "epoch": epoch, "loss": loss, "seconds": seconds, **v})
        log.info(
            "%s epoch %d: loss %.4f, validation gap %.2f%% (worst %.1f%%), %.1f s",
            phase,
            epoch,
            loss,
            100 * v["gap"],
            100 * v["worst"],
            seconds,
        )
        if v["gap"] < self.best_gap:
            self.best_gap, self.best_state, self.best_epoch = (
                v["gap"],
                copy.deepcopy(self.model.state_dict()),
                f"{phase}{epoch}",
            )


def _seed(cfg: TrainConfig) -> None:
    """Seed Python, numpy and torch, and set torch's threads."""
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(max(1, cfg.threads))


def _labelled(cfg: TrainConfig) -> tuple[list[Prepared], list[Prepared], dict[str, Any]]:
    """Training and validation instances, and the metrics so far (label time, baselines' gaps)."""
    train_items, val_items, metrics = _data(cfg)
    if not train_items or not val_items:
        raise ValueError("no labelled instances: raise --graphs / --val-graphs")
    metrics.update(_baseline_gaps(val_items))
    log.info(
        "validation baselines: dp gap %.2f%%, multiorder gap %.2f%%",
        100 * metrics["dp_gap"],
        100 * metrics["multiorder_gap"],
    )
    return train_items, val_items, metrics


def _starting_model(cfg: TrainConfig, init: tuple[PolicyNet, dict[str, Any]] | None, metrics: dict[str, Any]) -> PolicyNet:
    """A fresh network, or the ``init`` checkpoint's (its hidden width and depth win; noted in ``metrics``)."""
    if init is None:
        return PolicyNet(ModelConfig(hidden=cfg.hidden, layers=cfg.layers))
    model, init_doc = init
    model.train()
    metrics["init"] = {"path": str(cfg.init), "train_args": init_doc.get("train_args", {})}
    log.info("fine-tuning %s", cfg.init)
    return model


def _imitation_phase(
    model: PolicyNet, items: list[Prepared], cfg: TrainConfig, rng: random.Random, validation: _Validation
) -> None:
    """``cfg.epochs`` imitation epochs (Adam, cosine learning rate), each validated."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs))
    for epoch in range(1, cfg.epochs + 1):
        t = time.perf_counter()
        loss = _imitation_epoch(model, opt, items, cfg, rng, f"imitation {epoch}/{cfg.epochs}")
        sched.step()
        validation.after_epoch("imitation", epoch, loss, time.perf_counter() - t)


def _reinforce_phase(
    model: PolicyNet,
    items: list[Prepared],
    cfg: TrainConfig,
    rng: random.Random,
    nrng: np.random.Generator,
    validation: _Validation,
) -> None:
    """``cfg.rl_epochs`` REINFORCE epochs from the best weights so far, each validated (none: nothing)."""
    if not cfg.rl_epochs:
        return
    model.load_state_dict(validation.best_state)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.rl_lr)
    for epoch in range(1, cfg.rl_epochs + 1):
        t = time.perf_counter()
        loss = _rl_epoch(model, opt, items, cfg, rng, nrng, f"reinforce {epoch}/{cfg.rl_epochs}")
        validation.after_epoch("reinforce", epoch, loss, time.perf_counter() - t)


def _sampling_metrics(model: PolicyNet, val_items: list[Prepared], seed: int) -> dict[str, float]:
    """The sampling temperature with the least best-of-8 validation gap (ties: the lower), and that gap and worst."""
    temps = {}
    for temp in (1.0, 2.0, 4.0, 8.0):
        temps[temp] = evaluate(model, val_items, samples=8, temperature=temp, seed=seed)
    temperature = min(temps, key=lambda k: (temps[k]["gap"], k))
    return {
        "sample_temperature": temperature,
        "val_gap_best_of_8": temps[temperature]["gap"],
        "val_worst_best_of_8": temps[temperature]["worst"],
    }


def train(cfg: TrainConfig) -> Path:
    """Run a whole training; return the written checkpoint's ``.npz`` path."""
    if cfg.loss not in ("canonical", "stage_set"):
        raise ValueError(f"unknown loss {cfg.loss!r}")
    t_start = time.perf_counter()
    _seed(cfg)
    init = load_checkpoint(cfg.init) if cfg.init else None  # before any output or label: a bad path fails at once
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "args.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")

    train_items, val_items, metrics = _labelled(cfg)
    model = _starting_model(cfg, init, metrics)
    rng, nrng = random.Random(cfg.seed), np.random.default_rng(cfg.seed)
    validation = _Validation(model, val_items, fine_tuning=init is not None)
    t_il = time.perf_counter()
    _imitation_phase(model, train_items, cfg, rng, validation)
    t_rl = time.perf_counter()
    _reinforce_phase(model, train_items, cfg, rng, nrng, validation)
    t_end = time.perf_counter()
    model.load_state_dict(validation.best_state)
    model.eval()
    sampling = _sampling_metrics(model, val_items, cfg.seed)
    metrics.update(
        {
            "best_epoch": validation.best_epoch,
            "val_gap_greedy": validation.best_gap,
            **sampling,
            "imitation_s": t_rl - t_il,
            "reinforce_s": t_end - t_rl,
            "total_s": time.perf_counter() - t_start,
            "train_instances": len(train_items),
            "val_instances": len(val_items),
            "history": validation.history,
        }
    )
    log.info(
        "best %s: validation gap %.2f%% greedy, %.2f%% best of 8 (temperature %g); total %.1f s",
        validation.best_epoch,
        100 * validation.best_gap,
        100 * metrics["val_gap_best_of_8"],
        sampling["sample_temperature"],
        metrics["total_s"],
    )
    npz, _ = save_checkpoint(model, out / "respect_policy", train_args=asdict(cfg), metrics=metrics)
    return npz
