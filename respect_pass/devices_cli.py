"""``respect-pass devices``: what the Edge TPU runtime sees, in its own words.

    respect-pass devices [--json]

Prints the runtime's ``edgetpu_version()``, each Edge TPU ``edgetpu_list_devices()`` returns (type and
path, in the order behind the delegate's ``usb:<n>`` / ``pci:<n>``) and the LiteRT version. No TPU is
not an error (exit 0); a missing libedgetpu is one line and exit 2.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from hardware.runtime import RuntimeInfo, device_strings, runtime_info

from .cli import OneLineParser

__all__ = ["devices_main", "format_devices"]


def _parser() -> OneLineParser:
    p = OneLineParser(
        prog="respect-pass devices",
        description="List the Edge TPUs as the Edge TPU runtime (libedgetpu) enumerates them, with the "
        "runtime's and LiteRT's versions. --devices usb:<n> / pci:<n> count in this order.",
    )
    p.add_argument("--json", action="store_true", help='print {"runtime", "devices": [{"type", "path"}], "litert"}')
    return p


def format_devices(info: RuntimeInfo) -> str:
    """The human-readable listing: versions, then one line per device (its --devices name, type, path)."""
    rows = [f"Edge TPU runtime: {info.runtime}", f"LiteRT: {info.litert}"]
    if not info.c_api:
        rows.append("(the runtime exports no edgetpu_list_devices; devices as sysfs shows them)")
    if not info.devices:
        rows.append("no Edge TPU found")
    for name, d in zip(device_strings(info.devices), info.devices):
        rows.append(f"  {name:<7} {d.type:<4} {d.path}")
    return "\n".join(rows)


def devices_main(argv: Sequence[str]) -> int:
    """Body of ``respect-pass devices`` (errors are RespectPassError lines, see ``cli.run_cli``)."""
    args = _parser().parse_args(argv)
    info = runtime_info()
    print(json.dumps(info.as_json(), indent=2) if args.json else format_devices(info))
    return 0
