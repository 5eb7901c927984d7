"""Seeded synthetic DNN-like operator graphs for training and testing schedulers (no torch, no tensorflow).

``generate(family, num_ops, seed)`` returns an :class:`tflite_io.OpGraph` that
looks like what :func:`tflite_io.read` makes of a full-integer int8 ``.tflite``
model: ops in execution (topological) order with ``Op.index == position``,
TFLite op types, NHWC int8 activations whose resolution shrinks and channel
count grows with depth, per-axis quantized int8 weights and int32 biases each
in its own buffer, ``param_bytes`` / ``macs`` computed as the reader computes
them, one model input read by the first op, and one or two model outputs
produced by the last ops (every op nobody reads is a model output). Every
contiguous split of the execution order whose last stage holds the output ops
is a valid pipeline for :func:`tflite_io.validate_stage_map`.

Families (``FAMILIES``):

- ``residual``: ResNet v1 bottleneck, ResNet v2 pre-activation (batch norm left
  as MUL + ADD) or MobileNetV2 inverted-residual blocks with ADD skips.
- ``inception``: InceptionV3-style stem, blocks of 3-4 parallel branches (1x1,
  5x5 or stacked 3x3, factorised 1x7/7x1, pool + 1x1) joined by CONCATENATION,
  and reduction blocks.
- ``dense``: DenseNet blocks where each layer reads the CONCATENATION of the
  block input and every earlier layer output (fan-in grows along the block),
  transitions with AVERAGE_POOL_2D.
- ``squeeze_excite``: EfficientNet / MobileNetV3 MBConv blocks with a
  squeeze-excite side branch (MEAN -> CONV_2D -> CONV_2D -> LOGISTIC -> MUL).
- ``nas_cell``: NASNet-style cells: several pairwise ADDs of separable-conv,
  pool and identity branches over the two previous cells' outputs, all joined
  by one CONCATENATION.
- ``layered``: RESPECT's random training DAGs: levels of 1-6 nodes, each node
  reading 1-6 nodes of earlier levels (mostly the previous one), random conv /
  element-wise op types, strided levels between resolutions, the last level
  merged into the classifier.

Where the numbers come from: ``fitted.py`` holds plain constants written by
``python tools/fit_generator.py --write`` from the zoo models (zoo/*.tflite);
the generator never reads the zoo at run time. They set the input resolutions,
the share of ops at each resolution level, block widths per level, the
DenseNet growth rate, the residual variant mix, the layered family's op-type
mix and fan-in distribution, and the total parameter bytes: a log-linear fit of
zoo parameter bytes against op count (per architecture group, with the fit's
residual spread as noise; the mean is kept one sigma inside ``PARAMS_MIB_RANGE``
and the result clipped to it). Each graph's width
multiplier is then solved so its parameters hit that target, which spreads the
suite below and above the Edge TPU's ~7 MiB on-chip parameter cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tflite_io.graph import OpGraph

from . import fitted
from .builder import GraphBuilder
from .families import FAMILY_BUILDERS, choice

__all__ = ["FAMILIES", "MIN_OPS", "MAX_OPS", "generate", "generate_suite", "target_param_bytes"]

FAMILIES: tuple[str, ...] = ("residual", "inception", "dense", "squeeze_excite", "nas_cell", "layered")
MIN_OPS, MAX_OPS = 20, 800
#: The zoo group each family draws its fitted resolutions and parameter budget from (MobileNetV2: "mobile").
_GROUP = {
    "residual": "resnet",
    "inception": "inception",
    "dense": "dense",
    "squeeze_excite": "mobile",
    "nas_cell": "mobile",
    "layered": "all",
}


def _check(family: str, num_ops: int) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown graph family {family!r}; known: {', '.join(FAMILIES)}")
    if isinstance(num_ops, bool) or not isinstance(num_ops, (int, np.integer)) or not MIN_OPS <= num_ops <= MAX_OPS:
        raise ValueError(f"num_ops must be an integer between {MIN_OPS} and {MAX_OPS}, got {num_ops!r}")


def _head(b: GraphBuilder, x: int, style: str, second: str, classes: int) -> list[int]:
    b.scope = "head"

    def classifier(feats: int) -> int:
        return b.fc(feats, classes) if style == "fc" else b.reshape(b.conv(feats, classes), (1, classes))

    feats = b.mean(x, keepdims=style == "conv")
    outs = [classifier(feats)]
    if second == "shared":
        outs.append(classifier(feats))
    elif second == "aux":
        src = b.checkpoints[int(len(b.checkpoints) * 0.66)] if b.checkpoints else x
        y = b.conv(b.pool("AVERAGE_POOL_2D", src, 5, 3, "valid"), b.ch(128))
        outs.append(b.fc(b.mean(y), classes))
    return outs


def _build(family: str, num_ops: int, seed: int, alpha: float, quantize: bool) -> GraphBuilder:
    rng = np.random.default_rng(seed)
    b = GraphBuilder(f"{family}_{num_ops}_s{seed}", rng, alpha, quantize, qseed=seed + 1)
    style, second = choice(rng, fitted.HEAD_STYLES), choice(rng, fitted.TWO_OUTPUTS)
    classes = int(choice(rng, fitted.NUM_CLASSES))
    head_ops = (2 if style == "fc" else 3) + {"": 0, "shared": 1 if style == "fc" else 2, "aux": 4}[second]
    res = int(choice(rng, fitted.RESOLUTIONS[_GROUP[family]]))
    x = b.input((1, res, res, 3))
    if rng.random() < fitted.QUANTIZE_INPUT:
        x = b.unary("QUANTIZE", x)
    b.group = _GROUP[family]
    x = FAMILY_BUILDERS[family](b, x, num_ops - head_ops)
    if b.pos != num_ops - head_ops:  # an internal invariant of the family builders
        raise RuntimeError(f"{b.name}: body has {b.pos} ops, expected {num_ops - head_ops}")
    b.outputs = _head(b, x, style, second, classes)
    return b


def _param_bytes(b: GraphBuilder) -> int:
    return sum(t.nbytes for t in b.tensors if t.is_constant)


def target_param_bytes(group: str, num_ops: int, seed: int) -> int:
    """Total parameter bytes a graph of ``num_ops`` ops in architecture ``group`` aims for (fitted on the zoo)."""
    z = float(np.random.default_rng((seed, 7)).standard_normal())
    lo, hi = (math.log(v) for v in fitted.PARAMS_MIB_RANGE)
    sigma = fitted.PARAMS_LOG_SIGMA
    mean = fitted.PARAMS_LOG_INTERCEPT[group] + fitted.PARAMS_LOG_SLOPE * math.log(num_ops)
    log_mib = min(max(mean, lo + sigma), hi - sigma) + sigma * z  # few graphs pile up at the range's ends
    return int(math.exp(min(max(log_mib, lo), hi)) * 2**20)


def generate(family: str, num_ops: int, seed: int) -> OpGraph:
    """One synthetic graph of ``family`` with exactly ``num_ops`` ops (20..800), deterministic in all arguments.

    Raises ValueError for an unknown family, a size outside 20..800 or a negative seed.
    """
    _check(family, num_ops)
    seed = int(seed)
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    num_ops = int(num_ops)
    alpha = 1.0
    dry = _build(family, num_ops, seed, alpha, quantize=False)
    target = target_param_bytes(dry.group, num_ops, seed)
    for _ in range(4):  # width multiplier: parameters grow about quadratically with it
        ratio = target / max(1, _param_bytes(dry))
        if abs(math.log(ratio)) < 0.03:
            break
        alpha = min(max(alpha * ratio ** (0.5 if ratio > 1 else 0.6), 1 / 32), 6.0)
        dry = _build(family, num_ops, seed, alpha, quantize=False)
    b = _build(family, num_ops, seed, alpha, quantize=True)
    return b.finish(b.outputs)


def generate_suite(
    count: int, seed: int, min_ops: int = MIN_OPS, max_ops: int = MAX_OPS, families: Sequence[str] = FAMILIES
) -> list[OpGraph]:
    """``count`` graphs: families in equal shares (shuffled), sizes log-uniform in ``[min_ops, max_ops]``."""
    if count < 0:
        raise ValueError(f"count must be non-negative, got {count}")
    if not families:
        raise ValueError("families must not be empty")
    for f in families:
        _check(f, MIN_OPS)
    _check(families[0], min_ops)
    _check(families[0], max_ops)
    if min_ops > max_ops:
        raise ValueError(f"min_ops {min_ops} is larger than max_ops {max_ops}")
    rng = np.random.default_rng(seed)
    fams = [families[i % len(families)] for i in range(count)]
    fams = [fams[i] for i in rng.permutation(count)]
    sizes = np.exp(rng.uniform(math.log(min_ops), math.log(max_ops + 1), size=count))
    seeds = rng.integers(0, 2**31 - 1, size=count)
    return [generate(f, int(min(max(round(n), min_ops), max_ops)), int(s)) for f, n, s in zip(fams, sizes, seeds)]
