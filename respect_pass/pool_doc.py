"""A pool's files: every model's segments and ``<stem>_plan.json``, and ``pool.json``; and reading them back.

``pool.json`` (keys as DESIGN.md's, and more)::

    {"tpus": N, "tpus_used": n, "objective": "weights"|"rates", "spec": ..., "prediction_error": ...,
     "unit_ms": ..., "bound": "tpu <i>"|"shared link"|"host", "own_tpus_throughput_ips": [...] | null,
     "unmet": [...], "solve_seconds": ...,
     "models": [{"model": path, "name": stem, "weight": w, "rate": r | null, "throughput_ips": x,
                 "latency_ms": alone (a shared TPU's switch in), "plan": "<stem>_plan.json", "group": g,
                 "switch_ms": ..., "reload_bytes": ..., "link_bytes": ..., "host_ms": ..., "switch_share": ...}],
     "tpu_groups": [{"tpus": [...], "models": [stem, ...], "mode": "own"|"cocompiled"|"separate",
                     "cocompile_order": [stem, ...], "compile_commands": ["edgetpu_compiler -s -o . ...", ...]}]}

Each model's plan.json is the single-model one (:func:`respect_pass.plan.plan_json`) with its segments'
``devices`` in the pool's TPU indices, ``tpus`` the pool's N, and ``pool``: "pool.json". A co-compiled
group's models are compiled by one command, in the group's order (the first model's parameters are cached
first); every other segment by a command of its own. :func:`pool_models` rebuilds the device model's
description of the pool (:class:`hardware.pool.PoolModel`) from these files, so ``run_pipeline`` simulates
exactly what was planned.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hardware import EdgeTpuSpec
from hardware.pool import FREE, ROUND_ROBIN, PoolModel, PoolStage
from tflite_io import (
    RespectPassError,
    TfliteModel,
    VerificationError,
    build_segments,
    segment_file_name,
    verify_model_segments,
)

from .partition import plan_file_name
from .plan import plan_json
from .pool import COCOMPILED, OWN, PoolPlan

__all__ = ["POOL_FILE", "pool_files", "pool_models", "read_pool"]

POOL_FILE = "pool.json"

log = logging.getLogger(__name__)


def _compile_commands(mode: str, files: Sequence[Sequence[str]]) -> list[str]:
    """The edgetpu_compiler command lines of a group (run in the output directory): one for a co-compiled
    group's files in its order, one per segment otherwise (segments on different TPUs must not share a cache)."""
    if mode == COCOMPILED:
        return ["edgetpu_compiler -s -o . " + " ".join(f for model in files for f in model)]
    return [f"edgetpu_compiler -s -o . {f}" for model in files for f in model]


