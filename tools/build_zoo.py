"""Build the int8 model zoo from keras.applications with random weights (no download).

Besides keras.applications, four Google models of Coral's benchmark tables are built here layer for layer
(:func:`build_inception_v1`, :func:`build_inception_v4`, :func:`build_deeplab_v3_mnv2`,
:func:`build_unet_mnv2`; the :data:`GOOGLE` entries).

Every model is batch 1, has its kernels re-initialised He-normal (keras' default
Glorot init on these deep nets collapses activations to a constant, so equality
checks would prove nothing), has no softmax, and is converted to a
full-integer int8 ``.tflite`` (int8 inputs and outputs) with a small random
representative dataset. Results are cached in ``--out`` and never committed.

Usage::

    python -m tools.build_zoo                    # the whole zoo into zoo/
    python -m tools.build_zoo MobileNetV2 VGG16  # a few models
    python -m tools.build_zoo --google           # Inception v1 / v4, DeepLab v3, U-Net (not in the default set)
    python -m tools.build_zoo --embedded         # the small model shipped in the package
    python -m tools.build_zoo --test-models      # the tiny branchy model under tests/data
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "zoo"
EMBEDDED_PATH = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"
BRANCHY_PATH = ROOT / "tests" / "data" / "tiny_inception_int8.tflite"

log = logging.getLogger("build_zoo")


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model: constructor name, input size, extra kwargs.

    ``app`` names a keras.applications constructor or one of the builders in :data:`BUILDERS`.
    """

    name: str
    app: str
    size: int
    kwargs: tuple[tuple[str, object], ...] = ()

    @property
    def filename(self) -> str:
        stem = self.name.lower()
        return f"{stem}_int8.tflite" if stem.endswith(f"_{self.size}") else f"{stem}_{self.size}_int8.tflite"


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("MobileNet", "MobileNet", 224),
    ZooEntry("MobileNetV2", "MobileNetV2", 224),
    ZooEntry("ResNet50", "ResNet50", 224),
    ZooEntry("ResNet101", "ResNet101", 224),
    ZooEntry("ResNet101V2", "ResNet101V2", 224),
    ZooEntry("ResNet152", "ResNet152", 224),
    ZooEntry("ResNet152V2", "ResNet152V2", 224),
    ZooEntry("DenseNet121", "DenseNet121", 224),
    ZooEntry("DenseNet169", "DenseNet169", 224),
    ZooEntry("DenseNet201", "DenseNet201", 224),
    ZooEntry("InceptionV3", "InceptionV3", 299),
    ZooEntry("VGG16", "VGG16", 224),
)
#: Extra models at the input sizes of Coral's published latencies (tools/calibrate.py).
#: ResNet50 (299) is fitted; ResNet50V2 and ResNet152V2 (299) are held out.
CALIBRATION: tuple[ZooEntry, ...] = (
    ZooEntry("ResNet50_299", "ResNet50", 299),
    ZooEntry("ResNet50V2_299", "ResNet50V2", 299),
    ZooEntry("ResNet152V2_299", "ResNet152V2", 299),
)
#: Google models of Coral's benchmark tables that keras.applications lacks, built here layer for layer
#: (random weights). Built by name or with ``--google``; not in the default set.
GOOGLE: tuple[ZooEntry, ...] = (
    ZooEntry("InceptionV1_224", "InceptionV1", 224),
    ZooEntry("InceptionV4_299", "InceptionV4", 299),
    ZooEntry("DeepLabV3_MNV2_513", "DeepLabV3MobileNetV2", 513),
    ZooEntry("UNet_MNV2_128", "UNetMobileNetV2", 128),
)
EMBEDDED = ZooEntry("MobileNetV2_0.35_96", "MobileNetV2", 96, (("alpha", 0.35), ("classes", 100)))
BY_NAME = {e.name.lower(): e for e in ZOO + CALIBRATION + GOOGLE + (EMBEDDED,)}


