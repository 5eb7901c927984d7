"""Synthetic full-integer micro-models (single layers, short chains) for calibrating the device model.

:func:`synth_model` builds a real int8 ``.tflite`` flatbuffer with the ``ai_edge_litert.schema_py_generated``
object API (no TensorFlow), quantized as the TFLite converter does for the Edge TPU: int8 input and output
(no QUANTIZE/DEQUANTIZE), batch 1, symmetric per-output-channel int8 weights (zero point 0; axis 0 for
CONV_2D and FULLY_CONNECTED, axis 3 for DEPTHWISE_CONV_2D), int32 biases with scale ``input_scale *
weight_scale`` and zero point 0. Weights are He-initialised from ``numpy.random.default_rng(seed)``.

Activation ranges are derived analytically: per-channel means and variances are propagated from an input
uniform over its int8 range (rectified-Gaussian moments after a fused ReLU), and each tensor covers mean
+- 3 standard deviations of its channels, so outputs spread over int8 instead of saturating. Tensors the
int8 kernels require to share quantization (RESHAPE, MAX_POOL_2D and CONCATENATION inputs and outputs)
get the union of their ranges (the input's range if it is one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

from .errors import RespectPassError
from .submodel import AlignedBufferT

__all__ = [
    "Add",
    "Concat",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Layer",
    "MaxPool",
    "SynthError",
    "describe",
    "synth_model",
]

_INPUT_SCALE = 1.0 / 128.0  # the model input covers [-1, 1) with zero point 0
_SIGMAS = 3.0
_OPS = schema.BuiltinOperator
#: Op versions the TFLite converter writes for int8 (per-channel) kernels.
_VERSIONS = {
    _OPS.CONV_2D: 3,
    _OPS.DEPTHWISE_CONV_2D: 3,
    _OPS.FULLY_CONNECTED: 4,
    _OPS.ADD: 2,
    _OPS.RESHAPE: 1,
    _OPS.CONCATENATION: 2,
    _OPS.MAX_POOL_2D: 2,
}


class SynthError(RespectPassError, ValueError):
    """A layer list or input shape that cannot be built into a micro-model."""


class _Layer:
    """Validation shared by the layer dataclasses: sizes are positive ints, padding is same/valid."""

    def __post_init__(self) -> None:
        for f in ("filters", "units", "kernel", "stride", "size", "back"):
            v = getattr(self, f, 1)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SynthError(f"{self!r}: {f} must be a positive integer, got {v!r}")
        if (pad := getattr(self, "padding", "same")) not in ("same", "valid"):
            raise SynthError(f"{self!r}: padding must be 'same' or 'valid', got {pad!r}")


@dataclass(frozen=True)
class Conv2D(_Layer):
    """CONV_2D: ``filters`` output channels, square ``kernel``, optional fused ReLU."""

    filters: int
    kernel: int = 3
    stride: int = 1
    padding: str = "same"
    relu: bool = True


@dataclass(frozen=True)
class DepthwiseConv2D(_Layer):
    """DEPTHWISE_CONV_2D with depth multiplier 1, square ``kernel``, optional fused ReLU."""

    kernel: int = 3
    stride: int = 1
    padding: str = "same"
    relu: bool = True


@dataclass(frozen=True)
class Dense(_Layer):
    """FULLY_CONNECTED with ``units`` outputs; a 4-D input is flattened by a RESHAPE to (1, H*W*C) first."""

    units: int
    relu: bool = False


@dataclass(frozen=True)
class Add(_Layer):
    """ADD of the tensor ``back`` layers earlier (the model input is layer 0) and the current one."""

    back: int = 1


@dataclass(frozen=True)
class Concat(_Layer):
    """CONCATENATION on the last (channel) axis of the tensor ``back`` layers earlier and the current one."""

    back: int = 1


@dataclass(frozen=True)
class MaxPool(_Layer):
    """MAX_POOL_2D: ``size`` x ``size`` window, stride ``size``, VALID padding."""

    size: int = 2


Layer = Conv2D | DepthwiseConv2D | Dense | Add | Concat | MaxPool


@dataclass
class _Act:
    """An activation tensor being planned: shape, per-channel real mean/variance, wanted range."""

    name: str
    shape: tuple[int, ...]
    mean: np.ndarray
    var: np.ndarray
    lo: float
    hi: float


@dataclass
class _Const:
    """A constant tensor; for a bias, ``values`` are real values scaled by ``scales * scale(bias_of)``."""

    name: str
    dtype: int
    values: np.ndarray
    scales: np.ndarray | None = None
    axis: int = 0
    bias_of: int | None = None


def _obj(cls: type, **fields: Any) -> Any:
    """An object-API instance (``schema.*T``) with ``fields`` set."""
    o = cls()
    o.__dict__.update(fields)
    return o


class _Plan:
    """Pass 1: shapes, weights, statistics and op wiring (op inputs: ("a", act) or ("c", const))."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.acts: list[_Act] = []
        self.consts: list[_Const] = []
        self.ops: list[tuple[int, list[tuple[str, int]], int, Any]] = []
        self.parent: dict[int, int] = {}  # union-find over acts that must share quantization

    def act(
        self,
        name: str,
        shape: tuple[int, ...],
        mean: np.ndarray,
        var: np.ndarray,
        lo: float,
        hi: float,
        same_as: int | None = None,
    ) -> int:
        self.acts.append(_Act(name, shape, mean, var, lo, hi))
        self.parent[len(self.acts) - 1] = len(self.acts) - 1 if same_as is None else self.group(same_as)
        return len(self.acts) - 1

    def group(self, a: int) -> int:
        while self.parent[a] != a:
            a = self.parent[a]
        return a

    def const(self, c: _Const) -> tuple[str, int]:
        self.consts.append(c)
        return ("c", len(self.consts) - 1)

    def weighted(
        self, name: str, code: int, x: int, w: np.ndarray, axis: int, out_shape: tuple[int, ...], relu: bool, options: Any
    ) -> int:
        """Quantize real weights ``w`` per channel on ``axis``, add a bias, plan the op and its output."""
        moved = np.moveaxis(w, axis, 0)
        n = moved.shape[0]
        scales = (np.maximum(np.abs(moved).reshape(n, -1).max(axis=1), 1e-8) / 127).astype(np.float32)
        qm = np.clip(np.round(moved.reshape(n, -1) / scales[:, None]), -127, 127)
        real = qm * scales[:, None]
        q = np.moveaxis(qm.astype(np.int8).reshape(moved.shape), 0, axis)
        bias = np.asarray(self.rng.normal(0.0, 0.1, n))
        src = self.acts[x]
        if code == _OPS.DEPTHWISE_CONV_2D:
            mean, var = real.sum(axis=1) * src.mean + bias, (real**2).sum(axis=1) * src.var
        else:  # weights are (out, ..., in) with the input channel fastest, like an NHWC flatten
            rep = real.shape[1] // src.mean.size
            mean, var = real @ np.tile(src.mean, rep) + bias, (real**2) @ np.tile(src.var, rep)
        ins = [
            ("a", x),
            self.const(_Const(f"{name}/weights", schema.TensorType.INT8, q, scales, axis)),
            self.const(_Const(f"{name}/bias", schema.TensorType.INT32, bias, scales, 0, x)),
        ]
        out = self.act(name, out_shape, *_activation(mean, var, relu))
        self.ops.append((code, ins, out, options))
        return out


