from pathlib import Path

import crafting
import pytest
from conftest import zoo_model
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import examples

from tflite_io import ModelFormatError, RespectPassError, UnsupportedModelError, read, read_model
from tflite_io.reader import parse_model

DATA = crafting.EMBEDDED.read_bytes()


def test_embedded_model_figures(embedded_model):
    g = embedded_model.graph
    assert g.num_ops == 64
    assert [op.index for op in g.ops] == list(range(64))
    assert g.ops[0].op_type == "CONV_2D" and g.ops[-1].op_type == "FULLY_CONNECTED"
    # MobileNetV2 alpha 0.35, 100 classes: a 1280x100 int8 classifier; its all-zero bias was
    # folded away by the converter, leaving an omitted optional input (-1).
    assert g.ops[-1].param_bytes == 1280 * 100
    assert g.ops[-1].inputs[2] == -1
    assert g.ops[-1].macs == 1280 * 100
    assert g.tensors[g.inputs[0]].shape == (1, 96, 96, 3)
    assert g.tensors[g.inputs[0]].dtype == "int8"
    assert g.tensors[g.inputs[0]].quantization is not None
    assert len(g.outputs) == 1 and g.output_ops == frozenset({63})
    # every op in execution order only reads earlier ops' outputs
    assert all(e.src < e.dst for e in g.edges)
    assert g.total_param_bytes == sum(op.param_bytes for op in g.ops)  # no constant shared here


def test_per_channel_quantization_is_kept(embedded_model):
    g = embedded_model.graph
    w = g.tensors[g.ops[0].inputs[1]]
    assert w.is_constant and len(w.quantization.scale) == w.shape[0]


@pytest.mark.parametrize(
    "make,error,match",
    [
        # an int8 CONV_2D writing a float tensor: LiteRT refuses to prepare it, and so do we (naming the op)
        (crafting.float_model, ModelFormatError, r"LiteRT cannot prepare op 0 \(CONV_2D\)"),
        (crafting.two_subgraphs, UnsupportedModelError, "2 subgraphs"),
        (crafting.dynamic_batch, UnsupportedModelError, "dynamic batch dimension .* rerun with --fix-batch"),
        (crafting.compiled, UnsupportedModelError, "already compiled for the Edge TPU .* from before edgetpu_compiler"),
        (crafting.bad_zero_point, ModelFormatError, r"LiteRT cannot prepare op \d+ \(CONV_2D\)"),
        (crafting.wrong_identifier, ModelFormatError, "file identifier is b'XYZ1'"),
        (lambda d: d[: len(d) // 3], ModelFormatError, "not a valid TFLite flatbuffer"),
        (lambda d: b"TFL", ModelFormatError, "too small"),
        (lambda d: b"\x00" * 1000, ModelFormatError, "file identifier"),
    ],
)
def test_bad_models_raise_one_domain_error(tmp_path, make, error, match):
    p = tmp_path / "bad.tflite"
    p.write_bytes(make(DATA))
    with pytest.raises(error, match=match):
        read(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelFormatError, match="no such file"):
        read(tmp_path / "nope.tflite")
    with pytest.raises(ModelFormatError, match="not a regular file"):
        read(tmp_path)


@settings(max_examples=examples(200), deadline=None)
@given(cut=st.integers(0, len(DATA) - 1))
def test_fuzz_truncation_only_raises_domain_errors(cut):
    with pytest.raises(RespectPassError):
        parse_model(DATA[:cut], Path("t.tflite"))


@pytest.mark.slow
@settings(max_examples=examples(300), deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, len(DATA) - 1), st.integers(1, 255)), min_size=1, max_size=8))
def test_fuzz_byte_flips_only_raise_domain_errors(flips):
    data = bytearray(DATA)
    for pos, mask in flips:
        data[pos] ^= mask
    try:
        m = parse_model(bytes(data), Path("f.tflite"))
    except RespectPassError:
        return
    # a flip inside weights or names still gives a well-formed graph
    assert m.graph.num_ops > 0


@pytest.mark.zoo
@pytest.mark.parametrize(
    "name,ops,params,macs",
    [
        # Published figures: MobileNetV2 1.0/224 ~3.5 M parameters, ~300 M MACs;
        # ResNet-50 ~25.6 M parameters, ~4.1 G (multiply-add) FLOPs (3.9 G MACs counted exactly).
        ("MobileNetV2", 64, 3.5e6, 300e6),
        ("ResNet50", 74, 25.6e6, 3.9e9),
    ],
)
def test_zoo_model_figures(name, ops, params, macs):
    g = read(zoo_model(name))
    assert g.num_ops == ops
    assert g.total_param_elements == pytest.approx(params, rel=0.03)
    assert g.total_macs == pytest.approx(macs, rel=0.03)
    assert all(op.op_type != "CUSTOM" for op in g.ops)


def test_read_model_keeps_bytes_and_tree(embedded_model):
    assert embedded_model.data == DATA
    assert embedded_model.model.subgraphs[0].operators is not None
    assert read_model(crafting.EMBEDDED).graph == embedded_model.graph


def test_custom_op_without_kernel_is_an_opaque_op(tmp_path):
    p = tmp_path / "custom.tflite"
    p.write_bytes(crafting.custom_op(DATA))
    m = read_model(p)
    last = m.graph.ops[-1]
    assert (last.op_type, last.custom_code, last.label) == ("CUSTOM", "MyFancyOp", "CUSTOM(MyFancyOp)")
    # LiteRT has no kernel for it: the rest of the model was prepared instead
    assert m.no_kernel_ops == frozenset({63})
    # an opaque op is costed by the elements it reads
    assert last.macs == sum(m.graph.tensors[t].num_elements for t in last.inputs if t >= 0)


def test_fix_batch_sets_the_batch_in_memory_only(tmp_path):
    p = tmp_path / "dyn.tflite"
    data = crafting.dynamic_batch(DATA)
    p.write_bytes(data)
    m = read_model(p, fix_batch=True)
    name = m.graph.tensors[m.graph.inputs[0]].name
    assert m.fixed_batch == (name,)
    assert m.model.subgraphs[0].tensors[m.graph.inputs[0]].shapeSignature is None
    assert p.read_bytes() == data  # the input file is never modified


def test_fix_batch_does_not_hide_other_dynamic_dimensions(tmp_path):
    def edit(m):
        t = m.subgraphs[0].tensors[m.subgraphs[0].inputs[0]]
        t.shapeSignature = [1, -1, -1, 3]

    p = tmp_path / "dyn_hw.tflite"
    p.write_bytes(crafting.mutate(DATA, edit))
    with pytest.raises(UnsupportedModelError, match="dynamic shape"):
        read_model(p, fix_batch=True)
