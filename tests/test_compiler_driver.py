"""The edgetpu_compiler driver against the documented v16 log format and a fake binary."""

import pytest
from fake_edgetpu import CPU_LOG, FAIL_LOG, OK_LOG

from hardware.compiler import CompilerError, compile_segment, find_compiler, parse_log
from tflite_io import custom_op_codes


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


def test_compile_segment_with_fake_binary(tmp_path, fake_compiler, monkeypatch, embedded_path):
    seg = tmp_path / "m_segment_0_of_2.tflite"
    seg.write_bytes(embedded_path.read_bytes())
    out, log = compile_segment(seg, tmp_path)
    assert out == tmp_path / "m_segment_0_of_2_edgetpu.tflite"
    assert "edgetpu-custom-op" in custom_op_codes(out.read_bytes())
    assert log.on_chip_bytes == round(6.28 * 2**20)
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "cpu")
    with pytest.raises(
        CompilerError, match=r"1 operation\(s\) would run on the CPU where our placement expected 0: CUSTOM x1"
    ):
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


def test_compile_segments_reports_progress_and_keeps_logs(fake_compiler, embedded_path):
    from hardware.compiler import compile_segments

    updates = []

    class Bar:
        def __init__(self, total, desc):
            updates.append(("start", total, desc))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def update(self, n=1):
            updates.append(("update", n))

    data = embedded_path.read_bytes()
    done = compile_segments({"m_segment_0_of_2.tflite": data, "m_segment_1_of_2.tflite": data}, progress=Bar)
    assert [c.file for c in done] == ["m_segment_0_of_2_edgetpu.tflite", "m_segment_1_of_2_edgetpu.tflite"]
    assert done[0].log_file[0] == "m_segment_0_of_2_edgetpu.log" and done[0].log.version == "16.0.384591198"
    assert updates == [("start", 2, "edgetpu_compiler"), ("update", 1), ("update", 1)]
