"""A pool's files (respect_pass/pool_doc.py): the embedded model planned twice under two names, written,
read back and turned into the device model's pool again with the same predicted rates; the compile commands
of co-compiled and own groups; malformed pool.json files refused, naming the file."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from hardware import USB, USB_SEPARATE
from hardware.pool import FREE, ROUND_ROBIN, pool_rates
from respect_pass.partition import load_model
from respect_pass.pool import COCOMPILED, OWN, SEPARATE, PoolEntry, plan_pool
from respect_pass.pool_doc import POOL_FILE, pool_files, pool_models, read_pool
from tflite_io import RespectPassError, write_files

EMBEDDED = Path(__file__).resolve().parent.parent / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"
#: a cache small enough (the model's 704840 parameter bytes do not fit) that an own group runs a pipeline
SMALL_CACHE = USB.with_(name="usb-small-cache", cache_bytes=400_000)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The embedded model under three names (copies ``one``, ``two``, ``three.tflite``), host ops from the table."""
    d = tmp_path_factory.mktemp("models")
    out = []
    for stem in ("one", "two", "three"):
        shutil.copy(EMBEDDED, d / f"{stem}.tflite")
        out.append(load_model(d / f"{stem}.tflite", host_time="table"))
    return out


def plan_for(models, tpus, spec, weights=(1.0, 2.0), **kw):
    entries = [PoolEntry(m.path.stem, m.graph, w) for m, w in zip(models, weights)]
    return plan_pool(entries, tpus, spec, **kw)


def round_trip(plan, models, spec, out: Path):
    files, doc = pool_files(plan, models[: len(plan.entries)], spec)
    write_files(out, files)
    read = read_pool(out)
    assert read is not None
    return files, doc, read


def assert_same_rates(got, want):
    assert got.unit_s == pytest.approx(want.unit_s, rel=1e-12)
    assert got.throughput_ips == pytest.approx(want.throughput_ips, rel=1e-12)
    assert got.tpu_busy_s == pytest.approx(want.tpu_busy_s, rel=1e-12)
    assert got.switches == pytest.approx(want.switches, rel=1e-12)
    assert got.bound == want.bound


@pytest.mark.parametrize(
    ("tpus", "spec"),
    [(1, USB), (2, USB), (3, USB_SEPARATE), (4, SMALL_CACHE), (5, SMALL_CACHE)],
    ids=["1-usb", "2-usb", "3-separate-links", "4-small-cache", "5-small-cache"],
)
def test_the_files_read_back_predict_the_planned_rates(models, tmp_path, tpus, spec):
    plan = plan_for(models, tpus, spec)
    files, doc, (read_doc, plans) = round_trip(plan, models, spec, tmp_path / "pool")
    assert list(files)[-1] == POOL_FILE and json.loads(files[POOL_FILE]) == doc == read_doc
    assert [p["pool"] for p in plans] == [POOL_FILE] * 2 and [p["tpus"] for p in plans] == [tpus] * 2
    rebuilt = pool_models(read_doc, plans)
    assert [m.name for m in rebuilt] == ["one", "two"]
    for got, want in zip(rebuilt, plan.models):
        assert (got.weight, got.switch_s, got.reload_bytes, got.link_bytes) == pytest.approx(
            (want.weight, want.switch_s, want.reload_bytes, want.link_bytes), rel=1e-12
        )
        assert got.host_s == pytest.approx(want.host_s, rel=1e-12, abs=1e-15)
        assert [(s.devices, s.dispatch, s.group) for s in got.stages] == [
            (s.devices, s.dispatch, s.group) for s in want.stages
        ]
        assert [s.seconds for s in got.stages] == pytest.approx([s.seconds for s in want.stages], rel=1e-12)
    assert_same_rates(pool_rates(rebuilt, spec), plan.rates)
    assert doc["unit_ms"] == pytest.approx(plan.rates.unit_s * 1e3) and doc["bound"] == plan.rates.bound
    assert doc["tpus"] == tpus and doc["tpus_used"] == plan.tpus and doc["objective"] == "weights"
    assert [row["throughput_ips"] for row in doc["models"]] == list(plan.throughput_ips)
    assert [row["rate"] for row in doc["models"]] == [None, None]
    assert [row["model"] for row in doc["models"]] == [str(m.path.resolve()) for m in models[:2]]
    for row, p in zip(doc["models"], plan.plans):  # each segment's TPUs in pool indices
        written = json.loads(files[row["plan"]])
        assert [s["devices"] for s in written["segments"]] == [list(d) for d in p.devices()]
        assert all(s["file"] in files for s in written["segments"])


