"""hardware.host_time: host op times measured in LiteRT, the one-op models they run, and the disk cache."""

from __future__ import annotations

import hashlib
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from hardware import host_time
from hardware.host_time import HostTimes, edge_ops, measure_host_ops, op_interface, time_copy, time_edge_ops
from hardware.placement import placed
from tflite_io import read_model
from tflite_io.submodel import submodel

EVIDENCE = Path(__file__).parent / "data" / "evidence"
MODELS = ("deeplab_like_int8", "ssd_head_int8", "posenet_like_int8", "movenet_like")


def _load(name: str, tmp_path: Path):
    """A copy of evidence model ``name`` under tmp_path/models (so nothing can land next to the original)
    and its placed graph."""
    src = EVIDENCE / f"{name}.tflite"
    dst = tmp_path / "models" / src.name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst, placed(read_model(dst).graph)


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the interpreters host_time builds."""
    calls: list[int] = []
    real = host_time._interpreter

    def counting(data: bytes, threads: int):
        calls.append(threads)
        return real(data, threads)

    monkeypatch.setattr(host_time, "_interpreter", counting)
    return calls


@pytest.mark.parametrize("name", MODELS)
def test_every_host_op_measured_or_explained(name: str, tmp_path: Path) -> None:
    path, graph = _load(name, tmp_path)
    times = measure_host_ops(path, graph, runs=3, cache_dir=tmp_path / "cache")
    assert graph.host_ops
    assert set(times.seconds) | set(times.unmeasured) == set(graph.host_ops)
    assert not set(times.seconds) & set(times.unmeasured)
    assert all(math.isfinite(s) and 0 < s < 1.0 for s in times.seconds.values())
    assert all(isinstance(r, str) and r for r in times.unmeasured.values())
    assert times.host == host_time.host_id() and times.litert == host_time.litert_version()


def test_custom_ops(tmp_path: Path) -> None:
    path, graph = _load("posenet_like_int8", tmp_path)
    times = measure_host_ops(path, graph, cache_dir=tmp_path / "cache")
    assert dict(times.seconds) == {}
    assert "no kernel for custom op PosenetDecoderOp" in times.unmeasured[16]
    path, graph = _load("ssd_head_int8", tmp_path)
    times = measure_host_ops(path, graph, cache_dir=tmp_path / "cache")
    assert graph.ops[22].custom_code == "TFLite_Detection_PostProcess"
    assert sorted(times.seconds) == [17, 21, 22] and not times.unmeasured


def test_times_follow_the_work(tmp_path: Path) -> None:
    """A 192x192x21 ARG_MAX takes longer than the 1x17 FLOOR_DIV of the movenet tail and longer than its
    144x17 ARG_MAX."""
    deeplab, g1 = _load("deeplab_like_int8", tmp_path)
    movenet, g2 = _load("movenet_like", tmp_path)
    big = measure_host_ops(deeplab, g1, [15], cache_dir=tmp_path / "cache").seconds[15]
    small = measure_host_ops(movenet, g2, [15, 17], cache_dir=tmp_path / "cache").seconds
    assert g1.ops[15].op_type == g2.ops[15].op_type == "ARG_MAX" and g2.ops[17].op_type == "FLOOR_DIV"
    assert big > 10 * small[17] and big > 10 * small[15]


def test_one_op_model_matches_the_op_in_the_full_model() -> None:
    model = read_model(EVIDENCE / "deeplab_like_int8.tflite")
    graph = model.graph
    full = Interpreter(
        model_content=model.data,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    full.allocate_tensors()
    (d,) = full.get_input_details()
    full.set_tensor(d["index"], np.random.default_rng(1).integers(-128, 128, size=d["shape"], dtype=np.int8))
    full.invoke()
    for v in (14, 15):
        seg = op_interface(graph, v)
        assert seg.ops == (v,) and len(seg.inputs) == 1 and seg.outputs == graph.ops[v].outputs
        one = Interpreter(
            model_content=submodel(model.model, seg),
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        one.allocate_tensors()
        assert len(one.get_input_details()) == 1  # the size constant stayed inside
        one.set_tensor(one.get_input_details()[0]["index"], full.get_tensor(seg.inputs[0]))
        one.invoke()
        got = one.get_tensor(one.get_output_details()[0]["index"])
        want = full.get_tensor(seg.outputs[0])
        assert got.dtype == want.dtype and got.shape == want.shape == graph.tensors[seg.outputs[0]].shape
        np.testing.assert_array_equal(got, want)


def test_second_call_builds_nothing(tmp_path: Path, builds: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    path, graph = _load("posenet_like_int8", tmp_path)
    ssd, ssd_graph = _load("ssd_head_int8", tmp_path)
    first = (measure_host_ops(path, graph, cache_dir=cache), measure_host_ops(ssd, ssd_graph, cache_dir=cache))
    assert len(builds) == 4  # one per op: posenet's custom op, ssd's three host ops
    monkeypatch.setattr(host_time, "submodel", lambda *a: pytest.fail("built a one-op model"))
    second = (measure_host_ops(path, graph, cache_dir=cache), measure_host_ops(ssd, ssd_graph, cache_dir=cache))
    assert len(builds) == 4
    assert second == first  # the unmeasured reason is cached too
    files = sorted(p.name for p in (cache / "host_times").iterdir())
    assert len(files) == 4 and all(f.endswith(".json") for f in files)


def test_corrupt_cache_is_ignored(tmp_path: Path, builds: list[int], caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    path, graph = _load("deeplab_like_int8", tmp_path)
    first = measure_host_ops(path, graph, cache_dir=cache, runs=3)
    files = sorted((cache / "host_times").iterdir())
    files[0].write_text("{not json")
    files[1].write_text('{"key": 3, "seconds": -1}')
    with caplog.at_level(logging.DEBUG, logger="hardware.host_time"):
        again = measure_host_ops(path, graph, cache_dir=cache, runs=3)
    host = set(graph.host_ops)  # the image-pooling resize and what depends on it (hardware.placement)
    assert len(builds) == len(host) + 2 and set(again.seconds) == set(first.seconds) == host
    assert sum("ignoring cache file" in r.message for r in caplog.records) == 2
    assert not [p for p in (cache / "host_times").iterdir() if p.suffix != ".json"]  # no temporary left
    measure_host_ops(path, graph, cache_dir=cache, runs=3)
    assert len(builds) == len(host) + 2  # rewritten


@pytest.mark.parametrize("what", ["litert_version", "host_id", "threads", "runs"])
def test_cache_key_changes(what: str, tmp_path: Path, builds: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    path, graph = _load("deeplab_like_int8", tmp_path)
    measure_host_ops(path, graph, [14], cache_dir=cache, runs=3)
    kwargs = {"threads": 2} if what == "threads" else {"runs": 4} if what == "runs" else {}
    if what in ("litert_version", "host_id"):
        monkeypatch.setattr(host_time, what, lambda: "something else")
    times = measure_host_ops(path, graph, [14], cache_dir=cache, **{"runs": 3, **kwargs})
    assert len(builds) == 2 and len(list((cache / "host_times").iterdir())) == 2
    if what == "litert_version":
        assert times.litert == "something else"


def test_other_model_same_op_index_misses(tmp_path: Path, builds: list[int]) -> None:
    """Two models whose op 15 is an ARG_MAX: the model's sha256 (and the shapes) keep them apart."""
    cache = tmp_path / "cache"
    a, ga = _load("deeplab_like_int8", tmp_path)
    b, gb = _load("movenet_like", tmp_path)
    ta = measure_host_ops(a, ga, [15], cache_dir=cache)
    tb = measure_host_ops(b, gb, [15], cache_dir=cache)
    assert len(builds) == 2 and ta.seconds[15] != tb.seconds[15]


