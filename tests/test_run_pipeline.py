import json
import subprocess
import sys
from pathlib import Path

import crafting
import pytest

from respect_pass import partition
from respect_pass.run_pipeline import find_segments
from tflite_io import RespectPassError

#: subprocess runs of run_pipeline: left out of ``make test-fast``
pytestmark = pytest.mark.slow


def run_pipeline(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "run_pipeline"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_sim_chains_and_verifies(tmp_path):
    partition(crafting.EMBEDDED, 3, tmp_path)
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
    assert summary.index("period") < summary.index("idle") < summary.index("under load")


def test_sim_without_plan_does_not_claim_verification(tmp_path):
    partition(crafting.EMBEDDED, 2, tmp_path)
    next(tmp_path.glob("*_plan.json")).unlink()
    doc = json.loads(run_pipeline("--tpus", "2", str(tmp_path), "--json").stdout)
    assert doc["verified"] is None


def test_wrong_count_and_missing_segment(tmp_path):
    partition(crafting.EMBEDDED, 3, tmp_path)
    r = run_pipeline("--tpus", "2", str(tmp_path))
    assert r.returncode == 2 and "K = [3]" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    next(tmp_path.glob("*_segment_1_of_3.tflite")).unlink()
    with pytest.raises(RespectPassError, match=r"missing segment\(s\) \[1\]"):
        find_segments(tmp_path, 3)
    r = run_pipeline("--tpus", "3", str(tmp_path / "nope"))
    assert r.returncode == 2 and "not a directory" in r.stderr


def test_sim_plot(tmp_path):
    seg = tmp_path / "seg"
    partition(crafting.EMBEDDED, 2, seg)
    png = tmp_path / "sim.png"
    r = run_pipeline("--tpus", "2", str(seg), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"
    r = run_pipeline("--tpus", "2", str(seg), "--plot", str(tmp_path / "nodir" / "x.png"))
    assert r.returncode == 2 and "existing directory" in r.stderr


def test_unreadable_plan_is_one_error_line(tmp_path):
    partition(crafting.EMBEDDED, 2, tmp_path)
    next(tmp_path.glob("*_plan.json")).write_text("{not json")
    r = run_pipeline("--tpus", "2", str(tmp_path))
    assert r.returncode == 2 and "unreadable plan" in r.stderr and r.stderr.count("\n") == 1
