"""The reference figures of ``tools/calibrate.py`` and the OpGraphs they are predicted on.

Sources (``shared/reference/public_measurements``, README there):

* ``conv5_single_tpu.csv``, ``conv5_compiler_2seg.csv``, ``conv5_compiler_4seg.csv``, ``fc4_single_tpu.csv``:
  the layer sweeps of Villarrubia et al. (arXiv 2503.01025 / 2503.01035), with the per-segment on-chip /
  off-chip MiB that ``edgetpu_compiler`` printed;
* Coral's published single-TPU latencies (coral.ai "Edge TPU performance benchmarks", USB 3) and the x86 + USB 3
  column of pycoral's ``inference_reference_*.csv`` (the models keras.applications can build; the rest are
  listed as not predicted).

The sweep models are built here as :class:`tflite_io.OpGraph` values, op for op and tensor for tensor as
``tflite_io.read`` returns the ``.tflite`` files TF's converter writes for them (``tf_graph`` builds one through
TF; ``tools/calibrate.py --check-tf`` compares the two):

* conv5: input float32 1x64x64x3 -> QUANTIZE (float -> int8) -> 5 x CONV_2D(F, 3x3, same, fused relu; weights
  int8 [F, 3, 3, Cin], bias int32 [F], per-channel quantized; the zero biases share one buffer, as the
  converter writes identical constants) -> int8 1x64x64xF output;
* fc4: input float32 1x64 -> QUANTIZE -> 4 x (FULLY_CONNECTED(N), TANH) -> FULLY_CONNECTED(10) -> DEQUANTIZE ->
  float32 1x10 output (weights int8 [Cout, Cin]; the converter drops Keras' all-zero dense biases).

Both are placed with :func:`hardware.placement.placed` (the float QUANTIZE head and the DEQUANTIZE tail run on
the host). The compiler's splits, read off the per-segment memory columns (the same at every F):
2 segments {QUANTIZE, conv1, conv2 | conv3, conv4, conv5}, 4 segments {QUANTIZE, conv1 | conv2 | conv3 | conv4, conv5}.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from hardware.placement import placed
from tflite_io import Op, OpGraph, Quantization, TensorInfo
from tflite_io.graph import distinct_constants
from tflite_io.macs import op_macs

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "CONV5_SPLITS",
    "NOT_PREDICTED",
    "REFERENCE_DIR",
    "SWEEP_FILES",
    "ZOO_FIGURES",
    "MiB",
    "SweepRow",
    "ZooFigure",
    "conv5_graph",
    "fc4_graph",
    "graph_signature",
    "is_fitted_sweep",
    "load_sweeps",
    "stage_map",
    "sweep_graph",
    "tf_graph",
]

MiB = 2**20
_CANDIDATES = (
    ROOT / "shared" / "reference" / "public_measurements",
    ROOT.parent / "shared" / "reference" / "public_measurements",
)
#: Where the public measurements live (the repository's ``shared/`` checkout, or the one beside it).
REFERENCE_DIR = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])

#: (model kind, segments) -> CSV file
SWEEP_FILES = {
    ("conv5", 1): "conv5_single_tpu.csv",
    ("conv5", 2): "conv5_compiler_2seg.csv",
    ("conv5", 4): "conv5_compiler_4seg.csv",
    ("fc4", 1): "fc4_single_tpu.csv",
}
#: The compiler's conv5 splits as stage maps over the ops (QUANTIZE, conv1, ..., conv5).
CONV5_SPLITS = {1: (0, 0, 0, 0, 0, 0), 2: (0, 0, 0, 1, 1, 1), 4: (0, 0, 1, 2, 3, 3)}


@dataclass(frozen=True)
class SweepRow:
    """One row of a layer-sweep CSV: n = F (conv5) or N (fc4); memory per segment in MiB; time in ms."""

    kind: str
    segments: int
    n: int
    macs: int
    on_chip_mib: tuple[float, ...]
    off_chip_mib: tuple[float, ...]
    ms: float

    @property
    def name(self) -> str:
        return f"{self.kind} K={self.segments} {'F' if self.kind == 'conv5' else 'N'}={self.n}"

    @property
    def group(self) -> str:
        return f"{self.kind} {'single' if self.segments == 1 else f'{self.segments}-seg'}"


def _mib(cell: str) -> tuple[float, ...]:
    value = json.loads(cell)
    return tuple(float(v) for v in value) if isinstance(value, list) else (float(value),)


def load_sweeps(ref: Path = REFERENCE_DIR) -> list[SweepRow]:
    """Every row of the four sweep CSVs, in file order."""
    rows = []
    for (kind, k), fname in SWEEP_FILES.items():
        with (ref / fname).open(newline="") as f:
            reader = csv.reader(f)
            next(reader)
            for r in reader:
                if not r:
                    continue
                rows.append(SweepRow(kind, k, int(r[0]), int(r[1]), _mib(r[2]), _mib(r[3]), float(r[4])))
    return rows


def is_fitted_sweep(row: SweepRow) -> bool:
    """The named fitted subset of the sweeps: conv5 single F in {52, 102, ..., 702} and the cache edges
    442, 452, 512, 522, 632, 642; fc4 N in {220, 420, ..., 2620} and the cache edges 1580, 1620, 1980, 2020.
    Every 2- and 4-segment row is held out."""
    if row.segments != 1:
        return False
    if row.kind == "conv5":
        return row.n % 50 == 2 or row.n in (442, 452, 512, 522, 632, 642)
    return row.n % 200 == 20 or row.n in (1580, 1620, 1980, 2020)


@dataclass(frozen=True)
class ZooFigure:
    """A published single-TPU latency (x86 + USB 3) of a model built by tools/build_zoo.py."""

    label: str
    zoo_file: str
    ms: float
    source: str
    fitted: bool
    excluded: str = ""  # why the figure is left out of the typical error (its source calls it inconsistent)


#: The USB fit's ImageNet figures (the rest of the x86 + USB 3 column is held out): MobileNet v1 and v2,
#: ResNet-50 v1 (299), VGG16, DenseNet-121 and Inception v4 (299) of the coral.ai page. Held out: the
#: page's U-Net, DeepLab v3 (both with host ops), Inception v1, ResNet-50 v2, ResNet-152 v2, VGG19,
#: Inception-ResNet v2, and the four x86 rows of the pycoral CSV.
USB_FITTED = frozenset(
    {
        "MobileNet v1 (224)",
        "MobileNet v2 (224)",
        "ResNet-50 v1 (299)",
        "VGG16 (224)",
        "DenseNet-121 (224)",
        "Inception v4 (299)",
    }
)


def _usb_figures() -> tuple[ZooFigure, ...]:
    out = []
    for f in host_figures("usb"):
        csv_row = f.source == PYCORAL_CSV
        label = f.label.replace(" csv", " x86 csv") if csv_row else f.label
        source = "pycoral reference csv, x86 + USB 3" if csv_row else "coral.ai benchmarks (USB 3)"
        out.append(ZooFigure(label, f.zoo_file, f.ms, source, not csv_row and f.label in USB_FITTED, f.excluded))
    return tuple(out)


#: Reference figures of models the zoo does not build (no graph here, so not predicted).
NOT_PREDICTED = (
    "MobileNet v1 SSD, MobileNet v2 SSD (coral.ai), SSD MobileNet v1 (pycoral csv): the detection "
    "post-processing custom op is not built here",
    "SqueezeNet, EfficientNet-EdgeTpu S/M (coral.ai): no builder here",
    "co-compilation pairs (two models on one TPU): not a pipeline the model describes",
)


# ---------------------------------------------------------------------------------------------------------
# Hand-built OpGraphs of the sweep models


class _Builder:
    def __init__(self) -> None:
        self.tensors: list[TensorInfo] = []
        self.ops: list[Op] = []
        self.buffers = 1  # buffer 0 is the empty sentinel in a .tflite file

    def tensor(
        self,
        name: str,
        dtype: str,
        shape: tuple[int, ...],
        const: bool = False,
        channels: int = 0,
        buffer: int | None = None,
    ) -> int:
        item = {"float32": 4, "int32": 4, "int8": 1}[dtype]
        nbytes = item
        for d in shape:
            nbytes *= d
        buf = -1
        if const:
            if buffer is None:
                buffer, self.buffers = self.buffers, self.buffers + 1
            buf = buffer
        quant = None
        if dtype != "float32":
            n = channels or 1
            quant = Quantization((1.0,) * n, (0,) * n, 0)
        index = len(self.tensors)
        self.tensors.append(TensorInfo(index, name, dtype, shape, nbytes, buf, quant))
        return index

    def op(self, op_type: str, inputs: tuple[int, ...], outputs: tuple[int, ...]) -> None:
        t = self.tensors
        macs = op_macs(op_type, [t[i].shape if i >= 0 else None for i in inputs], [t[o].shape for o in outputs])
        param = sum(x.nbytes for x in distinct_constants(t, inputs).values())
        self.ops.append(Op(len(self.ops), op_type, inputs, outputs, param, int(macs)))

    def graph(self, name: str, inputs: tuple[int, ...], outputs: tuple[int, ...]) -> OpGraph:
        return placed(OpGraph(name, tuple(self.ops), tuple(self.tensors), inputs, outputs))


def conv5_graph(filters: int, size: int = 64) -> OpGraph:
    """The conv5 sweep model with F = ``filters`` (placed)."""
    b = _Builder()
    x = b.tensor("input", "float32", (1, size, size, 3))
    inp = x
    q = b.tensor("quantize", "int8", (1, size, size, 3))
    b.op("QUANTIZE", (x,), (q,))
    x, cin, zero_bias = q, 3, None
    for i in range(5):
        w = b.tensor(f"conv{i + 1}/weights", "int8", (filters, 3, 3, cin), const=True, channels=filters)
        bias = b.tensor(f"conv{i + 1}/bias", "int32", (filters,), const=True, channels=filters, buffer=zero_bias)
        zero_bias = b.tensors[bias].buffer
        y = b.tensor(f"conv{i + 1}/relu", "int8", (1, size, size, filters))
        b.op("CONV_2D", (x, w, bias), (y,))
        x, cin = y, filters
    return b.graph(f"conv5_f{filters}", (inp,), (x,))


def fc4_graph(hidden: int, features: int = 64, classes: int = 10) -> OpGraph:
    """The fc4 sweep model with N = ``hidden`` (placed)."""
    b = _Builder()
    x = b.tensor("input", "float32", (1, features))
    inp = x
    q = b.tensor("quantize", "int8", (1, features))
    b.op("QUANTIZE", (x,), (q,))
    x, cin = q, features
    for i, cout in enumerate((hidden,) * 4 + (classes,)):
        w = b.tensor(f"dense{i + 1}/weights", "int8", (cout, cin), const=True, channels=cout)
        y = b.tensor(f"dense{i + 1}/matmul", "int8", (1, cout))
        b.op("FULLY_CONNECTED", (x, w, -1), (y,))
        if i < 4:
            z = b.tensor(f"dense{i + 1}/tanh", "int8", (1, cout))
            b.op("TANH", (y,), (z,))
            y = z
        x, cin = y, cout
    out = b.tensor("output", "float32", (1, classes))
    b.op("DEQUANTIZE", (x,), (out,))
    return b.graph(f"fc4_n{hidden}", (inp,), (out,))


def sweep_graph(kind: str, n: int) -> OpGraph:
    return conv5_graph(n) if kind == "conv5" else fc4_graph(n)


def stage_map(graph: OpGraph, kind: str, segments: int) -> tuple[int, ...]:
    """The compiler's stage map of a sweep model (one segment: everything in stage 0)."""
    if segments == 1:
        return (0,) * graph.num_ops
    if kind != "conv5":
        raise ValueError(f"no {segments}-segment split of {kind} in the reference data")
    return CONV5_SPLITS[segments]


