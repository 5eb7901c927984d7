"""``respect-pass calibrate``: fit the device model to this user's Edge TPUs (or to a simulated device).

    respect-pass calibrate --backend coral|sim [--device-spec TRUTH.json] -o FITTED.json [--json]

``--backend sim --device-spec TRUTH.json`` makes the simulator play a device
whose constants are TRUTH; the fit sees only the measured times.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from hardware import load_spec
from hardware.calibrate import Calibration, CoralDevice, Device, SimDevice, calibrate
from hardware.compiler import find_compiler
from hardware.devices import parse_devices
from tflite_io import RespectPassError, write_files

from .cli import OneLineParser

__all__ = ["calibrate_main", "format_calibration"]

_CONSTANTS = (
    "t_invoke_s",
    "efficiency",
    "elementwise_s_per_byte",
    "io_bytes_per_s",
    "stream_bytes_per_s",
    "stream_tile_positions",
    "cache_bytes",
    "cache_io_share",
    "shared_link_bytes_per_s",
)


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="respect-pass calibrate",
        description="Measure a designed set of micro-models on the device, fit the Edge TPU device "
        "model, and write it as the JSON that --spec FILE.json reads.",
    )
    p.add_argument(
        "--backend",
        choices=["coral", "sim"],
        required=True,
        help="coral: Edge TPUs (needs edgetpu_compiler and the Edge TPU runtime); sim: a simulated device",
    )
    p.add_argument(
        "--device-spec",
        metavar="TRUTH.json|PRESET",
        default=None,
        help="sim: the constants the simulated device really has (default: the usb preset)",
    )
    p.add_argument("--jitter", type=float, default=0.0, help="sim: relative noise of each timing (default 0)")
    p.add_argument("--prior", default="usb", metavar="PRESET|FILE.json", help="spec to start from (default usb)")
    p.add_argument("--devices", default=None, metavar="usb:0,...", help="coral: the Edge TPUs to use")
    p.add_argument("--runner", choices=["auto", "litert", "pycoral"], default="auto", help="coral: pipelined runner")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", required=True, metavar="FITTED.json", help="where to write the fitted spec")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    return p


def format_calibration(cal: Calibration, backend: str) -> str:
    """Predicted vs measured per micro-model, then the fitted constants."""
    rows = [f"{'probe':<22} {'measured ms':>12} {'predicted ms':>13} {'ratio':>7}"]
    rows += [f"{label:<22} {m:>12.3f} {p:>13.3f} {p / m:>7.3f}" for label, m, p in cal.rows]
    spec = json.loads(cal.spec.to_json())
    rows.append(f"fitted on {cal.measurements} {backend} measurements; host link {cal.shared_link}")
    rows.append(f"Edge TPU clock: {cal.clock}")
    rows += [f"  {k} = {_rounded(spec[k])}" for k in _CONSTANTS]
    return "\n".join(rows)


def _rounded(value: object) -> str:
    """A constant as people read it: 4 significant digits (the JSON file keeps every digit)."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_rounded(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def calibrate_main(argv: Sequence[str]) -> int:
    """Body of ``respect-pass calibrate``."""
    args = _parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix.lower() != ".json" or not out.parent.is_dir():  # "f.json" has parent "."
        raise RespectPassError(f"{out}: the fitted spec must be a .json file in an existing directory")
    prior = load_spec(args.prior)
    device: Device
    if args.backend == "sim":
        if args.devices is not None:
            raise RespectPassError("--devices applies to --backend coral only")
        truth = load_spec(args.device_spec or "usb")
        if not args.jitter >= 0:  # also NaN
            raise RespectPassError(f"--jitter must be >= 0, got {args.jitter}")
        device = SimDevice(truth, jitter=args.jitter, seed=args.seed)
    else:
        if args.device_spec is not None:
            raise RespectPassError("--device-spec applies to --backend sim only (a real device has its own constants)")
        find_compiler()  # before any probe is built
        device = CoralDevice(devices=parse_devices(args.devices) if args.devices else None, runner=args.runner)
    cal = calibrate(device, prior, seed=args.seed, name=out.stem)
    write_files(out.parent, {out.name: cal.spec.to_json().encode()})
    if args.json:
        print(
            json.dumps(
                {
                    "backend": args.backend,
                    "measurements": cal.measurements,
                    "out": str(out),
                    "shared_link": cal.shared_link,
                    "clock": cal.clock,
                    "spec": json.loads(cal.spec.to_json()),
                    "rows": [{"probe": label, "measured_ms": m, "predicted_ms": p} for label, m, p in cal.rows],
                },
                indent=2,
            )
        )
    else:
        print(format_calibration(cal, args.backend))
    return 0
