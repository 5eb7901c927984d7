"""hardware/devices.py: Edge TPU enumeration on fake sysfs and /dev trees, --devices parsing, the runtime library."""

import subprocess
import sys
import types

import crafting
import pytest

from hardware import devices
from hardware.devices import (
    CoralError,
    EdgeTpu,
    list_edge_tpus,
    load_edgetpu_delegate,
    make_edgetpu_interpreter,
    parse_devices,
    select_devices,
)


def usb_device(root, name, vendor=None, product=None, busnum=None, devnum=None):
    d = root / "bus" / "usb" / "devices" / name
    d.mkdir(parents=True)
    for attr, value in (("idVendor", vendor), ("idProduct", product), ("busnum", busnum), ("devnum", devnum)):
        if value is not None:
            (d / attr).write_text(f"{value}\n")
    return d


@pytest.fixture
def tree(tmp_path):
    """Two USB accelerators (one still in its boot loader), other USB devices, and two PCIe modules."""
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    usb_device(sys_root, "usb1", "1d6b", "0002", 1, 1)  # root hub
    usb_device(sys_root, "1-1", "18d1", "9302", 1, 5)  # Coral USB, firmware loaded
    usb_device(sys_root, "1-1:1.0")  # its interface: no ids
    usb_device(sys_root, "1-2", "046d", "c52b", 1, 2)  # a mouse
    usb_device(sys_root, "2-1", "1a6e", "089a", 2, 3)  # Coral USB before firmware load
    usb_device(sys_root, "2-2", "18d1", "9303", 2, 4)  # another Google product
    dev_root.mkdir()
    for name in ("apex_1", "apex_0", "apexx", "null"):
        (dev_root / name).write_text("")
    return sys_root, dev_root


def test_lists_usb_in_libedgetpu_order_then_pcie(tree):
    sys_root, dev_root = tree
    found = list_edge_tpus(sys_root, dev_root)
    assert [t.device for t in found] == ["usb:0", "usb:1", "pci:0", "pci:1"]
    assert found[0] == EdgeTpu("usb:0", "usb", str(sys_root / "bus/usb/devices/2-1"), firmware_loaded=False)
    assert found[1].path.endswith("/1-1") and found[1].firmware_loaded is True
    assert [t.path for t in found[2:]] == [str(dev_root / "apex_0"), str(dev_root / "apex_1")]
    assert found[2].as_json()["type"] == "pci"


def test_usb_devices_sort_by_bus_and_device_number(tmp_path):
    usb_device(tmp_path, "3-1", "18d1", "9302", 3, 2)
    usb_device(tmp_path, "1-4", "18d1", "9302", 1, 9)
    assert [t.path.rsplit("/", 1)[1] for t in list_edge_tpus(tmp_path, tmp_path / "nodev")] == ["1-4", "3-1"]


def test_select_takes_the_first_k(tree):
    assert select_devices(3, sys_root=tree[0], dev_root=tree[1]) == ["usb:0", "usb:1", "pci:0"]


def test_no_tpus(tmp_path):
    with pytest.raises(CoralError, match=r"no Edge TPU found \(no USB device 18d1:9302 or 1a6e:089a under .*apex_<n>\)"):
        select_devices(2, sys_root=tmp_path / "sys", dev_root=tmp_path / "dev")


def test_fewer_tpus_than_segments(tree):
    with pytest.raises(CoralError, match=r"found 4 Edge TPU\(s\) but the pipeline has 5 segments; connect more TPUs"):
        select_devices(5, sys_root=tree[0], dev_root=tree[1])


