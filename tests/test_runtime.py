"""hardware/runtime.py, hardware/runtime_probe.py and ``respect-pass devices`` through a real shared library.

``tests/fake_libedgetpu.c`` is compiled here into a ``libedgetpu.so.1`` with libedgetpu's C API and
TFLite delegate-plugin entry points; ctypes and LiteRT's ``load_delegate`` load it as they would load
Google's. ``FAKE_EDGETPU_DEVICES`` / ``_VERSION`` / ``_MODE`` set what it reports and does.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import fake_libedgetpu
import pytest

import hardware.runtime_probe
from hardware.coral import run_coral
from hardware.devices import LIBRARY_ENV, CoralError, load_edgetpu_delegate, select_devices
from hardware.runtime import (
    RuntimeDevice,
    device_strings,
    litert_version,
    runtime_edge_tpus,
    runtime_info,
    runtime_version_number,
)
from hardware.runtime_probe import probe_runtime

ROOT = Path(__file__).resolve().parent.parent
VERSION = "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted,CL_NUMBER=291256449), RuntimeVersion(13)"
#: ``respect-pass devices`` as the console script runs it (``respect_pass.cli.main``)
CLI = "import sys\nfrom respect_pass.cli import main\nsys.exit(main(['devices', *sys.argv[1:]]))"

pytestmark = pytest.mark.skipif(
    fake_libedgetpu.compiler() is None, reason="no C compiler (cc, gcc or $CC) to build the fake libedgetpu"
)


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    """(the fake runtime with the C API, one that exports only the delegate plugin)."""
    root = tmp_path_factory.mktemp("libedgetpu")
    return fake_libedgetpu.build(root / "c_api"), fake_libedgetpu.build(root / "plugin_only", c_api=False)


@pytest.fixture
def fake(libs, monkeypatch, tmp_path):
    """The C-API runtime as the process's libedgetpu, a version, no devices, a private cache."""
    monkeypatch.setenv(LIBRARY_ENV, str(libs[0]))
    monkeypatch.setenv("FAKE_EDGETPU_VERSION", VERSION)
    monkeypatch.setenv("RESPECT_PASS_CACHE", str(tmp_path / "cache"))
    for name in ("FAKE_EDGETPU_DEVICES", "FAKE_EDGETPU_MODE"):
        monkeypatch.delenv(name, raising=False)
    return libs[0]


@pytest.fixture(scope="module")
def segments(tmp_path_factory):
    """The embedded model in 2 segments, "compiled" by the fake edgetpu_compiler (LiteRT runs them)."""
    import fake_edgetpu

    return list(fake_edgetpu.compile_embedded(tmp_path_factory.mktemp("segments"), 2).compiled_paths)


@pytest.mark.parametrize("n", [0, 1, 4])
def test_version_and_devices_from_the_c_api(fake, monkeypatch, n):
    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", str(n))
    info = runtime_info()
    assert info.runtime == VERSION and info.c_api and info.litert == litert_version()
    assert info.devices == tuple(RuntimeDevice("usb", f"/sys/bus/usb/devices/{i + 1}-1") for i in range(n))
    assert [t.device for t in runtime_edge_tpus()] == [f"usb:{i}" for i in range(n)]
    assert runtime_version_number(info.runtime) == 13


def test_mixed_types_keep_the_runtime_order(fake, monkeypatch):
    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "usb,pci,usb")
    info = runtime_info()
    assert [(d.type, d.path) for d in info.devices] == [
        ("usb", "/sys/bus/usb/devices/1-1"),
        ("pci", "/dev/apex_0"),
        ("usb", "/sys/bus/usb/devices/2-1"),
    ]
    assert device_strings(info.devices) == ["usb:0", "pci:0", "usb:1"]
    assert select_devices(3) == ["usb:0", "pci:0", "usb:1"]  # the coral backend enumerates the same way
    with pytest.raises(CoralError, match=r"found 3 Edge TPU\(s\) but the pipeline has 4 segments"):
        select_devices(4)


def test_no_devices_in_the_c_api_is_an_error_for_the_backend(fake):
    with pytest.raises(CoralError, match=r"the Edge TPU runtime .*libedgetpu.so.1 lists no Edge TPU"):
        select_devices(1)


def test_without_the_c_api_sysfs_is_the_fallback(libs, fake, monkeypatch, tmp_path):
    monkeypatch.setenv(LIBRARY_ENV, str(libs[1]))
    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "2")  # not heard: no edgetpu_list_devices
    assert runtime_edge_tpus() is None
    usb = tmp_path / "sys" / "bus" / "usb" / "devices" / "1-1"
    usb.mkdir(parents=True)
    (usb / "idVendor").write_text("18d1\n")
    (usb / "idProduct").write_text("9302\n")
    info = runtime_info(sys_root=tmp_path / "sys", dev_root=tmp_path / "dev")
    assert (info.runtime, info.c_api, info.devices) == ("unknown", False, (RuntimeDevice("usb", str(usb)),))
    with pytest.raises(CoralError, match=r"no Edge TPU found \(no USB device 18d1:9302"):
        select_devices(1)


def test_missing_library_is_one_line(tmp_path):
    with pytest.raises(CoralError) as info:
        runtime_info(str(tmp_path / "libedgetpu.so.1"))
    message = str(info.value)
    assert "\n" not in message and "libedgetpu.so.1 cannot be loaded" in message and "libedgetpu1-std" in message


