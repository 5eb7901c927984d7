"""``respect-pass sweep`` (library and command line) and the idle-stage check of a normal run."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import crafting
import pytest
from strategies import BRANCHY

from hardware import USB, USB_SEPARATE, pipeline_period_ms, stage_costs
from hardware.cost import shared_link_ms
from respect_pass.partition import load_model
from respect_pass.schedulers import get_scheduler
from respect_pass.sweep import IDLE_BELOW, SAME_PERIOD, SweepRow, idle_stage, recommend, sweep
from tflite_io import RespectPassError

ROW_KEYS = {
    "k",
    "bottleneck_ms",
    "latency_ms",
    "throughput_ips",
    "speedup_vs_1",
    "speedup_vs_compiler",
    "compiler_bottleneck_ms",
    "idle_stages",
    "segments",
    "replicas",
    "pipeline_bottleneck_ms",
    "copies_bottleneck_ms",
}
#: No per-invoke cost: stages after the input-bound first one are nearly idle, and more TPUs do not help.
NO_INVOKE = replace(USB, t_invoke_s=0.0)
#: ... and a 200x slower MAC array: compute-bound, so a fourth TPU helps although its first stage idles.
SLOW_MACS = replace(NO_INVOKE, peak_macs_per_s=USB.peak_macs_per_s * 0.005)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "respect_pass", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def graph():
    return load_model(crafting.EMBEDDED).graph


def costed(graph, scheduler, k, spec):
    """Period and stage times of ``scheduler``'s K-plan, by the reference cost model."""
    plan = get_scheduler(scheduler)(graph, k, spec)
    costs = stage_costs(graph, plan.stages, k, spec)
    return pipeline_period_ms(costs, spec), [c.ms for c in costs], plan


def with_costs(graph, plan, spec):
    """``plan`` with the predicted stage times and link bound ``partition`` gives it."""
    costs = stage_costs(graph, plan.stages, plan.num_stages, spec)
    return replace(plan, stage_ms=tuple(c.ms for c in costs), link_ms=shared_link_ms(costs, spec))


@pytest.mark.parametrize("scheduler", ["respect", "dp"])
def test_rows_match_plans_costed_independently(graph, scheduler):
    result = sweep(crafting.EMBEDDED, 5, USB, scheduler, replicas=False)
    assert [r.k for r in result.rows] == [1, 2, 3, 4, 5]
    assert result.scheduler == scheduler and result.spec == "usb" and result.model.endswith(crafting.EMBEDDED.name)
    one = costed(graph, scheduler, 1, USB)[0]
    for r in result.rows:
        period, times, _ = costed(graph, scheduler, r.k, USB)
        compiler = costed(graph, "compiler", r.k, USB)[0]
        assert r.bottleneck_ms == pytest.approx(period) and r.latency_ms == pytest.approx(sum(times))
        assert r.throughput_ips == pytest.approx(1e3 / period)
        assert r.compiler_bottleneck_ms == pytest.approx(compiler)
        assert r.speedup_vs_1 == pytest.approx(one / period)
        assert r.speedup_vs_compiler == pytest.approx(compiler / period)
        assert list(r.idle_stages) == ([i for i, t in enumerate(times) if t < IDLE_BELOW * period] if r.k > 1 else [])


def test_recommended_is_the_smallest_k_within_two_percent_of_the_best(graph):
    result = sweep(load_model(BRANCHY), 6, USB, "dp")
    best = max(r.throughput_ips for r in result.rows)
    close = [r.k for r in result.rows if r.throughput_ips >= best * (1 - SAME_PERIOD)]
    assert result.recommended == min(close)
    assert result.as_json()["recommended"] == result.recommended


def test_recommend_skips_missing_plans_and_ties():
    def row(k, ips):
        return SweepRow(k, None if ips is None else 1e3 / ips, None, ips, None, None, None)

    assert recommend([row(1, 100.0), row(2, 150.0), row(3, None), row(4, 152.0)]) == 2
    assert recommend([row(1, 100.0), row(2, 97.0)]) == 1
    assert recommend([row(1, None)]) is None


