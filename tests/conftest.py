"""Shared fixtures: the embedded model, synthetic graphs, and zoo models built on demand."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from crafting import EMBEDDED
from hypothesis import settings

from tflite_io import Op, OpGraph, TensorInfo, read_model

#: ``HYPOTHESIS_PROFILE=dev`` (``make test-fast``): few examples; ``ci`` (default): hypothesis's defaults
settings.register_profile("dev", max_examples=10)
settings.register_profile("ci")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parent.parent
ZOO_CACHE = Path(os.environ.get("RESPECT_PASS_ZOO", ROOT / "zoo"))


@pytest.fixture(scope="session")
def embedded_path() -> Path:
    return EMBEDDED


@pytest.fixture(scope="session")
def embedded_model():
    return read_model(EMBEDDED)


def chain_graph(param_bytes: list[int], act_bytes: int = 100, name: str = "chain") -> OpGraph:
    """A hand-made chain: op i reads activation i and constant w_i, writes activation i+1."""
    n = len(param_bytes)
    tensors = [TensorInfo(i, f"a{i}", "int8", (act_bytes,), act_bytes) for i in range(n + 1)]
    ops = []
    for i, p in enumerate(param_bytes):
        tensors.append(TensorInfo(n + 1 + i, f"w{i}", "int8", (p,), p, buffer=1 + i))
        ops.append(Op(i, "CONV_2D", (i, n + 1 + i), (i + 1,), p, 10))
    return OpGraph(name, tuple(ops), tuple(tensors), (0,), (n,))


def diamond_graph() -> OpGraph:
    """x -> op0 -> a ; a -> op1 -> b ; a -> op2 -> c ; (b, c) -> op3 -> y, weight w shared by op1 and op2."""
    T = [
        TensorInfo(0, "x", "int8", (10,), 10),
        TensorInfo(1, "a", "int8", (20,), 20),
        TensorInfo(2, "b", "int8", (30,), 30),
        TensorInfo(3, "c", "int8", (40,), 40),
        TensorInfo(4, "y", "int8", (50,), 50),
        TensorInfo(5, "w", "int8", (1000,), 1000, buffer=1),
        TensorInfo(6, "w0", "int8", (7,), 7, buffer=2),
    ]
    ops = (
        Op(0, "CONV_2D", (0, 6), (1,), 7, 1),
        Op(1, "CONV_2D", (1, 5), (2,), 1000, 1),
        Op(2, "CONV_2D", (1, 5), (3,), 1000, 1),
        Op(3, "ADD", (2, 3), (4,), 0, 1),
    )
    return OpGraph("diamond", ops, tuple(T), (0,), (4,))


def zoo_model(name: str) -> Path:
    """Path of a zoo model, built with tools/build_zoo.py (tensorflow-cpu) if not cached."""
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow-cpu (the zoo extra) is not installed")
    from tools import build_zoo

    return build_zoo.build(build_zoo.BY_NAME[name.lower()], ZOO_CACHE)


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    """A fake edgetpu_compiler (tests/fake_edgetpu.py) first on PATH; FAKE_EDGETPU_MODE picks its log."""
    import fake_edgetpu

    script = fake_edgetpu.install(tmp_path / "fakebin")
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return script


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ``zoo`` test (it builds a keras.applications model with tensorflow-cpu) is also ``slow``: ``make test-fast``
    (``-m "not slow"``) leaves it out. Every other slow test carries ``@pytest.mark.slow`` (or its module's pytestmark)."""
    for item in items:
        if item.get_closest_marker("zoo") is not None and item.get_closest_marker("slow") is None:
            item.add_marker(pytest.mark.slow)
