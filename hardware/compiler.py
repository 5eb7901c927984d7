"""Driver for Google's ``edgetpu_compiler`` (v16 log format; see shared/reference).

The compiler cannot be installed by pip: it comes from Coral's apt repository
for x86-64 Debian/Ubuntu. This module finds it on PATH, compiles one segment
with ``edgetpu_compiler -s -o DIR SEGMENT``, parses the console log, and
fails clearly when the compile fails or the compiler leaves on the CPU more
ops than our placement (:mod:`hardware.placement`) put there.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tflite_io import RespectPassError

from .progress import ProgressFactory, no_progress

__all__ = [
    "CompilerError",
    "CompileLog",
    "CompiledSegment",
    "parse_log",
    "find_compiler",
    "compile_segment",
    "compile_segments",
    "INSTALL_HINT",
]

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "install it from Coral's apt repository (package edgetpu-compiler, x86-64 Debian/Ubuntu; "
    "see coral.ai/docs/edgetpu/compiler)"
)
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}
_SIZE = r"([\d.]+)\s*(B|KiB|MiB|GiB)"
_FAILURES = ("Compilation failed", "Internal compiler error")


class CompilerError(RespectPassError):
    """edgetpu_compiler is missing, failed, or left operations on the CPU."""


@dataclass(frozen=True)
class CompileLog:
    """What one edgetpu_compiler run reported."""

    version: str | None
    succeeded: bool
    on_chip_bytes: int | None
    on_chip_remaining_bytes: int | None
    off_chip_bytes: int | None
    num_subgraphs: int | None
    total_ops: int | None
    tpu_ops: int | None
    cpu_ops: int
    cpu_op_statuses: tuple[tuple[str, int, str], ...]
    failure: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "on_chip_bytes": self.on_chip_bytes,
            "on_chip_remaining_bytes": self.on_chip_remaining_bytes,
            "off_chip_bytes": self.off_chip_bytes,
            "num_subgraphs": self.num_subgraphs,
            "total_ops": self.total_ops,
            "tpu_ops": self.tpu_ops,
            "cpu_ops": self.cpu_ops,
        }


def _size(text: str, label: str) -> int | None:
    m = re.search(re.escape(label) + r":\s*" + _SIZE, text)
    return round(float(m[1]) * _UNITS[m[2]]) if m else None


def _int(text: str, label: str) -> int | None:
    m = re.search(re.escape(label) + r":\s*(\d+)", text)
    return int(m[1]) if m else None


def parse_log(text: str) -> CompileLog:
    """Parse edgetpu_compiler's console output (the summary and the ``-s`` operator table)."""
    version = re.search(r"Edge TPU Compiler version (\S+)", text)
    failure = next((line.strip() for line in text.splitlines() if line.strip().startswith(_FAILURES)), None)
    total = _int(text, "Total number of operations")
    cpu = _int(text, "Number of operations that will run on CPU") or 0
    tpu = _int(text, "Number of operations that will run on Edge TPU")
    if tpu is None and total is not None:
        tpu = total - cpu
    statuses = []
    table = text.split("Operator", 1)[1] if re.search(r"^Operator\s+Count\s+Status", text, re.M) else ""
    for line in table.splitlines()[1:]:
        m = re.match(r"^(\w+)\s+(\d+)\s+(.+?)\s*$", line)
        if m and "Mapped to Edge TPU" not in m[3]:
            statuses.append((m[1], int(m[2]), m[3]))
    return CompileLog(
        version=version[1] if version else None,
        succeeded="Compilation succeeded" in text and failure is None,
        on_chip_bytes=_size(text, "On-chip memory used for caching model parameters"),
        on_chip_remaining_bytes=_size(text, "On-chip memory remaining for caching model parameters"),
        off_chip_bytes=_size(text, "Off-chip memory used for streaming uncached model parameters"),
        num_subgraphs=_int(text, "Number of Edge TPU subgraphs"),
        total_ops=total,
        tpu_ops=tpu,
        cpu_ops=cpu,
        cpu_op_statuses=tuple(statuses),
        failure=failure,
    )


