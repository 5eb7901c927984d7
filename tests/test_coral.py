"""The pycoral adapter (hardware/coral.py) against the test double in tests/fake_pycoral."""
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import crafting
from hardware.coral import CoralError, import_pycoral, run_coral
from respect_pass.partition import partition

FAKE = Path(__file__).parent / "fake_pycoral"
STEM = "mobilenet_v2_0.35_96_int8"


def forget_pycoral():
    for name in [m for m in sys.modules if m == "pycoral" or m.startswith("pycoral.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture(autouse=True)
def no_cached_pycoral():
    """Each test imports whichever pycoral its sys.path offers."""
    forget_pycoral()
    yield
    forget_pycoral()


@pytest.fixture
def fake_pycoral(monkeypatch):
    """Google's pycoral API, faked over LiteRT; yields the double's modules."""
    monkeypatch.syspath_prepend(str(FAKE))
    return import_pycoral()


@pytest.fixture
def compiled(tmp_path, fake_compiler):
    """The embedded model in 3 segments, "compiled" by the fake edgetpu_compiler."""
    out = tmp_path / "seg"
    result = partition(crafting.EMBEDDED, 3, out, compile=True)
    return out, list(result.compiled_paths)


def test_runs_the_pipeline_on_distinct_devices_and_drains(compiled, fake_pycoral):
    _, paths = compiled
    report = run_coral(paths, count=12, warmup=2)
    assert report["backend"] == "coral" and report["num_segments"] == 3 and report["count"] == 12
    assert [d for d, _ in fake_pycoral.edgetpu.OPENED] == [":0", ":1", ":2"]
    assert [p for _, p in fake_pycoral.edgetpu.OPENED] == [str(p) for p in paths]
    runners = fake_pycoral.pipeline.RUNNERS
    assert len(runners) == 1 and runners[0].drained and runners[0].pushed == 14
    assert report["bottleneck_ms"] == max(s["ms"] for s in report["stages"]) > 0
    assert report["throughput_ips"] > 0 and report["latency_p99_ms"] >= report["latency_p50_ms"] > 0
    assert report["stages"][0]["in_bytes"] == 96 * 96 * 3


def test_fewer_tpus_than_segments(compiled, fake_pycoral, monkeypatch):
    monkeypatch.setenv("FAKE_CORAL_TPUS", "2")
    with pytest.raises(CoralError, match=r"found 2 Edge TPU\(s\) but the pipeline has 3 segments"):
        run_coral(compiled[1])


def test_segments_not_compiled(compiled, fake_pycoral):
    plain = sorted(compiled[0].glob(f"{STEM}_segment_?_of_3.tflite"))
    with pytest.raises(CoralError, match="not compiled for the Edge TPU"):
        run_coral(plain)


def test_pycoral_missing(monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "fake_pycoral" not in p])
    with pytest.raises(CoralError, match="Google's pycoral is not installed; install .*py-repo"):
        import_pycoral()


def test_unrelated_pypi_pycoral_is_detected(tmp_path, monkeypatch):
    (tmp_path / "pycoral").mkdir()
    (tmp_path / "pycoral" / "__init__.py").write_text('"""Allen Coral Atlas command line tool."""\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(CoralError, match=r"unrelated Allen Coral Atlas tool\); 'pip uninstall pycoral'"):
        import_pycoral()


def test_pipeline_output_mismatch_is_an_error(compiled, fake_pycoral, monkeypatch):
    """Results coming back in the wrong order must not pass as a working pipeline."""
    cls = fake_pycoral.pipeline.PipelinedModelRunner
    pop = cls.pop

    def reversed_pop(self):  # hand the results back last-in first-out
        if not hasattr(self, "buffer"):
            self.buffer = []
            while (out := pop(self)) is not None:
                self.buffer.append(out)
        return self.buffer.pop() if self.buffer else None

    monkeypatch.setattr(cls, "pop", reversed_pop)
    with pytest.raises(CoralError, match="differs from running the segments one by one"):
        run_coral(compiled[1], count=4, warmup=0)


class TestTheDoubleCatchesMisuse:
    """The double must fail a broken adapter: wrong binding by name, wrong order, missing drain."""

    def interpreters(self, pc, paths):
        its = [pc.edgetpu.make_interpreter(str(p), device=f":{i}") for i, p in enumerate(paths)]
        for it in its:
            it.allocate_tensors()
        return its

    def test_wrong_order(self, compiled, fake_pycoral):
        its = self.interpreters(fake_pycoral, compiled[1])
        with pytest.raises(ValueError, match="Interpreter 1 can not get its input tensors"):
            fake_pycoral.pipeline.PipelinedModelRunner(its[::-1])

    def test_wrong_binding(self, compiled, fake_pycoral):
        runner = fake_pycoral.pipeline.PipelinedModelRunner(self.interpreters(fake_pycoral, compiled[1]))
        d = runner.interpreters()[0].get_input_details()[0]
        x = np.zeros(d["shape"], d["dtype"])
        with pytest.raises(KeyError):
            runner.push({"not_the_input_name": x})
        with pytest.raises(TypeError, match="dict"):
            runner.push([x])  # pycoral 1.x list API
        runner.push({})
        assert runner.pop() is None and runner.drained

    def test_missing_drain(self, compiled, fake_pycoral):
        runner = fake_pycoral.pipeline.PipelinedModelRunner(self.interpreters(fake_pycoral, compiled[1]))
        d = runner.interpreters()[0].get_input_details()[0]
        runner.push({d["name"]: np.zeros(d["shape"], d["dtype"])})
        assert runner.pop() is not None
        assert not runner.drained  # no push({}) and no final pop
        runner.push({})
        with pytest.raises(RuntimeError):
            runner.push({d["name"]: np.zeros(d["shape"], d["dtype"])})
        assert runner.pop() is None and runner.drained


def run_pipeline(*args, pythonpath=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", "import sys; from respect_pass.run_pipeline import main; sys.exit(main())",
                           *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_coral_backend_with_the_double(compiled):
    out, _ = compiled
    r = run_pipeline("--tpus", "3", str(out), "--backend", "coral", "--count", "6", "--json", pythonpath=str(FAKE))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["backend"] == "coral" and len(report["stages"]) == 3
    assert report["stages"][1]["on_chip_bytes"] == round(6.28 * 2**20)  # from the compile log in plan.json
    table = run_pipeline("--tpus", "3", str(out), "--backend", "coral", "--count", "4", pythonpath=str(FAKE))
    assert table.returncode == 0 and "measured on 3 Edge TPU(s)" in table.stdout


def test_cli_coral_without_pycoral(compiled):
    out, _ = compiled
    r = run_pipeline("--tpus", "3", str(out), "--backend", "coral")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "Google's pycoral is not installed" in r.stderr