def build_keras(entry: ZooEntry, seed: int = 0):
    """Instantiate the model with random He-normal kernels and no softmax."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    kwargs = dict(entry.kwargs)
    if entry.app in BUILDERS:
        model = BUILDERS[entry.app](entry.size, **kwargs)
    else:
        ctor = getattr(tf.keras.applications, entry.app)
        model = ctor(weights=None, input_shape=(entry.size, entry.size, 3), classifier_activation=None, **kwargs)
    reinitialise(model, seed)
    if any(layer.name == "logits" for layer in model.layers):
        balance_logits(model, seed)
    return model


def reinitialise(model, seed: int = 0) -> None:
    """Draw every kernel He-normal and give the batch norms random, non-trivial scales and offsets."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for attr in ("kernel", "depthwise_kernel"):
            var = getattr(layer, attr, None)
            if var is None:
                continue
            shape = tuple(var.shape)
            if attr == "depthwise_kernel" or isinstance(layer, tf.keras.layers.DepthwiseConv2D):
                # keras 3 names the depthwise kernel ``kernel`` (kh, kw, channels, 1): its fan-in is kh * kw
                fan_in = shape[0] * shape[1]
            elif isinstance(layer, tf.keras.layers.Conv2DTranspose):
                # kernel (kh, kw, out, in): each output sums about kh * kw / stride^2 taps of every input channel
                strides = int(np.prod(layer.strides))
                fan_in = max(1, shape[0] * shape[1] * shape[3] // strides)
            else:
                fan_in = int(np.prod(shape[:-1]))
            var.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype("float32"))
        # Random, non-trivial batch-norm statistics so folding is exercised.
        # (InceptionV3's batch norms have no gamma: scale=False.)
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            if layer.gamma is not None:
                layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape[0]).astype("float32"))
            if layer.beta is not None:
                layer.beta.assign(rng.normal(0.0, 0.1, layer.beta.shape[0]).astype("float32"))


def balance_logits(model, seed: int = 0) -> None:
    """Set the bias of the layer named ``logits`` to minus each class's mean logit on a random input.

    With random weights every pixel's logits share large per-class offsets, so a per-pixel ARG_MAX (DeepLab)
    would name one class almost everywhere; centred, all classes occur and the labels follow the input.
    """
    import numpy as np
    import tensorflow as tf

    layer = model.get_layer("logits")
    shape = (1, *model.inputs[0].shape[1:])
    x = np.random.default_rng(seed + 2).uniform(-1.0, 1.0, shape).astype("float32")
    logits = np.asarray(tf.keras.Model(model.inputs, layer.output)(x))
    mean = logits.reshape(-1, logits.shape[-1]).mean(axis=0)
    layer.bias.assign(layer.bias.numpy() - mean.astype("float32"))


def build_tiny_inception(seed: int = 0):
    """A small two-output Inception-style network (parallel branches, concats, a residual add).

    Its operator graph has many valid non-contiguous pipeline splits, which the
    chain-like MobileNetV2 lacks; the tests use it for random stage maps.
    """
    import tensorflow as tf

    L = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)
    init = "he_normal"  # a fresh draw per layer (one seeded instance would repeat weights)

    def conv(x, c, k=1):
        return L.Conv2D(c, k, padding="same", activation="relu", kernel_initializer=init)(x)

    def block(x, c):
        b1 = conv(x, c)
        b2 = conv(conv(x, c), c, 3)
        b3 = conv(L.MaxPooling2D(3, 1, padding="same")(x), c)
        b4 = conv(conv(conv(x, c), c, 3), c, 3)
        return L.Concatenate()([b1, b2, b3, b4])

    inp = tf.keras.Input((32, 32, 3), batch_size=1)
    x = conv(inp, 16, 3)
    x = block(x, 8)
    aux = L.Dense(5, kernel_initializer=init)(L.GlobalAveragePooling2D()(x))
    x = L.MaxPooling2D(2)(x)
    y = block(x, 8)
    x = L.Add()([x, y])
    x = block(x, 12)
    out = L.Dense(10, kernel_initializer=init)(L.GlobalAveragePooling2D()(x))
    return tf.keras.Model(inp, [out, aux])


