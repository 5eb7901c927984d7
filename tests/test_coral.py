"""hardware/coral.py: run_coral with our LiteRT runner (CPU interpreters) and with the pycoral double."""

import gc
import importlib
import json
import os
import subprocess
import sys
import threading
import types
from pathlib import Path

import crafting
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import hardware.coral
import hardware.devices
from hardware.coral import CoralError, import_pycoral, run_coral

FAKE = Path(__file__).parent / "fake_pycoral"
STEM = "mobilenet_v2_0.35_96_int8"
KEYS = {
    "backend",
    "runner",
    "runtime",
    "devices",
    "num_segments",
    "count",
    "latency_ms",
    "bottleneck_ms",
    "throughput_ips",
    "latency_loaded_p50_ms",
    "latency_loaded_p99_ms",
    "verified",
    "stages",
}
STAGE_KEYS = {"index", "ms", "ms_in_pipeline", "replicas", "devices", "file", "in_bytes", "out_bytes"}


def cpu_factory(path, device):
    """LiteRT on the CPU in place of an Edge TPU (the fake compiler's segments still run there)."""
    return Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


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


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The embedded model in 3 segments, "compiled" once by the fake edgetpu_compiler (tests only read them)."""
    import fake_edgetpu

    root = tmp_path_factory.mktemp("coral")
    return root / "seg", list(fake_edgetpu.compile_embedded(root, 3).compiled_paths)


def check_figures(report, runner, devices):
    assert set(report) == KEYS and all(set(s) == STAGE_KEYS for s in report["stages"])
    assert report["backend"] == "coral" and report["runner"] == runner and report["devices"] == devices
    assert report["num_segments"] == 3 and report["verified"] is None
    assert report["bottleneck_ms"] == pytest.approx(1000 / report["throughput_ips"])
    assert report["latency_ms"] > 0 and report["latency_loaded_p99_ms"] >= report["latency_loaded_p50_ms"] > 0
    assert [s["index"] for s in report["stages"]] == [0, 1, 2] and all(s["ms"] > 0 for s in report["stages"])
    assert [s["devices"] for s in report["stages"]] == [[d] for d in devices]
    assert [s["replicas"] for s in report["stages"]] == [1, 1, 1]
    assert report["stages"][0]["in_bytes"] == 96 * 96 * 3 and report["stages"][-1]["out_bytes"] == 100


def test_pycoral_runner_on_distinct_devices_and_drains(compiled, fake_pycoral):
    _, paths = compiled
    report = run_coral(paths, count=12, warmup=2)  # auto: pycoral imports, so pycoral it is
    check_figures(report, "pycoral", ["usb:0", "usb:1", "usb:2"])
    assert report["count"] == 12 and all(s["ms_in_pipeline"] is None for s in report["stages"])
    assert [d for d, _ in fake_pycoral.edgetpu.OPENED] == ["usb:0", "usb:1", "usb:2"]
    assert [p for _, p in fake_pycoral.edgetpu.OPENED] == [str(p) for p in paths]
    runners = fake_pycoral.pipeline.RUNNERS
    # warm-up 2, idle 12, loaded 12 plus 2 x (K-1) to fill and keep the pipeline full
    assert len(runners) == 1 and runners[0].drained and runners[0].pushed == 2 + 12 + 12 + 4


def test_litert_runner_with_cpu_interpreters(compiled):
    _, paths = compiled
    report = run_coral(
        paths, count=10, warmup=1, runner="litert", devices="usb:0,pci:0,usb:1", interpreter_factory=cpu_factory
    )
    check_figures(report, "litert", ["usb:0", "pci:0", "usb:1"])
    assert all(s["ms_in_pipeline"] > 0 for s in report["stages"])
    assert [s["file"] for s in report["stages"]] == [str(p) for p in paths]


def test_uncompiled_segments_run_through_an_injected_factory(compiled):
    plain = sorted(compiled[0].glob(f"{STEM}_segment_?_of_3.tflite"))
    report = run_coral(
        plain, count=3, warmup=0, runner="litert", devices=["usb:0", "usb:1", "usb:2"], interpreter_factory=cpu_factory
    )
    assert report["runner"] == "litert" and report["count"] == 3


def test_litert_device_enumeration(compiled, tmp_path, monkeypatch):
    monkeypatch.setattr(hardware.devices, "SYS_ROOT", tmp_path / "sys")
    monkeypatch.setattr(hardware.devices, "DEV_ROOT", tmp_path / "dev")
    (tmp_path / "dev").mkdir()
    with pytest.raises(CoralError, match="no Edge TPU found"):
        run_coral(compiled[1], runner="litert", interpreter_factory=cpu_factory)
    for i in range(2):
        (tmp_path / "dev" / f"apex_{i}").write_text("")
    with pytest.raises(CoralError, match=r"found 2 Edge TPU\(s\) but the pipeline has 3 segments"):
        run_coral(compiled[1], runner="litert", interpreter_factory=cpu_factory)
    (tmp_path / "dev" / "apex_2").write_text("")
    report = run_coral(compiled[1], count=2, warmup=0, runner="litert", interpreter_factory=cpu_factory)
    assert report["devices"] == ["pci:0", "pci:1", "pci:2"]


def test_litert_fewer_devices_named(compiled):
    with pytest.raises(CoralError, match=r"--devices names 2 Edge TPU\(s\) but the pipeline has 3 segments"):
        run_coral(compiled[1], runner="litert", devices="usb:0,usb:1", interpreter_factory=cpu_factory)


@pytest.mark.skipif(crafting.libedgetpu_installed(), reason="libedgetpu.so.1 is installed here")
def test_litert_without_the_runtime_for_real(compiled, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "fake_pycoral" not in p])
    with pytest.raises(CoralError, match=r"libedgetpu.so.1 cannot be loaded .*libedgetpu1-std"):
        run_coral(compiled[1])  # auto without pycoral: litert, which needs the runtime


def test_pycoral_runner_without_pycoral(compiled, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "fake_pycoral" not in p])
    with pytest.raises(CoralError, match="Google's pycoral is not installed"):
        run_coral(compiled[1], runner="pycoral")


def test_unknown_runner(compiled):
    with pytest.raises(CoralError, match="unknown runner 'tpu'; use one of auto, litert, pycoral"):
        run_coral(compiled[1], runner="tpu")


@pytest.mark.parametrize("style", ["2022", "2.0.0"])
def test_nothing_reaches_stdout_when_pycoral_s_runner_is_deleted(compiled, fake_pycoral, monkeypatch, capfd, style):
    monkeypatch.setattr(fake_pycoral.pipeline, "DEL_STYLE", style)
    ignored = []  # exceptions escaping a __del__ ("Exception ignored in ..." on stderr outside pytest)
    monkeypatch.setattr(sys, "unraisablehook", ignored.append)
    run_coral(compiled[1], count=3, warmup=1)
    gc.collect()
    assert fake_pycoral.pipeline.RUNNERS[-1].deleted  # pycoral's __del__ did run
    out, err = capfd.readouterr()
    assert out == "" and "Exception ignored" not in err and ignored == []


def test_the_double_s_del_does_print(compiled, fake_pycoral, capfd):
    """Control for the test above: pycoral's own class prints when deleted after our end-of-stream push."""
    its = [fake_pycoral.edgetpu.make_interpreter(str(p), device=f"usb:{i}") for i, p in enumerate(compiled[1])]
    for it in its:
        it.allocate_tensors()
    runner = fake_pycoral.pipeline.PipelinedModelRunner(its)
    runner.push({})
    assert runner.pop() is None
    del runner
    gc.collect()
    assert "The pipeline has already been closed successfully." in capfd.readouterr().out


