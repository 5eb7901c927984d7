"""Crash isolation: try a (libedgetpu, LiteRT) pair in a child process before loading it in-process.

A libedgetpu built against another TensorFlow Lite than the installed LiteRT can kill the process
with SIGSEGV when LiteRT applies its delegate (google-coral/edgetpu#731, tensorflow/tensorflow#62371).
:func:`probe_runtime` therefore runs ``python -m hardware.runtime_probe`` first: it creates the
delegate and invokes each given segment once. A child killed by a signal, a delegate that does not
open, or a segment the runtime refuses becomes one CoralError line in the caller. A pair that passed
is remembered in ``<cache>/probe/<sha256 of the pair>.json`` (``$RESPECT_PASS_CACHE``, else
``$XDG_CACHE_HOME/respect-pass``, else ``~/.cache/respect-pass``; written atomically; never inside
the source tree), so later runs start no child. Failures are not cached.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .devices import CoralError, edgetpu_library, litert_module, load_edgetpu_delegate, require_edgetpu_runtime
from .host_time import default_cache_dir, store_json
from .runtime import litert_version, runtime_version, runtime_version_number

__all__ = ["PROBE_TIMEOUT_S", "ProbeResult", "main", "probe_runtime"]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 300.0
_MARK = "respect-pass-probe "
_SOURCE_ROOT = Path(__file__).resolve().parent.parent
_FIX = (
    "install a libedgetpu built for this LiteRT (e.g. feranick's builds per TensorFlow version, "
    "https://github.com/feranick/libedgetpu/releases) or a LiteRT matching the runtime (Coral's own pairing: "
    "libedgetpu1-std 16.0 with tflite-runtime 2.5.0.post1); see google-coral/edgetpu#731, tensorflow/tensorflow#62371"
)


@dataclass(frozen=True)
class ProbeResult:
    """The pair that passed, whether the cache said so (no child ran), and the cache file (None: not cached)."""

    runtime: str
    litert: str
    cached: bool
    cache_file: Path | None


def _cache_file(key: dict[str, Any], cache_dir: Path | None) -> Path | None:
    root = ((cache_dir if cache_dir is not None else default_cache_dir()) / "probe").resolve()
    if (_SOURCE_ROOT / "pyproject.toml").is_file() and root.is_relative_to(_SOURCE_ROOT):
        log.warning("not caching the runtime probe in %s (inside the source tree)", root)
        return None
    return root / (hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24] + ".json")


def _passed(path: Path | None, key: dict[str, Any], invoked: bool) -> bool:
    """Whether ``path`` records that ``key`` passed (with segments invoked, where ``invoked`` asks for it)."""
    if path is None or not path.is_file():
        return False
    try:
        entry = json.loads(path.read_text())
        return entry["key"] == key and (entry["invoked"] or not invoked)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        log.debug("ignoring probe cache %s (%s)", path, exc)
        return False


def _spawn(library: str, device: str | None, segments: Sequence[Path], timeout_s: float) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "hardware.runtime_probe", "--library", library]
    cmd += ["--device", device] if device else []
    cmd += [str(p) for p in segments]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_SOURCE_ROOT), env.get("PYTHONPATH")]))
    log.info("probing the Edge TPU runtime in a child process: %s", " ".join(cmd))
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise CoralError(
            f"the Edge TPU runtime probe ({library} on {device or 'any Edge TPU'}) did not finish in {timeout_s:g} s; "
            "check the TPU's connection (a USB accelerator wants a USB 3 port) and try again"
        ) from None


def _judge(
    run: subprocess.CompletedProcess, runtime: str, litert: str, device: str | None, segments: Sequence[Path]
) -> None:
    """Raise the one-line CoralError the child's exit and its last event call for; return when it passed."""
    events = [json.loads(line[len(_MARK) :]) for line in run.stdout.splitlines() if line.startswith(_MARK)]
    last = events[-1] if events else {"step": "start"}
    where = f"on {device}" if device else "on the first Edge TPU"
    if last.get("step") == "segment":
        i = int(last["index"])
        doing = f"running segment {i} ({Path(segments[i]).name}) {where}"
    else:
        doing = f"creating the Edge TPU delegate {where}" if last.get("step") == "delegate" else "starting"
    if run.returncode < 0:
        try:
            name = signal.Signals(-run.returncode).name
        except ValueError:
            name = f"signal {-run.returncode}"
        raise CoralError(
            f"libedgetpu '{runtime}' crashed ({name}) with LiteRT {litert} while {doing}: this runtime was "
            f"not built for this LiteRT; {_FIX}"
        )
    if "error" in last:
        if last.get("step") == "segment":
            n = runtime_version_number(runtime)
            raise CoralError(
                f"segment {last['index']} ({Path(segments[int(last['index'])]).name}) is refused by the Edge TPU runtime "
                f"'{runtime}' ({last['error']}); recompile it for this runtime: "
                + (
                    f"'edgetpu_compiler --min_runtime_version {n}'"
                    if n is not None
                    else "'edgetpu_compiler --min_runtime_version N', N this runtime's version"
                )
            )
        raise CoralError(str(last["error"]))
    if run.returncode != 0 or not last.get("ok"):
        tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise CoralError(f"the Edge TPU runtime probe exited with status {run.returncode} while {doing} ({tail})")