def _conv_bn(x, filters: int, kernel, strides=1, padding: str = "same", dilation: int = 1, act: str | None = "relu"):
    """TF-slim's conv2d with batch norm: a bias-free convolution, batch norm, then ``act`` (or none)."""
    import tensorflow as tf

    L = tf.keras.layers
    x = L.Conv2D(filters, kernel, strides, padding, dilation_rate=dilation, use_bias=False)(x)
    # slim's inception arg scopes have batch_norm_scale=False (no gamma); mobilenet's have a gamma
    x = L.BatchNormalization(scale=act != "relu", epsilon=1e-3)(x)
    if act == "relu":
        return L.ReLU()(x)
    if act == "relu6":
        return L.ReLU(6.0)(x)
    return x


def _image_input(size: int):
    import tensorflow as tf

    return tf.keras.Input((size, size, 3), batch_size=1)


def _pool(kind: str, x, size: int = 3, strides: int = 1, padding: str = "same"):
    import tensorflow as tf

    L = tf.keras.layers
    pool = L.MaxPooling2D if kind == "max" else L.AveragePooling2D
    return pool(size, strides, padding)(x)


def build_inception_v1(size: int = 224, classes: int = 1001):
    """GoogLeNet as TF-slim's ``inception_v1`` (no auxiliary heads), logits without softmax.

    Stem 7x7/2 conv 64, 3x3/2 max pool, 1x1 conv 64, 3x3 conv 192, 3x3/2 max pool; inception modules 3b, 3c,
    3x3/2 max pool, 4b-4f, 2x2/2 max pool, 5b, 5c; global average pool (7x7 at 224), 1x1 conv to ``classes``
    with bias, squeezed to (1, classes). Every conv but the logits has batch norm (no gamma) and ReLU. As in
    slim (and unlike the paper), the "5x5" branch is a 3x3 conv. About 6.6 M parameters at 1001 classes.
    """
    import tensorflow as tf

    L = tf.keras.layers
    # (1x1, 3x3 reduce, 3x3, "5x5" reduce, "5x5" (3x3 in slim), pool projection)
    mixed = {
        "3b": (64, 96, 128, 16, 32, 32),
        "3c": (128, 128, 192, 32, 96, 64),
        "4b": (192, 96, 208, 16, 48, 64),
        "4c": (160, 112, 224, 24, 64, 64),
        "4d": (128, 128, 256, 24, 64, 64),
        "4e": (112, 144, 288, 32, 64, 64),
        "4f": (256, 160, 320, 32, 128, 128),
        "5b": (256, 160, 320, 32, 128, 128),
        "5c": (384, 192, 384, 48, 128, 128),
    }

    def module(x, c):
        b0 = _conv_bn(x, c[0], 1)
        b1 = _conv_bn(_conv_bn(x, c[1], 1), c[2], 3)
        b2 = _conv_bn(_conv_bn(x, c[3], 1), c[4], 3)
        b3 = _conv_bn(_pool("max", x), c[5], 1)
        return L.Concatenate()([b0, b1, b2, b3])

    inp = _image_input(size)
    x = _conv_bn(inp, 64, 7, 2)
    x = _pool("max", x, 3, 2)
    x = _conv_bn(x, 64, 1)
    x = _conv_bn(x, 192, 3)
    x = _pool("max", x, 3, 2)
    x = module(x, mixed["3b"])
    x = module(x, mixed["3c"])
    x = _pool("max", x, 3, 2)
    for name in ("4b", "4c", "4d", "4e", "4f"):
        x = module(x, mixed[name])
    x = _pool("max", x, 2, 2)
    x = module(x, mixed["5b"])
    x = module(x, mixed["5c"])
    x = L.AveragePooling2D(tuple(x.shape[1:3]), 1, "valid")(x)  # slim: AvgPool_0a_7x7
    x = L.Conv2D(classes, 1)(x)  # Logits/Conv2d_0c_1x1: bias, no batch norm, no activation
    x = L.Reshape((classes,))(x)  # slim's squeeze
    return tf.keras.Model(inp, x, name="inception_v1")