def test_fewer_tpus_than_segments_pycoral(compiled, fake_pycoral, monkeypatch):
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


def test_pipeline_output_mismatch_is_an_error(compiled, fake_pycoral, monkeypatch, capfd):
    """A pipeline that hands back a stale result must not pass as a working one (and is still shut down quietly)."""
    cls = fake_pycoral.pipeline.PipelinedModelRunner
    pop = cls.pop

    def stale_pop(self):  # every result is the first one
        out = pop(self)
        if out is not None and not hasattr(self, "first"):
            self.first = out
        return None if out is None else self.first

    monkeypatch.setattr(cls, "pop", stale_pop)
    with pytest.raises(CoralError, match="output '.*' of request 1 differs from running the segments one by one"):
        run_coral(compiled[1], count=4, warmup=0)
    gc.collect()
    assert fake_pycoral.pipeline.RUNNERS[-1].closed and capfd.readouterr().out == ""


def test_litert_output_mismatch_is_an_error(compiled):
    class CorruptInThePipeline:
        """The last segment's output is off by one, but only when read by a pipeline stage thread."""

        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def get_tensor(self, index):
            stage = threading.current_thread().name.startswith("respect-pass-stage-")
            return self.inner.get_tensor(index) + (1 if stage else 0)

    def factory(path, device):
        it = cpu_factory(path, device)
        return CorruptInThePipeline(it) if device == "usb:2" else it

    with pytest.raises(CoralError, match="output '.*' of request 0 differs from running the segments one by one"):
        run_coral(compiled[1], count=2, warmup=0, runner="litert", devices="usb:0,usb:1,usb:2", interpreter_factory=factory)


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
    return subprocess.run(
        [sys.executable, "-c", "import sys; from respect_pass.run_pipeline import main; sys.exit(main())", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_coral_backend_with_the_double(compiled):
    """--json stdout must be JSON alone, although pycoral's runner prints when it is deleted."""
    out, _ = compiled
    r = run_pipeline("--tpus", "3", str(out), "--backend", "coral", "--count", "6", "--json", pythonpath=str(FAKE))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["backend"] == "coral" and report["runner"] == "pycoral" and len(report["stages"]) == 3
    assert report["stages"][1]["on_chip_bytes"] == round(6.28 * 2**20)  # from the compile log in plan.json


@pytest.mark.slow
def test_cli_coral_table_with_the_double(compiled):
    out, _ = compiled
    table = run_pipeline("--tpus", "3", str(out), "--backend", "coral", "--count", "4", pythonpath=str(FAKE))
    assert table.returncode == 0, table.stderr
    summary = table.stdout.splitlines()[-1]
    assert summary.startswith("measured on 3 Edge TPU(s) (pycoral runner)")
    assert summary.index("period") < summary.index("for one request alone") < summary.index("requests in flight")


@pytest.mark.slow
def test_cli_coral_runs_segments_without_a_plan(compiled):
    """Segments edgetpu_compiler --num_segments made have no plan.json: they run all the same."""
    out, _ = compiled
    for plan in out.glob("*_plan.json"):
        plan.unlink()
    r = run_pipeline("--tpus", "3", str(out), "--backend", "coral", "--count", "4", "--json", pythonpath=str(FAKE))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert len(report["stages"]) == 3 and report["stages"][1]["on_chip_bytes"] is None


@pytest.mark.slow
def test_cli_runner_and_devices_apply_to_coral_only(compiled):
    out, _ = compiled
    r = run_pipeline("--tpus", "3", str(out), "--runner", "litert")
    assert r.returncode == 2 and "--backend coral only" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(crafting.libedgetpu_installed(), reason="libedgetpu.so.1 is installed here")
def test_cli_coral_without_pycoral_or_runtime(compiled):
    out, _ = compiled
    r = run_pipeline("--tpus", "3", str(out), "--backend", "coral")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stdout == ""
    assert "libedgetpu.so.1 cannot be loaded" in r.stderr and "libedgetpu1-std" in r.stderr


# ----------------------------------------------------------------- replicas

FIVE = ["usb:0", "usb:1", "pci:0", "usb:2", "usb:3"]  # segment 0 on 2 TPUs, segment 1 on 1, segment 2 on 2


def recording_factory(opened):
    """cpu_factory that records (device, file name) of every interpreter it opens."""

    def factory(path, device):
        opened.append((device, Path(path).name))
        return cpu_factory(path, device)

    return factory


def test_litert_runner_with_replicas(compiled):
    _, paths = compiled
    opened = []
    report = run_coral(
        paths,
        count=10,
        warmup=1,
        runner="litert",
        devices=FIVE,
        replicas=[2, 1, 2],
        interpreter_factory=recording_factory(opened),
    )
    assert set(report) == KEYS and all(set(s) == STAGE_KEYS for s in report["stages"])
    assert report["runner"] == "litert" and report["devices"] == FIVE and report["num_segments"] == 3
    assert [s["replicas"] for s in report["stages"]] == [2, 1, 2]
    assert [s["devices"] for s in report["stages"]] == [FIVE[:2], FIVE[2:3], FIVE[3:]]
    assert opened == list(zip(FIVE, [paths[0].name] * 2 + [paths[1].name] + [paths[2].name] * 2))
    assert all(s["ms_in_pipeline"] > 0 for s in report["stages"])
    assert report["bottleneck_ms"] == pytest.approx(1000 / report["throughput_ips"])


def test_auto_takes_our_runner_when_replicated(compiled, fake_pycoral):
    report = run_coral(compiled[1], count=3, warmup=0, devices=FIVE, replicas=[2, 1, 2], interpreter_factory=cpu_factory)
    assert report["runner"] == "litert" and fake_pycoral.pipeline.RUNNERS == []
    plain = run_coral(compiled[1], count=3, warmup=0, devices="usb:2,usb:0,usb:1", replicas=[1, 1, 1])  # none replicated
    assert plain["runner"] == "pycoral" and plain["devices"] == ["usb:2", "usb:0", "usb:1"]
    assert [d for d, _ in fake_pycoral.edgetpu.OPENED] == ["usb:2", "usb:0", "usb:1"]


@pytest.mark.parametrize("with_pycoral", [True, False])
def test_pycoral_refuses_replicas_in_one_line(compiled, monkeypatch, with_pycoral):
    if with_pycoral:
        monkeypatch.syspath_prepend(str(FAKE))
    else:
        monkeypatch.setattr(sys, "path", [p for p in sys.path if "fake_pycoral" not in p])
    with pytest.raises(CoralError) as info:
        run_coral(compiled[1], runner="pycoral", replicas=[1, 2, 1])
    message = str(info.value)
    assert "\n" not in message and "--no-replicas" in message
    assert message.startswith("pycoral's PipelinedModelRunner runs one TPU per segment, but the plan runs segment 1 on 2")


def test_replicas_need_one_device_per_tpu(compiled):
    with pytest.raises(CoralError, match=r"--devices names 4 Edge TPU\(s\) but the pipeline has 3 segments on 5 TPUs"):
        run_coral(compiled[1], runner="litert", devices=FIVE[:4], replicas=[2, 1, 2], interpreter_factory=cpu_factory)
    with pytest.raises(CoralError, match=r"--devices names 6 .* name one per TPU, in plan order"):
        run_coral(
            compiled[1], runner="litert", devices=[*FIVE, "pci:1"], replicas=[2, 1, 2], interpreter_factory=cpu_factory
        )
    with pytest.raises(CoralError, match=r"replicas gives 2 count\(s\) for 3 segment\(s\)"):
        run_coral(compiled[1], runner="litert", replicas=[2, 1], interpreter_factory=cpu_factory)
    with pytest.raises(CoralError, match=r"replicas must be whole numbers of at least 1, got \[2, 0, 1\]"):
        run_coral(compiled[1], runner="litert", replicas=[2, 0, 1], interpreter_factory=cpu_factory)


def test_replicas_on_enumerated_devices(compiled, tmp_path, monkeypatch):
    monkeypatch.setattr(hardware.devices, "SYS_ROOT", tmp_path / "sys")
    monkeypatch.setattr(hardware.devices, "DEV_ROOT", tmp_path / "dev")
    (tmp_path / "dev").mkdir()
    for i in range(4):
        (tmp_path / "dev" / f"apex_{i}").write_text("")
    with pytest.raises(
        CoralError, match=r"found 4 Edge TPU\(s\) but the pipeline has 3 segments on 5 TPUs \(replicas 2\+1\+2\)"
    ):
        run_coral(compiled[1], runner="litert", replicas=[2, 1, 2], interpreter_factory=cpu_factory)
    for i in range(4, 7):
        (tmp_path / "dev" / f"apex_{i}").write_text("")
    report = run_coral(compiled[1], count=2, warmup=0, runner="litert", replicas=[2, 1, 2], interpreter_factory=cpu_factory)
    assert report["devices"] == [f"pci:{i}" for i in range(5)]
    assert [s["devices"] for s in report["stages"]] == [["pci:0", "pci:1"], ["pci:2"], ["pci:3", "pci:4"]]


def test_replicas_through_the_edgetpu_delegate(compiled, monkeypatch):
    """No interpreter factory: every replica is opened by load_delegate("libedgetpu.so.1", {"device": ...}),
    faked here, with its own delegate (LiteRT on the CPU underneath)."""
    loaded, opened = [], []

    def load_delegate(library, options):
        loaded.append((library, options))
        return object()

    def interpreter(model_path, experimental_delegates):
        opened.append((Path(model_path).name, experimental_delegates))
        return cpu_factory(model_path, None)

    monkeypatch.setattr(hardware.devices, "require_edgetpu_runtime", lambda library="": None)
    monkeypatch.setattr(hardware.coral, "require_edgetpu_runtime", lambda library="": None)
    monkeypatch.setattr(hardware.coral, "probe_runtime", lambda paths, device: types.SimpleNamespace(runtime="fake 1.0"))
    fake = types.SimpleNamespace(load_delegate=load_delegate, Interpreter=interpreter)
    monkeypatch.setattr(hardware.devices, "litert_module", lambda: fake)
    paths = compiled[1]
    report = run_coral(paths, count=4, warmup=1, runner="litert", devices=FIVE, replicas=[2, 1, 2])
    assert loaded == [("libedgetpu.so.1", {"device": d}) for d in FIVE]
    assert [name for name, _ in opened] == [paths[0].name] * 2 + [paths[1].name] + [paths[2].name] * 2
    assert len({id(d[0]) for _, d in opened}) == 5  # one delegate per TPU
    assert [s["replicas"] for s in report["stages"]] == [2, 1, 2]


def test_a_failing_replica_is_named_with_its_device(compiled):
    class FailsOnThirdInvoke:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def invoke(self):
            stage = threading.current_thread().name.startswith("respect-pass-stage-")
            self.calls += stage
            if self.calls == 3:
                raise RuntimeError("USB transfer failed")
            self.inner.invoke()

    def factory(path, device):
        it = cpu_factory(path, device)
        return FailsOnThirdInvoke(it) if device == "usb:3" else it

    before = threading.active_count()
    with pytest.raises(CoralError) as info:
        run_coral(
            compiled[1], count=20, warmup=0, runner="litert", devices=FIVE, replicas=[2, 1, 2], interpreter_factory=factory
        )
    message = str(info.value)
    assert "\n" not in message and threading.active_count() == before
    assert message.startswith(
        f"segment 2 ({compiled[1][2].name}) replica 1 on usb:3 failed in the pipeline (RuntimeError: USB"
    )


def test_each_replica_is_checked_alone_against_the_first(compiled):
    class OffByOne:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def get_tensor(self, index):
            return self.inner.get_tensor(index) + 1

    def factory(path, device):
        it = cpu_factory(path, device)
        return OffByOne(it) if device == "usb:3" else it

    with pytest.raises(CoralError) as info:
        run_coral(
            compiled[1], count=2, warmup=0, runner="litert", devices=FIVE, replicas=[2, 1, 2], interpreter_factory=factory
        )
    name = compiled[1][2].name
    assert str(info.value).startswith(f"segment 2 ({name}) replica 1 on usb:3 gives another '")
    assert str(info.value).endswith("than replica 0 on usb:2 for the same inputs")
