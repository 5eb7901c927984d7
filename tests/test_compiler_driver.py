"""The edgetpu_compiler driver against the documented v16 log format and a fake binary."""
import os
import stat
import sys
import textwrap

import pytest

from hardware.compiler import CompilerError, compile_segment, find_compiler, parse_log

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


def test_parse_fully_mapped_log():
    log = parse_log(OK_LOG)
    assert log.version == "16.0.384591198" and log.succeeded
    assert log.on_chip_bytes == round(6.28 * 2**20)
    assert log.on_chip_remaining_bytes == round(768.25 * 2**10)
    assert log.off_chip_bytes == 0
    assert (log.num_subgraphs, log.total_ops, log.tpu_ops, log.cpu_ops) == (1, 19, 19, 0)
    assert log.cpu_op_statuses == ()


def test_parse_cpu_fallback_log():
    log = parse_log(CPU_LOG)
    assert log.succeeded and log.off_chip_bytes == round(7.62 * 2**20)
    assert (log.total_ops, log.tpu_ops, log.cpu_ops) == (16, 15, 1)
    assert log.cpu_op_statuses == (("CUSTOM", 1, "Operation is working on an unsupported data type"),)


def test_parse_failure_log():
    log = parse_log(FAIL_LOG)
    assert not log.succeeded and log.failure == "Internal compiler error. Aborting!"


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    """A fake edgetpu_compiler on PATH that prints the log chosen by FAKE_EDGETPU_MODE."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    logs = {"ok": OK_LOG, "cpu": CPU_LOG, "fail": FAIL_LOG}
    script = bindir / "edgetpu_compiler"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import os, sys
        from pathlib import Path
        logs = {logs!r}
        args = sys.argv[1:]
        assert args[0] == "-s" and "-o" in args, args
        out = Path(args[args.index("-o") + 1]); seg = Path(args[-1])
        mode = os.environ.get("FAKE_EDGETPU_MODE", "ok")
        print(logs[mode])
        if mode != "fail" and os.environ.get("FAKE_EDGETPU_NO_OUTPUT") is None:
            (out / (seg.stem + "_edgetpu.tflite")).write_bytes(seg.read_bytes())
        sys.exit(1 if mode == "fail" else 0)
        """))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return script


def test_compile_segment_with_fake_binary(tmp_path, fake_compiler, monkeypatch):
    seg = tmp_path / "m_segment_0_of_2.tflite"
    seg.write_bytes(b"model")
    out, log = compile_segment(seg, tmp_path)
    assert out == tmp_path / "m_segment_0_of_2_edgetpu.tflite" and out.read_bytes() == b"model"
    assert log.on_chip_bytes == round(6.28 * 2**20)
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "cpu")
    with pytest.raises(CompilerError, match=r"1 operation\(s\) would run on the CPU: CUSTOM x1"):
        compile_segment(seg, tmp_path)
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "fail")
    with pytest.raises(CompilerError, match="failed: Internal compiler error"):
        compile_segment(seg, tmp_path)
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "ok")
    monkeypatch.setenv("FAKE_EDGETPU_NO_OUTPUT", "1")
    (tmp_path / "m_segment_0_of_2_edgetpu.tflite").unlink()
    with pytest.raises(CompilerError, match="wrote no"):
        compile_segment(seg, tmp_path)


def test_missing_compiler_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CompilerError, match="not found on PATH; install it from Coral's apt repository"):
        find_compiler()
