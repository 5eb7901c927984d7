import json

import pytest
from conftest import diamond_graph

from respect_pass.plan import Plan, plan_json
from tflite_io import segment_interfaces

KEYS = {
    "model",
    "tpus",
    "num_segments",
    "scheduler",
    "objective",
    "predicted_bottleneck_ms",
    "predicted_latency_ms",
    "optimal",
    "lower_bound_ms",
    "shared_link_ms",
    "solve_seconds",
    "segments",
    "scheduler_stats",
}
SEGMENT_KEYS = {"index", "file", "ops", "param_bytes", "predicted_ms", "replicas", "devices", "inputs", "outputs"}


def test_plan_json_keys_and_values():
    g = diamond_graph()
    plan = Plan((0, 1, 0, 1), 2, "compiler", stage_ms=(1.5, 2.0))
    doc = plan_json(plan, g, segment_interfaces(g, plan.stages, 2), ["a.tflite", "b.tflite"], "m.tflite")
    assert set(doc) == KEYS
    assert doc["predicted_bottleneck_ms"] == 2.0 and doc["predicted_latency_ms"] == 3.5
    assert [set(s) for s in doc["segments"]] == [SEGMENT_KEYS] * 2
    assert doc["segments"][0] == {
        "index": 0,
        "file": "a.tflite",
        "ops": [0, 2],
        "param_bytes": 1007,
        "predicted_ms": 1.5,
        "replicas": 1,
        "devices": [0],
        "inputs": ["x"],
        "outputs": ["a", "c"],
    }
    assert doc["tpus"] == 2 and doc["segments"][1]["devices"] == [1]
    assert doc["segments"][1]["inputs"] == ["a", "c"] and doc["segments"][1]["outputs"] == ["y"]
    json.dumps(doc)


def test_replicas_give_each_segment_its_tpus_in_order():
    g = diamond_graph()
    plan = Plan((0, 1, 0, 1), 2, "respect", stage_ms=(1.5, 2.0), replicas=(3, 2), tpus=6, period_ms=1.0)
    assert plan.stage_replicas == (3, 2) and plan.num_tpus == 6
    assert plan.devices() == ((0, 1, 2), (3, 4))
    doc = plan_json(plan, g, segment_interfaces(g, plan.stages, 2), ["a.tflite", "b.tflite"], "m.tflite")
    assert doc["tpus"] == 6 and doc["predicted_bottleneck_ms"] == 1.0  # the device model's period, as set
    assert [(s["replicas"], s["devices"]) for s in doc["segments"]] == [(3, [0, 1, 2]), (2, [3, 4])]
    assert Plan((0, 1, 0, 1), 2, "dp").stage_replicas == (1, 1)


def test_plan_without_predictions_has_nulls():
    plan = Plan((0, 0, 0, 0), 1, "compiler")
    assert plan.predicted_bottleneck_ms is None and plan.predicted_latency_ms is None
    assert plan.ops_of(0) == (0, 1, 2, 3)


def test_plan_stats_is_an_immutable_mapping_with_typed_reads():
    from respect_pass.plan import Plan, PlanStats

    plan = Plan((0, 1), 2, "dp", stats=(("bottleneck_ms", 2.5), ("orders", 3), ("best_order", "bfs")))
    assert isinstance(plan.stats, PlanStats) and dict(plan.stats) == {"bottleneck_ms": 2.5, "orders": 3, "best_order": "bfs"}
    assert plan.stats.number("orders") == 3.0 and plan.stats.text("best_order") == "bfs"
    assert plan.stats.number("missing", 7.0) == 7.0
    with pytest.raises(TypeError, match="'best_order' is text"):
        plan.stats.number("best_order")
    with pytest.raises(KeyError):
        plan.stats.number("missing")
    more = plan.stats.with_(orders=4)
    assert more["orders"] == 4 and plan.stats["orders"] == 3  # a copy; the plan's stats never change
    with pytest.raises(TypeError):
        plan.stats["orders"] = 5  # type: ignore[index]
    assert hash(plan) == hash(Plan((0, 1), 2, "dp", stats=dict(plan.stats)))
