"""The Edge TPU runtime's own view of itself: its version and its devices, through libedgetpu's C API.

The declarations are those of libedgetpu's ``tflite/public/edgetpu_c.h`` (github.com/google-coral/libedgetpu;
implemented in ``tflite/edgetpu_c.cc``, exported by ``tflite/public/libedgetpu.lds`` as ``edgetpu_*``)::

    enum edgetpu_device_type { EDGETPU_APEX_PCI = 0, EDGETPU_APEX_USB = 1 };
    struct edgetpu_device { enum edgetpu_device_type type; const char* path; };
    struct edgetpu_device* edgetpu_list_devices(size_t* num_devices);  // NULL and 0 when none
    void edgetpu_free_devices(struct edgetpu_device* dev);
    const char* edgetpu_version();  // e.g. "BuildLabel(COMPILER=...), RuntimeVersion(13)"

``edgetpu_list_devices`` returns ``EdgeTpuManager::EnumerateEdgeTpu()``'s records: the order behind the
delegate's ``device`` option, where ``usb:<n>`` is the n-th USB record and ``pci:<n>`` the n-th PCIe one
(``tflite/edgetpu_delegate_for_custom_op_tflite_plugin.cc``). None of these calls touches TFLite, so
they are safe in-process even with a libedgetpu built for another LiteRT (the delegate is not:
:mod:`hardware.runtime_probe` tries that in a child process first).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .devices import CoralError, EdgeTpu, edgetpu_library, list_edge_tpus, require_edgetpu_runtime

__all__ = [
    "C_API",
    "DEVICE_TYPES",
    "RuntimeDevice",
    "RuntimeInfo",
    "device_strings",
    "has_c_api",
    "list_runtime_devices",
    "litert_version",
    "load_runtime",
    "runtime_edge_tpus",
    "runtime_info",
    "runtime_version",
    "runtime_version_number",
]

log = logging.getLogger(__name__)

#: the C API symbols enumeration needs
C_API = ("edgetpu_version", "edgetpu_list_devices", "edgetpu_free_devices")
#: ``enum edgetpu_device_type`` -> the delegate's device prefix
DEVICE_TYPES = {0: "pci", 1: "usb"}
_RUNTIME_VERSION_RE = re.compile(r"RuntimeVersion\((\d+)\)")


class _Device(ctypes.Structure):
    """``struct edgetpu_device`` (a C enum is an ``int`` in the x86-64 and AArch64 ABIs)."""

    _fields_ = [("type", ctypes.c_int), ("path", ctypes.c_char_p)]


@dataclass(frozen=True)
class RuntimeDevice:
    """One record of ``edgetpu_list_devices``: ``type`` ``usb`` or ``pci`` and the runtime's ``path``."""

    type: str
    path: str

    def as_json(self) -> dict[str, str]:
        """``{"type": ..., "path": ...}``."""
        return {"type": self.type, "path": self.path}


@dataclass(frozen=True)
class RuntimeInfo:
    """What ``respect-pass devices`` reports: the runtime's version, its devices in its order, LiteRT's version.

    ``c_api``: whether the devices came from the runtime (else from sysfs, and ``runtime`` is ``unknown``).
    """

    runtime: str
    devices: tuple[RuntimeDevice, ...]
    litert: str
    c_api: bool = True

    def as_json(self) -> dict[str, Any]:
        """``{"runtime": str, "devices": [{"type", "path"}], "litert": str}``."""
        return {"runtime": self.runtime, "devices": [d.as_json() for d in self.devices], "litert": self.litert}


def load_runtime(library: str | None = None) -> ctypes.CDLL:
    """The runtime library (:func:`hardware.devices.edgetpu_library`), or a one-line CoralError naming the package."""
    name = edgetpu_library(library)
    require_edgetpu_runtime(name)
    return ctypes.CDLL(name)


def has_c_api(lib: ctypes.CDLL) -> bool:
    """Whether ``lib`` exports every symbol of :data:`C_API`."""
    return all(hasattr(lib, symbol) for symbol in C_API)


