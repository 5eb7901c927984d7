"""Checkpoints: weights as a numpy ``.npz`` (no pickle) plus a JSON file of hyperparameters and training args.

``<stem>.npz`` holds one array per ``state_dict`` entry and is read with
``np.load(allow_pickle=False)``: loading a checkpoint never executes code.
``<stem>.json`` holds ``format``, ``model`` (:class:`ModelConfig`), the feature
names the weights expect, ``train_args`` and ``metrics``. The shipped
checkpoint is ``respect_pass/data/respect_policy.{npz,json}``.

This module imports no torch. :func:`load_policy` (what the ``respect``
scheduler calls; cached per process) gives the numpy
:class:`~respect_pass.policy.numpy_net.NumpyPolicy`; :func:`load_checkpoint`
gives the torch :class:`~respect_pass.policy.model.PolicyNet` (training, tests)
and imports torch when called; :func:`save_checkpoint` takes a ``PolicyNet``.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tflite_io import RespectPassError

from .features import CONTEXT_FEATURES, NODE_FEATURES
from .numpy_net import ModelConfig, NumpyPolicy

if TYPE_CHECKING:
    from .model import PolicyNet

__all__ = [
    "FORMAT",
    "DEFAULT_CHECKPOINT",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
    "load_policy",
    "numpy_policy",
    "checkpoint_paths",
]

log = logging.getLogger(__name__)

FORMAT = "respect-policy/1"
#: The checkpoint shipped inside the package.
DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "data" / "respect_policy.npz"


def checkpoint_paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(weights .npz, metadata .json) of a checkpoint given either file or the common stem."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".npz", ".json") else p
    return stem.with_suffix(".npz"), stem.with_suffix(".json")


def save_checkpoint(
    model: PolicyNet,
    path: str | os.PathLike[str],
    train_args: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``<stem>.npz`` (weights) and ``<stem>.json`` (config, features, args, metrics); return both paths."""
    npz, meta = checkpoint_paths(path)
    npz.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    tmp = npz.with_name(npz.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, npz)
    doc = {
        "format": FORMAT,
        "model": model.config.as_dict(),
        "features": list(NODE_FEATURES + CONTEXT_FEATURES),
        "train_args": train_args or {},
        "metrics": metrics or {},
    }
    meta.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return npz, meta


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[ModelConfig, dict[str, np.ndarray], dict[str, Any]]:
    """The checkpoint's model config, weight arrays (by ``state_dict`` name) and metadata; checked, no pickle."""
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
    try:
        config = ModelConfig(**doc["model"])
        with np.load(npz, allow_pickle=False) as data:
            weights = {k: np.array(data[k]) for k in data.files}
    except (OSError, ValueError, TypeError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise RespectPassError(f"policy checkpoint {npz}: cannot load weights ({exc})") from None
    return config, weights, doc


def numpy_policy(path: str | os.PathLike[str]) -> tuple[NumpyPolicy, dict[str, Any]]:
    """The checkpoint as a :class:`NumpyPolicy` (weights checked against the config), and its metadata."""
    config, weights, doc = read_checkpoint(path)
    try:
        return NumpyPolicy(config, weights), doc
    except ValueError as exc:
        raise RespectPassError(f"policy checkpoint {checkpoint_paths(path)[0]}: cannot load weights ({exc})") from None


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[PolicyNet, dict[str, Any]]:
    """A fresh torch :class:`PolicyNet` (eval mode) with the checkpoint's weights, and its metadata. No pickle.
    Imports torch (training and tests); inference uses :func:`load_policy`."""
    import torch

    from .model import PolicyNet

    config, weights, doc = read_checkpoint(path)
    model = PolicyNet(config)
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise RespectPassError(f"policy checkpoint {checkpoint_paths(path)[0]}: cannot load weights ({exc})") from None
    model.eval()
    return model, doc


@lru_cache(maxsize=4)
def _cached(path: str, mtime_ns: int) -> tuple[NumpyPolicy, dict[str, Any]]:
    log.debug("loading policy checkpoint %s", path)
    return numpy_policy(path)


def load_policy(path: str | os.PathLike[str] | None = None) -> tuple[NumpyPolicy, dict[str, Any]]:
    """The numpy policy of ``path`` (default: the shipped checkpoint), loaded once per process and file version."""
    npz, _ = checkpoint_paths(DEFAULT_CHECKPOINT if path is None else path)
    try:
        mtime = npz.stat().st_mtime_ns
    except OSError:
        mtime = -1
    return _cached(str(npz.resolve()), mtime)
