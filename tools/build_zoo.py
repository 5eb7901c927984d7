"""Build the int8 model zoo from keras.applications with random weights (no download).

Every model is batch 1, has its kernels re-initialised He-normal (keras' default
Glorot init on these deep nets collapses activations to a constant, so equality
checks would prove nothing), has no softmax, and is converted to a
full-integer int8 ``.tflite`` (int8 inputs and outputs) with a small random
representative dataset. Results are cached in ``--out`` and never committed.

Usage::

    python -m tools.build_zoo                    # the whole zoo into zoo/
    python -m tools.build_zoo MobileNetV2 VGG16  # a few models
    python -m tools.build_zoo --embedded         # the small model shipped in the package
    python -m tools.build_zoo --test-models      # the tiny branchy model under tests/data
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "zoo"
EMBEDDED_PATH = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"
BRANCHY_PATH = ROOT / "tests" / "data" / "tiny_inception_int8.tflite"

log = logging.getLogger("build_zoo")


@dataclass(frozen=True)
class ZooEntry:
    """One keras.applications model: constructor name, input size, extra kwargs."""

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
EMBEDDED = ZooEntry("MobileNetV2_0.35_96", "MobileNetV2", 96, (("alpha", 0.35), ("classes", 100)))
BY_NAME = {e.name.lower(): e for e in ZOO + CALIBRATION + (EMBEDDED,)}


def build_keras(entry: ZooEntry, seed: int = 0):
    """Instantiate the keras model with random He-normal kernels and no softmax."""
    import numpy as np
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    ctor = getattr(tf.keras.applications, entry.app)
    model = ctor(
        weights=None,
        input_shape=(entry.size, entry.size, 3),
        classifier_activation=None,
        **dict(entry.kwargs),
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for attr in ("kernel", "depthwise_kernel"):
            var = getattr(layer, attr, None)
            if var is None:
                continue
            shape = tuple(var.shape)
            if attr == "depthwise_kernel":
                fan_in = shape[0] * shape[1]
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
    return model


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
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--list", action="store_true", help="list zoo names and exit")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.list:
        for e in ZOO:
            print(f"{e.name:14s} {e.size}x{e.size}  -> {e.filename}")
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
        print(f"build_zoo: unknown model(s) {unknown}; known: {[e.name for e in ZOO]}", file=sys.stderr)
        return 2
    entries = [BY_NAME[m.lower()] for m in args.models] if args.models else list(ZOO)
    for entry in entries:
        build(entry, args.out, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