def runtime_version(library: str | None = None) -> str | None:
    """``edgetpu_version()`` of the runtime, or None where the library does not export it."""
    lib = load_runtime(library)
    if not hasattr(lib, "edgetpu_version"):
        return None
    fn = lib.edgetpu_version
    fn.argtypes, fn.restype = [], ctypes.c_char_p
    raw = fn()
    return raw.decode("utf-8", "replace") if raw is not None else ""


def runtime_version_number(version: str | None) -> int | None:
    """N of ``RuntimeVersion(N)`` in a version string, else None."""
    m = _RUNTIME_VERSION_RE.search(version or "")
    return int(m[1]) if m else None


def list_runtime_devices(library: str | None = None) -> list[RuntimeDevice] | None:
    """The runtime's devices in ``edgetpu_list_devices`` order, or None where the C API is not exported."""
    lib = load_runtime(library)
    if not has_c_api(lib):
        log.info("%s does not export %s", edgetpu_library(library), ", ".join(s for s in C_API if not hasattr(lib, s)))
        return None
    listed, free = lib.edgetpu_list_devices, lib.edgetpu_free_devices
    listed.argtypes, listed.restype = [ctypes.POINTER(ctypes.c_size_t)], ctypes.POINTER(_Device)
    free.argtypes, free.restype = [ctypes.POINTER(_Device)], None
    count = ctypes.c_size_t(0)
    records = listed(ctypes.byref(count))
    if not records:
        return []
    try:
        out = []
        for i in range(count.value):
            kind = DEVICE_TYPES.get(records[i].type)
            if kind is None:
                log.warning("edgetpu_list_devices: record %d has unknown type %d; skipped", i, records[i].type)
                continue
            path = records[i].path
            out.append(RuntimeDevice(kind, path.decode("utf-8", "replace") if path is not None else ""))
    finally:
        free(records)
    log.debug("the runtime lists %s", out)
    return out


def device_strings(devices: Sequence[RuntimeDevice]) -> list[str]:
    """The delegate's ``device`` option of each record: ``usb:<n>`` / ``pci:<n>``, n counting that type in order."""
    seen: dict[str, int] = {}
    out = []
    for d in devices:
        out.append(f"{d.type}:{seen.get(d.type, 0)}")
        seen[d.type] = seen.get(d.type, 0) + 1
    return out


def runtime_edge_tpus(library: str | None = None) -> list[EdgeTpu] | None:
    """The Edge TPUs as the runtime lists them, or None where it cannot say (the library does not load
    or lacks the C API): the caller then falls back to sysfs (:func:`hardware.devices.list_edge_tpus`)."""
    try:
        listed = list_runtime_devices(library)
    except CoralError as exc:
        log.info("enumerating Edge TPUs from sysfs: %s", exc)
        return None
    if listed is None:
        return None
    return [EdgeTpu(name, d.type, d.path) for name, d in zip(device_strings(listed), listed)]


def litert_version() -> str:
    """The installed LiteRT: ``ai-edge-litert``'s version, else ``tflite-runtime <version>``, else ``not installed``."""
    for dist, prefix in (("ai-edge-litert", ""), ("tflite-runtime", "tflite-runtime ")):
        try:
            return prefix + importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def runtime_info(
    library: str | None = None, sys_root: str | Path | None = None, dev_root: str | Path | None = None
) -> RuntimeInfo:
    """The runtime's version and devices (C API), LiteRT's version. A library without the C API gives
    runtime ``unknown`` and the devices sysfs shows (``sys_root``, ``dev_root``: see ``list_edge_tpus``);
    a missing library is a one-line CoralError."""
    listed = list_runtime_devices(library)
    version = runtime_version(library)
    if listed is None:
        found = list_edge_tpus(sys_root, dev_root)
        return RuntimeInfo(
            version or "unknown", tuple(RuntimeDevice(t.type, t.path) for t in found), litert_version(), False
        )
    return RuntimeInfo(version if version is not None else "unknown", tuple(listed), litert_version())
