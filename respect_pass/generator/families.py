"""The six graph families: stem + body of each, built to an exact op budget.

Each family function takes a :class:`GraphBuilder` holding the model input
tensor ``x`` and emits ops until ``b.pos == end`` exactly, returning the tensor
the classifier head reads. Bodies move through resolution levels (output size
``R / 2**level``) as the op budget is consumed, in the proportions fitted from
the zoo (``fitted.LEVEL_FRACTIONS``); widths per level come from
``fitted.BLOCK_WIDTHS`` / ``fitted.CONV_WIDTHS`` scaled by the builder's width
multiplier. Budget left over that no block fits is spent on filler ops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence, Sized
from typing import cast

import numpy as np

from . import fitted as F
from .builder import GraphBuilder, split_budget

__all__ = ["FAMILY_BUILDERS", "choice"]


def choice(rng: np.random.Generator, weighted: Sequence[tuple[object, float]]):
    """One value of ``(value, weight)`` pairs."""
    w = np.array([p for _, p in weighted], dtype=float)
    return weighted[int(rng.choice(len(weighted), p=w / w.sum()))][0]


def _size(rem: int, typical: int, lo: int, hi: int) -> int:
    """Ops for the next block: ``typical``, or a size that leaves either nothing or at least ``lo``."""
    if rem <= hi:
        return rem
    if rem - typical < lo:
        return max(lo, rem - lo)
    return typical


class _Levels:
    """Resolution level the body should have reached after a given number of ops."""

    def __init__(self, group: str, first: int, start: int, end: int) -> None:
        fr = F.LEVEL_FRACTIONS[group]
        self.levels = [lv for lv in sorted(fr) if lv >= first] or [first]
        w = np.array([fr.get(lv, 0.0) for lv in self.levels]) + 1e-9
        self.cum = np.cumsum(w) / w.sum()
        self.start, self.span = start, max(1, end - start)

    def at(self, pos: int) -> int:
        frac = (pos - self.start) / self.span
        return next((lv for lv, c in zip(self.levels, self.cum) if frac < c), self.levels[-1])


def _width(table: dict[int, int], level: int) -> int:
    return table[min(table, key=lambda lv: (abs(lv - level), -lv))]


# ---------------------------------------------------------------- residual (ResNet v1/v2, MobileNetV2)
def _bottleneck(b: GraphBuilder, x: int, cout: int, down: bool, rem: int, preact: bool) -> int:
    cin, stride = b.shape(x)[-1], 2 if down else 1
    proj = int(down or cin != cout)
    pre = 2 if preact else 0
    lo, hi = pre + proj + 2, pre + proj + 4
    m = _size(rem, hi, lo, hi) - pre - proj - 1  # convs on the main path (bottleneck: 3)
    mid = max(8, cout // 32 * 8)
    y = b.batchnorm(x) if preact else x
    short = b.conv(y, cout, 1, stride) if proj else x
    if m >= 3:
        y = b.conv(b.conv(b.conv(y, mid, 1, stride), mid, 3), cout, 1)
    elif m == 2:
        y = b.conv(b.conv(y, mid, 3, stride), cout, 3)
    else:
        y = b.conv(y, cout, 3, stride)
    return b.binary("ADD", short, y)


def _inverted(b: GraphBuilder, x: int, cout: int, down: bool, rem: int) -> int:
    cin, stride = b.shape(x)[-1], 2 if down else 1
    add = int(not down and cin == cout)
    s = _size(rem, 3 + add, 2 + add, 3 + add)
    y = b.conv(x, cin * 6) if s - add >= 3 else x
    y = b.conv(b.dwconv(y, 3, stride), cout)
    return b.binary("ADD", x, y) if add else y


def residual(b: GraphBuilder, x: int, end: int) -> int:
    """Stem, stages of bottleneck (v1), pre-activation (v2) or inverted-residual (MobileNetV2) blocks with ADD skips."""
    variant = choice(b.rng, F.RESIDUAL_VARIANTS)
    group = "mobile" if variant == "mbv2" else "resnet"
    b.group = group
    b.scope = f"{variant}_stem"
    if variant == "mbv2":
        x = b.conv(b.dwconv(b.conv(x, b.ch(32), 3, 2)), b.ch(16))
        cur, tail = 1, 1
    else:
        x = b.pool("MAX_POOL_2D", b.pad(b.conv(b.pad(x, 3), b.ch(64), 7, 2, padding="valid"), 1), 3, 2, "valid")
        cur, tail = 2, 2 if variant == "v2" else 0
    stop = end - tail
    levels = _Levels(group, 2, b.pos, stop)
    while True:
        down = levels.at(b.pos) > cur
        cout = b.ch(_width(F.BLOCK_WIDTHS[group], cur + down))
        changes = down or b.shape(x)[-1] != cout
        lo = 2 + (not changes) if variant == "mbv2" else 2 + changes + 2 * (variant == "v2")
        if stop - b.pos < lo:
            break
        cur += down
        b.scope = f"block{len(b.checkpoints)}"
        if variant == "mbv2":
            x = _inverted(b, x, cout, down, stop - b.pos)
        else:
            x = _bottleneck(b, x, cout, down, stop - b.pos, variant == "v2")
        b.checkpoints.append(x)
    b.scope = "tail"
    x = b.fill(x, stop - b.pos, {"v1": ("conv",), "v2": ("MUL", "ADD"), "mbv2": ("dw", "conv")}[variant])
    if variant == "v2":
        x = b.batchnorm(x)
    elif variant == "mbv2":
        x = b.conv(x, b.ch(1280))
    return x


# ---------------------------------------------------------------- inception (InceptionV3-like)
# Branch templates: ("conv", channels as a fraction of the block's output width, kh, kw) or ("avg",) / ("max",).
_A = [
    [("conv", 0.22, 1, 1)],
    [("conv", 0.17, 1, 1), ("conv", 0.22, 5, 5)],
    [("conv", 0.22, 1, 1), ("conv", 0.33, 3, 3), ("conv", 0.33, 3, 3)],
    [("avg",), ("conv", 0.2, 1, 1)],
]
_C = [
    [("conv", 0.25, 1, 1)],
    [("conv", 0.2, 1, 1), ("conv", 0.2, 1, 7), ("conv", 0.25, 7, 1)],
    [("conv", 0.2, 1, 1), ("conv", 0.2, 7, 1), ("conv", 0.2, 1, 7), ("conv", 0.2, 7, 1), ("conv", 0.25, 1, 7)],
    [("avg",), ("conv", 0.25, 1, 1)],
]
_E = [
    [("conv", 0.16, 1, 1)],
    [("conv", 0.19, 1, 1), ("conv", 0.19, 1, 3), ("conv", 0.375, 3, 1)],
    [("conv", 0.22, 1, 1), ("conv", 0.19, 3, 3), ("conv", 0.19, 1, 3), ("conv", 0.375, 3, 1)],
    [("avg",), ("conv", 0.09, 1, 1)],
]
_RA = [[("conv", 0.5, 3, 3)], [("conv", 0.083, 1, 1), ("conv", 0.125, 3, 3), ("conv", 0.125, 3, 3)], [("max",)]]
_RB = [
    [("conv", 0.15, 1, 1), ("conv", 0.25, 3, 3)],
    [("conv", 0.15, 1, 1), ("conv", 0.15, 1, 7), ("conv", 0.15, 7, 1), ("conv", 0.15, 3, 3)],
    [("max",)],
]
_BLOCKS = {3: _A, 4: _C, 5: _E}


def _inception_block(b: GraphBuilder, x: int, template: list, width: int, s: int, stride: int) -> int:
    branches = [list(br) for br in template]
    if len(branches) > 3 and b.rng.random() < 0.25:
        del branches[int(b.rng.integers(1, len(branches)))]
    while sum(map(len, branches)) + 1 > s:
        longest = max(branches, key=len)
        if len(longest) > 1:
            del longest[-2]
        else:
            branches.pop()
    while sum(map(len, branches)) + 1 < s:
        convs = [br for br in branches if br[-1][0] == "conv"]
        br = convs[int(b.rng.integers(len(convs)))]
        br.insert(len(br) - 1, ("conv", br[-1][1], 3, 3))
    outs = []
    for br in branches:
        y = x
        for j, layer in enumerate(br):
            st = stride if j == len(br) - 1 else 1
            if layer[0] == "conv":
                y = b.conv(y, b.ch(layer[1] * width), layer[2], st, kw=layer[3])
            else:
                y = b.pool("AVERAGE_POOL_2D" if layer[0] == "avg" else "MAX_POOL_2D", y, 3, st)
        outs.append(y)
    return b.concat(outs)


def inception(b: GraphBuilder, x: int, end: int) -> int:
    """InceptionV3-style stem, then blocks of 3-4 parallel branches joined by CONCATENATION, with reduction blocks."""
    if end - b.pos < 60:
        x = b.pool("MAX_POOL_2D", b.conv(b.conv(x, b.ch(32), 3, 2, padding="valid"), b.ch(64), 3, 2), 3, 2)
    else:
        x = b.conv(b.conv(b.conv(x, b.ch(32), 3, 2, padding="valid"), b.ch(32), 3, padding="valid"), b.ch(64), 3)
        x = b.pool("MAX_POOL_2D", x, 3, 2, "valid")
        x = b.pool("MAX_POOL_2D", b.conv(b.conv(x, b.ch(80), 1), b.ch(192), 3, padding="valid"), 3, 2, "valid")
    cur, widths = 3, F.BLOCK_WIDTHS["inception"]
    levels = _Levels("inception", 3, b.pos, end)
    while end - b.pos >= 3:
        b.scope = f"mixed{len(b.checkpoints)}"
        if levels.at(b.pos) > cur and cur < 5:
            cur += 1
            template, stride = (_RA if cur == 4 else _RB), 2
        else:
            template, stride = _BLOCKS[cur], 1
        typical = sum(len(cast(Sized, branch)) for branch in template) + 1
        s = _size(end - b.pos, typical, 3, typical + 3)
        x = _inception_block(b, x, template, _width(widths, cur), s, stride)
        b.checkpoints.append(x)
    return b.fill(x, end - b.pos)


# ---------------------------------------------------------------- dense (DenseNet-like)
def dense(b: GraphBuilder, x: int, end: int) -> int:
    """Dense blocks: each layer reads the CONCATENATION of the block input and all earlier layer outputs."""
    x = b.pool("MAX_POOL_2D", b.pad(b.conv(b.pad(x, 3), b.ch(64), 7, 2, padding="valid"), 1), 3, 2, "valid")
    growth = b.ch(F.DENSE_GROWTH)
    stop, cur = end - 3, 2
    levels = _Levels("dense", 2, b.pos, stop)
    lo_l, hi_l = F.DENSE_LAYERS_PER_BLOCK
    feats, layers = [x], int(b.rng.integers(lo_l, hi_l + 1))
    while stop - b.pos >= 2:
        rem, down = stop - b.pos, levels.at(b.pos) > cur
        b.scope = f"block{len(b.checkpoints)}_layer{len(feats)}"
        if (down or len(feats) > layers) and len(feats) >= 2 and rem >= 3:
            s = _size(rem, 4 + down, 2 + down, 4 + down)
            y = b.concat(feats)
            y = b.batchnorm(y) if s - down >= 4 else y
            y = b.conv(y, max(8, b.shape(y)[-1] // 16 * 8))
            x = b.pool("AVERAGE_POOL_2D", y, 2, 2) if down else y
            cur += down
            b.checkpoints.append(x)
            feats, layers = [x], int(b.rng.integers(lo_l, hi_l + 1))
            continue
        c = int(len(feats) >= 2)
        r = _size(rem, 4 + c, 1 + c, 4 + c) - c
        y = b.concat(feats) if c else feats[0]
        y = b.batchnorm(y) if r in (3, 4) else y
        y = b.conv(y, 4 * growth) if r in (2, 4) else y
        feats.append(b.conv(y, growth, 3))
    feats[-1] = b.fill(feats[-1], stop - b.pos, ("MUL", "ADD"))
    b.scope = "tail"
    y = b.concat(feats) if len(feats) >= 2 else b.fill(feats[0], 1, ("MUL",))
    return b.batchnorm(y)


# ---------------------------------------------------------------- squeeze_excite (EfficientNet / MobileNetV3-like)
def _activation(b: GraphBuilder, x: int, act: str) -> int:
    if act == "swish":
        return b.binary("MUL", x, b.unary("LOGISTIC", x))
    return b.unary("RELU6", x) if act == "hswish" else x  # hard-swish as the Edge TPU runs it: HARD_SWISH does not map


_ACT_OPS = {"swish": 2, "hswish": 1, "relu": 0}


def _mbconv(b: GraphBuilder, x: int, cout: int, down: bool, s: int, act: str, expand: int) -> int:
    cin, a = b.shape(x)[-1], _ACT_OPS[act]
    add = int(not down and cin == cout)
    left = s - 2 - add
    se_ops = 5 + (a if act == "swish" else 0)
    parts: dict[str, bool] = {}
    for name, n in (("se", se_ops), ("dw_act", a), ("expand", 1), ("exp_act", a)):
        parts[name] = n <= left and (name != "expand" or expand > 1) and (name != "exp_act" or parts["expand"])
        left -= n * parts[name]
    y = b.conv(x, cin * expand) if parts["expand"] else x
    y = _activation(b, y, act) if parts["exp_act"] else y
    y = b.dwconv(y, int(b.rng.choice([3, 5])), 2 if down else 1)
    y = _activation(b, y, act) if parts["dw_act"] else y
    if parts["se"]:
        g = b.conv(b.mean(y, keepdims=True), max(8, cin // 32 * 8))
        g = _activation(b, g, "swish") if act == "swish" else g
        y = b.binary("MUL", y, b.unary("LOGISTIC", b.conv(g, b.shape(y)[-1])))
    y = b.conv(y, cout)
    return b.binary("ADD", x, y) if add else y


def squeeze_excite(b: GraphBuilder, x: int, end: int) -> int:
    """MBConv blocks with a squeeze-excite side branch (MEAN -> conv -> conv -> LOGISTIC -> MUL into the main path)."""
    act = choice(b.rng, F.SE_ACTIVATIONS)
    a = _ACT_OPS[act]
    x = _activation(b, b.conv(x, b.ch(32), 3, 2), act)
    stop, cur = end - 1 - a, 1
    levels = _Levels("mobile", 1, b.pos, stop)
    widths = F.BLOCK_WIDTHS["mobile"]
    typical = 9 + 2 * a + (a if act == "swish" else 0)
    while True:
        down = levels.at(b.pos) > cur
        cout = b.ch(_width(widths, cur + down) * (0.67 if cur + down == 1 else 1.0))
        lo = 2 + (not down and b.shape(x)[-1] == cout)
        if stop - b.pos < lo:
            break
        cur += down
        b.scope = f"mbconv{len(b.checkpoints)}"
        s = _size(stop - b.pos, typical, lo, typical)
        x = _mbconv(b, x, cout, down, s, act, 1 if cur == 1 else 6)
        b.checkpoints.append(x)
    b.scope = "tail"
    x = b.fill(x, stop - b.pos, ("dw", "conv"))
    return _activation(b, b.conv(x, b.ch(1280)), act)


# ---------------------------------------------------------------- nas_cell (NASNet-like)
def _nas_op(b: GraphBuilder, x: int, size: int, filters: int, stride: int) -> int:
    if size == 0:
        return x
    if size == 1:
        return b.pool("AVERAGE_POOL_2D" if b.rng.random() < 0.5 else "MAX_POOL_2D", x, 3, stride)
    return b.sepconv(x, filters, int(b.rng.choice([3, 5, 7])), stride)


def _nas_cell(b: GraphBuilder, h: int, hp: int, filters: int, reduce: bool, s: int) -> int:
    ratio = next(r for r in (1, 2, 4, 8, 16, 32) if -(-b.shape(hp)[1] // r) == b.shape(h)[1])
    h1 = b.conv(h, filters)
    hp1 = b.conv(b.pool("AVERAGE_POOL_2D", hp, ratio + 1, ratio) if ratio > 1 else hp, filters)
    lo = 3 if reduce else 1
    sizes = split_budget(s - 3 - (ratio > 1), lo, 5, 4.0 if reduce else 3.2, b.rng, min_count=2)
    outs: list[int] = []
    for j, k in enumerate(sizes):
        pairs = [(i, k - 1 - i) for i in range(3) if 0 <= k - 1 - i <= 2 and min(i, k - 1 - i) >= lo - 2]
        sa, sb = pairs[int(b.rng.integers(len(pairs)))]
        cands = [h1, hp1] if reduce else [h1, hp1, *outs]
        a_in = cands[int(b.rng.choice(len(cands)))]
        b_in = cands[int(b.rng.choice(len(cands)))]
        if j == 0:  # both preprocessed inputs are read
            a_in, b_in = h1, hp1
        elif sa == sb == 0 and a_in == b_in:
            b_in = hp1 if a_in == h1 else h1
        stride = 2 if reduce else 1
        outs.append(b.binary("ADD", _nas_op(b, a_in, sa, filters, stride), _nas_op(b, b_in, sb, filters, stride)))
    return b.concat(outs)


def nas_cell(b: GraphBuilder, x: int, end: int) -> int:
    """Cells of 2-7 pairwise-combined branches (sep-convs, pools, identities) over the two previous cells' outputs,
    all joined by one CONCATENATION."""
    x = b.conv(b.conv(x, b.ch(32), 3, 2, padding="valid"), b.ch(_width(F.BLOCK_WIDTHS["mobile"], 2)), 3, 2)
    h = hp = x
    cur = 2
    levels = _Levels("all", 2, b.pos, end)
    while True:
        down = levels.at(b.pos) > cur
        pre = 3 + (b.shape(hp)[1] != b.shape(h)[1])
        lo = pre + 2 * (3 if down else 1)
        if end - b.pos < lo:
            break
        cur += down
        b.scope = f"cell{len(b.checkpoints)}"
        typical = pre + int(b.rng.integers(5, 8)) * (4 if down else 3)
        s = _size(end - b.pos, typical, lo, typical + 6)
        hp, h = h, _nas_cell(b, h, hp, b.ch(_width(F.BLOCK_WIDTHS["mobile"], cur)), down, s)
        b.checkpoints.append(h)
    return b.fill(h, end - b.pos, ("avg", "dw", "conv"))


# ---------------------------------------------------------------- layered (RESPECT's random training DAGs)
def _layered_node(b: GraphBuilder, preds: list[int], c: int, stride: int) -> int:
    if len(preds) > 1:
        same = all(b.shape(p) == b.shape(preds[0]) for p in preds)
        t = choice(b.rng, F.LAYERED_MULTI_MIX) if same and len(preds) == 2 else "CONCATENATION"
        return b.concat(preds) if t == "CONCATENATION" else b.binary(str(t), preds[0], preds[1])
    p = preds[0]
    t = choice(b.rng, F.LAYERED_SINGLE_MIX)
    if b.shape(p)[-1] > 2 * c or (stride > 1 and t not in ("DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D")):
        t = "CONV_2D"
    if t == "CONV_2D":
        return b.conv(p, c, int(b.rng.choice([1, 3])), stride)
    if t == "DEPTHWISE_CONV_2D":
        return b.dwconv(p, int(b.rng.choice([3, 5])), stride)
    if t in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return b.pool(str(t), p, 3, stride)
    if t in ("MUL", "ADD"):
        return b.scale(str(t), p)
    return b.unary(str(t), p)


def layered(b: GraphBuilder, x: int, end: int) -> int:
    """Levels of 1-6 nodes; each node reads 1-6 nodes of earlier levels of its resolution stage (mostly the
    previous level) and every node is read by the next level; strided levels change resolution."""
    rng = b.rng
    widths = F.CONV_WIDTHS["all"]
    x = b.conv(x, b.ch(_width(widths, 1)), 3, 2)
    stop, cur, max_w = end - 1, 1, int(rng.integers(2, 7))
    levels = _Levels("all", 1, b.pos, stop)
    stage, prev = [[x]], [x]
    while stop - b.pos > 0:
        rem = stop - b.pos
        b.scope = f"level{len(b.checkpoints)}"
        if levels.at(b.pos) > cur and rem > len(prev):
            cur += 1
            c = b.ch(_width(widths, cur))
            prev = [_layered_node(b, [p], c, 2) for p in prev]
            stage = [prev]
            b.checkpoints.append(prev[0])
            continue
        c = b.ch(_width(widths, cur))
        w = min(int(rng.integers(1, max_w + 1)), rem)
        owners = rng.permutation(np.arange(len(prev)) % w if len(prev) >= w else rng.permutation(w)[: len(prev)])
        new = []
        for j in range(w):
            preds = [prev[i] for i in range(len(prev)) if owners[i] == j]
            want = max(len(preds), int(choice(rng, tuple(enumerate(F.LAYERED_FANIN, start=1)))))
            for _ in range(6 * want):
                if len(preds) >= want:
                    break
                lvl = stage[-1] if rng.random() < 0.7 or len(stage) == 1 else stage[int(rng.integers(len(stage) - 1))]
                p = lvl[int(rng.integers(len(lvl)))]
                if p not in preds and sum(b.shape(q)[-1] for q in preds) + b.shape(p)[-1] <= 4 * c:
                    preds.append(p)
            if not preds:
                preds = [prev[int(rng.integers(len(prev)))]]
            new.append(_layered_node(b, preds, c, 1))
        stage.append(new)
        prev = new
        b.checkpoints.append(new[0])
    return _layered_node(b, prev, b.ch(_width(widths, cur)), 1)  # merges the last level (or follows its one node)


FAMILY_BUILDERS: dict[str, Callable[[GraphBuilder, int, int], int]] = {
    "residual": residual,
    "inception": inception,
    "dense": dense,
    "squeeze_excite": squeeze_excite,
    "nas_cell": nas_cell,
    "layered": layered,
}