def build_inception_v4(size: int = 299, classes: int = 1001):
    """Inception v4 as TF-slim's ``inception_v4`` (Szegedy et al. 2016; no auxiliary head), logits without softmax.

    Stem (3x3/2 valid 32, 3x3 valid 32, 3x3 64; Mixed_3a max pool || 3x3/2 conv 96; Mixed_4a two branches to
    3x3 valid 96; Mixed_5a 3x3/2 conv 192 || max pool) -> 35x35x384 at 299; 4 x Inception-A, Reduction-A
    (17x17x1024), 7 x Inception-B, Reduction-B (8x8x1536), 3 x Inception-C; global average pool, flatten, fully
    connected ``classes`` with bias. Every conv has batch norm (no gamma) and ReLU. About 42.7 M parameters.
    """
    import tensorflow as tf

    L = tf.keras.layers
    cat = L.Concatenate

    def conv(x, f, k, s=1, padding="same"):
        return _conv_bn(x, f, k, s, padding)

    def block_a(x):
        b0 = conv(x, 96, 1)
        b1 = conv(conv(x, 64, 1), 96, 3)
        b2 = conv(conv(conv(x, 64, 1), 96, 3), 96, 3)
        b3 = conv(_pool("avg", x), 96, 1)
        return cat()([b0, b1, b2, b3])

    def reduction_a(x):
        b0 = conv(x, 384, 3, 2, "valid")
        b1 = conv(conv(conv(x, 192, 1), 224, 3), 256, 3, 2, "valid")
        b2 = _pool("max", x, 3, 2, "valid")
        return cat()([b0, b1, b2])

    def block_b(x):
        b0 = conv(x, 384, 1)
        b1 = conv(conv(conv(x, 192, 1), 224, (1, 7)), 256, (7, 1))
        b2 = conv(x, 192, 1)
        for f, k in ((192, (7, 1)), (224, (1, 7)), (224, (7, 1)), (256, (1, 7))):
            b2 = conv(b2, f, k)
        b3 = conv(_pool("avg", x), 128, 1)
        return cat()([b0, b1, b2, b3])

    def reduction_b(x):
        b0 = conv(conv(x, 192, 1), 192, 3, 2, "valid")
        b1 = conv(conv(conv(x, 256, 1), 256, (1, 7)), 320, (7, 1))
        b1 = conv(b1, 320, 3, 2, "valid")
        b2 = _pool("max", x, 3, 2, "valid")
        return cat()([b0, b1, b2])

    def block_c(x):
        b0 = conv(x, 256, 1)
        b1 = conv(x, 384, 1)
        b1 = cat()([conv(b1, 256, (1, 3)), conv(b1, 256, (3, 1))])
        b2 = conv(conv(conv(x, 384, 1), 448, (3, 1)), 512, (1, 3))
        b2 = cat()([conv(b2, 256, (1, 3)), conv(b2, 256, (3, 1))])
        b3 = conv(_pool("avg", x), 256, 1)
        return cat()([b0, b1, b2, b3])

    inp = _image_input(size)
    x = conv(inp, 32, 3, 2, "valid")
    x = conv(x, 32, 3, 1, "valid")
    x = conv(x, 64, 3)
    x = cat()([_pool("max", x, 3, 2, "valid"), conv(x, 96, 3, 2, "valid")])  # Mixed_3a
    b0 = conv(conv(x, 64, 1), 96, 3, 1, "valid")  # Mixed_4a
    b1 = conv(x, 64, 1)
    b1 = conv(conv(b1, 64, (1, 7)), 64, (7, 1))
    x = cat()([b0, conv(b1, 96, 3, 1, "valid")])
    x = cat()([conv(x, 192, 3, 2, "valid"), _pool("max", x, 3, 2, "valid")])  # Mixed_5a
    for _ in range(4):
        x = block_a(x)
    x = reduction_a(x)
    for _ in range(7):
        x = block_b(x)
    x = reduction_b(x)
    for _ in range(3):
        x = block_c(x)
    x = L.AveragePooling2D(tuple(x.shape[1:3]), 1, "valid")(x)  # AvgPool_1a
    x = L.Flatten()(x)  # PreLogitsFlatten
    x = L.Dense(classes)(x)  # Logits
    return tf.keras.Model(inp, x, name="inception_v4")