def find_compiler(binary: str = "edgetpu_compiler") -> str:
    """Absolute path of the compiler, or a CompilerError telling how to get it."""
    path = shutil.which(binary)
    if path is None:
        raise CompilerError(f"{binary} not found on PATH; {INSTALL_HINT}")
    return path


def compile_segment(
    segment: Path, out_dir: Path, binary: str = "edgetpu_compiler", timeout_s: int = 180, expected_cpu_ops: int = 0
) -> tuple[Path, CompileLog]:
    """Compile one segment into ``out_dir``; return the ``*_edgetpu.tflite`` path and the parsed log.

    ``expected_cpu_ops`` is how many of the segment's ops our placement runs on the CPU; the compiler
    leaving more there is an error (the plan was costed with those ops on the TPU).
    """
    exe = find_compiler(binary)
    try:
        proc = subprocess.run(
            [exe, "-s", "-t", str(timeout_s), "-o", str(out_dir), str(segment)],
            capture_output=True,
            text=True,
            timeout=timeout_s + 30,
        )
    except subprocess.TimeoutExpired:
        raise CompilerError(f"{segment.name}: edgetpu_compiler did not finish in {timeout_s + 30} s") from None
    except OSError as exc:
        raise CompilerError(f"cannot run {exe}: {exc.strerror}") from None
    log = parse_log(proc.stdout + "\n" + proc.stderr)
    if proc.returncode != 0 or not log.succeeded:
        reason = log.failure or f"exit status {proc.returncode}"
        raise CompilerError(f"{segment.name}: edgetpu_compiler failed: {reason}")
    if log.cpu_ops > expected_cpu_ops:
        ops = ", ".join(f"{name} x{count} ({status})" for name, count, status in log.cpu_op_statuses) or "see its log"
        raise CompilerError(
            f"{segment.name}: {log.cpu_ops} operation(s) would run on the CPU where our placement "
            f"expected {expected_cpu_ops}: {ops}"
        )
    if log.cpu_ops < expected_cpu_ops:
        logger.info(
            "%s: the compiler maps %d more op(s) to the Edge TPU than our placement predicted",
            segment.name,
            expected_cpu_ops - log.cpu_ops,
        )
    out = out_dir / f"{segment.stem}_edgetpu.tflite"
    if not out.is_file():
        raise CompilerError(f"{segment.name}: edgetpu_compiler reported success but wrote no {out.name}")
    return out, log


@dataclass(frozen=True)
class CompiledSegment:
    """One segment compiled for the Edge TPU: its file name, bytes, parsed log and log file."""

    file: str
    data: bytes
    log: CompileLog
    log_file: tuple[str, bytes] | None


def compile_segments(
    segments: Mapping[str, bytes],
    binary: str = "edgetpu_compiler",
    timeout_s: int = 180,
    progress: ProgressFactory = no_progress,
    expected_cpu_ops: Mapping[str, int] | None = None,
) -> list[CompiledSegment]:
    """Compile every ``name -> bytes`` segment in a private temporary directory.

    Nothing is written outside that directory, so the caller can add the
    ``*_edgetpu.tflite`` files to its own all-or-nothing write. Raises
    :class:`CompilerError` on the first segment that fails or would run more
    ops on the CPU than ``expected_cpu_ops[name]`` (default 0).
    """
    find_compiler(binary)
    done = []
    with (
        tempfile.TemporaryDirectory(prefix="respect-pass-compile-") as tmp,
        progress(total=len(segments), desc="edgetpu_compiler") as bar,
    ):
        work = Path(tmp)
        for name, data in segments.items():
            src = work / name
            src.write_bytes(data)
            out, log = compile_segment(src, work, binary, timeout_s, (expected_cpu_ops or {}).get(name, 0))
            log_path = out.with_suffix(".log")
            log_file = (log_path.name, log_path.read_bytes()) if log_path.is_file() else None
            done.append(CompiledSegment(out.name, out.read_bytes(), log, log_file))
            logger.info("compiled %s: %s on-chip, %s off-chip", name, log.on_chip_bytes, log.off_chip_bytes)
            bar.update(1)
    return done