def test_period_includes_the_shared_link(graph):
    narrow = replace(USB, shared_link_bytes_per_s=2e7)  # the link, not a stage, bounds the period
    row = sweep(graph, 3, narrow, "dp", replicas=False).rows[2]
    period, times, _ = costed(graph, "dp", 3, narrow)
    assert row.bottleneck_ms == pytest.approx(period) and period > max(times)


def test_max_tpus_is_capped_with_a_note_and_missing_plans_are_rows_of_none():
    result = sweep(load_model(BRANCHY), 40, USB, "dp", replicas=False)
    assert [r.k for r in result.rows] == list(range(1, 34))
    assert any("at most 33 TPUs" in n for n in result.notes)
    failed = [r for r in result.rows if r.bottleneck_ms is None]  # dp has no contiguous split for some K
    assert failed and all(r.throughput_ips is None and r.speedup_vs_1 is None for r in failed)
    assert any(n.startswith(f"the dp scheduler found no plan for K = {failed[0].k}") for n in result.notes)


@pytest.mark.parametrize("spec", [USB, USB_SEPARATE], ids=lambda s: s.name)
def test_replicas_are_never_slower_than_the_pipeline_or_whole_model_copies(graph, spec):
    result = sweep(crafting.EMBEDDED, 6, spec, "respect")
    for r in result.rows:
        assert r.segments == len(r.replicas) and sum(r.replicas) <= r.k
        best = min(p for p in (r.pipeline_bottleneck_ms, r.copies_bottleneck_ms) if p is not None)
        assert r.bottleneck_ms <= best * (1 + 1e-9)
        assert r.copies_bottleneck_ms == pytest.approx(costed(graph, "respect", 1, spec)[0] / r.k, rel=1e-9)
    assert result.rows[-1].speedup_vs_1 >= 5.5  # the embedded model fits one TPU: about one copy per TPU


def test_replicas_go_past_the_stages_a_model_allows():
    result = sweep(load_model(BRANCHY), 40, USB, "dp")
    assert [r.k for r in result.rows] == list(range(1, 41)) and any("more TPUs run replicas" in n for n in result.notes)
    assert all(r.pipeline_bottleneck_ms is None for r in result.rows[33:])
    planned = [r for r in result.rows if r.bottleneck_ms is not None]  # dp has no contiguous split for some K
    assert result.rows[-1] in planned and all(sum(r.replicas) <= r.k for r in planned)
    assert result.rows[-1].bottleneck_ms < min(r.bottleneck_ms for r in planned if r.k <= 33)


def test_bad_arguments_raise():
    with pytest.raises(RespectPassError, match="at least 1"):
        sweep(crafting.EMBEDDED, 0)
    with pytest.raises(RespectPassError, match="number of TPUs must be between 1 and 64, got 1000"):
        sweep(crafting.EMBEDDED, 1000)  # replicas: the search grows with K^2
    with pytest.raises(RespectPassError, match="unknown scheduler"):
        sweep(crafting.EMBEDDED, 2, USB, "bogus")


# idle stages -----------------------------------------------------------------------------------------------


def test_idle_stage_fires_when_fewer_tpus_give_the_same_period(graph):
    _, times, plan = costed(graph, "respect", 3, NO_INVOKE)
    idle = idle_stage(graph, with_costs(graph, plan, NO_INVOKE), NO_INVOKE)
    assert idle is not None and idle.stage == min(range(3), key=times.__getitem__)
    # every idle stage is named, and the smallest K whose plan keeps the period: here one TPU
    period = idle.period_ms
    assert [i for i, _ in idle.stages] == [i for i, t in enumerate(times) if t < IDLE_BELOW * period] == [1, 2]
    assert idle.fewer_k == 1 and idle.k == 3 and idle.fewer_period_ms <= period * (1 + SAME_PERIOD)
    assert costed(graph, "respect", 1, NO_INVOKE)[0] == pytest.approx(idle.fewer_period_ms)
    assert idle.message.startswith("stages 1 (") and "K=1 gives the same period" in idle.message
    assert "the fewest TPUs that do" in idle.message


