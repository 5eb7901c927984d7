import json
import subprocess
import sys
from pathlib import Path

import crafting
import pytest

from hardware import USB
from respect_pass import partition
from respect_pass.run_pipeline import Layout, find_segments, open_pipeline, plan_layout, run_hardware, run_sim
from tflite_io import RespectPassError

#: subprocess runs of run_pipeline: left out of ``make test-fast``
pytestmark = pytest.mark.slow


def run_pipeline(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "run_pipeline"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_sim_chains_and_verifies(tmp_path):
    partition(crafting.EMBEDDED, 3, tmp_path, replicas=False)
    r = run_pipeline("--tpus", "3", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["backend"] == "sim" and doc["num_segments"] == 3 and doc["verified"] is True
    assert [s["index"] for s in doc["stages"]] == [0, 1, 2]
    assert doc["stages"][0]["in_bytes"] == 96 * 96 * 3
    keys = {"backend", "num_segments", "bottleneck_ms", "latency_ms", "throughput_ips", "verified", "stages"}
    assert keys <= set(doc)
    assert {"index", "ms", "param_bytes", "on_chip_bytes", "off_chip_bytes", "in_bytes", "out_bytes"} <= set(
        doc["stages"][0]
    )
    ms = [s["ms"] for s in doc["stages"]]
    assert doc["bottleneck_ms"] == pytest.approx(max(ms)) and doc["latency_ms"] == pytest.approx(sum(ms))
    assert doc["throughput_ips"] == pytest.approx(1000 / max(ms))
    # loaded latency is measured with K requests in flight, never as queueing behind all requests at once
    assert doc["latency_loaded_p50_ms"] == pytest.approx(3 * max(ms), rel=1e-6)
    assert not {"latency_p50_ms", "latency_p99_ms"} & set(doc)
    # the segments' predicted times match the plan's, computed on the full model's graph
    plan = json.loads(next(tmp_path.glob("*_plan.json")).read_text())
    assert ms == pytest.approx([s["predicted_ms"] for s in plan["segments"]])
    r = run_pipeline("--tpus", "3", str(tmp_path))
    assert r.returncode == 0 and "bit-exact" in r.stdout
    summary = next(line for line in r.stdout.splitlines() if line.startswith("simulated"))
    assert summary.index("period") < summary.index("for one request alone") < summary.index("requests in flight")


def test_sim_without_plan_does_not_claim_verification(tmp_path):
    partition(crafting.EMBEDDED, 2, tmp_path, replicas=False)
    next(tmp_path.glob("*_plan.json")).unlink()
    doc = json.loads(run_pipeline("--tpus", "2", str(tmp_path), "--json").stdout)
    assert doc["verified"] is None


def test_wrong_count_and_missing_segment(tmp_path):
    partition(crafting.EMBEDDED, 3, tmp_path, replicas=False)
    r = run_pipeline("--tpus", "2", str(tmp_path))
    assert r.returncode == 2 and "plans 3 TPU(s)" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    next(tmp_path.glob("*_plan.json")).unlink()  # without a plan, --tpus is the number of segments
    r = run_pipeline("--tpus", "2", str(tmp_path))
    assert r.returncode == 2 and "K = [3]" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_pipeline(str(tmp_path))
    assert r.returncode == 2 and "give --tpus" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    next(tmp_path.glob("*_segment_1_of_3.tflite")).unlink()
    with pytest.raises(RespectPassError, match=r"missing segment\(s\) \[1\]"):
        find_segments(tmp_path, 3)
    r = run_pipeline("--tpus", "3", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_sim_plot(tmp_path):
    seg = tmp_path / "seg"
    partition(crafting.EMBEDDED, 2, seg, replicas=False)
    png = tmp_path / "sim.png"
    r = run_pipeline("--tpus", "2", str(seg), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = run_pipeline("--tpus", "2", str(seg), "--plot", str(tmp_path / "nodir" / "x.png"))
    assert r.returncode == 2 and "existing directory" in r.stderr


def test_unreadable_plan_is_one_error_line(tmp_path):
    partition(crafting.EMBEDDED, 2, tmp_path, replicas=False)
    next(tmp_path.glob("*_plan.json")).write_text("{not json")
    r = run_pipeline("--tpus", "2", str(tmp_path))
    assert r.returncode == 2 and "unreadable plan" in r.stderr and r.stderr.count("\n") == 1


def replicated_plan(directory, layout):
    """Two segments of the embedded model, then plan.json rewritten to run segment s on the TPUs ``layout[s]``."""
    partition(crafting.EMBEDDED, 2, directory, replicas=False)
    path = next(directory.glob("*_plan.json"))
    plan = json.loads(path.read_text())
    plan["tpus"] = sum(map(len, layout))
    for seg, tpus in zip(plan["segments"], layout):
        seg.update(replicas=len(tpus), devices=list(tpus))
    path.write_text(json.dumps(plan))
    return plan


def test_sim_runs_a_replicated_plan_at_its_predicted_period(tmp_path):
    replicated_plan(tmp_path, [[0, 1, 2], [3]])  # the slow first segment on three TPUs
    report = run_sim(open_pipeline(tmp_path).segments, USB, count=60)
    assert report["tpus"] == 4 and report["num_segments"] == 2 and report["verified"] is True
    assert [(s["replicas"], s["devices"]) for s in report["stages"]] == [(3, [0, 1, 2]), (1, [3])]
    ms = [s["ms"] for s in report["stages"]]
    assert report["predicted_period_ms"] == pytest.approx(max(ms[0] / 3, ms[1]), rel=1e-9)  # the link does not bind
    assert report["bottleneck_ms"] == pytest.approx(report["predicted_period_ms"], rel=0.02)
    assert report["bottleneck_ms"] < max(ms) / 2 and report["latency_ms"] == pytest.approx(sum(ms))
    # the CLI: K from plan.json, each segment's TPUs in the table, a --tpus that disagrees is one error line
    r = run_pipeline(str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "simulated (usb spec, 4 TPUs)" in r.stdout and "predicted period" in r.stdout
    assert [line.split()[1] for line in r.stdout.splitlines()[1:3]] == ["0,1,2", "3"]
    assert "with 4 requests in flight" in r.stdout
    r = run_pipeline("--tpus", "2", str(tmp_path))
    assert r.returncode == 2 and "plans 4 TPU(s) for 2 segment(s)" in r.stderr and r.stderr.count("\n") == 1


def test_partition_with_replicas_then_run_pipeline(tmp_path):
    """What partition writes by default (segments with replicas) runs as it is, without --tpus."""
    partition(crafting.EMBEDDED, 3, tmp_path)
    plan = json.loads(next(tmp_path.glob("*_plan.json")).read_text())
    r = run_pipeline(str(tmp_path), "--json", "--count", "30")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["tpus"] == 3 and doc["num_segments"] == plan["num_segments"] and doc["verified"] is True
    assert [s["replicas"] for s in doc["stages"]] == [s["replicas"] for s in plan["segments"]]
    assert doc["bottleneck_ms"] == pytest.approx(doc["predicted_period_ms"], rel=0.02)
    assert doc["predicted_period_ms"] == pytest.approx(plan["predicted_bottleneck_ms"], rel=1e-6)


def test_plan_layouts(tmp_path):
    segs = [{"index": 0}, {"index": 1}]
    assert plan_layout({"segments": segs}) == Layout.one_per_segment(2)  # an older plan.json
    assert plan_layout({"tpus": 5, "segments": [{"replicas": 2}, {"replicas": 3}]}).devices == ((0, 1), (2, 3, 4))
    layout = plan_layout({"tpus": 4, "segments": [{"replicas": 1, "devices": [3]}, {"replicas": 2, "devices": [0, 2]}]})
    assert layout.replicas == (1, 2) and layout.replicated and layout.tpus == 4
    for bad in (
        {"tpus": 2, "segments": [{"replicas": 2}, {"replicas": 1}]},  # three TPUs wanted
        {"segments": [{"replicas": 0}]},
        {"segments": [{"replicas": 2, "devices": [0]}]},
        {"segments": [{"devices": [0]}, {"devices": [0]}]},
        {"segments": [{"replicas": True}]},
    ):
        with pytest.raises(RespectPassError, match="unreadable plan"):
            plan_layout(bad)


def test_coral_gets_each_tpu_of_the_plan(tmp_path, monkeypatch):
    """run_hardware passes the plan's replicas and one device per TPU, in plan order, to run_coral."""
    import respect_pass.run_pipeline as rp

    partition(crafting.EMBEDDED, 2, tmp_path, replicas=False)
    for p in tmp_path.glob("*_segment_*.tflite"):  # run_coral is replaced: the names are all it needs
        p.rename(p.with_name(p.stem + "_edgetpu.tflite"))
    path = next(tmp_path.glob("*_plan.json"))
    plan = json.loads(path.read_text())
    calls = []

    def fake_run_coral(paths, **kw):
        calls.append(kw)
        stages = [{"index": i, "ms": 1.0, "ms_in_pipeline": None, "file": str(p)} for i, p in enumerate(paths)]
        return {"backend": "coral", "devices": kw["devices"] or ["usb:0", "usb:1", "usb:2"], "stages": stages}

    monkeypatch.setattr(rp, "run_coral", fake_run_coral)
    monkeypatch.setattr(rp, "select_devices", lambda n: [f"usb:{9 - i}" for i in range(n)])
    plan.update(tpus=3, segments=[{**plan["segments"][0], "replicas": 1, "devices": [2]}, plan["segments"][1]])
    plan["segments"][1].update(replicas=2, devices=[0, 1])
    path.write_text(json.dumps(plan))
    segments = open_pipeline(tmp_path, 3, compiled=True).segments
    report = run_hardware(segments)
    assert calls[-1]["replicas"] == [1, 2] and calls[-1]["devices"] == ["usb:7", "usb:9", "usb:8"]
    assert report["tpus"] == 3 and [s["replicas"] for s in report["stages"]] == [1, 2]
    run_hardware(segments, devices=["pci:0", "usb:3", "usb:1"])
    assert calls[-1]["devices"] == ["pci:0", "usb:3", "usb:1"]  # the user's, in plan order
    with pytest.raises(RespectPassError, match="one per TPU"):
        run_hardware(segments, devices=["usb:0", "usb:1"])
    plan["segments"][0]["devices"], plan["segments"][1]["devices"] = [0], [1, 2]
    path.write_text(json.dumps(plan))
    run_hardware(segments)
    assert calls[-1]["devices"] is None and calls[-1]["replicas"] == [1, 2]  # in order: run_coral picks the TPUs


@pytest.mark.parametrize("times", [{"x": 1.0}, {"3": -1.0}, [1, 2], {"3": "fast"}])
def test_a_plan_with_unreadable_host_times_is_one_line(tmp_path, times):
    partition(crafting.EMBEDDED, 2, tmp_path, replicas=False)
    plan = next(tmp_path.glob("*_plan.json"))
    doc = json.loads(plan.read_text())
    doc["host_times"] = times
    plan.write_text(json.dumps(doc))
    r = run_pipeline(str(tmp_path))
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "host_times must map op indices to positive seconds" in r.stderr