def _mobilenet_v2_os16(x):
    """TF-slim's MobileNetV2 (depth multiplier 1) up to ``layer_18`` (expanded_conv_16, 320 channels) at output
    stride 16, as DeepLab builds it: SAME padding (no explicit pads); once the stride reaches 16,
    expanded_conv_13 runs at stride 1 and expanded_conv_14..16 use depthwise dilation 2."""
    import tensorflow as tf

    L = tf.keras.layers
    # (expansion, output channels, repeats, first stride): slim's V2_DEF after the 3x3/2 conv 32
    blocks = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    x = _conv_bn(x, 32, 3, 2, act="relu6")
    stride, rate = 2, 1
    for t, c, n, s in blocks:
        for i in range(n):
            step = s if i == 0 else 1
            if stride == 16:  # output stride reached: stride 1 here, dilate the layers after
                layer_stride, layer_rate, rate = 1, rate, rate * step
            else:
                layer_stride, layer_rate, stride = step, 1, stride * step
            cin = x.shape[-1]
            y = _conv_bn(x, cin * t, 1, act="relu6") if t != 1 else x
            y = L.DepthwiseConv2D(3, layer_stride, "same", dilation_rate=layer_rate, use_bias=False)(y)
            y = L.ReLU(6.0)(L.BatchNormalization(epsilon=1e-3)(y))
            y = _conv_bn(y, c, 1, act=None)
            x = L.Add()([x, y]) if layer_stride == 1 and cin == c else y
    return x


def _resize_bilinear(x, size: tuple[int, int]):
    """``tf.image.resize_bilinear(x, size, align_corners=True)``, as DeepLab resizes (one RESIZE_BILINEAR)."""
    import tensorflow as tf

    return tf.keras.layers.Lambda(lambda t: tf.compat.v1.image.resize_bilinear(t, size, align_corners=True))(x)


def build_deeplab_v3_mnv2(size: int = 513, classes: int = 21):
    """DeepLab v3 with a MobileNetV2 backbone at output stride 16 as Google's ``deeplabv3_mnv2_pascal``.

    Backbone: :func:`_mobilenet_v2_os16` (33x33x320 at 513). ASPP as DeepLab's MobileNetV2 config builds it
    (no atrous branches): image pooling (33x33 average pool to 1x1, 1x1 conv 256 + batch norm + ReLU, bilinear
    resize back to 33x33) and a 1x1 conv 256 branch, concatenated, 1x1 conv 256 + batch norm + ReLU; 1x1 conv
    to ``classes`` logits with bias; bilinear resize (align corners) to ``size`` x ``size``; ARG_MAX over the
    classes (int64 labels, 1 x size x size). About 2.1 M parameters.
    """
    import tensorflow as tf

    L = tf.keras.layers
    inp = _image_input(size)
    x = _mobilenet_v2_os16(inp)
    grid = (int(x.shape[1]), int(x.shape[2]))
    pooled = L.AveragePooling2D(grid, 1, "valid")(x)  # DeepLab 2018: avg_pool2d over the whole crop
    pooled = _resize_bilinear(_conv_bn(pooled, 256, 1), grid)
    x = L.Concatenate()([pooled, _conv_bn(x, 256, 1)])
    x = _conv_bn(x, 256, 1)  # concat_projection
    x = L.Conv2D(classes, 1, name="logits")(x)
    x = _resize_bilinear(x, (size, size))
    x = L.Lambda(lambda t: tf.argmax(t, axis=3))(x)
    return tf.keras.Model(inp, x, name="deeplabv3_mnv2")


