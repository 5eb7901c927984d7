"""EdgeTpuSpec: the constants of the Edge TPU device model, with presets.

Stage time on one Edge TPU and its host (DESIGN.md; the formula is written in
:mod:`hardware.cost`, the reference, and :mod:`hardware.kernel`, its vectorised
twin)::

    T = t_invoke
        + sum_{conv, FC ops}      macs * ceil64(Cout) / Cout / (peak * eff_conv)
        + sum_{depthwise ops}     macs * ceil64(C) / C / (peak * eff_depthwise)
        + sum_{other TPU ops}     output bytes * elementwise_s_per_byte
        + sum_{host (CPU) ops}    cpu_op + macs / cpu_rate + hand-off bytes / io_bandwidth
        + sum_{streamed layers}   padded bytes * tiles / stream_bandwidth
        + (In + Out) / io_bandwidth

Parameters are cached whole layers in execution order until the usable cache
``cache_bytes - cache_io_share * (In + Out)`` is full; the rest stream every
inference, a conv layer's weights once per spatial tile of
``stream_tile_positions`` output positions (``tiles = ceil(H * W / tile)``),
other layers once. The pipeline period is the slowest stage, and with
``shared_link_bytes_per_s`` > 0 (TPUs on one USB host controller) at least
the bytes all stages move per request over that bandwidth.

Where the constants come from (``tools/calibrate.py``, README "Device model"):
``peak_macs_per_s`` is the 4 TOPS int8 rating; ``cache_bytes`` and
``cache_io_share`` fit the compiler's own on-chip/off-chip reports of the
public layer sweeps; the other USB constants are fitted to a named subset of
``shared/reference/public_measurements`` (layer sweeps and Coral's ImageNet
latencies), the host presets to their own columns (``tools/calibrate_hosts.py``). Host ops are timed
by LiteRT on the planning machine (:mod:`hardware.host_time`); the table below is their fallback. Users with real
TPUs refit them on their own device with ``respect-pass calibrate``
(:mod:`respect_pass.calibrate_cli`; ``tools/calibrate.py`` is the fit of this
preset to the public figures) and load the JSON it writes with ``--spec FILE.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tflite_io import RespectPassError

__all__ = [
    "CLOCK_SLOWDOWN",
    "EdgeTpuSpec",
    "SpecError",
    "OP_CLASSES",
    "op_class",
    "USB",
    "USB_SEPARATE",
    "PCIE",
    "DEVBOARD",
    "RPI4",
    "RPI3",
    "load_spec",
    "SPEC_METAVAR",
    "PRESETS",
    "as_spec",
    "scaled_spec",
]

#: Op classes of the device model: conv and depthwise run at a share of the peak MAC rate (``efficiency``),
#: everything else costs per output byte (``elementwise_s_per_byte``).
OP_CLASSES = ("conv", "depthwise", "elementwise")
_CONV_OPS = frozenset({"CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"})


def op_class(op_type: str) -> str:
    """Efficiency class of an op type."""
    if op_type in _CONV_OPS:
        return "conv"
    if op_type == "DEPTHWISE_CONV_2D":
        return "depthwise"
    return "elementwise"


#: How much longer TPU compute takes at each runtime clock than at the max clock the constants are fitted for.
CLOCK_SLOWDOWN = {"max": 1.0, "std": 2.0}


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
    #: share of the peak MAC rate, counted on output channels padded to 64 (conv, FC) / channels (depthwise)
    efficiency: dict[str, float] = field(default_factory=lambda: {"conv": 0.877, "depthwise": 0.0339})
    #: element-wise, concatenation, pooling, reshape, ... on the TPU: seconds per output byte
    elementwise_s_per_byte: float = 3.23e-10
    t_invoke_s: float = 0.000148
    t_op_s: float = 0.0
    #: parameter cache with nothing crossing the host link, and the cache lost per byte that does
    cache_bytes: int = int(7.77 * 2**20)
    cache_io_share: float = 0.31
    #: streamed (uncached) parameters: bytes per second of one pass, and a conv's spatial tile
    stream_bytes_per_s: float = 4.42e08
    stream_tile_positions: int = 916
    #: activation bytes into and out of one TPU over its host link
    io_bytes_per_s: float = 8.91e07
    #: 0: every TPU has its own link; > 0: TPUs share one host controller of this bandwidth
    shared_link_bytes_per_s: float = 0.0
    #: The host-op table, for host ops not timed by LiteRT (``--host-time table``, a custom op with no kernel):
    #: a dispatch cost per op plus MACs (or, for element-wise, pooling and custom ops, elements) at a rate, on
    #: the planning machine (then times ``host_op_scale``). Loosely fitted to the one-op times measured on
    #: an x86-64 VM with LiteRT 2.3: ~1 us for a small op (the median); 1 G/s is within the measured 0.1 to
    #: 200 G/s of resizes, argmaxes and convs.
    cpu_op_s: float = 1e-6
    cpu_macs_per_s: float = 1e9
    #: Host cores that run host (CPU) ops and the runner's threads in parallel: the period is at least the
    #: host ops' time per request over this many cores. An assumption (a 4-core x86 or Cortex-A53/A72 host).
    host_cores: int = 4
    #: Host ops' time on this spec's host over their time on the machine that plans (where they are measured).
    #: Set at plan time from :attr:`host_ref_ms` (:func:`hardware.host_time.localized`); 1 in a spec file.
    host_op_scale: float = 1.0
    #: The spec's host's LiteRT time, in ms, for the reference workload (the embedded model run whole on the
    #: CPU, one thread): what makes host speeds portable between planning machines. 0: the host is the
    #: planning machine itself.
    host_ref_ms: float = 0.0
    #: The Edge TPU's clock: "max" (libedgetpu1-max) or "std" (libedgetpu1-std, the reduced clock); the compute
    #: constants are for the max clock (the public figures' setting), std stretches TPU compute by
    #: :data:`CLOCK_SLOWDOWN`.
    clock: str = "max"
    #: Several models on one TPU (:mod:`hardware.pool`): a switch to a model that is not co-compiled with the one
    #: before reloads its cached parameters over the link at ``reload_rate_factor`` times the streaming bandwidth,
    #: and every switch between models costs ``t_switch_s``. Fitted to Coral's co-compilation figures
    #: (``tools/fit_cocompile.py``, results/cocompile.md) on x86 + USB 3; other hosts keep the factor (their
    #: own streaming bandwidth sets the rate): an assumption, no other host's figure exists. The factor is near 1
    #: (a reload is about one streaming pass); the switch cost fits at its bound 0 (the co-compiled figures leave
    #: no room for one).
    reload_rate_factor: float = 1.03
    t_switch_s: float = 0.0
    #: The device model's typical error on the public figures this spec rests on: the geometric mean of
    #: max(pred / meas, meas / pred) over its rows (1.2 = typically 20% off); 0 where not known.
    typical_error: float = 0.0

    def __post_init__(self) -> None:
        if set(self.efficiency) != {"conv", "depthwise"}:
            raise SpecError(
                self.name, f"efficiency needs exactly the classes ['conv', 'depthwise'], got {sorted(self.efficiency)}"
            )
        for key, value in self.efficiency.items():
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise SpecError(self.name, f"efficiency[{key}] must be in (0, 1], got {value!r}")
        if self.clock not in CLOCK_SLOWDOWN:
            raise SpecError(self.name, f"clock must be one of {sorted(CLOCK_SLOWDOWN)}, got {self.clock!r}")
        if not (isinstance(self.typical_error, (int, float)) and (self.typical_error == 0 or self.typical_error >= 1)):
            raise SpecError(self.name, f"typical_error must be 0 (unknown) or at least 1, got {self.typical_error!r}")
        if isinstance(self.host_cores, bool) or not isinstance(self.host_cores, int) or self.host_cores < 1:
            raise SpecError(self.name, f"host_cores must be a positive integer, got {self.host_cores!r}")
        for name in (
            "peak_macs_per_s",
            "stream_bytes_per_s",
            "io_bytes_per_s",
            "cpu_macs_per_s",
            "stream_tile_positions",
            "host_op_scale",
            "reload_rate_factor",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise SpecError(self.name, f"{name} must be a positive number, got {value!r}")
        for name in (
            "t_invoke_s",
            "t_op_s",
            "cache_bytes",
            "cpu_op_s",
            "elementwise_s_per_byte",
            "cache_io_share",
            "shared_link_bytes_per_s",
            "host_ref_ms",
            "t_switch_s",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise SpecError(self.name, f"{name} must be a non-negative number, got {value!r}")

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: object, source: str = "<dict>") -> EdgeTpuSpec:
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

    @property
    def prediction_error(self) -> float | None:
        """:attr:`typical_error`, or None where it is not known (the ``prediction_error`` of the JSON outputs)."""
        return self.typical_error or None

    def error_line(self) -> str:
        """One line saying how far this spec's predictions typically are from measurements."""
        if not self.typical_error:
            return f"device model '{self.name}': typical error not known (not checked against measured figures)"
        return (
            f"device model '{self.name}': predictions are typically within x{self.typical_error:.2f} of measured "
            "(geometric mean over its public figures, held out; results/calibration.md)"
        )

    def with_(self, **changes: Any) -> EdgeTpuSpec:
        """A copy with ``changes`` (checked like any spec)."""
        return replace(self, **changes)


