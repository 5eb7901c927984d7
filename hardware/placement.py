"""Which ops ``edgetpu_compiler`` v16 maps to the Edge TPU and which it leaves on the CPU, and why.

This module is the one authority on placement. It follows Coral's public documentation:

* Model requirements, https://coral.ai/docs/edgetpu/models-intro/#model-requirements: "Tensor
  parameters are quantized (8-bit fixed-point numbers; int8 or uint8)", "Tensor sizes are constant at
  compile-time (no dynamic sizes)", "Model parameters (such as bias tensors) are constant at
  compile-time", "Tensors are either 1-, 2-, or 3-dimensional. If a tensor has more than 3 dimensions,
  then only the 3 innermost dimensions may have a size greater than 1", "The model uses only the
  operations supported by the Edge TPU".
* The "Supported operations" table on the same page (:data:`EDGETPU_OPS`, and its "Known limitations"
  column in :func:`op_support`, where the IR can check them: types, ranks and shapes; limits that need
  builtin options or constant data, such as fused activations, dilations, strided-slice strides or
  all-zero concatenation constants, are not in the IR and are not checked; the "no ... in batch
  dimension" limits of Pack, Pad, Split, Mean, Sum, ReduceMax/Min are covered by the 3-innermost rule
  whenever shapes show them: a 4-D activation with batch > 1 fails it).
* The one-subgraph rule, https://coral.ai/docs/edgetpu/models-intro ("Compiling"): "the Edge TPU compiler
  cannot partition the model more than once, so as soon as an unsupported operation occurs, that
  operation and everything after it executes on the CPU, even if supported operations occur later"
  (:func:`place_ops`, read along the data flow: what depends on the first unmapped op); ops ahead of
  every Edge TPU op (a float pre-processing head) stay on the CPU in front of the Edge TPU subgraph
  (e.g. a CAST / float QUANTIZE input head, as in MoveNet).

RESIZE_BILINEAR / RESIZE_NEAREST_NEIGHBOR: the table says only "Depending on input/output size, this
operation might not be mapped to the Edge TPU to avoid loss in precision" and gives no number. Two shape rules
follow, both conservative (the compiler may map more, which the compiler driver only logs, while a resize we
wrongly put on the TPU is an error there):

* Size. Public reports bracket it: a 64x64->128x128 upsampling maps and 256x256->512x512 does not
  (github.com/google-coral/edgetpu/issues/31), a U-Net maps at 128x128 input and not at 256x256 (#187), Coral
  staff: "supported but not mapped to TPU due to their size" (#597), and DeepLab v3's final 33x33->513x513
  upsampling runs on the CPU in Coral's own model (the "original model delegates entirety of decoder to run on
  CPU", github.com/xadrianzetx/coral-deeplab README). We map a resize only when every input and output
  spatial side is at most :data:`RESIZE_MAX_SIDE` (128).
* Upsampling a 1x1 map (a broadcast of one pixel, DeepLab's ASPP image-pooling branch) does not map, whatever
  the size. Inferred, not documented: Google's compiled DeepLab v3
  (``deeplabv3_mnv2_pascal_quant_edgetpu.tflite``, github.com/google-coral/test_data) ends its Edge TPU
  subgraph at the 33x33x256 ASPP tensor and the 1x1x256 pooled tensor and leaves the 1x1->33x33
  RESIZE_BILINEAR and everything after it on the CPU ("The remaining 8 TFLite ops (resize, quantize, concat,
  two 1x1 convs, two resizes, argmax) run on the CPU", github.com/ricardodeazambuja/LibrEdgeTPU,
  libredgetpu/postprocess/deeplabv3.py, a reading of that compiled file); Google's own EdgeTPU-DeepLab-slim
  (``deeplab_mobilenet_edgetpu_slim_cityscapes_quant_edgetpu.tflite``, same repository) broadcasts its pooled
  features with TILE instead, and that maps (both read from the compiled files in this project's check of
  placement against Google's compiled models, issue 23); coral-deeplab (github.com/xadrianzetx/coral-deeplab), whose
  image pooling is the same 1x1->NxN ``resize_bilinear(..., align_corners=True)``, compiles with ``-a``
  (several subgraphs) to keep "almost all operations on TPU". No public source gives the compiler's reason.
  DeepLab resizes with ``align_corners=True`` everywhere, so these models cannot tell a 1x1-input rule from
  an align-corners rule; the IR has no builtin options, and the 1x1 rule is the one that shapes can check.

TILE is not in the table (and no public Coral source found says it maps), but Google's compiled
EdgeTPU-DeepLab-slim maps the TILE that broadcasts its pooled image features over the feature map, and the
ops after it (:data:`OBSERVED_OPS`; issue 23's check of the compiled file). We map a TILE of that kind only:
constant multiples that leave the innermost (channel) axis alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tflite_io import Op, OpGraph, TensorInfo

__all__ = [
    "EDGETPU_OPS",
    "OBSERVED_OPS",
    "RESIZE_MAX_SIDE",
    "SOFTMAX_MAX_ELEMENTS",
    "OpPlacement",
    "op_support",
    "place_ops",
    "placed",
    "resize_limit",
]

MODELS_INTRO = "coral.ai/docs/edgetpu/models-intro"

#: Builtin ops of the "Supported operations" table (coral.ai/docs/edgetpu/models-intro/#supported-operations),
#: all available to compiler v16 (runtime 14+ rows included). "LSTM: Unidirectional LSTM only" is the
#: UNIDIRECTIONAL_SEQUENCE_LSTM op that Keras LSTMs convert to (added in v16, google-coral/edgetpu#156).
#: Not in the table, hence CPU: LEAKY_RELU and HARD_SWISH (google-coral/edgetpu#272, #597), DEQUANTIZE,
#: CAST, ARG_MAX, GATHER, EXP, DEPTH_TO_SPACE, PADV2, SPLIT_V, UNPACK, BATCH_MATMUL, custom ops, ...
EDGETPU_OPS: frozenset[str] = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "UNIDIRECTIONAL_SEQUENCE_LSTM",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "SQUARED_DIFFERENCE",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)

#: Builtin ops outside the table that Google's own compiled models show on the Edge TPU: TILE, in the
#: image-pooling branch of EdgeTPU-DeepLab-slim (``deeplab_mobilenet_edgetpu_slim_cityscapes_quant_edgetpu.tflite``,
#: github.com/google-coral/test_data). Mapped only as seen there (see :func:`op_support`).
OBSERVED_OPS: frozenset[str] = frozenset({"TILE"})

#: Largest input/output height or width of a RESIZE_* op we place on the Edge TPU (see the module docstring).
RESIZE_MAX_SIDE = 128
#: Softmax: "Supports only 1-D input tensor with a max of 16,000 elements" (Coral op table).
SOFTMAX_MAX_ELEMENTS = 16_000

_QUANTIZED = frozenset({"int8", "uint8"})
_FLOAT = frozenset({"float16", "float32", "float64", "bfloat16"})
#: (weights, bias) input positions of the ops whose parameters must be compile-time constants.
_PARAMS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "TRANSPOSE_CONV": (1, 3)}
#: UNIDIRECTIONAL_SEQUENCE_LSTM: the int16 cell state (input 19) of a full-integer LSTM (TFLite 8x8_16 scheme).
_LSTM_CELL_STATE = 19


@dataclass(frozen=True)
class OpPlacement:
    """Where one op runs (``"tpu"`` or ``"cpu"``) and why, in a short human sentence."""

    index: int
    device: str
    reason: str


def _shape(s: tuple[int, ...]) -> str:
    return "x".join(map(str, s)) or "scalar"


def _cite(where: str, quote: str) -> str:
    return f'({where}: "{quote}")'


def _big_dims(t: TensorInfo) -> int:
    return sum(d > 1 for d in t.shape)


def _tensor_problem(op: Op, pos: int, t: TensorInfo, is_input: bool) -> str | None:
    """Why activation (or constant) ``t`` of ``op`` keeps it off the Edge TPU, or None."""
    what = f"{'input' if is_input else 'output'} tensor {t.index}"
    if t.is_constant:
        if t.dtype in _FLOAT:
            return f"{t.dtype} constant {what} is not quantized " + _cite(MODELS_INTRO, "Tensor parameters are quantized")
        return None
    lstm_state = op.op_type == "UNIDIRECTIONAL_SEQUENCE_LSTM" and pos == _LSTM_CELL_STATE and is_input
    if t.dtype not in _QUANTIZED and not (lstm_state and t.dtype == "int16"):
        return (
            f"{t.dtype} {what} is not 8-bit "
            + _cite(MODELS_INTRO, "Tensor parameters are quantized (8-bit fixed-point numbers; int8 or uint8)")
            + '; compiler log: "Operation is working on an unsupported data type"'
        )
    if any(d < 0 for d in t.shape):
        return f"{what} has a dynamic shape {list(t.shape)} " + _cite(
            MODELS_INTRO, "Tensor sizes are constant at compile-time"
        )
    if any(d > 1 for d in t.shape[:-3]):
        return f"{what} is {_shape(t.shape)} " + _cite(
            MODELS_INTRO,
            "If a tensor has more than 3 dimensions, then only the 3 innermost dimensions may have a size greater than 1",
        )
    return None


def _reduces_last_axis(src: tuple[int, ...], dst: tuple[int, ...]) -> bool:
    """Whether a reduction from ``src`` to ``dst`` (keep_dims or not) reduces the innermost axis."""
    if not src or src[-1] <= 1:
        return False
    if len(dst) == len(src):
        return dst[-1] == 1
    return not dst or dst[-1] != src[-1]


def resize_limit(kind: str, src: tuple[int, ...], dst: tuple[int, ...]) -> str | None:
    """Why a RESIZE_* op from ``src`` to ``dst`` (NHWC shapes) stays on the CPU, or None (the module docstring)."""
    table = "Coral op table"
    quote = "Depending on input/output size, this operation might not be mapped to the Edge TPU to avoid loss in precision"
    src_hw, dst_hw = src[-3:-1], dst[-3:-1]
    if any(d > RESIZE_MAX_SIDE for d in src_hw + dst_hw):
        return (
            f"{kind}: {_shape(src)} -> {_shape(dst)}, a side over {RESIZE_MAX_SIDE} "
            + _cite(table, quote)
            + f"; limit {RESIZE_MAX_SIDE} from google-coral/edgetpu issues #31, #187, #597"
        )
    if len(src_hw) == 2 and src_hw == (1, 1) and any(d > 1 for d in dst_hw):
        return (
            f"{kind}: {_shape(src)} -> {_shape(dst)} upsamples a 1x1 map (a broadcast) "
            + _cite(table, quote)
            + "; Google's compiled DeepLab v3 (deeplabv3_mnv2_pascal_quant_edgetpu.tflite) leaves its 1x1 -> 33x33 "
            "image-pooling resize on the CPU, and EdgeTPU-DeepLab-slim broadcasts with TILE instead"
        )
    return None


def _tile_limit(graph: OpGraph, op: Op) -> str | None:
    """TILE maps only as in EdgeTPU-DeepLab-slim: constant multiples that leave the innermost axis alone."""
    T = graph.tensors
    if len(op.inputs) < 2 or op.inputs[1] < 0 or not T[op.inputs[1]].is_constant:
        return "TILE: the multiples are not a constant " + _cite(MODELS_INTRO, "Tensor sizes are constant at compile-time")
    src, dst = T[op.inputs[0]].shape, T[op.outputs[0]].shape
    if not src or not dst or src[-1] != dst[-1]:
        return (
            f"TILE: {_shape(src)} -> {_shape(dst)} tiles the innermost axis; TILE is not in the op table and is "
            "mapped only as Google's compiled EdgeTPU-DeepLab-slim shows it (replicating along y/x)"
        )
    return None


def _op_limit(graph: OpGraph, op: Op) -> str | None:
    """The op table's "Known limitations" that the IR can check."""
    T = graph.tensors
    ins = [T[t] for t in op.inputs if t >= 0]
    acts = [t for t in ins if not t.is_constant]
    out = T[op.outputs[0]] if op.outputs else None
    kind = op.op_type
    table = "Coral op table"
    if kind in _PARAMS:
        for pos, what in zip(_PARAMS[kind], ("weights", "bias")):
            if pos < len(op.inputs) and op.inputs[pos] >= 0 and not T[op.inputs[pos]].is_constant:
                return f"{kind}: {what} (tensor {op.inputs[pos]}) is not a constant " + _cite(
                    MODELS_INTRO, "Model parameters (such as bias tensors) are constant at compile-time"
                )
    if kind == "FULLY_CONNECTED" and out is not None and _big_dims(out) > 1:
        return f"FULLY_CONNECTED: output {_shape(out.shape)} " + _cite(table, "Output tensor is one-dimensional")
    if kind == "CONCATENATION" and len(acts) != len(ins) and len(ins) != 2:
        return f"CONCATENATION: {len(ins)} inputs, one constant " + _cite(
            table, "If any input is a compile-time constant tensor, there must be only 2 inputs"
        )
    if kind == "SOFTMAX" and acts and (_big_dims(acts[0]) > 1 or acts[0].num_elements > SOFTMAX_MAX_ELEMENTS):
        return f"SOFTMAX: input {_shape(acts[0].shape)} " + _cite(
            table, f"Supports only 1-D input tensor with a max of {SOFTMAX_MAX_ELEMENTS:,} elements"
        )
    if kind == "PRELU" and len(ins) > 1 and any(d > 1 for d in ins[1].shape[:-1]):
        return f"PRELU: alpha {_shape(ins[1].shape)} " + _cite(
            table, "Alpha must be 1-dimensional (only the innermost dimension can be >1 size)"
        )
    if kind == "MEAN" and acts and out is not None:
        x = acts[0]
        if _reduces_last_axis(x.shape, out.shape) and x.shape[-1] % 4:
            return f"MEAN: reduces a z-dimension of {x.shape[-1]} " + _cite(
                table, "If a z-reduction, the z-dimension must be multiple of 4"
            )
    if kind in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR") and acts and out is not None:
        return resize_limit(kind, acts[0].shape, out.shape)
    if kind == "TILE" and out is not None:
        return _tile_limit(graph, op)
    return None


