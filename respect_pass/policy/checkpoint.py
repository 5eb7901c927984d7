"""Checkpoints: weights as a numpy ``.npz`` (no pickle) plus a JSON file of hyperparameters and training args.

``<stem>.npz`` holds one array per ``state_dict`` entry and is read with
``np.load(allow_pickle=False)``: loading a checkpoint never executes code.
``<stem>.json`` holds ``format``, ``model`` (:class:`ModelConfig`), the feature
names the weights expect, ``train_args`` and ``metrics``. The shipped
checkpoint is ``respect_pass/data/respect_policy.{npz,json}``; loads are cached
per process.
"""
from __future__ import annotations

import json
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tflite_io import RespectPassError

from .features import CONTEXT_FEATURES, NODE_FEATURES
from .model import ModelConfig, PolicyNet

__all__ = ["FORMAT", "DEFAULT_CHECKPOINT", "save_checkpoint", "load_checkpoint", "load_policy", "checkpoint_paths"]

log = logging.getLogger(__name__)

FORMAT = "respect-policy/1"
#: The checkpoint shipped inside the package.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "respect_policy.npz"


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(weights .npz, metadata .json) of a checkpoint given either file or the common stem."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def save_checkpoint(model: PolicyNet, path: str | os.PathLike[str], train_args: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``<stem>.npz`` (weights) and ``<stem>.json`` (config, features, args, metrics); return both paths."""
    npz, meta = checkpoint_paths(path)
    npz.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    tmp = npz.with_name(npz.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, npz)
    doc = {"format": FORMAT, "model": model.config.as_dict(), "features": list(NODE_FEATURES + CONTEXT_FEATURES),
           "train_args": train_args or {}, "metrics": metrics or {}}
    meta.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return npz, meta


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[PolicyNet, dict[str, Any]]:
    """A fresh :class:`PolicyNet` (eval mode) with the checkpoint's weights, and its metadata. No pickle."""
    npz, meta = checkpoint_paths(path)
    if not npz.is_file() or not meta.is_file():
        raise RespectPassError(f"policy checkpoint {npz} (+ .json) not found; train one with `respect-pass train`")
    try:
        doc = json.loads(meta.read_text())
    except (OSError, ValueError) as exc:
        raise RespectPassError(f"policy checkpoint {meta}: unreadable JSON ({exc})") from None
    if doc.get("format") != FORMAT:
        raise RespectPassError(f"policy checkpoint {meta}: format {doc.get('format')!r}, expected {FORMAT!r}")
    if doc.get("features") != list(NODE_FEATURES + CONTEXT_FEATURES):
        raise RespectPassError(f"policy checkpoint {meta}: trained on other features than this version computes")
    model = PolicyNet(ModelConfig(**doc["model"]))
    try:
        with np.load(npz, allow_pickle=False) as data:
            state = {k: torch.from_numpy(np.array(data[k])) for k in data.files}
        model.load_state_dict(state, strict=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise RespectPassError(f"policy checkpoint {npz}: cannot load weights ({exc})") from None
    model.eval()
    return model, doc


@lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int) -> tuple[PolicyNet, dict[str, Any]]:
    log.debug("loading policy checkpoint %s", path)
    return load_checkpoint(path)


def load_policy(path: str | os.PathLike[str] | None = None) -> tuple[PolicyNet, dict[str, Any]]:
    """The policy of ``path`` (default: the shipped checkpoint), loaded once per process and file version."""
    npz, _ = checkpoint_paths(DEFAULT_CHECKPOINT if path is None else path)
    try:
        mtime = npz.stat().st_mtime_ns
    except OSError:
        mtime = -1
    return _cached(str(npz.resolve()), mtime)