#: USB accelerators on one host controller (the common set-up of several sticks on one host or hub), with the
#: constants fitted by tools/calibrate.py (README "Device model"; results/calibration.md, presets_fitted.json):
#: the chip's constants (efficiencies, cache, stream tile) and this host's link and invocation cost fitted to the
#: layer sweeps and the x86 + USB 3 single-TPU figures; its host speed to DeepLab v3's heavy host ops. The
#: shared link is 500 MB/s: the public 4-segment conv rows move up to 454 MB/s in aggregate (F = 292: 8.4 MB
#: per request in 18.55 ms), so a shared limit below that is refuted, and at 500 MB/s the bound binds on none
#: of them (separate links fit them exactly as well); it binds for wide pipelines of large activations, where
#: one controller is the honest assumption for sticks on one host.
USB = EdgeTpuSpec(name="usb", shared_link_bytes_per_s=5e8, host_ref_ms=0.982, typical_error=1.18)
#: The same TPUs, each on its own host controller.
USB_SEPARATE = USB.with_(name="usb-separate", shared_link_bytes_per_s=0.0)
#: The Coral Dev Board: the Edge TPU on PCIe Gen2 x1 of an i.MX 8M (quad Cortex-A53, 1.5 GHz); invocation cost and
#: link rates fitted to its columns of the coral.ai page and pycoral's CSV, its host speed to DeepLab v3.
DEVBOARD = USB.with_(
    name="devboard",
    t_invoke_s=0.00188,
    io_bytes_per_s=5e08,
    stream_bytes_per_s=4.08e08,
    shared_link_bytes_per_s=0.0,
    host_ref_ms=6.51,
    typical_error=1.14,
)
#: A Raspberry Pi 4 (Cortex-A72, 1.5 GHz) with USB Accelerators on its USB 3 controller: fitted to pycoral's
#: Pi 4 column (four models); its host speed is the Dev Board's (no host-op figure: an upper bound).
RPI4 = USB.with_(
    name="rpi4", t_invoke_s=0.00133, io_bytes_per_s=5.94e07, stream_bytes_per_s=2.95e08, host_ref_ms=6.51, typical_error=1.17
)
#: A Raspberry Pi 3B (Cortex-A53, 1.2 GHz) with USB Accelerators on USB 2 (one 480 Mbit/s controller): fitted
#: to pycoral's Pi 3B column (four models); host speed the Dev Board's times the clock ratio 1.5 / 1.2.
RPI3 = USB.with_(
    name="rpi3",
    t_invoke_s=0.00695,
    io_bytes_per_s=3.52e07,
    stream_bytes_per_s=3.52e07,
    shared_link_bytes_per_s=6e7,
    host_ref_ms=8.12,
    typical_error=1.67,
)
#: x86-64 with M.2 / mini-PCIe modules, each on its own PCIe Gen2 lane. Not fitted (no public x86 + PCIe
#: figures): the Dev Board's PCIe link rates with the x86 host's invocation cost and host speed.
PCIE = DEVBOARD.with_(name="pcie", t_invoke_s=USB.t_invoke_s, host_ref_ms=USB.host_ref_ms, typical_error=0.0)
PRESETS = {"usb": USB, "usb-separate": USB_SEPARATE, "pcie": PCIE, "devboard": DEVBOARD, "rpi4": RPI4, "rpi3": RPI3}