def run_cli(env_extra, *args):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_extra}
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("n", [0, 1, 4])
def test_cli_json_shape(fake, n):
    r = run_cli({"FAKE_EDGETPU_DEVICES": str(n)}, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert list(out) == ["runtime", "devices", "litert"]
    assert out["runtime"] == VERSION and out["litert"] == litert_version()
    assert out["devices"] == [{"type": "usb", "path": f"/sys/bus/usb/devices/{i + 1}-1"} for i in range(n)]


def test_cli_text(fake):
    r = run_cli({"FAKE_EDGETPU_DEVICES": "pci,usb"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:2] == [f"Edge TPU runtime: {VERSION}", f"LiteRT: {litert_version()}"]
    assert lines[2].split() == ["pci:0", "pci", "/dev/apex_0"] and lines[3].split()[:2] == ["usb:0", "usb"]
    r = run_cli({"FAKE_EDGETPU_DEVICES": "0"})
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == "no Edge TPU found"


def test_cli_missing_library(fake, tmp_path):
    r = run_cli({LIBRARY_ENV: str(tmp_path / "libedgetpu.so.1")}, "--json")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert r.stderr.startswith("respect-pass devices: error: the Edge TPU runtime ") and "libedgetpu1-std" in r.stderr
    r = run_cli({}, "--bogus")
    assert r.returncode == 2 and r.stderr.count("\n") == 1


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # LiteRT's Delegate.__del__
def test_delegate_that_does_not_open_through_load_delegate(fake, monkeypatch):
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "fail")
    with pytest.raises(CoralError, match=r"libedgetpu.so.1 could not open the Edge TPU usb:0 \(Failed to load delegate"):
        load_edgetpu_delegate("usb:0")
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "ok")
    assert load_edgetpu_delegate("usb:0") is not None


def test_probe_passes_once_then_comes_from_the_cache(fake, segments, monkeypatch, tmp_path):
    first = probe_runtime(segments, "usb:0")
    assert (first.runtime, first.litert, first.cached) == (VERSION, litert_version(), False)
    assert first.cache_file is not None and first.cache_file.parent == tmp_path / "cache" / "probe"
    assert json.loads(first.cache_file.read_text())["segments"] == [p.name for p in segments]

    def no_child(*args, **kwargs):
        raise AssertionError("a cached pair must not start the probe again")

    monkeypatch.setattr(hardware.runtime_probe.subprocess, "run", no_child)
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "crash")  # would crash, but the pair passed before
    again = probe_runtime(segments, "usb:0")
    assert again.cached and again.cache_file == first.cache_file
    monkeypatch.setenv("FAKE_EDGETPU_VERSION", VERSION.replace("(13)", "(14)"))  # another runtime: probed again
    with pytest.raises(AssertionError, match="must not start"):
        probe_runtime(segments, "usb:0")


def test_probe_crash_does_not_take_down_the_caller(fake, segments, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "crash")
    with pytest.raises(CoralError) as info:
        probe_runtime(segments, "usb:0")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"libedgetpu '{VERSION}' crashed (SIGSEGV) with LiteRT {litert_version()} while creating the Edge TPU "
        "delegate on usb:0: this runtime was not built for this LiteRT; install a libedgetpu built for this LiteRT"
    )
    assert "feranick" in message and not (tmp_path / "cache" / "probe").exists()  # failures are not cached


def test_probe_crash_while_running_a_segment(fake, segments, monkeypatch):
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "crash_prepare")
    with pytest.raises(CoralError, match=rf"crashed \(SIGSEGV\) .* while running segment 0 \({segments[0].name}\) on pci:1"):
        probe_runtime(segments, "pci:1")


def test_probe_refused_segment(fake, segments, monkeypatch):
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "refuse")
    with pytest.raises(CoralError) as info:
        probe_runtime(segments, "usb:0")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"segment 0 ({segments[0].name}) is refused by the Edge TPU runtime '{VERSION}' (")
    assert message.endswith("recompile it for this runtime: 'edgetpu_compiler --min_runtime_version 13'")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_probe_delegate_that_does_not_open(fake, segments, monkeypatch):
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "fail")
    with pytest.raises(CoralError, match=r"^\S*libedgetpu.so.1 could not open the Edge TPU usb:2 \("):
        probe_runtime(segments, "usb:2")


def test_probe_missing_library(tmp_path):
    with pytest.raises(CoralError, match=r"libedgetpu.so.1 cannot be loaded .*libedgetpu1-std"):
        probe_runtime([], None, str(tmp_path / "libedgetpu.so.1"))


def test_probe_never_caches_in_the_source_tree(fake, caplog):
    result = probe_runtime([], None, cache_dir=ROOT / "cache")
    assert result.cache_file is None and not (ROOT / "cache").exists()
    assert "inside the source tree" in caplog.text


def test_run_coral_through_the_fake_runtime(fake, segments, monkeypatch):
    """No interpreter factory: enumeration, probe, load_delegate and the pipeline all go through the .so."""
    monkeypatch.setenv("FAKE_EDGETPU_DEVICES", "3")
    report = run_coral(segments, count=3, warmup=1, runner="litert")
    assert report["runtime"] == VERSION and report["devices"] == ["usb:0", "usb:1"]
    monkeypatch.setenv("FAKE_EDGETPU_VERSION", "another build")
    monkeypatch.setenv("FAKE_EDGETPU_MODE", "crash")
    with pytest.raises(CoralError, match=r"^libedgetpu 'another build' crashed \(SIGSEGV\)"):
        run_coral(segments, count=3, warmup=1, runner="litert")