def test_explicit_devices_are_used_as_given(tmp_path):
    assert select_devices(2, "pci:0, USB:01", sys_root=tmp_path, dev_root=tmp_path) == ["pci:0", "usb:1"]
    assert select_devices(1, ["usb:2", "usb:0"]) == ["usb:2"]
    with pytest.raises(CoralError, match=r"--devices names 2 Edge TPU\(s\) but the pipeline has 3 segments"):
        select_devices(3, "usb:0,usb:1")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("usb0", r"--devices: 'usb0' is not usb:<n> or pci:<n>"),
        ("usb:0,tpu:1", r"'tpu:1' is not usb:<n> or pci:<n>"),
        ("usb:-1", r"'usb:-1' is not"),
        ("usb:0,,usb:1", r"'' is not"),
        ("", r"--devices is empty"),
        ("usb:0,pci:0,usb:00", r"--devices names usb:0 twice"),
        (":1", r"':1' is not"),
    ],
)
def test_device_list_errors(spec, message):
    with pytest.raises(CoralError, match=message) as info:
        parse_devices(spec)
    assert "\n" not in str(info.value)


def test_parse_devices_normalises():
    assert parse_devices("usb:0,usb:1,pci:0") == ["usb:0", "usb:1", "pci:0"]
    assert parse_devices([" PCI:2 "]) == ["pci:2"]


@pytest.mark.skipif(crafting.libedgetpu_installed(), reason="libedgetpu.so.1 is installed here")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # LiteRT's Delegate.__del__
def test_missing_runtime_for_real(tmp_path):
    """No mock: on this machine dlopen("libedgetpu.so.1") fails, and LiteRT's load_delegate with it."""
    from ai_edge_litert.interpreter import load_delegate

    with pytest.raises((OSError, ValueError)):
        load_delegate("libedgetpu.so.1", {"device": "usb:0"})
    for call in (lambda: load_edgetpu_delegate("usb:0"), lambda: make_edgetpu_interpreter(tmp_path / "x.tflite", "usb:0")):
        with pytest.raises(CoralError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith("the Edge TPU runtime libedgetpu.so.1 cannot be loaded (")
        assert "libedgetpu1-std from Coral's apt repository" in message


@pytest.mark.skipif(crafting.libedgetpu_installed(), reason="libedgetpu.so.1 is installed here")
def test_missing_runtime_leaves_one_stderr_line():
    """LiteRT's failed Delegate prints an ignored AttributeError; the ctypes check keeps it from happening."""
    code = (
        "import sys\nfrom hardware.devices import CoralError, load_edgetpu_delegate\n"
        "try:\n    load_edgetpu_delegate('usb:0')\nexcept CoralError as e:\n    print(e, file=sys.stderr)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout == "" and r.stderr.count("\n") == 1 and "libedgetpu.so.1" in r.stderr


def test_a_tpu_the_runtime_cannot_open(monkeypatch):
    def load_delegate(library, options):
        assert (library, options) == ("libedgetpu.so.1", {"device": "usb:3"})
        raise ValueError("Failed to load delegate from libedgetpu.so.1\n")

    monkeypatch.setattr(devices, "require_edgetpu_runtime", lambda library="": None)
    monkeypatch.setattr(devices, "litert_module", lambda: types.SimpleNamespace(load_delegate=load_delegate))
    with pytest.raises(
        CoralError,
        match=r"libedgetpu.so.1 could not open the Edge TPU usb:3 \(Failed to load "
        r"delegate from libedgetpu.so.1\); check that it is connected",
    ):
        load_edgetpu_delegate("usb:3")


def test_runtime_library_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(devices.LIBRARY_ENV, raising=False)
    assert devices.edgetpu_library() == "libedgetpu.so.1" and devices.edgetpu_library("x.so") == "x.so"
    monkeypatch.setenv(devices.LIBRARY_ENV, str(tmp_path / "libedgetpu.so.1"))
    assert devices.edgetpu_library() == str(tmp_path / "libedgetpu.so.1")
    with pytest.raises(CoralError, match=rf"^the Edge TPU runtime {tmp_path}/libedgetpu.so.1 cannot be loaded \("):
        load_edgetpu_delegate("usb:0")
