"""``run_pipeline DIR`` on a pool directory: the models of ``pool.json`` (:mod:`respect_pass.pool_doc`) together.

``sim``: each model's segments are chained through LiteRT against the original model its plan.json names
(bit-exact, the single-model check of :mod:`respect_pass.run_pipeline`; a model whose file is gone is not
checked, ``verified`` null), then the pool as planned (:func:`respect_pass.pool_doc.pool_models`) goes
request by request through :func:`hardware.pool_sim.simulate_pool` beside the device model's prediction
(:func:`hardware.pool.pool_rates`); every figure is the device model's, under the spec pool.json names.

``coral``: the compiled segments (``<stem>_segment_<i>_of_<S>_edgetpu.tflite``, what pool.json's compile
commands write) run on the pool's Edge TPUs, TPU index i on the i-th Edge TPU (``--devices`` or the ones
found). Each model gets one :class:`hardware.runner.LiteRtPipelinedRunner` whose stage replicas are
interpreters on the TPUs of its plan; a shared group's TPUs hold an interpreter of every model of the
group (a co-compiled group's files share the TPU's cache as compiled), so such a TPU has one runner thread
per model and the runtime serialises their invokes; within a model a request takes whichever of its
replicas is free (not the planned round robin). After warm-up and the one-by-one reference run of each
model (:mod:`hardware.coral`), ``count`` single requests go through the idle pool in the interleaved order
(idle latency), then ``count`` requests are pushed interleaved by weight (:func:`hardware.pool.interleave`)
from one thread, request i not before request i - ``in_flight`` was popped (the simulation's window);
one thread per model pops its results in its own order, checks each against the reference and stamps it.
Per model: throughput from its first to its last pop, latency from push to pop (p50, p99), all measured.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hardware import EdgeTpuSpec, load_spec
from hardware.coral import InterpreterFactory, _check, _check_compiled, _open, _reference_requests, _warm_replicas
from hardware.devices import CoralError, make_edgetpu_interpreter, parse_devices, require_edgetpu_runtime, select_devices
from hardware.pool import interleave, pool_rates, pool_tpus
from hardware.pool_sim import default_in_flight, simulate_pool
from hardware.progress import ProgressFactory, no_progress
from hardware.runner import LiteRtPipelinedRunner
from hardware.runtime_probe import probe_runtime
from tflite_io import RespectPassError, read_model, segment_file_name

from .partition import planning_spec
from .pool_doc import POOL_FILE, pool_models
from .run_pipeline import SegmentSet, _plan_model, _verify

__all__ = ["MIN_CORAL_REQUESTS", "MIN_SIM_REQUESTS", "format_pool", "run_pool", "run_pool_coral", "run_pool_sim"]

#: The fewest requests of each model a simulated / a coral pool run pushes (``--count`` is raised to it).
MIN_SIM_REQUESTS, MIN_CORAL_REQUESTS = 200, 10


def _scaled_count(count: int, weights: Sequence[float], least: int) -> int:
    """``count`` requests in all, or more, so that the lightest model gets at least ``least`` of them."""
    return max(count, math.ceil(least * sum(weights) / min(weights) - 1e-9))


def _bad(directory: Path, exc: Exception) -> RespectPassError:
    return RespectPassError(f"{directory / POOL_FILE}: unreadable pool ({exc})")


def _segment_paths(directory: Path, plan: dict[str, Any], name: str, compiled: bool, doc: dict[str, Any]) -> list[Path]:
    """The model's segment files in stage order; a missing one is one error line."""
    count = len(plan["segments"])
    paths = [directory / segment_file_name(name, i, count) for i in range(count)]
    if compiled:
        paths = [p.with_name(p.stem + "_edgetpu.tflite") for p in paths]
    missing = [p.name for p in paths if not p.is_file()]
    if missing and compiled:
        commands = [str(c) for g in doc["tpu_groups"] for c in g["compile_commands"]]
        raise RespectPassError(
            f"{directory}: no compiled segment(s) {', '.join(missing)}; run the compile commands of {POOL_FILE} "
            f"(tpu_groups' compile_commands) in {directory} first, e.g. '{commands[0] if commands else 'edgetpu_compiler'}'"
        )
    if missing:
        raise RespectPassError(f"{directory}: {name} is missing segment(s) {', '.join(missing)} that {POOL_FILE} names")
    return paths


