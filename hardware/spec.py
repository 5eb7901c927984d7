"""EdgeTpuSpec: the constants of the Edge TPU stage-time model, with USB and PCIe presets.

Stage time on one Edge TPU (DESIGN.md, see :mod:`hardware.cost`)::

    T = t_invoke + sum_{TPU ops v} (macs_v / (peak * eff(class_v)) + t_op)
        + sum_{host ops v} (cpu_op + macs_v / cpu_rate + handoff_v / io_bandwidth)
        + max(0, P - cache) / stream_bandwidth + (In + Out) / io_bandwidth

Where the constants come from: ``peak_macs_per_s`` is the 4 TOPS int8 rating
(2e12 MAC/s); ``cache_bytes`` is what edgetpu_compiler v16 logs report as
used + remaining on-chip parameter memory (~7.0 MiB of the 8 MB SRAM); the
USB link bandwidth and the efficiencies are fitted by ``tools/calibrate.py``
to Coral's published single-TPU latencies. Users with real TPUs refit them
and load their own JSON with ``--spec FILE.json``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from tflite_io import RespectPassError

__all__ = ["EdgeTpuSpec", "SpecError", "OP_CLASSES", "op_class", "USB", "PCIE", "load_spec", "PRESETS"]

#: Efficiency classes: share of the peak MAC rate each kind of op reaches.
OP_CLASSES = ("conv", "depthwise", "elementwise")
_CONV_OPS = frozenset({"CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"})


def op_class(op_type: str) -> str:
    """Efficiency class of an op type."""
    if op_type in _CONV_OPS:
        return "conv"
    if op_type == "DEPTHWISE_CONV_2D":
        return "depthwise"
    return "elementwise"


class SpecError(RespectPassError):
    """A spec file or value that cannot describe an Edge TPU."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"spec {source}: {reason}")


@dataclass(frozen=True)
class EdgeTpuSpec:
    """Constants of one Edge TPU and its host link. Times in seconds, sizes in bytes."""

    name: str
    peak_macs_per_s: float = 2e12
    efficiency: dict[str, float] = field(default_factory=lambda: {"conv": 0.2, "depthwise": 0.05, "elementwise": 0.05})
    t_invoke_s: float = 1e-4
    t_op_s: float = 0.0
    cache_bytes: int = int(7.0 * 2**20)
    stream_bytes_per_s: float = 4e8
    io_bytes_per_s: float = 4e8
    #: Host CPU ops (see :mod:`hardware.placement`): a fixed dispatch cost per op plus MACs (or, for
    #: element-wise, pooling and custom ops, elements) at a host rate. A documented assumption, not a
    #: measurement: a Cortex-A53/A72-class host (Coral Dev Board, Raspberry Pi 4) running LiteRT's
    #: int8/float kernels at ~1 G MAC/s with ~20 us per op; refit for your host.
    cpu_op_s: float = 2e-5
    cpu_macs_per_s: float = 1e9

    def __post_init__(self) -> None:
        if set(self.efficiency) != set(OP_CLASSES):
            raise SpecError(self.name, f"efficiency needs exactly the classes {list(OP_CLASSES)}, got {sorted(self.efficiency)}")
        for key, value in self.efficiency.items():
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise SpecError(self.name, f"efficiency[{key}] must be in (0, 1], got {value!r}")
        for name in ("peak_macs_per_s", "stream_bytes_per_s", "io_bytes_per_s", "cpu_macs_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SpecError(self.name, f"{name} must be a positive number, got {value!r}")
        for name in ("t_invoke_s", "t_op_s", "cache_bytes", "cpu_op_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise SpecError(self.name, f"{name} must be a non-negative number, got {value!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: object, source: str = "<dict>") -> "EdgeTpuSpec":
        """Build a spec from a JSON object; unknown or missing keys fall back to errors / USB values."""
        if not isinstance(data, dict):
            raise SpecError(source, "must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SpecError(source, f"unknown key(s) {unknown}; known: {sorted(known)}")
        merged = {**asdict(USB), "name": Path(source).stem, **data}
        if isinstance(data.get("efficiency"), dict):
            merged["efficiency"] = {**USB.efficiency, **data["efficiency"]}
        return cls(**merged)

    def with_(self, **changes: object) -> "EdgeTpuSpec":
        return replace(self, **changes)


# Fitted by tools/calibrate.py (see README "Cost model calibration"); keep in sync with its output.
USB = EdgeTpuSpec(
    name="usb",
    efficiency={"conv": 0.6132, "depthwise": 0.0057, "elementwise": 0.0057},
    t_invoke_s=1.29e-4,
    stream_bytes_per_s=4.54e8,
    io_bytes_per_s=4.54e8,
)
#: PCIe/M.2 modules: the same chip on one PCIe Gen2 lane (500 MB/s raw). Not fitted to measurements:
#: the USB fit with the link bandwidth scaled to the lane's rate and half the invoke overhead.
PCIE = USB.with_(name="pcie", t_invoke_s=USB.t_invoke_s / 2, stream_bytes_per_s=5e8, io_bytes_per_s=5e8)
PRESETS = {"usb": USB, "pcie": PCIE}


def load_spec(value: str) -> EdgeTpuSpec:
    """``usb``, ``pcie`` or the path of a spec JSON file."""
    if value in PRESETS:
        return PRESETS[value]
    path = Path(value)
    if not path.is_file():
        raise SpecError(value, f"not a preset ({', '.join(PRESETS)}) nor a readable file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SpecError(value, f"unreadable JSON ({exc})") from None
    try:
        return EdgeTpuSpec.from_dict(data, value)
    except TypeError as exc:
        raise SpecError(value, str(exc)) from None