#: how a ``--spec`` option names its choices: every preset, or a JSON file
SPEC_METAVAR = "|".join(PRESETS) + "|FILE.json"


def load_spec(value: str) -> EdgeTpuSpec:
    """A preset name (``usb``, ``usb-separate``, ``pcie``) or the path of a spec JSON file."""
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


def as_spec(cost: object) -> EdgeTpuSpec:
    """The device model a scheduler is given: ``None`` means the ``usb`` preset; anything but a spec is an error."""
    if cost is None:
        return USB
    if not isinstance(cost, EdgeTpuSpec):
        raise TypeError(f"cost must be an EdgeTpuSpec or None, got {type(cost).__name__}: {cost!r}")
    return cost


#: the fields :func:`scaled_spec` leaves alone: not cost constants
_NOT_SCALED = frozenset({"name", "clock", "typical_error", "host_ref_ms"})
#: the constants :func:`scaled_spec` truncates to whole numbers
_INT_CONSTANTS = frozenset({"cache_bytes", "stream_tile_positions", "host_cores"})


def scaled_spec(spec: EdgeTpuSpec, scale: Callable[[str], float], name: str | None = None) -> EdgeTpuSpec:
    """``spec`` with every cost constant multiplied by its own factor ``scale(key)``: a perturbed device.

    ``scale`` is called once per constant, in field order, with the field's name, or ``efficiency.conv`` and
    ``efficiency.depthwise`` for the two efficiencies; a factor of 1 keeps a constant bit for bit. Each new value
    is ``value * factor``, except that an efficiency is capped at 1 and ``cache_bytes``,
    ``stream_tile_positions`` and ``host_cores`` are truncated to int (the last two at least 1). A factor
    that is not a positive finite number is a :class:`SpecError`. The copy is called ``name`` (default
    ``<spec.name>-scaled``).
    """

    def factor(key: str) -> float:
        f = scale(key)
        if not (isinstance(f, (int, float)) and math.isfinite(f) and f > 0):
            raise SpecError(spec.name, f"scale factor of {key} must be a positive finite number, got {f!r}")
        return f

    changes: dict[str, Any] = {"name": f"{spec.name}-scaled" if name is None else name}
    for key in (fld.name for fld in fields(spec) if fld.name not in _NOT_SCALED):
        value = getattr(spec, key)
        if key == "efficiency":
            changes[key] = {c: min(1.0, value[c] * factor(f"efficiency.{c}")) for c in sorted(value)}
        elif key in _INT_CONSTANTS:
            scaled = int(value * factor(key))
            changes[key] = max(1, scaled) if key in ("stream_tile_positions", "host_cores") else scaled
        else:
            changes[key] = value * factor(key)
    return spec.with_(**changes)
