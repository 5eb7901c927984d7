import numpy as np

from tflite_io import build_segments, contiguous_stage_map, verify_segments
from tflite_io.verify import random_inputs


def test_verify_detects_wrong_weights(embedded_model):
    from crafting import mutate

    n = embedded_model.graph.num_ops
    _, blobs = build_segments(embedded_model, contiguous_stage_map([20, n - 20]), 2)

    def perturb(m):
        sg = m.subgraphs[0]
        w = sg.tensors[sg.operators[0].inputs[1]]
        data = np.array(m.buffers[w.buffer].data, dtype=np.uint8)
        data[:64] ^= 0x5A
        m.buffers[w.buffer].data = data

    bad = [mutate(blobs[0], perturb), blobs[1]]
    report = verify_segments(embedded_model.data, bad, trials=1)
    assert not report.ok
    assert "segment 0 output" in report.mismatches[0]


def test_verify_detects_missing_producer(embedded_model):
    n = embedded_model.graph.num_ops
    _, blobs = build_segments(embedded_model, contiguous_stage_map([20, 20, n - 40]), 3)
    report = verify_segments(embedded_model.data, [blobs[0], blobs[2]], trials=1)
    assert not report.ok
    assert "produced by no earlier segment" in report.mismatches[0]


def test_verify_single_segment_is_the_model(embedded_model):
    report = verify_segments(embedded_model.data, [embedded_model.data], trials=2)
    assert report.ok and report.tensors_checked == 2


def test_random_inputs_cover_the_int8_range():
    rng = np.random.default_rng(0)
    x = random_inputs([{"name": "x", "dtype": np.int8, "shape": (1, 1000)}], rng)["x"]
    assert x.dtype == np.int8 and x.min() < -100 and x.max() > 100
