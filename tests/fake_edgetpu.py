"""A fake ``edgetpu_compiler`` for tests: prints the documented v16 console logs.

It checks the arguments our driver passes (or a pool's co-compile command: several segments after
``-o DIR``, each written as below), writes the segment to
``<stem>_edgetpu.tflite`` with an (unused) ``edgetpu-custom-op`` operator
code added, so the file looks compiled but still runs on LiteRT (it does not
compile anything), and writes the
``.log`` file the real compiler writes. ``FAKE_EDGETPU_MODE`` picks the log:
``ok``, ``cpu`` (an op left on the CPU) or ``fail``; ``FAKE_EDGETPU_FAIL_ON``
makes only segments whose name contains it take the chosen mode.

:class:`FaultyInterpreter` is an Edge TPU interpreter double with fault
injection (the runner tests): it raises, hangs or loses its device on its n-th
``invoke()``.
"""

import stat
import sys
import textwrap
import threading
from pathlib import Path

OK_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1421 ms.

Input model: out/resnet50_int8_segment_1_of_4.tflite
Input size: 6.31MiB
Output model: out/resnet50_int8_segment_1_of_4_edgetpu.tflite
Output size: 6.45MiB
On-chip memory used for caching model parameters: 6.28MiB
On-chip memory remaining for caching model parameters: 768.25KiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 19
Operation log: out/resnet50_int8_segment_1_of_4_edgetpu.log
See the operation log file for individual operation details.
Compilation child process completed within timeout period.
Compilation succeeded!
"""

CPU_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 2310 ms.

Input model: out/vgg16_int8_segment_0_of_2.tflite
Input size: 14.71MiB
Output model: out/vgg16_int8_segment_0_of_2_edgetpu.tflite
Output size: 14.80MiB
On-chip memory used for caching model parameters: 6.91MiB
On-chip memory remaining for caching model parameters: 0.00B
Off-chip memory used for streaming uncached model parameters: 7.62MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 16
Operation log: out/vgg16_int8_segment_0_of_2_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 15
Number of operations that will run on CPU: 1

Operator                       Count      Status

CONV_2D                        13         Mapped to Edge TPU
MAX_POOL_2D                    2          Mapped to Edge TPU
CUSTOM                         1          Operation is working on an unsupported data type
Compilation child process completed within timeout period.
Compilation succeeded!
"""

FAIL_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.
Internal compiler error. Aborting!
Compilation child process completed within timeout period.
Compilation failed!
"""


def compile_embedded(root: Path, num_segments: int):
    """Plan the embedded model for ``num_segments`` TPUs (one segment each) into ``root / "seg"`` and
    "compile" every segment with this fake compiler (installed in ``root / "fakebin"``, on PATH only for the
    call); returns the partition result (``compiled_paths``: the ``*_edgetpu.tflite`` files)."""
    import os

    import crafting
    import pytest

    from respect_pass.partition import partition

    script = install(root / "fakebin")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
        return partition(crafting.EMBEDDED, num_segments, root / "seg", compile=True, replicas=False)


def install(bindir: Path) -> Path:
    """Write the fake compiler script into ``bindir`` and return its path."""
    bindir.mkdir(parents=True, exist_ok=True)
    logs = {"ok": OK_LOG, "cpu": CPU_LOG, "fail": FAIL_LOG}
    script = bindir / "edgetpu_compiler"
    script.write_text(
        textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys
        from pathlib import Path
        logs = {logs!r}
        args = sys.argv[1:]
        assert args[0] == "-s" and "-o" in args, args
        out = Path(args[args.index("-o") + 1])
        failed = False
        for seg in map(Path, args[args.index("-o") + 2:]):  # one segment, or a co-compiled group's models
            mode = os.environ.get("FAKE_EDGETPU_MODE", "ok")
            if os.environ.get("FAKE_EDGETPU_FAIL_ON", seg.name) not in seg.name:
                mode = "ok"
            print(logs[mode])
            failed = failed or mode == "fail"
            if mode != "fail" and os.environ.get("FAKE_EDGETPU_NO_OUTPUT") is None:
                import flatbuffers
                from ai_edge_litert import schema_py_generated as schema
                model = schema.ModelT.InitFromPackedBuf(seg.read_bytes(), 0)
                code = schema.OperatorCodeT()  # listed but unused: LiteRT still runs the plain ops
                code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
                code.customCode, code.version = "edgetpu-custom-op", 1
                model.operatorCodes.append(code)
                builder = flatbuffers.Builder(1024)
                builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
                (out / (seg.stem + "_edgetpu.tflite")).write_bytes(bytes(builder.Output()))
                (out / (seg.stem + "_edgetpu.log")).write_text("fake operation log for " + seg.name)
        sys.exit(1 if failed else 0)
        """)
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script


# ----------------------------------------------------------------- fault injection

#: what LiteRT raises from invoke() when libedgetpu loses a USB accelerator mid-run
LOST_DEVICE_MESSAGE = (
    "Deadline exceeded: USB transfer error 4 [LibUsbDataOutCallback]"
    "Node number 0 (EdgeTpuDelegateForCustomOp) failed to invoke."
)
FAULTS = ("raise", "hang", "lose")


class FaultyInterpreter:
    """An interpreter (``inner``, e.g. LiteRT on the CPU) on the Edge TPU ``device`` whose ``at``-th
    ``invoke()`` (1-based) ``fault``s: ``raise`` (RuntimeError), ``hang`` (blocks until :attr:`release` is
    set, then runs) or ``lose`` (the device vanishes: this and every later invoke on it, by any
    interpreter sharing ``lost``, raises :data:`LOST_DEVICE_MESSAGE`). ``pipeline_only``: count only the
    invokes the runner's stage threads make (not run_coral's one-by-one passes)."""

    def __init__(self, inner, device="usb:0", fault=None, at=None, pipeline_only=False, lost=None):
        assert fault in (None, *FAULTS), fault
        self.inner, self.device, self.fault, self.at, self.pipeline_only = inner, device, fault, at, pipeline_only
        self.lost = lost if lost is not None else set()
        self.release = threading.Event()
        self.calls = 0
        self.hanging = threading.Event()  # set while an invoke() hangs

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def invoke(self):
        counted = not self.pipeline_only or threading.current_thread().name.startswith("respect-pass-stage-")
        self.calls += counted
        if self.device in self.lost:
            raise RuntimeError(LOST_DEVICE_MESSAGE)
        if counted and self.calls == self.at:
            if self.fault == "raise":
                raise RuntimeError(f"injected fault on invoke {self.calls}")
            if self.fault == "lose":
                self.lost.add(self.device)
                raise RuntimeError(LOST_DEVICE_MESSAGE)
            if self.fault == "hang":
                self.hanging.set()
                self.release.wait()
        self.inner.invoke()


def faulty_factory(factory, faults, pipeline_only=True, made=None):
    """``factory(path, device)`` whose interpreters are :class:`FaultyInterpreter`; ``faults`` maps a device
    to ``(fault, at)``; every interpreter made is appended to ``made``; all share one set of lost devices."""
    lost = set()

    def make(path, device):
        fault, at = faults.get(device, (None, None))
        it = FaultyInterpreter(factory(path, device), device, fault, at, pipeline_only, lost)
        if made is not None:
            made.append(it)
        return it

    return make
