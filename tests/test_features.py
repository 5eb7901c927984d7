"""The policy's inputs (respect_pass/policy/features.py) stay what the shipped checkpoint was trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hardware import EdgeTpuSpec
from hardware.placement import placed
from respect_pass.generator import generate
from respect_pass.policy.features import NUM_FEATURES, graph_arrays, node_features
from tflite_io import read_model

DATA = Path(__file__).parent / "data"
#: The presets the arrays were stored with (commit 0517ae5; the presets were refitted since, issue 23)
_USB_0517AE5 = EdgeTpuSpec(
    name="usb",
    efficiency={"conv": 0.873, "depthwise": 0.0316},
    elementwise_s_per_byte=3.24e-10,
    cpu_op_s=2e-5,
    t_invoke_s=0.000117,
    stream_bytes_per_s=4.37e8,
    io_bytes_per_s=8.89e7,
    shared_link_bytes_per_s=5e8,
)
SPECS = {
    "usb": _USB_0517AE5,
    "pcie": _USB_0517AE5.with_(name="pcie", t_invoke_s=0.000117 / 2, io_bytes_per_s=4e8, shared_link_bytes_per_s=0.0),
}


def _cases():
    """(key, graph, spec name, K) of every array in tests/data/policy_inputs.npz."""
    inception = placed(read_model(DATA / "tiny_inception_int8.tflite").graph)
    cases = [(f"tiny_inception_{s}_{k}", inception, s, k) for s in ("usb", "pcie") for k in (2, 4, 8)]
    return cases + [(f"nas_cell_60_1_usb_{k}", generate("nas_cell", 60, 1), "usb", k) for k in (2, 4, 8)]


@pytest.mark.parametrize("key, graph, spec, k", _cases(), ids=lambda v: v if isinstance(v, str) else None)
def test_features_equal_those_the_checkpoint_was_trained_on(key, graph, spec, k):
    """The normalisers come from hardware.terms (one_tpu_terms, link_seconds, own_seconds); the arrays
    stored from the code before that move (commit 0517ae5) must come back bit for bit."""
    stored = np.load(DATA / "policy_inputs.npz")[key]
    features = node_features(graph_arrays(graph, SPECS[spec]), k)
    assert features.shape == stored.shape == (graph.num_ops, NUM_FEATURES)
    assert np.array_equal(features, stored)