def probe_runtime(
    segments: Sequence[str | Path] = (),
    device: str | None = None,
    library: str | None = None,
    *,
    cache_dir: Path | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> ProbeResult:
    """Make sure the runtime ``library`` (default :func:`~hardware.devices.edgetpu_library`) works with this
    LiteRT: on the pair's first use, create the delegate on ``device`` and invoke each of ``segments``
    once, in a child process; raise a one-line CoralError for a missing library, a crash, a delegate
    that does not open or a refused segment. ``cache_dir`` overrides the user cache directory."""
    name = edgetpu_library(library)
    require_edgetpu_runtime(name)
    runtime, litert = runtime_version(name) or "unknown", litert_version()
    key = {"runtime": runtime, "litert": litert}
    path = _cache_file(key, cache_dir)
    paths = [Path(p) for p in segments]
    if _passed(path, key, invoked=bool(paths)):
        log.debug("runtime probe cached in %s", path)
        return ProbeResult(runtime, litert, True, path)
    run = _spawn(name, device, paths, timeout_s)
    _judge(run, runtime, litert, device, paths)
    if path is not None:
        store_json(
            path,
            what="runtime probe cache",
            entry={"key": key, "invoked": bool(paths), "segments": [p.name for p in paths], "time": time.time()},
        )
    return ProbeResult(runtime, litert, False, path)


def _emit(event: dict[str, Any]) -> None:
    print(_MARK + json.dumps(event), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """The child: create the delegate, then load and invoke each segment once; report each step on stdout."""
    import numpy as np

    p = argparse.ArgumentParser(prog="python -m hardware.runtime_probe")
    p.add_argument("--library", required=True)
    p.add_argument("--device", default=None)
    p.add_argument("segments", nargs="*")
    args = p.parse_args(argv)
    _emit({"step": "delegate"})
    try:
        delegate = load_edgetpu_delegate(args.device, args.library)
    except CoralError as exc:
        _emit({"step": "delegate", "error": str(exc)})
        return 3
    for i, seg in enumerate(args.segments):
        _emit({"step": "segment", "index": i})
        try:
            it = litert_module().Interpreter(model_path=seg, experimental_delegates=[delegate])
            it.allocate_tensors()
            for d in it.get_input_details():
                it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
            it.invoke()
        except (ValueError, RuntimeError) as exc:
            _emit({"step": "segment", "index": i, "error": " ".join(str(exc).split()) or type(exc).__name__})
            return 3
    _emit({"ok": True})
    return 0


if __name__ == "__main__":
    sys.exit(main())