def _verify_model(directory: Path, row: dict[str, Any], plan: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    """One model's segments chained against its original model (run_pipeline's check): verified true, or null
    with a note where the model is not there; a mismatch is one error line naming the model."""
    name = str(row["name"])
    if not isinstance(plan.get("model"), str):
        raise _bad(directory, ValueError(f"the plan of {name} names no model"))
    paths = _segment_paths(directory, plan, name, False, doc)
    blobs = [read_model(p).data for p in paths]
    planned = _plan_model(SegmentSet(name, tuple(paths), False), plan)
    if planned is None:
        return {"verified": None, "verified_up_to": [], "note": f"{plan['model']} is not there: segments not checked"}
    try:
        verified, upto = _verify(planned, blobs)
    except RespectPassError as exc:
        raise RespectPassError(f"{name}: {exc}") from None
    return {"verified": verified, "verified_up_to": list(upto), "note": None}


def run_pool_sim(
    directory: str | Path, doc: dict[str, Any], plans: Sequence[dict[str, Any]], spec: EdgeTpuSpec, count: int = 100
) -> dict[str, Any]:
    """Verify every model's segments, then simulate the pool (at least :data:`MIN_SIM_REQUESTS` requests of each
    model, no jitter: the single-model simulation's default) beside the prediction. ``spec`` as given."""
    d = Path(directory)
    checks = [_verify_model(d, row, plan, doc) for row, plan in zip(doc["models"], plans)]
    models = pool_models(doc, plans)
    weights = [m.weight for m in models]  # positive: read_pool checked them
    try:
        total = _scaled_count(count, weights, MIN_SIM_REQUESTS)
        window = default_in_flight(weights, pool_tpus(models))
        rates = pool_rates(models, spec)
        run = simulate_pool(models, spec, count=total, in_flight=window, jitter=0.0, seed=0)
    except ValueError as exc:  # read_pool checks the pool; a pool built by hand may still not fit
        raise _bad(d, exc) from None
    rows = [
        {
            "model": row["model"],
            "name": m.name,
            "weight": m.weight,
            "throughput_ips": r.throughput_ips,
            "predicted_throughput_ips": pred,
            "latency_ms": r.latency_ms,
            "latency_p50_ms": r.latency_p50_ms,
            "latency_p99_ms": r.latency_p99_ms,
            "switches": r.switches,
            "count": r.count,
            **check,
        }
        for row, m, r, pred, check in zip(doc["models"], models, run.models, rates.throughput_ips, checks)
    ]
    return {
        "backend": "sim",
        "pool": True,
        "tpus": doc["tpus"],
        "tpus_used": len(run.tpu_busy),
        "spec": spec.name,
        "prediction_error": spec.prediction_error,
        "error_line": spec.error_line(),
        "verified": True if all(c["verified"] is True for c in checks) else None,  # a mismatch raised
        "count": run.count,
        "in_flight": window,
        "makespan_ms": run.makespan_ms,
        "models": rows,
        "tpu_busy": list(run.tpu_busy),
        "predicted_tpu_busy": [b / rates.unit_s for b in rates.tpu_busy_s],
        "bound": rates.bound,
        "groups": _groups(doc),
    }


def _groups(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"tpus": g["tpus"], "models": g["models"], "mode": g["mode"]} for g in doc["tpu_groups"]]


