"""Helpers the benchmark scripts share: the repository root, K lists, and where a run came from."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

__all__ = ["ROOT", "parse_ks", "machine", "commit"]

ROOT = Path(__file__).resolve().parent.parent


def parse_ks(text: str) -> list[int]:
    """``"2-8"`` -> [2, ..., 8]; ``"2,4,8"`` -> [2, 4, 8]."""
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(k) for k in text.split(",") if k]


def machine() -> str:
    """CPU, core count and Python version of this machine."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def commit() -> str:
    """The checked-out commit, with ``-dirty`` when the tree has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")