def test_idle_stage_is_quiet_where_it_should_be(graph):
    for spec, k in ((USB, 2), (USB, 4), (SLOW_MACS, 4)):
        _, times, plan = costed(graph, "respect", k, spec)
        assert idle_stage(graph, with_costs(graph, plan, spec), spec) is None, (spec.name, k)
    # usb: stages are at least 25% busy (the per-invoke cost); slow MACs: the idle stage's K - 1 is slower
    assert min(costed(graph, "respect", 4, USB)[1]) >= IDLE_BELOW * costed(graph, "respect", 4, USB)[0]
    period, times, _ = costed(graph, "respect", 4, SLOW_MACS)
    assert min(times) < IDLE_BELOW * period and costed(graph, "respect", 3, SLOW_MACS)[0] > period * (1 + SAME_PERIOD)
    _, _, one = costed(graph, "respect", 1, NO_INVOKE)
    assert idle_stage(graph, with_costs(graph, one, NO_INVOKE), NO_INVOKE) is None


def test_slow_schedulers_are_rechecked_with_respect(graph):
    _, _, plan = costed(graph, "dp", 3, NO_INVOKE)
    plan = replace(with_costs(graph, plan, NO_INVOKE), scheduler="exact")
    idle = idle_stage(graph, plan, NO_INVOKE, {"time_limit_s": 5.0})
    assert idle is not None and idle.fewer_scheduler == "respect" and "respect scheduler" in idle.message


# the command line ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_json(tmp_path):
    r = run("sweep", str(crafting.EMBEDDED), "--max-tpus", "4", "--json", "--scheduler", "dp")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert {"model", "spec", "scheduler", "rows", "recommended"} <= set(doc)
    assert doc["scheduler"] == "dp" and doc["spec"] == "usb" and [row["k"] for row in doc["rows"]] == [1, 2, 3, 4]
    assert all(set(row) == ROW_KEYS for row in doc["rows"])
    assert doc["recommended"] in (1, 2, 3, 4)


@pytest.mark.slow
def test_cli_table_and_plot(tmp_path):
    png = tmp_path / "sweep.png"
    r = run("sweep", str(crafting.EMBEDDED), "--max-tpus", "3", "--spec", "pcie", "--plot", str(png))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "respect scheduler" in lines[0] and "pcie spec" in lines[0]
    assert [line.split()[0] for line in lines[2:5]] == ["1", "2", "3"]
    assert sum("<- recommended" in line for line in lines) == 1 and "recommended: K=" in r.stdout
    assert f"plot: {png}" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and [p.name for p in tmp_path.iterdir()] == ["sweep.png"]


@pytest.mark.slow
def test_cli_caps_max_tpus_with_a_note():
    r = run("sweep", str(BRANCHY), "--max-tpus", "40", "--scheduler", "compiler", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["rows"]) == 33 and any("at most 33" in n for n in doc["notes"])
    assert all(row["speedup_vs_compiler"] == pytest.approx(1.0) for row in doc["rows"])


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (("--max-tpus", "0"), "respect-pass sweep: error: --max-tpus must be at least 1, got 0\n"),
        (("--max-tpus", "2", "--plot", "{tmp}/nodir/x.png"), "its directory does not exist"),
        (("--max-tpus", "2", "--plot", "{tmp}/x.txt"), "the plot must be a .png file"),
        (("--max-tpus", "2", "--spec", "nope"), "not a preset"),
        (("--max-tpus", "x"), "invalid int value"),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, args, message):
    r = run("sweep", str(crafting.EMBEDDED), *(a.format(tmp=tmp_path) for a in args))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("respect-pass sweep: error: ") and message in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cli_missing_model_is_one_line(tmp_path):
    r = run("sweep", str(tmp_path / "missing.tflite"), "--max-tpus", "2", "--plot", str(tmp_path / "p.png"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.tflite" in r.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a wall-clock bound: the fast tier holds no timing assertions
def test_sweep_is_quick_on_the_embedded_model():
    import time

    start = time.perf_counter()
    sweep(Path(crafting.EMBEDDED), 8, USB, "dp")
    assert time.perf_counter() - start < 10