def _activation(mean: np.ndarray, var: np.ndarray, relu: bool) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-channel output moments and the wanted real range, before or after a fused ReLU."""
    sd = np.sqrt(np.maximum(var, 1e-12))
    hi = float(np.max(mean + _SIGMAS * sd))
    if not relu:
        return mean, var, float(np.min(mean - _SIGMAS * sd)), hi
    z = mean / sd
    cdf = np.array([0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in z])
    pdf = np.exp(-z * z / 2.0) / math.sqrt(2.0 * math.pi)
    m1, m2 = mean * cdf + sd * pdf, (mean**2 + var) * cdf + mean * sd * pdf
    return m1, np.maximum(m2 - m1**2, 0.0), 0.0, max(hi, float(sd.max()), 1e-3)


def _quant(lo: float, hi: float) -> tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = float(np.float32(max(hi - lo, 1e-6) / 255.0))
    return scale, int(np.clip(round(-128 - lo / scale), -128, 127))


def _he(rng: np.random.Generator, fan_in: int, shape: tuple[int, ...]) -> np.ndarray:
    """He-normal weights in float32 (multi-MiB layers are drawn and quantized fast)."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(math.sqrt(2.0 / fan_in))


def _layer(plan: _Plan, i: int, layer: Layer, outs: list[int]) -> int:
    """Plan layer ``i`` on the current tensor ``outs[-1]``; return its output act."""
    x, src = outs[-1], plan.acts[outs[-1]]
    name = f"layer{i}_{type(layer).__name__.lower()}"
    if isinstance(layer, (Conv2D, DepthwiseConv2D, MaxPool)) and len(src.shape) != 4:
        raise SynthError(f"layer {i} {layer!r} needs an NHWC input, got shape {src.shape}")
    if isinstance(layer, (Conv2D, DepthwiseConv2D)):
        return _conv(plan, i, layer, name, x)
    if isinstance(layer, Dense):
        return _dense(plan, layer, name, x)
    if isinstance(layer, MaxPool):
        return _max_pool(plan, i, layer, name, x)
    return _merge(plan, i, layer, name, outs)


