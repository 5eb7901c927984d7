"""Build ``tests/fake_libedgetpu.c`` into a ``libedgetpu.so.1`` with the C compiler (tests skip without one)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_libedgetpu.c")


def compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc`` or ``gcc`` on PATH, else None."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def build(out_dir: Path, c_api: bool = True) -> Path:
    """Compile the fake runtime into ``out_dir/libedgetpu.so.1``; ``c_api=False`` leaves out the
    ``edgetpu_*`` C API (a runtime that exports only the TFLite delegate plugin)."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC) on PATH")
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "libedgetpu.so.1"
    cmd = [cc, "-shared", "-fPIC", "-O1", "-Wall", "-Werror", "-o", str(lib), str(SOURCE)]
    if not c_api:
        cmd.insert(1, "-DFAKE_NO_C_API")
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    return lib
