"""GraphBuilder: emits TFLite-like int8 ops with consistent shapes, constants, params and MACs.

Every op is appended in execution order, so the op list is topological by
construction. Shapes follow TFLite conventions: activations NHWC int8,
CONV_2D weights ``(out, kh, kw, in)`` int8 per-axis quantized on axis 0 with an
int32 bias, DEPTHWISE_CONV_2D weights ``(1, kh, kw, c)`` quantized on axis 3,
FULLY_CONNECTED weights ``(out, in)``, MEAN / RESHAPE / PAD take small int32
constants, batch-norm left unfolded is MUL + ADD with ``(1, 1, 1, c)`` int8
constants. ``param_bytes`` and ``macs`` are computed exactly as
:mod:`tflite_io.reader` does (distinct constant inputs; :func:`tflite_io.macs.op_macs`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tflite_io.graph import Op, OpGraph, Quantization, TensorInfo, distinct_constants
from tflite_io.macs import op_macs

__all__ = ["GraphBuilder", "split_budget"]

Shape = tuple[int, ...]
_ITEMSIZE = {"int8": 1, "int32": 4}


def _out_hw(h: int, w: int, kh: int, kw: int, stride: int, padding: str) -> tuple[int, int]:
    """Output spatial size of a windowed op; ``valid`` falls back to ``same`` when the window does not fit."""
    if padding == "valid" and h >= kh and w >= kw:
        return (h - kh) // stride + 1, (w - kw) // stride + 1
    return -(-h // stride), -(-w // stride)


def split_budget(total: int, lo: int, hi: int, typical: float, rng: np.random.Generator, min_count: int = 1) -> list[int]:
    """Random sizes in ``[lo, hi]`` summing to ``total``: about ``total / typical`` of them and at least
    ``min_count``; [] if impossible."""
    k_min, k_max = max(min_count, -(-total // hi)), total // lo
    if k_min > k_max:
        return []
    k = min(max(round(total / typical), k_min), k_max)
    sizes = [lo] * k
    for _ in range(total - k * lo):
        open_ = [i for i, s in enumerate(sizes) if s < hi]
        sizes[open_[int(rng.integers(len(open_)))]] += 1
    return sizes


class GraphBuilder:
    """Mutable op/tensor lists that become one immutable :class:`OpGraph`.

    ``rng`` drives the structure; quantization parameters come from a separate
    generator seeded by ``qseed`` so that ``quantize=False`` (a fast dry run used
    to size the widths) produces exactly the same structure.
    """

    def __init__(
        self, name: str, rng: np.random.Generator, alpha: float = 1.0, quantize: bool = True, qseed: int = 0
    ) -> None:
        self.name = name
        self.rng = rng
        self.alpha = alpha
        self.quantize = quantize
        self._qrng = np.random.default_rng(qseed)
        self.tensors: list[TensorInfo] = []
        self.ops: list[Op] = []
        self.inputs: list[int] = []
        self.checkpoints: list[int] = []  # block outputs, candidates for an auxiliary head
        self.outputs: list[int] = []
        self.group = "all"  # architecture group whose fitted parameter budget applies
        self.scope = "stem"
        self._buffers = 0
        self._mean_axes = -1

    # -- bookkeeping ---------------------------------------------------------------------------
    @property
    def pos(self) -> int:
        """Number of ops emitted so far (the index of the next op)."""
        return len(self.ops)

    def ch(self, base: float) -> int:
        """Channel count ``base`` scaled by the width multiplier, a multiple of 8 (at least 8)."""
        return max(8, int(round(base * self.alpha / 8.0)) * 8)

    def shape(self, t: int) -> Shape:
        return self.tensors[t].shape

    def _tensor(self, name: str, dtype: str, shape: Sequence[int], buffer: int, quant: Quantization | None) -> int:
        idx = len(self.tensors)
        shape = tuple(int(d) for d in shape)
        nbytes = math.prod(shape) * _ITEMSIZE[dtype]
        name = f"{self.name}/{self.scope}/{name}_{idx}"
        self.tensors.append(TensorInfo(idx, name, dtype, shape, nbytes, buffer, quant))
        return idx

    def _act_quant(self) -> Quantization | None:
        if not self.quantize:
            return None
        return Quantization((float(self._qrng.uniform(0.005, 0.2)),), (int(self._qrng.integers(-128, 128)),))

    def const(self, name: str, dtype: str, shape: Sequence[int], axis: int | None = None) -> int:
        """A new constant tensor with its own buffer (per-axis quantized on ``axis`` when given)."""
        self._buffers += 1
        quant = None
        if self.quantize and axis is not None:
            n = int(shape[axis])
            lo = 1e-5 if dtype == "int32" else 1e-3
            scales = tuple(self._qrng.uniform(lo, 5 * lo, size=n).tolist())
            quant = Quantization(scales, (0,) * n, axis)
        elif self.quantize and dtype == "int8":
            quant = self._act_quant()
        return self._tensor(name, dtype, shape, self._buffers, quant)

    def input(self, shape: Sequence[int]) -> int:
        """The (single) model input."""
        t = self._tensor("input", "int8", shape, -1, self._act_quant())
        self.inputs.append(t)
        return t

    def emit(self, op_type: str, inputs: Sequence[int], out_shape: Sequence[int]) -> int:
        """Append one op reading ``inputs`` (-1 = omitted) and writing a new int8 activation; return it."""
        out = self._tensor(op_type.lower(), "int8", out_shape, -1, self._act_quant())
        ins = tuple(inputs)
        params = sum(t.nbytes for t in distinct_constants(self.tensors, ins).values())
        macs = op_macs(op_type, [self.tensors[t].shape if t >= 0 else None for t in ins], [self.tensors[out].shape])
        self.ops.append(Op(len(self.ops), op_type, ins, (out,), params, int(macs)))
        return out

    def finish(self, outputs: Sequence[int]) -> OpGraph:
        """The OpGraph; every op output nobody reads must be one of ``outputs`` (checked)."""
        read = {t for op in self.ops for t in op.inputs}
        sinks = {op.outputs[0] for op in self.ops if op.outputs[0] not in read}
        if sinks != set(outputs) or read & set(outputs):
            raise RuntimeError(f"{self.name}: sinks {sorted(sinks)} != model outputs {list(outputs)}")
        return OpGraph(self.name, tuple(self.ops), tuple(self.tensors), tuple(self.inputs), tuple(outputs))

    # -- operators -----------------------------------------------------------------------------
    def conv(self, x: int, cout: int, k: int = 1, stride: int = 1, kw: int | None = None, padding: str = "same") -> int:
        """CONV_2D with a ``k x kw`` kernel (``kw`` defaults to ``k``) and bias."""
        _, h, w, cin = self.shape(x)
        kw = k if kw is None else kw
        oh, ow = _out_hw(h, w, k, kw, stride, padding)
        wt = self.const("weights", "int8", (cout, k, kw, cin), axis=0)
        bias = self.const("bias", "int32", (cout,), axis=0)
        return self.emit("CONV_2D", (x, wt, bias), (1, oh, ow, cout))

    def dwconv(self, x: int, k: int = 3, stride: int = 1) -> int:
        """DEPTHWISE_CONV_2D (depth multiplier 1) with bias."""
        _, h, w, c = self.shape(x)
        oh, ow = _out_hw(h, w, k, k, stride, "same")
        wt = self.const("dw_weights", "int8", (1, k, k, c), axis=3)
        bias = self.const("bias", "int32", (c,), axis=0)
        return self.emit("DEPTHWISE_CONV_2D", (x, wt, bias), (1, oh, ow, c))

    def sepconv(self, x: int, cout: int, k: int = 3, stride: int = 1) -> int:
        """Separable convolution as TFLite stores it: DEPTHWISE_CONV_2D then a 1x1 CONV_2D (2 ops)."""
        return self.conv(self.dwconv(x, k, stride), cout)

    def pool(self, op_type: str, x: int, k: int = 3, stride: int = 1, padding: str = "same") -> int:
        """AVERAGE_POOL_2D or MAX_POOL_2D."""
        _, h, w, c = self.shape(x)
        oh, ow = _out_hw(h, w, k, k, stride, padding)
        return self.emit(op_type, (x,), (1, oh, ow, c))

    def pad(self, x: int, p: int) -> int:
        """PAD by ``p`` pixels on each spatial side (int32 paddings constant)."""
        _, h, w, c = self.shape(x)
        return self.emit("PAD", (x, self.const("paddings", "int32", (4, 2))), (1, h + 2 * p, w + 2 * p, c))

    def mean(self, x: int, keepdims: bool = False) -> int:
        """Global average (MEAN over H, W); the int32 axes constant is shared by every MEAN of the graph."""
        c = self.shape(x)[-1]
        if self._mean_axes < 0:
            self._mean_axes = self.const("mean_axes", "int32", (2,))
        return self.emit("MEAN", (x, self._mean_axes), (1, 1, 1, c) if keepdims else (1, c))

    def fc(self, x: int, cout: int) -> int:
        """FULLY_CONNECTED on a ``(1, features)`` input."""
        cin = self.shape(x)[-1]
        wt = self.const("fc_weights", "int8", (cout, cin), axis=0)
        bias = self.const("bias", "int32", (cout,), axis=0)
        return self.emit("FULLY_CONNECTED", (x, wt, bias), (1, cout))

    def reshape(self, x: int, shape: Sequence[int]) -> int:
        return self.emit("RESHAPE", (x, self.const("new_shape", "int32", (len(shape),))), tuple(shape))

    def unary(self, op_type: str, x: int) -> int:
        """Shape-preserving op without constants (LOGISTIC, HARD_SWISH, RELU, QUANTIZE, ...)."""
        return self.emit(op_type, (x,), self.shape(x))

    def binary(self, op_type: str, a: int, b: int) -> int:
        """ADD / MUL of two activations; ``b`` may broadcast as ``(1, 1, 1, c)``."""
        sa, sb = self.shape(a), self.shape(b)
        if sa != sb and not (len(sb) == 4 and sb[1] == sb[2] == 1 and sb[3] == sa[3]):
            raise ValueError(f"{op_type} of incompatible shapes {sa} and {sb}")
        return self.emit(op_type, (a, b), sa)

    def scale(self, op_type: str, x: int) -> int:
        """MUL or ADD by a per-channel int8 constant (one half of an unfolded batch norm)."""
        c = self.shape(x)[-1]
        return self.emit(op_type, (x, self.const("bn", "int8", (1, 1, 1, c))), self.shape(x))

    def batchnorm(self, x: int) -> int:
        """Unfolded batch norm: MUL then ADD by constants (2 ops)."""
        return self.scale("ADD", self.scale("MUL", x))

    def concat(self, xs: Sequence[int]) -> int:
        """CONCATENATION on the channel axis."""
        shapes = [self.shape(t) for t in xs]
        if len(xs) < 2 or any(s[:3] != shapes[0][:3] for s in shapes):
            raise ValueError(f"cannot concatenate shapes {shapes}")
        return self.emit("CONCATENATION", tuple(xs), (*shapes[0][:3], sum(s[3] for s in shapes)))

    def fill(self, x: int, k: int, kinds: Sequence[str] = ("conv",)) -> int:
        """``k`` shape-preserving filler ops cycling through ``kinds``: ``conv`` (1x1 CONV_2D), ``dw``
        (3x3 DEPTHWISE_CONV_2D), ``MUL`` / ``ADD`` (by a per-channel constant), ``avg`` (3x3 AVERAGE_POOL_2D)."""
        for i in range(k):
            kind = kinds[i % len(kinds)]
            if kind == "conv":
                x = self.conv(x, self.shape(x)[-1])
            elif kind == "dw":
                x = self.dwconv(x)
            elif kind == "avg":
                x = self.pool("AVERAGE_POOL_2D", x)
            else:
                x = self.scale(kind, x)
        return x