def _fused(relu: bool) -> int:
    """The fused activation of an op with or without a ReLU."""
    return schema.ActivationFunctionType.RELU if relu else schema.ActivationFunctionType.NONE


def _conv(plan: _Plan, i: int, layer: Conv2D | DepthwiseConv2D, name: str, x: int) -> int:
    """Plan a CONV_2D or DEPTHWISE_CONV_2D on NHWC act ``x``."""
    _, h, w, c = plan.acts[x].shape
    k, s, same = layer.kernel, layer.stride, layer.padding == "same"
    if not same and (k > h or k > w):
        raise SynthError(f"layer {i} {layer!r}: a {k}x{k} VALID kernel does not fit the {h}x{w} input")
    h, w = (-(-h // s), -(-w // s)) if same else ((h - k) // s + 1, (w - k) // s + 1)
    geo = {
        "padding": schema.Padding.SAME if same else schema.Padding.VALID,
        "strideH": s,
        "strideW": s,
        "fusedActivationFunction": _fused(layer.relu),
    }
    if isinstance(layer, Conv2D):
        weights = _he(plan.rng, k * k * c, (layer.filters, k, k, c))
        return plan.weighted(
            name, _OPS.CONV_2D, x, weights, 0, (1, h, w, layer.filters), layer.relu, _obj(schema.Conv2DOptionsT, **geo)
        )
    weights = _he(plan.rng, k * k, (1, k, k, c))
    return plan.weighted(
        name,
        _OPS.DEPTHWISE_CONV_2D,
        x,
        weights,
        3,
        (1, h, w, c),
        layer.relu,
        _obj(schema.DepthwiseConv2DOptionsT, depthMultiplier=1, **geo),
    )


def _dense(plan: _Plan, layer: Dense, name: str, x: int) -> int:
    """Plan a FULLY_CONNECTED on act ``x``, flattened by a RESHAPE to (1, N) first when it is not 2-D."""
    src = plan.acts[x]
    n = int(np.prod(src.shape))
    if len(src.shape) != 2:
        flat, rep = (1, n), n // src.mean.size
        shape = plan.const(_Const(f"{name}/flatten/shape", schema.TensorType.INT32, np.array(flat, np.int32)))
        y = plan.act(f"{name}/flatten", flat, np.tile(src.mean, rep), np.tile(src.var, rep), src.lo, src.hi, x)
        plan.ops.append((_OPS.RESHAPE, [("a", x), shape], y, _obj(schema.ReshapeOptionsT, newShape=list(flat))))
        x = y
    weights = _he(plan.rng, n, (layer.units, n))
    return plan.weighted(
        name,
        _OPS.FULLY_CONNECTED,
        x,
        weights,
        0,
        (1, layer.units),
        layer.relu,
        _obj(schema.FullyConnectedOptionsT, fusedActivationFunction=_fused(layer.relu)),
    )


def _max_pool(plan: _Plan, i: int, layer: MaxPool, name: str, x: int) -> int:
    """Plan a MAX_POOL_2D on NHWC act ``x``; its output shares the input's quantization."""
    src = plan.acts[x]
    k = layer.size
    if k > min(src.shape[1:3]):
        raise SynthError(f"layer {i} {layer!r}: a {k}x{k} window does not fit the input of shape {src.shape}")
    h, w = src.shape[1] // k, src.shape[2] // k
    y = plan.act(name, (1, h, w, src.shape[3]), src.mean, src.var, src.lo, src.hi, x)
    plan.ops.append(
        (
            _OPS.MAX_POOL_2D,
            [("a", x)],
            y,
            _obj(schema.Pool2DOptionsT, padding=schema.Padding.VALID, strideH=k, strideW=k, filterHeight=k, filterWidth=k),
        )
    )
    return y


def _merge(plan: _Plan, i: int, layer: Add | Concat, name: str, outs: list[int]) -> int:
    """Plan an ADD or CONCATENATION of the current act and the one ``layer.back`` layers earlier."""
    if layer.back >= len(outs):
        raise SynthError(
            f"layer {i} {layer!r}: no tensor {layer.back} layer(s) back (only the model input "
            f"and {len(outs) - 1} layer output(s) come before it)"
        )
    x, other = outs[-1], outs[-1 - layer.back]
    src, o = plan.acts[x], plan.acts[other]
    add = isinstance(layer, Add)
    if (o.shape != src.shape) if add else (o.shape[:-1] != src.shape[:-1]):
        raise SynthError(
            f"layer {i} {layer!r}: the current tensor is {src.shape} but '{o.name}' is {o.shape}; "
            + ("ADD needs equal shapes" if add else "CONCATENATION needs equal shapes but the last axis")
        )
    if add:
        y = plan.act(name, src.shape, *_activation(src.mean + o.mean, src.var + o.var, False))
        plan.ops.append((_OPS.ADD, [("a", other), ("a", x)], y, schema.AddOptionsT()))
        return y
    joined = src.shape[:-1] + (src.shape[-1] + o.shape[-1],)
    y = plan.act(
        name,
        joined,
        np.concatenate([o.mean, src.mean]),
        np.concatenate([o.var, src.var]),
        min(src.lo, o.lo),
        max(src.hi, o.hi),
        x,
    )
    plan.parent[plan.group(other)] = plan.group(x)
    plan.ops.append(
        (_OPS.CONCATENATION, [("a", other), ("a", x)], y, _obj(schema.ConcatenationOptionsT, axis=len(joined) - 1))
    )
    return y


def _quantization(scales: Sequence[float] | np.ndarray, zero_points: Sequence[int], axis: int = 0) -> Any:
    return _obj(
        schema.QuantizationParametersT,
        scale=np.asarray(scales, np.float32),
        zeroPoint=np.asarray(zero_points, np.int64),
        quantizedDimension=axis,
    )


def _build(plan: _Plan, name: str) -> bytes:
    """Pass 2: resolve shared quantization, quantize the biases and serialize the flatbuffer."""
    quant = _act_quantization(plan)
    tensors = [
        _obj(
            schema.TensorT,
            name=a.name,
            shape=np.array(a.shape, np.int32),
            type=schema.TensorType.INT8,
            buffer=0,
            quantization=_quantization([s], [z]),
        )
        for a, (s, z) in zip(plan.acts, quant)
    ]
    buffers, const_tensors = _const_tensors(plan, quant)
    codes = list(dict.fromkeys(op[0] for op in plan.ops))
    sg = _obj(
        schema.SubGraphT,
        name="main",
        tensors=tensors + const_tensors,
        operators=_operators(plan, codes),
        inputs=np.array([0], np.int32),
        outputs=np.array([plan.ops[-1][2]], np.int32),
    )
    model = _obj(
        schema.ModelT,
        version=3,
        description=f"respect-pass synthetic micro-model {name}",
        subgraphs=[sg],
        buffers=buffers,
        operatorCodes=[
            _obj(schema.OperatorCodeT, builtinCode=c, deprecatedBuiltinCode=min(c, 127), version=_VERSIONS[c]) for c in codes
        ],
    )
    builder = flatbuffers.Builder(sum(c.values.nbytes + 16 for c in plan.consts) + (1 << 14))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _act_quantization(plan: _Plan) -> list[tuple[float, int]]:
    """Each act's (scale, zero point): the union of its group's ranges; the input's group keeps the input's."""
    ranges: dict[int, tuple[float, float]] = {}
    for a, act in enumerate(plan.acts):
        lo, hi = ranges.get(plan.group(a), (act.lo, act.hi))
        ranges[plan.group(a)] = (min(lo, act.lo), max(hi, act.hi))
    return [
        (_INPUT_SCALE, 0) if plan.group(a) == plan.group(0) else _quant(*ranges[plan.group(a)])
        for a in range(len(plan.acts))
    ]


def _const_tensors(plan: _Plan, quant: Sequence[tuple[float, int]]) -> tuple[list[Any], list[Any]]:
    """The buffers (the empty one first) and the constant tensors; biases quantized with their input's scale."""
    buffers: list[Any] = [schema.BufferT()]
    tensors: list[Any] = []
    for c in plan.consts:
        q, values = None, c.values
        if c.scales is not None:
            scales = c.scales if c.bias_of is None else (np.float32(quant[c.bias_of][0]) * c.scales).astype(np.float32)
            if c.bias_of is not None:
                values = np.round(c.values / scales.astype(np.float64)).astype(np.int32)
            q = _quantization(scales, [0] * len(scales), c.axis)
        buffers.append(AlignedBufferT(data=np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8)))
        tensors.append(
            _obj(
                schema.TensorT,
                name=c.name,
                shape=np.array(values.shape, np.int32),
                type=c.dtype,
                buffer=len(buffers) - 1,
                quantization=q,
            )
        )
    return buffers, tensors


def _operators(plan: _Plan, codes: list[int]) -> list[Any]:
    """The planned ops as ``OperatorT``s (constant ``t`` is tensor ``len(acts) + t``)."""
    return [
        _obj(
            schema.OperatorT,
            opcodeIndex=codes.index(code),
            outputs=np.array([out], np.int32),
            inputs=np.array([t if kind == "a" else len(plan.acts) + t for kind, t in inputs], np.int32),
            builtinOptionsType=getattr(schema.BuiltinOptions, type(options).__name__[:-1]),
            builtinOptions=options,
        )
        for code, inputs, out, options in plan.ops
    ]


def synth_model(input_shape: tuple[int, ...], layers: Sequence[Layer], seed: int = 0, name: str = "micro") -> bytes:
    """The int8 ``.tflite`` flatbuffer of ``layers`` applied in order to an int8 input of ``input_shape``.

    ``input_shape`` is NHWC ``(1, H, W, C)`` or ``(1, N)`` (dense-only chains). The model input is
    tensor ``input``; layer ``i``'s output is ``layer{i}_{kind}`` (its constants ``.../weights`` and
    ``.../bias``). The same arguments give the same bytes. Raises :class:`SynthError` for an empty
    layer list, a bad input shape, or a layer that does not fit the tensor it reads.
    """
    shape = tuple(input_shape)
    if len(shape) not in (2, 4) or shape[0] != 1 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise SynthError(f"input shape must be (1, H, W, C) or (1, N) with positive sizes, got {shape}")
    if not layers:
        raise SynthError(f"model '{name}' has no layers: give at least one of Conv2D, DepthwiseConv2D, Dense, ...")
    plan = _Plan(seed)
    var = (256**2 - 1) / 12.0 * _INPUT_SCALE**2  # uniform over the int8 range
    outs = [
        plan.act(
            "input",
            shape,
            np.full(shape[-1], -0.5 * _INPUT_SCALE),
            np.full(shape[-1], var),
            -128 * _INPUT_SCALE,
            127 * _INPUT_SCALE,
        )
    ]
    for i, layer in enumerate(layers):
        if not isinstance(layer, (Conv2D, DepthwiseConv2D, Dense, Add, Concat, MaxPool)):
            raise SynthError(f"layer {i} is {layer!r}, not a Conv2D, DepthwiseConv2D, Dense, Add, Concat or MaxPool")
        outs.append(_layer(plan, i, layer, outs))
    return _build(plan, name)


def _label(layer: Layer) -> str:
    relu = " relu" if getattr(layer, "relu", False) else ""
    if isinstance(layer, (Conv2D, DepthwiseConv2D)):
        kind = f"conv {layer.filters} " if isinstance(layer, Conv2D) else "dwconv "
        return f"{kind}{layer.kernel}x{layer.kernel}/{layer.stride} {layer.padding}{relu}"
    if isinstance(layer, Dense):
        return f"dense {layer.units}{relu}"
    return f"maxpool {layer.size}" if isinstance(layer, MaxPool) else f"{type(layer).__name__.lower()}(-{layer.back})"


def describe(input_shape: tuple[int, ...], layers: Sequence[Layer]) -> str:
    """A one-line description, e.g. ``1x16x16x8 -> conv 16 3x3/1 same relu -> add(-1)``."""
    return " -> ".join(["x".join(map(str, input_shape))] + [_label(layer) for layer in layers])
