import json

import pytest

from hardware import PCIE, USB, USB_SEPARATE, EdgeTpuSpec, SpecError, load_spec


def test_presets_and_round_trip(tmp_path):
    assert load_spec("usb") is USB and load_spec("pcie") is PCIE and load_spec("usb-separate") is USB_SEPARATE
    assert USB.peak_macs_per_s == 2e12
    # the compiler's reports: ~7.77 MiB with nothing on the host link, less as activations cross it
    assert 7.5 * 2**20 < USB.cache_bytes < 8 * 2**20 and 0 < USB.cache_io_share < 1
    # topology: one shared USB host controller, or separate links
    assert USB.shared_link_bytes_per_s > 0 and USB_SEPARATE.shared_link_bytes_per_s == 0 == PCIE.shared_link_bytes_per_s
    p = tmp_path / "mine.json"
    p.write_text(USB.with_(name="mine", io_bytes_per_s=1e8).to_json())
    spec = load_spec(str(p))
    assert spec.io_bytes_per_s == 1e8 and spec.efficiency == USB.efficiency


def test_partial_file_falls_back_to_usb(tmp_path):
    p = tmp_path / "partial.json"
    p.write_text(json.dumps({"t_invoke_s": 0.001, "efficiency": {"conv": 0.5}}))
    spec = load_spec(str(p))
    assert spec.name == "partial" and spec.t_invoke_s == 0.001
    assert spec.efficiency["conv"] == 0.5 and spec.efficiency["depthwise"] == USB.efficiency["depthwise"]


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "unreadable JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"bogus": 1}', r"unknown key\(s\) \['bogus'\]"),
        ('{"io_bytes_per_s": -5}', "must be a positive number"),
        ('{"efficiency": {"conv": 2}}', r"efficiency\[conv\] must be in \(0, 1\]"),
        ('{"cache_bytes": "big"}', "non-negative number"),
        ('{"shared_link_bytes_per_s": -1}', "non-negative number"),
        ('{"stream_tile_positions": 0}', "must be a positive number"),
    ],
)
def test_bad_spec_files(tmp_path, content, match):
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(SpecError, match=match):
        load_spec(str(p))


def test_missing_spec():
    with pytest.raises(SpecError, match="not a preset"):
        load_spec("nope.json")


def test_efficiency_needs_all_classes():
    with pytest.raises(SpecError, match="exactly the classes"):
        EdgeTpuSpec(name="x", efficiency={"conv": 0.5})
    with pytest.raises(SpecError, match="exactly the classes"):
        EdgeTpuSpec(name="x", efficiency={"conv": 0.5, "depthwise": 0.1, "elementwise": 0.1})


def test_a_scheduler_given_something_that_is_not_a_spec_refuses_it():
    from strategies import BRANCHY

    from hardware import as_spec
    from respect_pass.schedulers import SCHEDULERS
    from tflite_io import read

    assert as_spec(None) is USB and as_spec(PCIE) is PCIE
    with pytest.raises(TypeError, match="cost must be an EdgeTpuSpec or None, got str"):
        as_spec("usb")
    graph = read(BRANCHY)
    for name in ("dp", "multiorder", "exact", "profiling", "respect"):
        with pytest.raises(TypeError, match="EdgeTpuSpec"):
            SCHEDULERS[name](graph, 2, {"io_bytes_per_s": 1e8})


def test_scaled_spec_multiplies_each_constant_by_its_own_factor():
    from dataclasses import asdict

    from hardware.spec import scaled_spec

    assert asdict(scaled_spec(USB, lambda key: 1.0, name="same")) == asdict(USB.with_(name="same"))  # bit for bit
    asked: list[str] = []

    def double(key: str) -> float:
        asked.append(key)
        return 2.0

    doubled = scaled_spec(USB, double)
    # every cost constant, host_op_scale and the pool terms too
    assert doubled.name == "usb-scaled" and len(asked) == len(set(asked)) == 18
    assert doubled.host_cores == 2 * USB.host_cores and isinstance(doubled.host_cores, int)
    assert {"efficiency.conv", "efficiency.depthwise", "t_invoke_s", "cpu_macs_per_s", "cache_bytes"} <= set(asked)
    assert doubled.efficiency == {"conv": 1.0, "depthwise": 2 * USB.efficiency["depthwise"]}  # conv capped at 1
    assert doubled.t_invoke_s == 2 * USB.t_invoke_s and doubled.io_bytes_per_s == 2 * USB.io_bytes_per_s
    assert doubled.cache_bytes == 2 * USB.cache_bytes and isinstance(doubled.cache_bytes, int)
    assert scaled_spec(USB, lambda key: 1.5).cache_bytes == int(1.5 * USB.cache_bytes)
    tiny = scaled_spec(USB, lambda key: 1e-9 if key == "stream_tile_positions" else 1.0)
    assert tiny.stream_tile_positions == 1 and tiny.t_invoke_s == USB.t_invoke_s
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(SpecError, match="scale factor of"):
            scaled_spec(USB, lambda key, bad=bad: bad)


def test_every_preset_is_the_fit_that_results_records():
    """hardware/spec.py's presets are the constants tools.calibrate --loo wrote (results/presets_fitted.json)."""
    import json
    from pathlib import Path

    from hardware import PRESETS

    fitted = json.loads((Path(__file__).parent.parent / "results" / "presets_fitted.json").read_text())
    assert set(fitted) == set(PRESETS) - {"usb-separate"}
    for name, data in fitted.items():
        assert EdgeTpuSpec.from_dict(data, name) == PRESETS[name], name
    assert PRESETS["usb-separate"] == PRESETS["usb"].with_(name="usb-separate", shared_link_bytes_per_s=0.0)


def test_new_fields_are_checked():
    with pytest.raises(SpecError, match="clock must be one of"):
        USB.with_(clock="turbo")
    with pytest.raises(SpecError, match="typical_error"):
        USB.with_(typical_error=0.5)
    with pytest.raises(SpecError, match="host_ref_ms"):
        USB.with_(host_ref_ms=-1.0)
    with pytest.raises(SpecError, match="host_op_scale"):
        USB.with_(host_op_scale=0.0)


def test_the_error_line_says_what_is_known():
    assert USB.prediction_error == USB.typical_error > 1
    assert f"x{USB.typical_error:.2f}" in USB.error_line()
    unknown = USB.with_(name="mine", typical_error=0.0)
    assert unknown.prediction_error is None and "not known" in unknown.error_line()


def test_localized_scales_host_ops_by_the_reference_workload(monkeypatch, tmp_path):
    from hardware import host_time

    monkeypatch.setattr(host_time, "cpu_only_seconds", lambda path, **kw: 0.5e-3)
    spec = host_time.localized(USB.with_(host_ref_ms=2.0), tmp_path / "ref.tflite")
    assert spec.host_op_scale == pytest.approx(4.0)  # 2 ms there, 0.5 ms here
    assert host_time.localized(USB.with_(host_ref_ms=0.0), tmp_path / "ref.tflite").host_op_scale == 1.0

    def broken(path, **kw):
        raise RuntimeError("no LiteRT")

    monkeypatch.setattr(host_time, "cpu_only_seconds", broken)
    assert host_time.localized(USB, tmp_path / "ref.tflite").host_op_scale == 1.0  # warned, as this machine
