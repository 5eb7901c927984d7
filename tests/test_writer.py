import struct

import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from crafting import EMBEDDED
from hypothesis import given, settings
from strategies import BRANCHY, examples, monotone_maps

from tflite_io import (
    OutputError,
    StageMapError,
    build_segments,
    contiguous_stage_map,
    read_model,
    segment_file_name,
    verify_segments,
    write_files,
    write_segments,
)


def _assert_chains(model, stages, k):
    _, blobs = build_segments(model, stages, k)
    report = verify_segments(model.data, blobs, trials=1)
    assert report.ok, report.mismatches
    assert report.tensors_checked >= k
    return blobs


@pytest.mark.slow
def test_every_two_way_cut_of_the_embedded_model_chains_bit_exactly(embedded_model):
    n = embedded_model.graph.num_ops
    for cut in range(1, n):
        _assert_chains(embedded_model, contiguous_stage_map([cut, n - cut]), 2)


BRANCHY_MODEL = read_model(BRANCHY)
EMBEDDED_MODEL = read_model(EMBEDDED)


@pytest.mark.slow
@settings(max_examples=examples(150), deadline=None)
@given(data=monotone_maps(BRANCHY_MODEL.graph, 2, 6))
def test_random_non_contiguous_maps_chain_bit_exactly(data):
    k, stages = data
    _assert_chains(BRANCHY_MODEL, stages, k)


@pytest.mark.slow
@settings(max_examples=examples(40), deadline=None)
@given(data=monotone_maps(EMBEDDED_MODEL.graph, 2, 6))
def test_random_maps_of_the_embedded_model_chain_bit_exactly(data):
    k, stages = data
    _assert_chains(EMBEDDED_MODEL, stages, k)


def test_random_maps_are_really_non_contiguous():
    import random

    from respect_pass.orders import random_stage_map

    rng = random.Random(1)
    maps = [random_stage_map(BRANCHY_MODEL.graph, 4, rng) for _ in range(30)]
    assert sum(list(m) != sorted(m) for m in maps) > 20


def test_multi_output_model_keeps_output_order():
    g = BRANCHY_MODEL.graph
    assert len(g.outputs) == 2
    n = g.num_ops
    interfaces, blobs = build_segments(BRANCHY_MODEL, contiguous_stage_map([5, n - 5]), 2)
    assert interfaces[-1].outputs == g.outputs


def test_precedence_violation_is_rejected(embedded_model):
    g = embedded_model.graph
    e = next(e for e in g.edges if e.src > 0 and e.dst < g.num_ops - 1)
    stages = [0] * g.num_ops
    for i in range(e.src, g.num_ops):
        stages[i] = 1
    stages[e.dst] = 0  # the consumer goes before its producer
    stages[-1] = 1
    with pytest.raises(StageMapError, match="precedence violated"):
        build_segments(embedded_model, stages, 2)


def test_segment_file_structure(embedded_model):
    g = embedded_model.graph
    k = 3
    stages = contiguous_stage_map([20, 20, g.num_ops - 40])
    interfaces, blobs = build_segments(embedded_model, stages, k)
    total_const = 0
    for seg, blob in zip(interfaces, blobs):
        assert blob[4:8] == b"TFL3"
        m = schema.ModelT.InitFromPackedBuf(blob, 0)
        assert m.buffers[0].data is None
        sg = m.subgraphs[0]
        assert len(sg.operators) == len(seg.ops)
        assert m.signatureDefs is None
        names = [t.name.decode() for t in sg.tensors]
        assert [names[i] for i in sg.inputs] == [g.tensors[t].name for t in seg.inputs]
        assert [names[i] for i in sg.outputs] == [g.tensors[t].name for t in seg.outputs]
        used_codes = {op.opcodeIndex for op in sg.operators}
        assert used_codes == set(range(len(m.operatorCodes)))
        const = [b for b in m.buffers[1:] if b.data is not None]
        meta = {md.buffer for md in m.metadata or []}
        total_const += sum(len(b.data) for i, b in enumerate(m.buffers) if i and i not in meta and b.data is not None)
        assert len(const) >= 1
        # quantization preserved for the input tensor
        t_in = sg.tensors[sg.inputs[0]]
        src = g.tensors[seg.inputs[0]].quantization
        assert tuple(np.asarray(t_in.quantization.scale, dtype=float)) == src.scale
    assert total_const == g.total_param_bytes  # every constant in exactly one segment here


