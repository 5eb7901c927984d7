"""Fake ``pycoral.utils.edgetpu``: ``list_edge_tpus`` and ``make_interpreter`` over LiteRT.

``FAKE_CORAL_TPUS`` sets how many USB Edge TPUs are "connected" (default 4).
Every interpreter made is recorded in ``OPENED`` as (device, path).
"""

import os
import re

from ai_edge_litert.interpreter import Interpreter, OpResolverType

OPENED = []


def list_edge_tpus():
    """Same shape as pycoral's: a list of {'type': 'usb'|'pci', 'path': ...} dicts."""
    return [
        {"type": "usb", "path": f"/sys/bus/usb/devices/2-{i + 1}"}
        for i in range(int(os.environ.get("FAKE_CORAL_TPUS", "4")))
    ]


def make_interpreter(model_path_or_content, device=None, delegate=None):
    """pycoral's signature; device is None, ':N', 'usb', 'usb:N', 'pci' or 'pci:N'."""
    tpus = list_edge_tpus()
    m = re.fullmatch(r"(usb|pci)?(?::(\d+))?", device or "")
    if m is None:
        raise ValueError(f"Invalid device: {device}")
    candidates = [t for t in tpus if m[1] in (None, t["type"])]
    index = int(m[2]) if m[2] is not None else 0
    if index >= len(candidates):
        raise ValueError("Failed to load delegate from libedgetpu.so.1")
    if isinstance(model_path_or_content, bytes):
        it = Interpreter(
            model_content=model_path_or_content,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
    else:
        it = Interpreter(
            model_path=model_path_or_content, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    OPENED.append((device, str(model_path_or_content)[:200]))
    return it
