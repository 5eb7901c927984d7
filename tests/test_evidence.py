"""Real-model cases end to end, on the tiny evidence models of tools/build_evidence.py (tests/data/evidence/):
CPU heads and tails, custom ops with and without a LiteRT kernel, a float pre/post-processing model, a
dynamic batch, an LSTM, an already compiled model, and DeepLab's image pooling (a 1x1 resize that starts the
CPU tail, as in Google's compiled DeepLab v3; a TILE that maps, as in Google's compiled EdgeTPU-DeepLab-slim).
Expected placements follow Coral's rules (hardware.placement); see tests/data/evidence/README.md for each model's
op table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from respect_pass import partition
from respect_pass.partition import load_model

#: end-to-end runs on the evidence models: left out of ``make test-fast``
pytestmark = pytest.mark.slow

EVIDENCE = Path(__file__).resolve().parent / "data" / "evidence"

#: model -> (ops on the CPU, of which pinned to the first stage, extra CLI flags)
CASES = {
    "ssd_head_int8": ({17, 21, 22}, set(), []),  # DEQUANTIZE x2 + TFLite_Detection_PostProcess
    "posenet_like_int8": ({16}, set(), []),  # only the PosenetDecoderOp custom op
    "movenet_like": ({0, 1} | set(range(13, 26)), {0, 1}, []),  # CAST + float QUANTIZE head, float tail
    # the 1x1 -> 12x12 image-pooling RESIZE_BILINEAR and what depends on it (not op 10, the ASPP 1x1 conv)
    "deeplab_like_int8": ({9} | set(range(11, 16)), set(), []),
    # 1x1 -> 8x8 RESIZE_BILINEAR, CONCATENATION, two convs, the 8x8 -> 128x128 resize (within the size rule), ARG_MAX
    "deeplab_v3_aspp_int8": (set(range(11, 17)), set(), []),
    "deeplab_slim_tile_int8": ({15}, set(), []),  # TILE (op 10) and what follows map: only ARG_MAX
    "lstm_int8": (set(), set(), []),  # UNIDIRECTIONAL_SEQUENCE_LSTM maps
    "dynamic_batch_int8": (set(), set(), ["--fix-batch"]),
}


def cli(*args: str, tool: str = "respect_pass") -> subprocess.CompletedProcess:
    mod = "respect_pass.run_pipeline" if tool == "run_pipeline" else "respect_pass"
    return subprocess.run([sys.executable, "-m", mod, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.parametrize("name", sorted(CASES))
def test_inspect_shows_the_placement(name):
    cpu, _, flags = CASES[name]
    r = cli("inspect", str(EVIDENCE / f"{name}.tflite"), "--json", *flags)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {o["index"] for o in doc["ops"] if o["device"] == "cpu"} == cpu == set(doc["cpu_ops"])
    assert all(o["reason"] for o in doc["ops"]) and all(o["reason"] == "mapped" for o in doc["ops"] if o["device"] == "tpu")


@pytest.mark.parametrize("name", sorted(CASES))
def test_splits_at_k2_verifies_and_runs_in_the_sim(name, tmp_path):
    cpu, first, flags = CASES[name]
    path = EVIDENCE / f"{name}.tflite"
    before = path.read_bytes()
    out = tmp_path / "k2"
    r = cli(str(path), "-n", "2", "-o", str(out), "--verify", "--json", "--no-replicas", *flags)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    segs = doc["segments"]
    assert set(segs[0]["cpu_ops"]) == first and set(segs[1]["cpu_ops"]) == cpu - first  # the CPU tail goes last
    assert all(s["predicted_host_ms"] > 0 for s in segs if s["cpu_ops"])
    assert path.read_bytes() == before
    r = cli("--tpus", "2", str(out), "--json", tool="run_pipeline")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["verified"] is True
    assert report["verified_up_to"] == (["PosenetDecoderOp"] if name == "posenet_like_int8" else [])


@pytest.mark.parametrize("name", sorted(CASES))
def test_splits_at_k3_with_the_library(name, tmp_path):
    cpu, first, flags = CASES[name]
    model = load_model(EVIDENCE / f"{name}.tflite", fix_batch=bool(flags))
    result = partition(model.path, 3, tmp_path, verify=True, model=model, replicas=False)
    assert result.verify is not None and result.verify.ok
    segs = result.plan_doc["segments"]
    assert set(segs[0]["cpu_ops"]) == first and set(segs[-1]["cpu_ops"]) == cpu - first and not segs[1]["cpu_ops"]


def test_posenet_verification_stops_before_the_decoder_and_says_so(tmp_path):
    r = cli(str(EVIDENCE / "posenet_like_int8.tflite"), "-n", "2", "-o", str(tmp_path / "o"), "--verify")
    assert r.returncode == 0, r.stderr
    assert "verified up to PosenetDecoderOp only: LiteRT has no kernel for it" in r.stdout


def test_fix_batch_writes_static_segments(tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    r = cli(str(EVIDENCE / "dynamic_batch_int8.tflite"), "-n", "2", "-o", str(tmp_path), "--json", "--fix-batch")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["fixed_batch"]
    for seg in sorted(tmp_path.glob("*_segment_*.tflite")):
        m = schema.ModelT.InitFromPackedBuf(seg.read_bytes(), 0)
        assert all(t.shapeSignature is None or min(t.shapeSignature) >= 0 for t in m.subgraphs[0].tensors)


@pytest.mark.parametrize(
    "name,args,match",
    [
        ("compiled_edgetpu", [], "already compiled for the Edge TPU .* give the model from before edgetpu_compiler"),
        ("dynamic_batch_int8", [], "dynamic batch dimension .* rerun with --fix-batch"),
        ("lstm_int8", ["-n", "4", "--no-replicas"], r"number of segments must be between 1 and 3"),
        (
            "deeplab_like_int8",
            ["-n", "16", "--no-replicas"],
            r"between 1 and 11 \(the largest K that works: of the 16 ops, 6 go with the last segment\)",
        ),
    ],
)
def test_refusals_are_one_line_and_write_nothing(name, args, match, tmp_path):
    """(With replicas, more TPUs than the stages a model allows run replicas: see the next test.)"""
    import re

    out = tmp_path / "out"
    r = cli(str(EVIDENCE / f"{name}.tflite"), *(args or ["-n", "2"]), "-o", str(out))
    assert r.returncode == 2 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert re.search(match, r.stderr), r.stderr
    assert not out.exists()


def test_more_tpus_than_stages_run_replicas(tmp_path):
    """16 TPUs for a model that allows 11 stages: the plan uses every TPU, segments replicated, verified."""
    out = tmp_path / "o"
    r = cli(str(EVIDENCE / "deeplab_like_int8.tflite"), "-n", "16", "-o", str(out), "--verify", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["tpus"] == 16 and doc["num_segments"] <= 11
    assert sum(s["replicas"] for s in doc["segments"]) <= 16
    assert sorted(d for s in doc["segments"] for d in s["devices"]) == list(
        range(sum(s["replicas"] for s in doc["segments"]))
    )
    sim = cli(str(out), "--json", tool="run_pipeline")
    assert sim.returncode == 0, sim.stderr
    report = json.loads(sim.stdout)
    assert report["verified"] is True and report["tpus"] == 16


@pytest.mark.parametrize(
    "name,op,reason",
    [
        ("deeplab_like_int8", 9, "upsamples a 1x1 map"),
        ("deeplab_v3_aspp_int8", 11, "upsamples a 1x1 map"),
        ("deeplab_slim_tile_int8", 10, "mapped"),
    ],
)
def test_image_pooling_placement_and_its_reason(name, op, reason):
    """DeepLab's image pooling: Google's compiled DeepLab v3 leaves the 1x1 -> feature-map RESIZE_BILINEAR on the CPU
    (github.com/ricardodeazambuja/LibrEdgeTPU libredgetpu/postprocess/deeplabv3.py reads that file), Google's compiled
    EdgeTPU-DeepLab-slim maps its TILE (hardware.placement's docstring)."""
    from hardware.placement import place_ops
    from tflite_io import read_model

    g = read_model(EVIDENCE / f"{name}.tflite").graph
    placement = place_ops(g)
    assert g.ops[op].op_type == ("TILE" if "slim" in name else "RESIZE_BILINEAR")
    assert reason in placement[op].reason
    assert {p.index for p in placement if p.device == "cpu"} == CASES[name][0]