def build_unet_mnv2(size: int = 128, classes: int = 3):
    """The U-Net of TF's "Image segmentation" tutorial: a keras.applications MobileNetV2 encoder (alpha 1) and
    pix2pix upsampling blocks, logits without softmax.

    Skips block_1_expand_relu (64x64 at 128), block_3_expand_relu (32x32), block_6_expand_relu (16x16),
    block_13_expand_relu (8x8); bottom block_16_project (4x4x320). Decoder: Conv2DTranspose(512, 256, 128, 64;
    3x3, stride 2, no bias) + batch norm + ReLU, each concatenated with its skip; a last Conv2DTranspose(
    ``classes``, 3, stride 2, bias) gives size x size x ``classes``.
    """
    import tensorflow as tf

    L = tf.keras.layers
    inp = _image_input(size)
    base = tf.keras.applications.MobileNetV2(input_tensor=inp, include_top=False, weights=None)
    names = ("block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu")
    skips = [base.get_layer(n).output for n in names]
    x = base.get_layer("block_16_project").output
    for filters, skip in zip((512, 256, 128, 64), reversed(skips)):
        x = L.Conv2DTranspose(filters, 3, 2, "same", use_bias=False)(x)
        x = L.ReLU()(L.BatchNormalization()(x))
        x = L.Concatenate()([x, skip])
    x = L.Conv2DTranspose(classes, 3, 2, "same")(x)
    return tf.keras.Model(inp, x, name="unet_mnv2")


#: Builders by ``ZooEntry.app`` name for the models keras.applications lacks: ``builder(size, **kwargs)``.
BUILDERS: dict[str, Callable[..., Any]] = {
    "InceptionV1": build_inception_v1,
    "InceptionV4": build_inception_v4,
    "DeepLabV3MobileNetV2": build_deeplab_v3_mnv2,
    "UNetMobileNetV2": build_unet_mnv2,
}


def convert_int8(model, size: int, samples: int = 4, seed: int = 0) -> bytes:
    """Full-integer int8 conversion (int8 input and output) with a random calibration set."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(seed + 1)

    def representative():
        for _ in range(samples):
            yield [rng.uniform(-1.0, 1.0, (1, size, size, 3)).astype("float32")]

    if model.inputs[0].shape[0] != 1:
        # A fixed batch of 1: keras models have a dynamic batch dimension otherwise.
        inp = tf.keras.Input(shape=(size, size, 3), batch_size=1)
        model = tf.keras.Model(inp, model(inp))
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def build(entry: ZooEntry, out: Path, force: bool = False) -> Path:
    """Build one zoo model into ``out`` unless it is cached there already."""
    path = out / entry.filename
    if path.exists() and not force:
        log.info("cached %s", path)
        return path
    t0 = time.perf_counter()
    data = convert_int8(build_keras(entry), entry.size)
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    log.info("built %s (%.1f MB) in %.0f s", path, len(data) / 1e6, time.perf_counter() - t0)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="zoo names (default: all); see --list")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="cache directory (default zoo/)")
    parser.add_argument("--embedded", action="store_true", help="rebuild the model shipped in the package")
    parser.add_argument("--test-models", action="store_true", help="rebuild the small models under tests/data")
    parser.add_argument(
        "--google", action="store_true", help="build Inception v1 / v4, DeepLab v3 and U-Net (GOOGLE), with any models named"
    )
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--list", action="store_true", help="list zoo names and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for e in ZOO + CALIBRATION + GOOGLE:
            print(f"{e.name:18s} {e.size}x{e.size}  -> {e.filename}")
        return 0
    if args.embedded:
        EMBEDDED_PATH.parent.mkdir(parents=True, exist_ok=True)
        data = convert_int8(build_keras(EMBEDDED), EMBEDDED.size)
        EMBEDDED_PATH.write_bytes(data)
        log.info("wrote %s (%d bytes)", EMBEDDED_PATH, len(data))
        return 0
    if args.test_models:
        BRANCHY_PATH.parent.mkdir(parents=True, exist_ok=True)
        BRANCHY_PATH.write_bytes(convert_int8(build_tiny_inception(), 32))
        log.info("wrote %s (%d bytes)", BRANCHY_PATH, BRANCHY_PATH.stat().st_size)
        return 0
    unknown = [m for m in args.models if m.lower() not in BY_NAME]
    if unknown:
        print(
            f"build_zoo: unknown model(s) {unknown}; known: {[e.name for e in ZOO + CALIBRATION + GOOGLE]}", file=sys.stderr
        )
        return 2
    entries = [BY_NAME[m.lower()] for m in args.models]
    if args.google:
        entries += [e for e in GOOGLE if e not in entries]
    elif not args.models:
        entries = list(ZOO)
    for entry in entries:
        build(entry, args.out, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
