"""``respect-pass train``: the command line of :func:`respect_pass.policy.train.train`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import NoReturn

__all__ = ["build_parser", "train_main"]

_HELP = {
    "out": "output directory: respect_policy.npz + respect_policy.json (copy both to respect_pass/data/) and args.json",
    "seed": "seed of the graphs, the K draws, the model and the sampling",
    "quick": "a tiny model on tiny graphs in about a minute (tests); explicit flags still win",
    "graphs": "training graphs",
    "val_graphs": "validation graphs (another seed)",
    "min_ops": "smallest graph",
    "max_ops": "largest graph (at most 120 for the shipped checkpoint)",
    "ks_per_graph": "distinct K labelled per graph",
    "k_min": "smallest K",
    "k_max": "largest K",
    "families": "comma-separated generator families",
    "epochs": "imitation epochs",
    "rl_epochs": "REINFORCE epochs",
    "batch": "instances per step",
    "lr": "imitation learning rate",
    "rl_lr": "REINFORCE learning rate",
    "rl_samples": "orders sampled per instance",
    "rl_imitation": "weight of the imitation loss during REINFORCE",
    "loss": "imitation target: the stage-major order (canonical) or any ready op of the stage (stage_set)",
    "hidden": "hidden width",
    "layers": "message-passing blocks",
    "workers": "label worker processes",
    "time_limit": "exact solver time limit per label (s)",
    "teacher": "label source: exact (CP-SAT), multiorder, or respect+exact (CP-SAT from the shipped policy's plan)",
    "cache": "label cache directory",
    "threads": "torch threads during training",
    "progress": "progress bars",
    "init": "fine-tune this checkpoint (.npz) instead of starting from random weights; its width and depth win",
}


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (``respect-pass train: error: ...``) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; defaults are None so that ``--quick`` presets can fill the unset ones."""
    from .labels import TEACHERS
    from .train import TrainConfig

    p = _OneLineParser(
        prog="respect-pass train",
        description="Train the RESPECT scheduling policy on synthetic graphs labelled by the exact scheduler.",
    )
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "quick":
            p.add_argument(flag, action="store_true", help=_HELP[f.name])
        elif f.name == "progress":
            p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
        elif f.name == "families":
            p.add_argument(flag, default=None, help=_HELP[f.name])
        elif f.name in ("loss",):
            p.add_argument(flag, default=None, choices=("canonical", "stage_set"), help=_HELP[f.name])
        elif f.name == "teacher":
            p.add_argument(flag, default=None, choices=TEACHERS, help=_HELP[f.name])
        else:
            kind = type(f.default)
            p.add_argument(flag, type=kind, default=None, help=f"{_HELP[f.name]} (default {f.default})")
    return p


def train_main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, train, print the checkpoint path; 0 on success, 2 on a bad argument or failure."""
    from tflite_io import RespectPassError

    from .train import QUICK, TrainConfig, train

    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    values = {k: v for k, v in vars(args).items() if v is not None}
    if values.get("quick"):
        values = {**QUICK, **values}
    if isinstance(values.get("families"), str):
        values["families"] = tuple(x.strip() for x in values["families"].split(",") if x.strip())
    cfg = TrainConfig(**values)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        npz = train(cfg)
    except (ValueError, OSError, RespectPassError) as exc:  # e.g. a missing --init checkpoint
        print(f"respect-pass train: error: {exc}", file=sys.stderr)
        return 2
    print(npz)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(train_main())