def test_a_co_compiled_group_is_one_command_in_its_order(models, tmp_path):
    plan = plan_for(models, 1, USB)
    assert [(g.tpus, g.mode) for g in plan.groups] == [((0,), COCOMPILED)]
    _, doc, _ = round_trip(plan, models, USB, tmp_path)
    (group,) = doc["tpu_groups"]
    order = [plan.entries[m].name for m in plan.groups[0].models]
    assert group["mode"] == COCOMPILED and group["tpus"] == [0]
    assert group["models"] == group["cocompile_order"] == order
    want = "edgetpu_compiler -s -o . " + " ".join(f"{name}_segment_0_of_1.tflite" for name in order)
    assert group["compile_commands"] == [want]
    assert doc["own_tpus_throughput_ips"] is None  # one TPU for two models: no own-TPU plan
    assert [row["group"] for row in doc["models"]] == [0, 0]
    assert all(row["switch_share"] > 0 for row in doc["models"])
    rebuilt = pool_models(*read_pool(tmp_path))
    assert all(s.dispatch == ROUND_ROBIN and s.group == 0 for m in rebuilt for s in m.stages)


def test_an_own_group_compiles_each_segment_alone(models, tmp_path):
    plan = plan_for(models, 5, SMALL_CACHE)
    assert [g.mode for g in plan.groups] == [OWN, OWN]
    assert any(p.num_stages > 1 for p in plan.plans)
    _, doc, _ = round_trip(plan, models, SMALL_CACHE, tmp_path)
    assert doc["own_tpus_throughput_ips"] == list(plan.own.throughput_ips)
    for group, g in zip(doc["tpu_groups"], plan.groups):
        (m,) = g.models
        name, k = plan.entries[m].name, plan.plans[m].num_stages
        assert group["mode"] == OWN and group["cocompile_order"] == [] and group["tpus"] == list(g.tpus)
        assert group["compile_commands"] == [f"edgetpu_compiler -s -o . {name}_segment_{i}_of_{k}.tflite" for i in range(k)]
    rebuilt = pool_models(*read_pool(tmp_path))
    assert all(s.dispatch == FREE and s.group == -1 for m in rebuilt for s in m.stages)


def test_a_separately_compiled_group_compiles_each_model_alone(models, tmp_path):
    plan = plan_for(models, 1, USB)
    separate = dataclasses.replace(plan, groups=(dataclasses.replace(plan.groups[0], mode=SEPARATE),))
    _, doc = pool_files(separate, models[:2], USB)
    (group,) = doc["tpu_groups"]
    names = [plan.entries[m].name for m in plan.groups[0].models]
    assert group["mode"] == SEPARATE and group["cocompile_order"] == []
    assert group["compile_commands"] == [f"edgetpu_compiler -s -o . {n}_segment_0_of_1.tflite" for n in names]


