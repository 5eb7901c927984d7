import json

import pytest

from hardware import PCIE, USB, EdgeTpuSpec, SpecError, load_spec


def test_presets_and_round_trip(tmp_path):
    assert load_spec("usb") is USB and load_spec("pcie") is PCIE
    assert USB.peak_macs_per_s == 2e12
    assert 6.5 * 2**20 < USB.cache_bytes < 7.5 * 2**20
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


@pytest.mark.parametrize("content,match", [
    ("{not json", "unreadable JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"bogus": 1}', r"unknown key\(s\) \['bogus'\]"),
    ('{"io_bytes_per_s": -5}', "must be a positive number"),
    ('{"efficiency": {"conv": 2}}', r"efficiency\[conv\] must be in \(0, 1\]"),
    ('{"cache_bytes": "big"}', "non-negative number"),
])
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