def test_constant_buffers_are_16_byte_aligned(embedded_model):
    _, blobs = build_segments(embedded_model, contiguous_stage_map([30, embedded_model.graph.num_ops - 30]), 2)
    for blob in blobs:
        root = struct.unpack_from("<I", blob, 0)[0]
        model = schema.Model.GetRootAs(blob, 0)
        assert root > 0
        for i in range(1, model.BuffersLength()):
            buf = model.Buffers(i)
            if buf.DataLength():
                # DataAsNumpy is a view: its offset in the file is the vector start.
                start = buf._tab.Vector(buf._tab.Offset(4))
                assert start % 16 == 0


def test_write_segments_names_and_all_or_nothing(tmp_path, embedded_model):
    n = embedded_model.graph.num_ops
    paths = write_segments(embedded_model, contiguous_stage_map([10, n - 10]), 2, tmp_path / "out")
    assert [p.name for p in paths] == [segment_file_name("mobilenet_v2_0.35_96_int8", i, 2) for i in range(2)]
    assert all(p.is_file() for p in paths)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="is not a directory"):
        write_files(blocker / "sub", {"a": b"1"})
    nested = tmp_path / "new" / "deeper" / "out"
    write_files(nested, {"a": b"1"})
    assert (nested / "a").read_bytes() == b"1"
    assert [p.name for p in (tmp_path / "new" / "deeper").iterdir()] == ["out"]
    with pytest.raises(OutputError, match="not a directory"):
        write_files(blocker, {"a": b"1"})


def test_write_files_into_existing_directory_leaves_no_temporaries(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    write_files(tmp_path, {"a.bin": b"1", "b.bin": b"2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin", "keep.txt"]


def test_duplicate_boundary_names_are_rejected(embedded_model):
    import dataclasses

    g = embedded_model.graph
    stages = contiguous_stage_map([10, g.num_ops - 10])
    cut_tensor = next(t for t in g.ops[9].outputs)
    other = g.ops[3].outputs[0]
    tensors = list(g.tensors)
    tensors[other] = dataclasses.replace(tensors[other], name=tensors[cut_tensor].name)
    bad_graph = dataclasses.replace(g, tensors=tuple(tensors))
    bad = dataclasses.replace(embedded_model, graph=bad_graph)
    with pytest.raises(StageMapError, match="unique names"):
        build_segments(bad, stages, 2)


def test_a_new_output_directory_gets_the_umasks_permissions(tmp_path):
    import os

    from tflite_io import write_files

    old = os.umask(0o022)
    try:
        write_files(tmp_path / "open", {"a.txt": b"x"})
        os.umask(0o077)
        write_files(tmp_path / "closed", {"a.txt": b"x"})
    finally:
        os.umask(old)
    assert (tmp_path / "open").stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700
    assert (tmp_path / "closed").stat().st_mode & 0o777 == 0o700


def test_stale_segments_of_another_k_are_found_and_removed_after_the_write(tmp_path):
    from tflite_io import stale_segment_files, write_files

    names = [
        "m_segment_0_of_4.tflite",
        "m_segment_3_of_4_edgetpu.tflite",
        "m_segment_3_of_4_edgetpu.log",
        "m_segment_0_of_2.tflite",
        "other_segment_0_of_4.tflite",
        "m_plan.json",
    ]
    for n in names:
        (tmp_path / n).write_bytes(b"old")
    stale = stale_segment_files(tmp_path, "m", 2)
    assert stale == ["m_segment_0_of_4.tflite", "m_segment_3_of_4_edgetpu.log", "m_segment_3_of_4_edgetpu.tflite"]
    write_files(tmp_path, {"m_segment_0_of_2.tflite": b"new", "m_segment_1_of_2.tflite": b"new"}, remove=stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "m_plan.json",
        "m_segment_0_of_2.tflite",
        "m_segment_1_of_2.tflite",
        "other_segment_0_of_4.tflite",
    ]
    assert stale_segment_files(tmp_path / "missing", "m", 2) == []