# ---------------------------------------------------------------------------------------------------------
# The same models through TF's converter (for --check-tf)


def tf_graph(kind: str, n: int, workdir: Path, seed: int = 0) -> OpGraph:
    """Build the sweep model with Keras, convert it as the reference README describes and read it back."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np
    import tensorflow as tf

    from tflite_io import read

    tf.keras.utils.set_random_seed(seed)
    L = tf.keras.layers
    if kind == "conv5":
        inp = tf.keras.Input((64, 64, 3), batch_size=1)
        x = inp
        for _ in range(5):
            x = L.Conv2D(n, 3, padding="same", activation="relu")(x)
        shape: tuple[int, ...] = (1, 64, 64, 3)
    else:
        inp = tf.keras.Input((64,), batch_size=1)
        x = inp
        for _ in range(4):
            x = L.Dense(n, activation="tanh")(x)
        x = L.Dense(10)(x)
        shape = (1, 64)
    model = tf.keras.Model(inp, x)
    rng = np.random.default_rng(seed)

    def representative():
        for _ in range(4):
            yield [rng.uniform(-1.0, 1.0, shape).astype("float32")]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if kind == "conv5":
        conv.inference_output_type = tf.int8  # "int8 output"; fc4 keeps float input and output
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{kind}_{n}.tflite"
    path.write_bytes(conv.convert())
    return placed(read(path))


def graph_signature(graph: OpGraph) -> tuple:
    """What the cost model reads from a graph, with tensor and buffer numbering factored out: per op its type,
    MACs, raw parameter bytes, input and output tensors (dtype, shape, bytes, constant buffer in order of first
    use); the model inputs and outputs; the host ops."""
    buffers: dict[int, int] = {}

    def tensor(i: int) -> tuple | None:
        if i < 0:
            return None
        t = graph.tensors[i]
        buf = buffers.setdefault(t.buffer, len(buffers)) if t.is_constant else -1
        return (t.dtype, t.shape, t.nbytes, buf)

    ops = tuple(
        (op.op_type, op.macs, op.param_bytes, tuple(tensor(i) for i in op.inputs), tuple(tensor(o) for o in op.outputs))
        for op in graph.ops
    )
    return (
        ops,
        tuple(tensor(i) for i in graph.inputs),
        tuple(tensor(o) for o in graph.outputs),
        tuple(sorted(graph.host_ops)),
    )


# ---------------------------------------------------------------------------------------------------------
# Every host's single-TPU figures (README sections 1 and 2 of the public measurements) and the CPU-only columns


@dataclass(frozen=True)
class HostFigure:
    """One published single-TPU latency of a model the zoo builds, on one host (a preset's column)."""

    label: str
    zoo_file: str
    host: str  # the preset: usb, devboard, rpi4, rpi3
    ms: float
    source: str
    #: kept out of every fit (a figure its own source calls inconsistent)
    excluded: str = ""


CORAL_PAGE = "coral.ai benchmarks"
PYCORAL_CSV = "pycoral reference csv"
#: zoo file of each model of the tables (tools/build_zoo.py builds them)
MODEL_FILES = {
    "U-Net MobileNet v2 (128)": "unet_mnv2_128_int8.tflite",
    "DeepLab v3 (513)": "deeplabv3_mnv2_513_int8.tflite",
    "DenseNet-121 (224)": "densenet121_224_int8.tflite",
    "Inception v1 (224)": "inceptionv1_224_int8.tflite",
    "Inception v4 (299)": "inceptionv4_299_int8.tflite",
    "Inception-ResNet v2 (299)": "inceptionresnetv2_299_int8.tflite",
    "MobileNet v1 (224)": "mobilenet_224_int8.tflite",
    "MobileNet v2 (224)": "mobilenetv2_224_int8.tflite",
    "ResNet-50 v1 (299)": "resnet50_299_int8.tflite",
    "ResNet-50 v2 (299)": "resnet50v2_299_int8.tflite",
    "ResNet-152 v2 (299)": "resnet152v2_299_int8.tflite",
    "VGG16 (224)": "vgg16_224_int8.tflite",
    "VGG19 (224)": "vgg19_224_int8.tflite",
}
_IRV2 = "inconsistent per its source (it would need > 850 MB/s parameter streaming)"
#: Section 1 (coral.ai benchmarks page): model -> (desktop CPU, desktop + USB TPU, embedded CPU, Dev Board) ms.
#: The SSD, SqueezeNet and EfficientNet-EdgeTpu rows have no zoo graph here.
CORAL_TABLE = {
    "U-Net MobileNet v2 (128)": (27.7, 3.3, 190.7, 5.7),
    "DeepLab v3 (513)": (394.0, 52.0, 1139.0, 241.0),
    "DenseNet-121 (224)": (380.0, 20.0, 1032.0, 25.0),
    "Inception v1 (224)": (90.0, 3.4, 392.0, 4.1),
    "Inception v4 (299)": (700.0, 85.0, 3157.0, 102.0),
    "Inception-ResNet v2 (299)": (753.0, 57.0, 2852.0, 69.0),
    "MobileNet v1 (224)": (53.0, 2.4, 164.0, 2.4),
    "MobileNet v2 (224)": (51.0, 2.6, 122.0, 2.6),
    "ResNet-50 v1 (299)": (484.0, 49.0, 1763.0, 56.0),
    "ResNet-50 v2 (299)": (557.0, 50.0, 1875.0, 59.0),
    "ResNet-152 v2 (299)": (1823.0, 128.0, 5499.0, 151.0),
    "VGG16 (224)": (867.0, 296.0, 4595.0, 343.0),
    "VGG19 (224)": (1060.0, 308.0, 5538.0, 357.0),
}
#: Section 2 (pycoral reference CSVs): model -> (x86 + USB 3, Dev Board, Raspberry Pi 4, Raspberry Pi 3B) ms.
PYCORAL_TABLE = {
    "Inception v1 (224)": (3.06, 4.0, 6.21, 19.21),
    "Inception v4 (299)": (84.25, 100.33, 141.20, 1060.16),
    "MobileNet v1 (224)": (2.17, 2.22, 4.20, 9.22),
    "MobileNet v2 (224)": (2.29, 2.56, 4.55, 10.77),
}
#: Section 1 rows with no zoo graph (not predicted): the CPU-only columns of these still count for host speed.
CORAL_NO_GRAPH = {
    "MobileNet v1 SSD (224)": (109.0, 6.5, 353.0, 11.0),
    "MobileNet v2 SSD (224)": (106.0, 7.2, 282.0, 14.0),
    "SqueezeNet (224)": (55.0, 2.1, 232.0, 2.0),
}


def host_figures(host: str) -> tuple[HostFigure, ...]:
    """Every single-TPU figure of ``host`` (``usb``, ``devboard``, ``rpi4``, ``rpi3``) with a zoo graph."""
    out = []
    coral_col = {"usb": 1, "devboard": 3}.get(host)
    if coral_col is not None:
        for label, row in CORAL_TABLE.items():
            excluded = _IRV2 if label.startswith("Inception-ResNet") else ""
            out.append(HostFigure(label, MODEL_FILES[label], host, row[coral_col], CORAL_PAGE, excluded))
    csv_col = {"usb": 0, "devboard": 1, "rpi4": 2, "rpi3": 3}[host]
    for label, row in PYCORAL_TABLE.items():
        out.append(HostFigure(f"{label} csv", MODEL_FILES[label], host, row[csv_col], PYCORAL_CSV))
    return tuple(out)


def embedded_cpu_ratios() -> dict[str, float]:
    """Section 1's embedded CPU (the Dev Board's Cortex-A53) over its desktop CPU, per model: how much slower
    the embedded host runs LiteRT kernels (the EfficientNet rows, printed inconsistently, are left out)."""
    rows = {**CORAL_TABLE, **CORAL_NO_GRAPH}
    return {label: row[2] / row[0] for label, row in rows.items()}


#: The x86 + USB 3 single-TPU figures the USB fit predicts (fitted: :data:`USB_FITTED`).
ZOO_FIGURES: tuple[ZooFigure, ...] = _usb_figures()