def test_a_mixed_pool_of_three(models, tmp_path):
    plan = plan_for(models, 2, SMALL_CACHE, weights=(1.0, 1.0, 3.0))
    assert [(g.tpus, g.models, g.mode) for g in plan.groups] == [((0,), (0, 1), COCOMPILED), ((1,), (2,), OWN)]
    _, doc, (read_doc, plans) = round_trip(plan, models, SMALL_CACHE, tmp_path)
    assert [row["group"] for row in doc["models"]] == [0, 0, 1]
    assert [g["compile_commands"] for g in doc["tpu_groups"]] == [
        ["edgetpu_compiler -s -o . one_segment_0_of_1.tflite two_segment_0_of_1.tflite"],
        ["edgetpu_compiler -s -o . three_segment_0_of_1.tflite"],
    ]
    rebuilt = pool_models(read_doc, plans)
    assert [m.stages[0].dispatch for m in rebuilt] == [ROUND_ROBIN, ROUND_ROBIN, FREE]
    assert_same_rates(pool_rates(rebuilt, SMALL_CACHE), plan.rates)


def test_rates_are_written_as_rates(models, tmp_path):
    plan = plan_for(models, 4, USB, weights=(10.0, 20.0), rates=True)
    assert plan.unmet == () and plan.tpus == 1
    _, doc, _ = round_trip(plan, models, USB, tmp_path)
    assert doc["objective"] == "rates" and doc["tpus"] == 4 and doc["tpus_used"] == 1
    assert [row["rate"] for row in doc["models"]] == [10.0, 20.0] and doc["unmet"] == []


# -- malformed pool directories


@pytest.fixture
def written(models, tmp_path):
    plan = plan_for(models, 3, USB_SEPARATE)
    round_trip(plan, models, USB_SEPARATE, tmp_path)
    return tmp_path


def _edit(directory: Path, change) -> None:
    doc = json.loads((directory / POOL_FILE).read_text())
    change(doc)
    (directory / POOL_FILE).write_text(json.dumps(doc))


def _refused(directory: Path, what: str = "") -> None:
    with pytest.raises(RespectPassError, match=rf"{POOL_FILE}: unreadable pool.*{what}") as info:
        read_pool(directory)
    assert str(directory / POOL_FILE) in str(info.value)


@pytest.mark.parametrize("key", ["models", "tpu_groups"])
def test_a_missing_top_level_key_is_refused(written, key):
    _edit(written, lambda doc: doc.pop(key))
    _refused(written, key)


@pytest.mark.parametrize("key", ["plan", "group", "name", "weight", "switch_ms", "reload_bytes", "link_bytes", "host_ms"])
def test_a_missing_model_key_is_refused(written, key):
    _edit(written, lambda doc: doc["models"][1].pop(key))
    _refused(written, key)


@pytest.mark.parametrize("where", ["../one_plan.json", "sub/one_plan.json", "/etc/hostname", "", "."])
def test_a_plan_outside_the_directory_is_refused(written, where):
    _edit(written, lambda doc: doc["models"][0].update(plan=where))
    _refused(written, "is not in the directory")


def test_a_missing_plan_file_is_refused(written):
    (written / "two_plan.json").unlink()
    _refused(written, "'two_plan.json' is not in the directory")


@pytest.mark.parametrize(
    "text",
    ["{not json", "[]", '{"models": "one"}', '{"models": [], "tpu_groups": 3}', "\xff\xfe"],
)
def test_a_pool_json_that_is_not_a_pool_is_refused(written, text):
    (written / POOL_FILE).write_text(text, encoding="latin-1")
    _refused(written)


def test_wrong_types_and_counts_are_refused(written):
    _edit(written, lambda doc: doc["models"][0].update(weight="heavy"))
    _refused(written)


def test_a_group_index_out_of_range_is_refused(written):
    _edit(written, lambda doc: doc["models"][0].update(group=7))
    _refused(written)


def test_a_plan_without_segments_is_refused(written):
    plan = json.loads((written / "one_plan.json").read_text())
    del plan["segments"]
    (written / "one_plan.json").write_text(json.dumps(plan))
    _refused(written, "segments")


def test_no_pool_json_is_no_pool(written, tmp_path_factory):
    assert read_pool(tmp_path_factory.mktemp("empty")) is None
    assert read_pool(tmp_path_factory.mktemp("missing") / "nowhere") is None
    (written / POOL_FILE).unlink()
    assert read_pool(written) is None
    assert read_pool(str(written)) is None
