"""The learned parts of the ``respect`` scheduler: features, network, decoding, checkpoint, training.

The scheduler itself (``respect_pass.schedulers.respect``) and the search it shares with ``dp``
(``schedulers.split``, ``schedulers.refine``) live with the other schedulers. Inference runs the network
in numpy (:mod:`.numpy_net`) and never imports torch; only training (:mod:`.train`, :mod:`.model`) and
:func:`load_checkpoint` (a torch ``PolicyNet``) do.

Public API (imported lazily, so ``import respect_pass.policy`` is cheap):

* :func:`train` / :class:`TrainConfig` (:mod:`.train`) and :func:`train_main`
  (``respect-pass train``, :mod:`.train_cli`);
* :func:`load_policy` (the numpy policy), :func:`save_checkpoint`,
  :func:`load_checkpoint` and :data:`DEFAULT_CHECKPOINT` (:mod:`.checkpoint`);
* :class:`NumpyPolicy` and :class:`ModelConfig` (:mod:`.numpy_net`).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "train",
    "TrainConfig",
    "train_main",
    "load_policy",
    "load_checkpoint",
    "save_checkpoint",
    "DEFAULT_CHECKPOINT",
    "NumpyPolicy",
    "ModelConfig",
]

_WHERE = {
    "train": "train",
    "TrainConfig": "train",
    "train_main": "train_cli",
    "load_policy": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "DEFAULT_CHECKPOINT": "checkpoint",
    "NumpyPolicy": "numpy_net",
    "ModelConfig": "numpy_net",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
