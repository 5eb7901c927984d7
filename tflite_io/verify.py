"""Chain segment models through the LiteRT interpreter and compare them with the full model.

The reference runs the whole model with ``experimental_preserve_all_tensors``
so every intermediate tensor is readable; the segments run one after the
other, each input bound by tensor name to a model input or an earlier
segment's output, exactly as pycoral's PipelinedModelRunner binds them. Every
boundary tensor and every final output must match bit for bit.

A model with custom ops that LiteRT has no kernel for (``PosenetDecoderOp``)
cannot run whole: :func:`verify_model_segments` then checks the wiring of the
segment files by tensor name and runs the chain up to those ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from .reader import TfliteModel, descendants, runnable_interface
from .stages import segment_interfaces
from .submodel import submodel

__all__ = ["VerifyReport", "verify_segments", "verify_model_segments", "check_wiring", "random_inputs"]

_RESOLVER = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of a chained run: how many tensors were compared and what differed."""

    trials: int
    tensors_checked: int
    mismatches: tuple[str, ...]
    #: Custom ops with no LiteRT kernel that the chain stopped before (their wiring checked by name only).
    stopped_before: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _interpreter(data: bytes, preserve: bool = False) -> Interpreter:
    it = Interpreter(model_content=data, experimental_op_resolver_type=_RESOLVER, experimental_preserve_all_tensors=preserve)
    it.allocate_tensors()
    return it


def random_inputs(details: Sequence[dict], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random arrays over the full range of each input's integer type (name -> array)."""
    out = {}
    for d in details:
        dtype = np.dtype(d["dtype"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            lo, hi = max(int(info.min), -(2**15)), min(int(info.max), 2**15 - 1)
            out[d["name"]] = rng.integers(lo, hi, size=d["shape"], endpoint=True).astype(dtype)
        elif dtype.kind == "b":
            out[d["name"]] = rng.integers(0, 2, size=d["shape"]).astype(bool)
        else:
            out[d["name"]] = rng.standard_normal(d["shape"]).astype(dtype)
    return out


def verify_segments(
    model: bytes, segments: Sequence[bytes], trials: int = 2, seed: int = 0, same_outputs: bool = True
) -> VerifyReport:
    """Run ``trials`` random inputs through the model and the chained segments and compare.

    With ``same_outputs`` the last segment must also write exactly the model's outputs. A LiteRT
    failure (a model or segment it cannot prepare or run) is reported as a mismatch, never raised.
    """
    try:
        return _chain(model, segments, trials, seed, same_outputs)
    except (RuntimeError, ValueError) as exc:
        msg = " ".join(str(exc).split())
        return VerifyReport(0, 0, (f"LiteRT failed: {msg[:200]}",))


def _chain(model: bytes, segments: Sequence[bytes], trials: int, seed: int, same_outputs: bool) -> VerifyReport:
    rng = np.random.default_rng(seed)
    ref = _interpreter(model, preserve=True)
    index_of = {d["name"]: d["index"] for d in ref.get_tensor_details()}
    segs = [_interpreter(s) for s in segments]
    model_outputs = [d["name"] for d in ref.get_output_details()]
    last_outputs = [d["name"] for d in segs[-1].get_output_details()] if segs else []
    mismatches: list[str] = []
    if same_outputs and last_outputs != model_outputs:
        mismatches.append(f"last segment outputs {last_outputs} differ from model outputs {model_outputs}")
    checked = 0
    for trial in range(trials):
        feeds = random_inputs(ref.get_input_details(), rng)
        for d in ref.get_input_details():
            ref.set_tensor(d["index"], feeds[d["name"]])
        ref.invoke()
        env = dict(feeds)
        for k, seg in enumerate(segs):
            for d in seg.get_input_details():
                if d["name"] not in env:
                    mismatches.append(f"segment {k} input '{d['name']}' is produced by no earlier segment")
                    return VerifyReport(trial + 1, checked, tuple(mismatches))
                seg.set_tensor(d["index"], env[d["name"]])
            seg.invoke()
            for d in seg.get_output_details():
                got = seg.get_tensor(d["index"])
                want = ref.get_tensor(index_of[d["name"]]) if d["name"] in index_of else None
                checked += 1
                if want is None or got.dtype != want.dtype or got.shape != want.shape or not np.array_equal(got, want):
                    diff = (
                        ""
                        if want is None or got.shape != want.shape
                        else (f", max |diff| {int(np.max(np.abs(got.astype(np.int64) - want.astype(np.int64))))}")
                    )
                    mismatches.append(f"trial {trial}: segment {k} output '{d['name']}' differs{diff}")
                env[d["name"]] = got
    return VerifyReport(trials, checked, tuple(mismatches))


def _io_names(blob: bytes) -> tuple[list[str], list[str]]:
    m = schema.Model.GetRootAs(blob, 0)
    sg = m.Subgraphs(0)
    name = lambda t: sg.Tensors(t).Name().decode("utf-8", "replace")  # noqa: E731
    return ([name(sg.Inputs(i)) for i in range(sg.InputsLength())], [name(sg.Outputs(i)) for i in range(sg.OutputsLength())])


def check_wiring(model: bytes, segments: Sequence[bytes]) -> list[str]:
    """PipelinedModelRunner's binding rules, by tensor name, on the segment files: every segment input is a
    model input or an earlier segment's output, and the last segment writes exactly the model's outputs."""
    model_in, model_out = _io_names(model)
    known, problems = set(model_in), []
    for k, blob in enumerate(segments):
        ins, outs = _io_names(blob)
        problems += [f"segment {k} input '{t}' is produced by no earlier segment" for t in ins if t not in known]
        known.update(outs)
    if segments and _io_names(segments[-1])[1] != model_out:
        problems.append(f"last segment outputs {_io_names(segments[-1])[1]} differ from model outputs {model_out}")
    return problems


def verify_model_segments(
    model: TfliteModel, stages: Sequence[int], segments: Sequence[bytes], trials: int = 2, seed: int = 0
) -> VerifyReport:
    """Verify the segments of ``stages``: :func:`verify_segments` when LiteRT can run the whole model; else
    :func:`check_wiring` plus the chain of the segments' runnable parts against the model's runnable part."""
    if not model.no_kernel_ops:
        return verify_segments(model.data, segments, trials, seed)
    graph = model.graph
    problems = check_wiring(model.data, segments)
    dropped = descendants(graph, model.no_kernel_ops)
    kept = [v for v in range(graph.num_ops) if v not in dropped]
    names = tuple(sorted({graph.ops[v].custom_code for v in model.no_kernel_ops}))
    if not kept or problems:
        return VerifyReport(0, 0, tuple(problems), names)
    ref = submodel(model.model, runnable_interface(graph, kept))
    parts = []
    for seg in segment_interfaces(graph, stages, max(stages) + 1):
        ops = [v for v in seg.ops if v not in dropped]
        if ops:
            parts.append(submodel(model.model, runnable_interface(graph, ops)))
    report = verify_segments(ref, parts, trials, seed, same_outputs=False)
    return VerifyReport(report.trials, report.tensors_checked, report.mismatches, names)
