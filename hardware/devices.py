"""Find Edge TPUs and open them through LiteRT and the Edge TPU runtime, without pycoral.

Enumeration follows libedgetpu (github.com/google-coral/libedgetpu):

* USB accelerators (``driver/beagle/beagle_usb_driver_provider.cc``): a device
  shows ``1a6e:089a`` (Global Unichip, DFU boot loader) until the runtime has
  loaded its firmware, then re-enumerates as ``18d1:9302`` (Google). libedgetpu
  lists the DFU devices first, then the running ones; so do we, each group in
  (bus, device number) order, read from ``/sys/bus/usb/devices/*/idVendor``,
  ``idProduct``, ``busnum`` and ``devnum``. libedgetpu itself asks libusb, so
  with several accelerators the order may differ; ``--devices`` pins it.
* PCIe / M.2 modules (``beagle_pci_driver_provider.cc``, ``EnumerateSysfs("apex")``):
  the gasket/apex kernel driver creates ``/dev/apex_<n>``.

A device string is the ``device`` option of libedgetpu's delegate
(``tflite/edgetpu_delegate_for_custom_op_tflite_plugin.cc``): ``usb:<n>`` is the
n-th USB Edge TPU and ``pci:<n>`` the n-th PCIe one, in libedgetpu's order.

Where the runtime exports its C API, :func:`select_devices` takes that order from the runtime
itself (:mod:`hardware.runtime`); the sysfs scan is the fallback. ``$RESPECT_PASS_EDGETPU_LIBRARY``
names another runtime library than ``libedgetpu.so.1`` (a path, e.g. a build for another LiteRT).
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tflite_io import RespectPassError

__all__ = [
    "EDGETPU_LIBRARY",
    "LIBRARY_ENV",
    "RUNTIME_HINT",
    "USB_IDS",
    "CoralError",
    "EdgeTpu",
    "edgetpu_library",
    "list_edge_tpus",
    "litert_module",
    "load_edgetpu_delegate",
    "make_edgetpu_interpreter",
    "parse_devices",
    "require_edgetpu_runtime",
    "select_devices",
]

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"
#: names the runtime library to load instead of ``libedgetpu.so.1`` (a path or a name dlopen finds)
LIBRARY_ENV = "RESPECT_PASS_EDGETPU_LIBRARY"
RUNTIME_HINT = (
    "install the Debian package libedgetpu1-std from Coral's apt repository "
    "(https://coral.ai/software/#debian-packages: 'apt-get install libedgetpu1-std')"
)
#: (vendor, product) -> state: the boot loader before the firmware is loaded, then the running device.
USB_IDS = {(0x1A6E, 0x089A): "dfu", (0x18D1, 0x9302): "app"}
SYS_ROOT = Path("/sys")
DEV_ROOT = Path("/dev")
_DEVICE_RE = re.compile(r"(usb|pci):(\d+)")


class CoralError(RespectPassError):
    """The Edge TPU runtime or pycoral is missing, there are too few Edge TPUs, or the pipeline misbehaved."""


def edgetpu_library(library: str | None = None) -> str:
    """The runtime library to load: ``library``, else ``$RESPECT_PASS_EDGETPU_LIBRARY``, else ``libedgetpu.so.1``."""
    return library or os.environ.get(LIBRARY_ENV) or EDGETPU_LIBRARY


@dataclass(frozen=True)
class EdgeTpu:
    """One Edge TPU: its device string (``usb:0``), its bus and where the system shows it."""

    device: str
    type: str
    path: str
    firmware_loaded: bool | None = None

    def as_json(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return {"device": self.device, "type": self.type, "path": self.path, "firmware_loaded": self.firmware_loaded}


def _read_hex(path: Path) -> int | None:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 1 << 30


def list_edge_tpus(sys_root: str | Path | None = None, dev_root: str | Path | None = None) -> list[EdgeTpu]:
    """Every Edge TPU the system shows: USB ones (sysfs), then PCIe ones (``/dev/apex_<n>``).

    ``sys_root`` and ``dev_root`` default to ``/sys`` and ``/dev``; tests pass a fake tree.
    """
    sys_dir = Path(sys_root) if sys_root is not None else SYS_ROOT
    dev_dir = Path(dev_root) if dev_root is not None else DEV_ROOT
    usb: list[tuple[int, int, int, str, bool]] = []
    usb_dir = sys_dir / "bus" / "usb" / "devices"
    if usb_dir.is_dir():
        for entry in sorted(usb_dir.iterdir()):
            state = USB_IDS.get((_read_hex(entry / "idVendor"), _read_hex(entry / "idProduct")))  # type: ignore[arg-type]
            if state is not None:
                usb.append(
                    (state == "app", _read_int(entry / "busnum"), _read_int(entry / "devnum"), str(entry), state == "app")
                )
    usb.sort()
    found = [EdgeTpu(f"usb:{i}", "usb", path, loaded) for i, (*_, path, loaded) in enumerate(usb)]
    apex = []
    if dev_dir.is_dir():
        for entry in dev_dir.iterdir():
            m = re.fullmatch(r"apex_(\d+)", entry.name)
            if m:
                apex.append((int(m[1]), str(entry)))
    found += [EdgeTpu(f"pci:{i}", "pci", path) for i, (_, path) in enumerate(sorted(apex))]
    log.debug("Edge TPUs found: %s", [t.device for t in found])
    return found


def parse_devices(spec: str | Sequence[str]) -> list[str]:
    """Validate an explicit device list (``"usb:0,usb:1,pci:0"`` or a list of such strings)."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    if not items or items == [""]:
        raise CoralError("--devices is empty; name one Edge TPU per segment, e.g. --devices usb:0,usb:1")
    out: list[str] = []
    for raw in items:
        item = str(raw).strip().lower()
        if not _DEVICE_RE.fullmatch(item):
            raise CoralError(f"--devices: {str(raw).strip()!r} is not usb:<n> or pci:<n> (e.g. --devices usb:0,usb:1,pci:0)")
        item = f"{item[:3]}:{int(item[4:])}"
        if item in out:
            raise CoralError(f"--devices names {item} twice; each segment needs its own Edge TPU")
        out.append(item)
    return out