def run_pool_coral(
    directory: str | Path,
    doc: dict[str, Any],
    plans: Sequence[dict[str, Any]],
    count: int = 100,
    warmup: int = 10,
    devices: Sequence[str] | None = None,
    progress: ProgressFactory = no_progress,
    interpreter_factory: InterpreterFactory | None = None,
    in_flight: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run every model of the pool on its Edge TPUs together (module docstring) and report what was measured.
    ``devices``: one Edge TPU per pool TPU index (default: the ones found, in order); ``interpreter_factory``
    replaces the Edge TPU interpreter (tests), skipping the compiled-file and runtime checks; ``in_flight``:
    default twice the TPUs plus one interleave cycle, as the simulation."""
    d = Path(directory)
    models = pool_models(doc, plans)
    names = [m.name for m in models]
    paths = [_segment_paths(d, plan, name, True, doc) for plan, name in zip(plans, names)]
    weights = [m.weight for m in models]  # positive: read_pool checked them
    tpus = pool_tpus(models)
    if interpreter_factory is None:
        _check_compiled([p for ps in paths for p in ps])
        require_edgetpu_runtime()
    found = select_devices(tpus, devices, demand=f"a pool on {tpus} TPUs")
    # a runtime built for another LiteRT may crash the process: tried in a child first (as run_coral does)
    runtime = probe_runtime([ps[0] for ps in paths], found[0]).runtime if interpreter_factory is None else None
    factory = interpreter_factory or make_edgetpu_interpreter
    total = _scaled_count(count, weights, MIN_CORAL_REQUESTS)
    window = in_flight or default_in_flight(weights, tpus)
    placed = [[[found[t] for t in s.devices] for s in m.stages] for m in models]
    with contextlib.ExitStack() as stack:
        runners, refs = [], []
        for k, (name, ps, where) in enumerate(zip(names, paths, placed)):
            groups = _open(ps, [len(w) for w in where], [t for w in where for t in w], factory)
            refs.append(_reference_requests([g[0] for g in groups], total, seed + k))
            _warm_replicas(groups, ps, where, refs[k].feeds, warmup)
            labels = [[f"on {t}" if len(w) == 1 else f"replica {j} on {t}" for j, t in enumerate(w)] for w in where]
            segs = [f"{name} segment {i} ({p.name})" for i, p in enumerate(ps)]
            runners.append(stack.enter_context(LiteRtPipelinedRunner(groups, segs, replica_names=labels)))
        idle = _idle(runners, refs, names, weights, max(warmup, 0), total)
        for r in runners:
            r.reset_stage_times()
        sequence = interleave(weights, total)
        pushed, popped = _loaded(runners, refs, names, sequence, window, progress)
        in_pipeline = [[float(np.median(t)) * 1e3 if t else None for t in r.stage_times_s()] for r in runners]
        for name, r in zip(names, runners):
            r.push({})
            if r.pop() is not None:
                raise CoralError(f"{name}'s pipeline returned more results than were pushed")
    rows = []
    for k, (row, m) in enumerate(zip(doc["models"], models)):
        mine = np.flatnonzero(sequence == k)
        span = float(popped[mine[-1]] - popped[mine[0]])
        latency = (popped[mine] - pushed[mine]) * 1e3
        rows.append(
            {
                "model": row["model"],
                "name": m.name,
                "weight": m.weight,
                "throughput_ips": (len(mine) - 1) / span if span > 0 else float("inf"),
                "planned_throughput_ips": row.get("throughput_ips"),
                "latency_ms": float(np.median(idle[k])) * 1e3,
                "latency_p50_ms": float(np.percentile(latency, 50)),
                "latency_p99_ms": float(np.percentile(latency, 99)),
                "count": len(mine),
                "stages": [
                    {"index": i, "devices": w, "ms_in_pipeline": ms, "file": str(p)}
                    for i, (w, ms, p) in enumerate(zip(placed[k], in_pipeline[k], paths[k]))
                ],
            }
        )
    return {
        "backend": "coral",
        "pool": True,
        "runner": "litert",
        "runtime": runtime,
        "tpus": doc["tpus"],
        "devices": found[:tpus],
        "count": total,
        "in_flight": window,
        "throughput_ips": (total - 1) / float(popped.max() - popped.min()),
        "verified": None,
        "models": rows,
        "groups": _groups(doc),
    }


def _idle(
    runners: Sequence[LiteRtPipelinedRunner],
    refs: Sequence[Any],
    names: Sequence[str],
    weights: Sequence[float],
    warmup: int,
    count: int,
) -> list[list[float]]:
    """Warm-up, then ``count`` single requests in the interleaved order through the idle pool: per model, the
    seconds from each push to its pop (each result checked)."""
    times: list[list[float]] = [[] for _ in runners]
    seen = [0] * len(runners)
    for i, k in enumerate(interleave(weights, warmup * len(runners) + count)):
        ref, j = refs[k], seen[k]
        t0 = time.perf_counter()
        runners[k].push(ref.feeds[j % len(ref.feeds)])
        out = runners[k].pop()
        if i >= warmup * len(runners):
            times[k].append(time.perf_counter() - t0)
        _check(out, ref.expected[j % len(ref.feeds)], f"{names[k]}'s request {j} alone")
        seen[k] += 1
    return times


def _loaded(
    runners: Sequence[LiteRtPipelinedRunner],
    refs: Sequence[Any],
    names: Sequence[str],
    sequence: np.ndarray,
    window: int,
    progress: ProgressFactory,
) -> tuple[np.ndarray, np.ndarray]:
    """Push ``sequence`` (model per request) from this thread, request i once request i - ``window`` was popped;
    one thread per model pops and checks its results in its order. Returns push and pop times (seconds)."""
    pushed, popped = np.full(len(sequence), np.nan), np.full(len(sequence), np.nan)
    errors: list[BaseException] = []
    cond = threading.Condition()

    def drain(k: int) -> None:
        try:
            ref = refs[k]
            for j, i in enumerate(np.flatnonzero(sequence == k)):
                out = runners[k].pop()
                t = time.perf_counter()
                _check(out, ref.expected[j % len(ref.feeds)], f"{names[k]}'s request {j} in the loaded pool")
                with cond:
                    popped[i] = t
                    cond.notify_all()
        except BaseException as exc:  # surfaced by the pushing thread
            with cond:
                errors.append(exc)
                cond.notify_all()

    threads = [threading.Thread(target=drain, args=(k,), daemon=True) for k in range(len(runners))]
    for t in threads:
        t.start()
    seen = [0] * len(runners)
    try:
        with progress(total=len(sequence), desc="pool") as bar:
            for i, k in enumerate(sequence):
                with cond:
                    while not errors and i >= window and np.isnan(popped[i - window]):
                        cond.wait()
                    if errors:
                        raise errors[0]
                pushed[i] = time.perf_counter()
                runners[k].push(refs[k].feeds[seen[k] % len(refs[k].feeds)])
                seen[k] += 1
                bar.update(1)
            with cond:
                cond.wait_for(lambda: bool(errors) or not np.isnan(popped).any())
                if errors:
                    raise errors[0]
    finally:
        if errors or np.isnan(popped).any():
            for r in runners:
                r.close()  # ends every popping thread
        for t in threads:
            t.join(30)
    return pushed, popped


def run_pool(
    args: argparse.Namespace, doc: dict[str, Any], plans: Sequence[dict[str, Any]], progress: ProgressFactory = no_progress
) -> dict[str, Any]:
    """``run_pipeline DIR`` where DIR holds a pool: ``--tpus`` checked against pool.json, then either backend."""
    if args.tpus is not None and args.tpus != doc["tpus"]:
        raise RespectPassError(
            f"--tpus {args.tpus}, but {Path(args.dir) / POOL_FILE} is a pool of {doc['tpus']} TPU(s); "
            "leave --tpus out or plan the pool again"
        )
    if args.plot:
        raise RespectPassError("--plot draws one model's pipeline; it does not apply to a pool")
    if args.backend == "coral":
        if args.runner == "pycoral":
            raise RespectPassError("a pool runs on the litert runner only (pycoral's runs one model)")
        devices = parse_devices(args.devices) if args.devices else None
        return run_pool_coral(args.dir, doc, plans, args.count, max(args.warmup, 0), devices, progress)
    if args.devices is not None or args.runner != "auto":
        raise RespectPassError("--runner and --devices apply to --backend coral only")
    try:
        spec = load_spec(args.spec if args.spec is not None else str(doc["spec"]))
    except RespectPassError as exc:
        raise RespectPassError(f"{exc}" + (f"; {POOL_FILE} names this spec: give --spec" if not args.spec else "")) from None
    return run_pool_sim(args.dir, doc, plans, planning_spec(spec), args.count)


def format_pool(report: dict[str, Any]) -> str:
    """A table of the pool's models: simulated beside predicted (sim), or measured (coral)."""
    sim = report["backend"] == "sim"
    what = f"simulated ({report['spec']} spec)" if sim else f"measured ({report['runner']} runner)"
    head = f"{'model':<24} {'weight':>6}  {what.split()[0] + ' /s':>12}"
    head += f"  {'predicted /s':>12}  {'off':>7}" if sim else f"  {'planned /s':>12}"
    rows = [head + f"  {'idle ms':>8}  {'loaded p50':>10}  {'p99 ms':>8}  " + ("verified" if sim else "devices")]
    for m in report["models"]:
        line = f"{m['name']:<24} {m['weight']:>6g}  {m['throughput_ips']:>12.1f}"
        if sim:
            off = (m["throughput_ips"] / m["predicted_throughput_ips"] - 1) * 100
            line += f"  {m['predicted_throughput_ips']:>12.1f}  {off:>+6.1f}%"
        else:
            planned = m["planned_throughput_ips"]
            line += f"  {'-' if planned is None else f'{planned:.1f}':>12}"
        line += f"  {m['latency_ms']:>8.3f}  {m['latency_p50_ms']:>10.2f}  {m['latency_p99_ms']:>8.2f}  "
        if sim:
            line += "not checked: " + m["note"] if m["verified"] is None else "bit-exact"
        else:
            line += " | ".join(",".join(s["devices"]) for s in m["stages"])
        rows.append(line)
    groups = "; ".join(
        f"TPUs {','.join(map(str, g['tpus']))}: {', '.join(g['models'])} ({g['mode']})" for g in report["groups"]
    )
    rows.append(f"groups: {groups}")
    loaded = f"{report['count']} requests interleaved by weight, at most {report['in_flight']} in flight"
    if sim:
        busy = ", ".join(f"{b:.0%}" for b in report["tpu_busy"])
        busy_p = ", ".join(f"{b:.0%}" for b in report["predicted_tpu_busy"])
        on = f"{report['tpus_used']} of {report['tpus']}" if report["tpus_used"] != report["tpus"] else report["tpus"]
        rows.append(f"{what} on {on} TPUs: {loaded}; TPU busy {busy}")
        rows.append(f"predicted (device model, {report['spec']} spec): bound by {report['bound']}; TPU busy {busy_p}")
        rows.append(report["error_line"])
    else:
        rows.append(f"{what} on Edge TPUs {', '.join(report['devices'])}: {loaded}; {report['throughput_ips']:.1f}/s in all")
        rows.append(
            "idle ms: one request alone (median); loaded: push to pop with the pool full; planned: pool.json's prediction"
        )
    return "\n".join(rows)
