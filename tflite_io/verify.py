"""Chain segment models through the LiteRT interpreter and compare them with the full model.

The reference runs the whole model with ``experimental_preserve_all_tensors``
so every intermediate tensor is readable; the segments run one after the
other, each input bound by tensor name to a model input or an earlier
segment's output, exactly as pycoral's PipelinedModelRunner binds them. Every
boundary tensor and every final output must match bit for bit.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

__all__ = ["VerifyReport", "verify_segments", "random_inputs"]

_RESOLVER = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES


@dataclass(frozen=True)
class VerifyReport:
    """Outcome of a chained run: how many tensors were compared and what differed."""

    trials: int
    tensors_checked: int
    mismatches: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.mismatches


def _interpreter(data: bytes, preserve: bool = False) -> Interpreter:
    it = Interpreter(model_content=data, experimental_op_resolver_type=_RESOLVER,
                     experimental_preserve_all_tensors=preserve)
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


def verify_segments(model: bytes, segments: Sequence[bytes], trials: int = 2, seed: int = 0) -> VerifyReport:
    """Run ``trials`` random inputs through the model and the chained segments and compare."""
    rng = np.random.default_rng(seed)
    ref = _interpreter(model, preserve=True)
    index_of = {d["name"]: d["index"] for d in ref.get_tensor_details()}
    segs = [_interpreter(s) for s in segments]
    model_outputs = [d["name"] for d in ref.get_output_details()]
    last_outputs = [d["name"] for d in segs[-1].get_output_details()] if segs else []
    mismatches: list[str] = []
    if last_outputs != model_outputs:
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
                    diff = "" if want is None or got.shape != want.shape else (
                        f", max |diff| {int(np.max(np.abs(got.astype(np.int64) - want.astype(np.int64))))}")
                    mismatches.append(f"trial {trial}: segment {k} output '{d['name']}' differs{diff}")
                env[d["name"]] = got
    return VerifyReport(trials, checked, tuple(mismatches))