def op_support(graph: OpGraph, op: Op) -> str | None:
    """None when ``op`` on its own could map to the Edge TPU, else the reason it cannot."""
    if op.op_type == "CUSTOM":
        return f"custom op {op.custom_code or '(unnamed)'} runs on the CPU (the compiler maps builtin ops only)"
    T = graph.tensors
    tensors = [(pos, T[t], True) for pos, t in enumerate(op.inputs) if t >= 0]
    tensors += [(pos, T[t], False) for pos, t in enumerate(op.outputs)]
    if op.op_type not in EDGETPU_OPS and op.op_type not in OBSERVED_OPS:
        floats = sorted({t.dtype for _, t, _ in tensors if t.dtype in _FLOAT and not t.is_constant})
        extra = f" and works on {'/'.join(floats)} tensors" if floats else ""
        return (
            f"{op.op_type} is not in the Edge TPU's supported-operations table{extra} "
            f'({MODELS_INTRO}/#supported-operations; compiler log: "Operation not supported")'
        )
    for pos, t, is_input in tensors:
        problem = _tensor_problem(op, pos, t, is_input)
        if problem:
            return f"{op.op_type}: {problem}"
    return _op_limit(graph, op)


def place_ops(graph: OpGraph) -> tuple[OpPlacement, ...]:
    """Whole-model placement, as ``edgetpu_compiler`` v16 builds its one Edge TPU subgraph.

    "As soon as an unsupported operation occurs, that operation and everything after it executes on the
    CPU" (coral.ai/docs/edgetpu/models-intro, "Compiling"), read on the graph: an op that cannot map, once
    some op before it (an ancestor) is on the Edge TPU, starts the CPU tail, and every op that depends on
    the tail runs on the CPU too. Ops that cannot map ahead of any Edge TPU op (a float pre-processing head)
    stay on the CPU in front of the subgraph. Mappable ops that do not depend on the tail map even when the
    converter listed them after a tail op: Google's own SSD pipelines keep every conv head on the Edge TPU
    and only DEQUANTIZE + TFLite_Detection_PostProcess on the CPU (the converter may list a DEQUANTIZE
    before the last box-branch ops).
    """
    support = [op_support(graph, op) for op in graph.ops]
    devices: list[str] = []
    reasons: list[str] = []
    after_tpu = [False] * graph.num_ops  # the op has an ancestor on the Edge TPU
    tail_root: list[int | None] = [None] * graph.num_ops  # the CPU-tail op it depends on (itself included)
    for op in graph.ops:
        v, preds = op.index, graph.preds[op.index]
        after_tpu[v] = any(after_tpu[u] or devices[u] == "tpu" for u in preds)
        root = next((tail_root[u] for u in preds if tail_root[u] is not None), None)
        if support[v] is not None:
            devices.append("cpu")
            reasons.append(support[v])  # type: ignore[arg-type]
            tail_root[v] = v if after_tpu[v] and root is None else root
        elif root is not None:
            devices.append("cpu")
            reasons.append(
                f"depends on op {root} ({graph.ops[root].label}), which runs on the CPU: the compiler "
                'builds one TPU subgraph (compiler log: "More than one subgraph is not supported")'
            )
            tail_root[v] = root
        else:
            devices.append("tpu")
            reasons.append("mapped")
    return tuple(OpPlacement(i, d, r) for i, (d, r) in enumerate(zip(devices, reasons)))


def placed(graph: OpGraph) -> OpGraph:
    """``graph`` with ``host_ops`` set to the ops :func:`place_ops` leaves on the CPU."""
    return replace(graph, host_ops=frozenset(p.index for p in place_ops(graph) if p.device == "cpu"))