def pool_files(
    plan: PoolPlan, models: Sequence[TfliteModel], spec: EdgeTpuSpec, verify: bool = False
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Every file of the pool by name (segments, plan.json per model, pool.json last) and the pool.json
    document; ``models`` in the plan's entry order. With ``verify`` every model's segments are first chained
    in LiteRT against it (:func:`tflite_io.verify_model_segments`): a mismatch is a
    :class:`tflite_io.VerificationError` naming the model, and nothing is returned."""
    files: dict[str, bytes] = {}
    seg_names: list[list[str]] = []
    for entry, model, p, costs in zip(plan.entries, models, plan.plans, plan.costs):
        interfaces, blobs = build_segments(model, p.stages, p.num_stages)
        if verify:
            report = verify_model_segments(model, p.stages, blobs)
            if not report.ok:
                raise VerificationError([f"{entry.name}: {m}" for m in report.mismatches])
            log.info("%s: %d boundary tensors bit-exact", entry.name, report.tensors_checked)
        names = [segment_file_name(entry.name, i, p.num_stages) for i in range(p.num_stages)]
        doc = plan_json(p, model.graph, interfaces, names, str(model.path.resolve()), costs)
        doc.update(
            tpus=plan.available,
            pool=POOL_FILE,
            spec=spec.name,
            prediction_error=spec.prediction_error,
            host_times={str(v): s for v, s in model.graph.host_times},
        )
        if model.fixed_batch:
            doc["fixed_batch"] = list(model.fixed_batch)
        files.update(zip(names, blobs))
        files[plan_file_name(entry.name)] = (json.dumps(doc, indent=2) + "\n").encode()
        seg_names.append(names)
    doc = _pool_document(plan, models, spec, seg_names)
    files[POOL_FILE] = (json.dumps(doc, indent=2) + "\n").encode()
    return files, doc


def _pool_document(
    plan: PoolPlan,
    models: Sequence[TfliteModel],
    spec: EdgeTpuSpec,
    seg_names: Sequence[Sequence[str]],
) -> dict[str, Any]:
    group_of = {m: g for g, group in enumerate(plan.groups) for m in group.models}
    rows = []
    for m, (entry, model, pm) in enumerate(zip(plan.entries, models, plan.models)):
        rows.append(
            {
                "model": str(model.path.resolve()),
                "name": entry.name,
                "weight": pm.weight,  # the interleave's proportion as planned (with rates: the rate, or less)
                "rate": entry.weight if plan.objective == "rates" else None,
                "throughput_ips": plan.throughput_ips[m],
                "latency_ms": pm.latency_s * 1e3,
                "plan": plan_file_name(entry.name),
                "group": group_of[m],
                "switch_ms": pm.switch_s * 1e3,
                "reload_bytes": pm.reload_bytes,
                "link_bytes": pm.link_bytes,
                "host_ms": pm.host_s * 1e3,
                "switch_share": plan.rates.switches[m],
            }
        )
    groups = [
        {
            "tpus": list(g.tpus),
            "models": [plan.entries[m].name for m in g.models],
            "mode": g.mode,
            "cocompile_order": [plan.entries[m].name for m in g.models] if g.mode == COCOMPILED else [],
            "compile_commands": _compile_commands(g.mode, [seg_names[m] for m in g.models]),
        }
        for g in plan.groups
    ]
    return {
        "tpus": plan.available,
        "tpus_used": plan.tpus,
        "objective": plan.objective,
        "spec": spec.name,
        "prediction_error": spec.prediction_error,
        "unit_ms": plan.rates.unit_s * 1e3,
        "bound": plan.rates.bound,
        "own_tpus_throughput_ips": list(plan.own.throughput_ips) if plan.own is not None else None,
        "unmet": list(plan.unmet),
        "solve_seconds": round(plan.solve_seconds, 6),
        "models": rows,
        "tpu_groups": groups,
    }


def read_pool(directory: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """``pool.json`` in ``directory`` and each model's plan.json (in pool order), checked; None without a
    pool.json. A malformed one is a :class:`RespectPassError` naming the file."""
    path = Path(directory) / POOL_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        plans = []
        for row in doc["models"]:
            plan_path = Path(directory) / str(row["plan"])
            if plan_path.parent != Path(directory) or not plan_path.is_file():
                raise ValueError(f"its plan {row['plan']!r} is not in the directory")
            plans.append(json.loads(plan_path.read_text()))
        _check_pool(doc, pool_models(doc, plans))
        return doc, plans
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise RespectPassError(f"{path}: unreadable pool ({exc})") from None


def _check_pool(doc: dict[str, Any], models: Sequence[PoolModel]) -> None:
    """Refuse a pool the device model cannot describe: no model, a weight that is not positive, a TPU index
    outside 0..tpus-1, a TPU of two groups, a shared group whose models are not on the same TPUs."""
    tpus = doc["tpus"]
    if not isinstance(tpus, int) or isinstance(tpus, bool) or tpus < 1:
        raise ValueError(f"tpus must be a positive whole number, got {tpus!r}")
    if not models:
        raise ValueError("it lists no model")
    owner: dict[int, int] = {}
    shared: dict[int, tuple[int, ...]] = {}
    for row, model in zip(doc["models"], models):
        if not (model.weight > 0 and model.weight < float("inf")):
            raise ValueError(f"{model.name}: weight must be a positive number, got {model.weight!r}")
        group = int(row["group"])
        for stage in model.stages:
            for d in stage.devices:
                if not 0 <= d < tpus:
                    raise ValueError(f"{model.name}: TPU {d} is not one of the pool's {tpus}")
                if owner.setdefault(d, group) != group:
                    raise ValueError(f"TPU {d} is in groups {owner[d]} and {group}")
            if stage.dispatch == ROUND_ROBIN and shared.setdefault(group, stage.devices) != stage.devices:
                raise ValueError(f"the models of shared group {group} are not on the same TPUs")


def pool_models(doc: dict[str, Any], plans: Sequence[dict[str, Any]]) -> tuple[PoolModel, ...]:
    """The device model's description of the pool (:class:`hardware.pool.PoolModel`, pool order) from
    pool.json and the models' plan.json: stage times as planned, own groups' stages on the first free of their
    TPUs, shared groups' round robin, switches, link bytes and host time as planned."""
    modes = [str(g["mode"]) for g in doc["tpu_groups"]]
    out = []
    for row, plan in zip(doc["models"], plans, strict=True):
        group = int(row["group"])
        shared = modes[group] != OWN
        stages = tuple(
            PoolStage(
                float(seg["predicted_ms"]) / 1e3,
                tuple(int(d) for d in seg["devices"]),
                ROUND_ROBIN if shared else FREE,
                group if shared else -1,
            )
            for seg in plan["segments"]
        )
        out.append(
            PoolModel(
                str(row["name"]),
                float(row["weight"]),
                stages,
                switch_s=float(row["switch_ms"]) / 1e3,
                reload_bytes=float(row["reload_bytes"]),
                link_bytes=float(row["link_bytes"]),
                host_s=float(row["host_ms"]) / 1e3,
            )
        )
    return tuple(out)