def test_model_untouched_and_cache_where_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, graph = _load("ssd_head_int8", tmp_path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setenv("RESPECT_PASS_CACHE", str(tmp_path / "env_cache"))
    assert host_time.default_cache_dir() == tmp_path / "env_cache"
    measure_host_ops(path, graph, runs=2)
    measure_host_ops(path, graph, runs=2, cache_dir=tmp_path / "explicit")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert len(list((tmp_path / "env_cache" / "host_times").glob("*.json"))) == 3
    assert len(list((tmp_path / "explicit" / "host_times").glob("*.json"))) == 3
    monkeypatch.delenv("RESPECT_PASS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert host_time.default_cache_dir() == tmp_path / "xdg" / "respect-pass"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert host_time.default_cache_dir() == tmp_path / "home" / ".cache" / "respect-pass"


def test_no_cache_in_the_source_tree(tmp_path: Path, builds: list[int], caplog: pytest.LogCaptureFixture) -> None:
    path, graph = _load("deeplab_like_int8", tmp_path)
    inside = Path(host_time.__file__).resolve().parent.parent / "tests" / "_host_time_cache_must_not_exist"
    with caplog.at_level(logging.WARNING, logger="hardware.host_time"):
        times = measure_host_ops(path, graph, [15], cache_dir=inside, runs=2)
        measure_host_ops(path, graph, [15], cache_dir=inside, runs=2)
    assert 15 in times.seconds and len(builds) == 2 and not inside.exists()
    assert any("not caching" in r.message for r in caplog.records)


def test_host_times_read_only_and_bad_arguments(tmp_path: Path) -> None:
    times = HostTimes({2: 1e-3, 1: 2e-3}, {}, "h", "v")
    assert list(times.seconds) == [1, 2]
    with pytest.raises(TypeError):
        times.seconds[3] = 1.0  # type: ignore[index]
    path, graph = _load("deeplab_like_int8", tmp_path)
    with pytest.raises(ValueError, match="not op indices"):
        measure_host_ops(path, graph, [99], cache_dir=tmp_path)
    with pytest.raises(ValueError, match="runs"):
        measure_host_ops(path, graph, runs=0, cache_dir=tmp_path)
    other, _ = _load("movenet_like", tmp_path)
    with pytest.raises(ValueError, match="ops"):
        measure_host_ops(other, graph, [15], cache_dir=tmp_path)


def test_edge_ops_and_copies(tmp_path: Path) -> None:
    path, graph = _load("movenet_like", tmp_path)
    assert edge_ops(graph) == (1, 13)  # the QUANTIZE after the CAST head, the DEQUANTIZE before the float tail
    assert set(time_edge_ops(path, graph, cache_dir=tmp_path / "cache", runs=3).seconds) == {1, 13}
    posenet, pg = _load("posenet_like_int8", tmp_path)
    assert edge_ops(pg) == (0, 13, 14, 15)  # input QUANTIZE, the three feeding the host decoder
    assert edge_ops(_load("deeplab_like_int8", tmp_path)[1]) == ()
    small, big = time_copy(1 << 10, runs=5), time_copy(32 << 20, runs=5)
    assert 0 < small < big and math.isfinite(big)
    with pytest.raises(ValueError):
        time_copy(-1)


def test_unwritable_cache_warns_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path, graph = _load("movenet_like", tmp_path)
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory would be")
    with caplog.at_level(logging.WARNING, logger="hardware.host_time"):
        times = measure_host_ops(path, graph, cache_dir=blocker, runs=2)
    assert set(times.seconds) == set(graph.host_ops)
    assert sum("cannot write" in r.message for r in caplog.records) == 1


def test_with_host_times_puts_the_measured_times_on_the_graph(tmp_path, caplog):
    path, graph = _load("deeplab_like_int8", tmp_path)
    timed = host_time.with_host_times(path, graph, "measured", cache_dir=tmp_path / "cache")
    assert sorted(timed.host_seconds) == sorted(graph.host_ops)
    assert all(math.isfinite(s) and s > 0 for s in timed.host_seconds.values())
    assert host_time.with_host_times(path, graph, "table") is graph
    with pytest.raises(ValueError, match="host time source"):
        host_time.with_host_times(path, graph, "guess")
    # an op LiteRT has no kernel for keeps the table, with one warning line for all of them
    path, graph = _load("posenet_like_int8", tmp_path)
    with caplog.at_level(logging.WARNING, logger="hardware.host_time"):
        timed = host_time.with_host_times(path, graph, "measured", cache_dir=tmp_path / "cache")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "PosenetDecoderOp" in warnings[0].getMessage()
    assert 16 in graph.host_ops and 16 not in timed.host_seconds


def test_measured_host_times_change_the_cost_of_host_ops_only(tmp_path):
    from hardware import USB, stage_costs

    path, graph = _load("deeplab_like_int8", tmp_path)
    timed = host_time.with_host_times(path, graph, "measured", cache_dir=tmp_path / "cache")
    table = stage_costs(graph, (0,) * graph.num_ops, 1, USB)[0]
    measured = stage_costs(timed, (0,) * graph.num_ops, 1, USB)[0]
    assert measured.compute_s == table.compute_s and measured.io_s == table.io_s
    handoff = measured.host_s - sum(timed.host_seconds.values())
    assert handoff == pytest.approx(
        table.host_s - sum(USB.cpu_op_s + graph.ops[v].macs / USB.cpu_macs_per_s for v in graph.host_ops)
    )
    slow = stage_costs(timed, (0,) * graph.num_ops, 1, USB.with_(host_op_scale=3.0))[0]
    assert slow.host_s - measured.host_s == pytest.approx(2 * sum(timed.host_seconds.values()))


def test_cpu_only_seconds_is_cached(tmp_path, builds):
    path, _ = _load("deeplab_like_int8", tmp_path)
    first = host_time.cpu_only_seconds(path, runs=2, cache_dir=tmp_path / "cache")
    again = host_time.cpu_only_seconds(path, runs=2, cache_dir=tmp_path / "cache")
    assert first == again > 0 and len(builds) == 1
