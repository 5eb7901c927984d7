"""Multiply-accumulate counts of TFLite operators from tensor shapes (pure functions)."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

__all__ = ["op_macs", "MATMUL_OPS"]

Shape = Sequence[int]

#: Ops whose cost is counted as true multiply-accumulates (everything else: output elements).
MATMUL_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL"})


def op_macs(
    op_type: str,
    input_shapes: Sequence[Shape | None],
    output_shapes: Sequence[Shape],
    adj_x: bool = False,
) -> int:
    """MACs of one op.

    ``input_shapes`` follows the op's input order (``None`` for an omitted
    optional input). Convolutions: output elements x kernel window x input
    channels per group; fully connected: output elements x input features;
    transpose conv: input elements x kernel window x output channels; batch
    matmul: output elements x contraction size. Any other op counts the
    elements of its outputs (element-wise and pooling ops).
    """
    out_elems = sum(prod(s) for s in output_shapes)

    def given(i: int) -> Shape:
        shape = input_shapes[i]
        if shape is None:
            raise ValueError(f"{op_type}: input {i} has no shape")
        return shape

    if op_type == "CONV_2D":
        x, w = given(0), given(1)
        groups = max(1, x[-1] // w[-1]) if x and w and w[-1] else 1
        return prod(output_shapes[0]) * w[1] * w[2] * (x[-1] // groups)
    if op_type == "DEPTHWISE_CONV_2D":
        w = given(1)
        return prod(output_shapes[0]) * w[1] * w[2]
    if op_type == "FULLY_CONNECTED":
        w = given(1)
        return prod(output_shapes[0]) * w[-1]
    if op_type == "TRANSPOSE_CONV":
        w, x = given(1), given(2)
        return prod(x) * w[0] * w[1] * w[2]
    if op_type == "BATCH_MATMUL":
        x = given(0)
        k = x[-2] if adj_x else x[-1]
        return prod(output_shapes[0]) * k
    return out_elems