def _enough(devices: list[str], num_segments: int, what: str, demand: str | None = None) -> list[str]:
    if len(devices) < num_segments:
        raise CoralError(
            f"{what} {len(devices)} Edge TPU(s) but the pipeline has {demand or f'{num_segments} segments'}; "
            "connect more TPUs or partition with a smaller -n"
        )
    if len(devices) > num_segments:
        log.info("using %s of %s", devices[:num_segments], devices)
    return devices[:num_segments]


def select_devices(
    num_segments: int,
    devices: str | Sequence[str] | None = None,
    sys_root: str | Path | None = None,
    dev_root: str | Path | None = None,
    demand: str | None = None,
) -> list[str]:
    """The device strings of the Edge TPUs for ``num_segments`` segments, segment i on the i-th.

    An explicit ``devices`` list is validated and used as given (it is not checked against
    the enumeration, which may miss devices in containers); otherwise the TPUs are enumerated:
    by the runtime's C API (``edgetpu_list_devices``) where the library loads and exports it, else
    (and always when ``sys_root`` or ``dev_root`` is given) from sysfs and ``/dev``.
    ``num_segments`` counts TPUs when segments have replicas; ``demand`` then says what the
    pipeline needs in the too-few message (default ``<num_segments> segments``).
    """
    if devices is not None:
        return _enough(parse_devices(devices), num_segments, "--devices names", demand)
    if sys_root is None and dev_root is None:
        from .runtime import runtime_edge_tpus  # imports this module

        listed = runtime_edge_tpus()
        if listed is not None:
            if not listed:
                raise CoralError(
                    f"the Edge TPU runtime {edgetpu_library()} lists no Edge TPU (edgetpu_list_devices); "
                    "connect the accelerators ('respect-pass devices' shows what it sees) or name them with --devices"
                )
            return _enough([t.device for t in listed], num_segments, "found", demand)
    found = list_edge_tpus(sys_root, dev_root)
    if not found:
        sys_dir = Path(sys_root) if sys_root is not None else SYS_ROOT
        dev_dir = Path(dev_root) if dev_root is not None else DEV_ROOT
        raise CoralError(
            f"no Edge TPU found (no USB device 18d1:9302 or 1a6e:089a under {sys_dir}/bus/usb/devices, "
            f"no {dev_dir}/apex_<n>); connect the accelerators or name them with --devices"
        )
    return _enough([t.device for t in found], num_segments, "found", demand)


def litert_module() -> ModuleType:
    """``ai_edge_litert.interpreter``, else ``tflite_runtime.interpreter`` (whichever is installed)."""
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise CoralError("neither ai-edge-litert nor tflite-runtime is installed; 'pip install ai-edge-litert'")


def require_edgetpu_runtime(library: str | None = None) -> None:
    """Raise a one-line CoralError when the Edge TPU runtime library (:func:`edgetpu_library`) cannot be loaded.

    Checked with ``ctypes`` before LiteRT's ``load_delegate`` sees it: a failed ``load_delegate``
    also prints an ignored ``AttributeError`` from ``Delegate.__del__`` on stderr.
    """
    library = edgetpu_library(library)
    try:
        ctypes.CDLL(library)
    except OSError as exc:
        reason = " ".join(str(exc).split())
        raise CoralError(f"the Edge TPU runtime {library} cannot be loaded ({reason}); {RUNTIME_HINT}") from None


def load_edgetpu_delegate(device: str | None = None, library: str | None = None) -> Any:
    """The Edge TPU delegate bound to ``device`` (``usb:0``; None: any Edge TPU)."""
    library = edgetpu_library(library)
    require_edgetpu_runtime(library)
    module = litert_module()
    try:
        return module.load_delegate(library, {"device": device} if device else {})
    except ValueError as exc:
        reason = " ".join(str(exc).split()) or "no reason given"
        raise CoralError(
            f"{library} could not open the Edge TPU {device or '(any)'} ({reason}); check that it is "
            "connected, not used by another process, and that --devices names it"
        ) from None


def make_edgetpu_interpreter(path: str | Path, device: str | None = None) -> Any:
    """A LiteRT interpreter for the compiled segment ``path`` on the Edge TPU ``device``, tensors allocated."""
    delegate = load_edgetpu_delegate(device)
    try:
        interpreter = litert_module().Interpreter(model_path=str(path), experimental_delegates=[delegate])
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())
        raise CoralError(f"{Path(path).name} does not load on the Edge TPU {device} ({reason})") from None
    return interpreter
