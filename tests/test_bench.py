"""tools/bench.py --quick end to end (every scheduler runs, nothing beats a proven optimum), the shared runner
(tools.common.run_scheduler: the period includes the shared host link), bench_cli, bench_device_loop's TRUTH."""

import csv
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hardware import USB, USB_SEPARATE, stage_costs
from respect_pass.schedulers import SCHEDULERS
from tflite_io import Op, OpGraph, TensorInfo
from tools import bench as bench_tool
from tools.bench_device_loop import random_truth
from tools.common import period_ms, run_scheduler

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str) -> subprocess.CompletedProcess:
    """``python -m tools.bench ARGS`` from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", "tools.bench", *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_quick_bench(tmp_path):
    r = bench(
        "--quick",
        "--out",
        str(tmp_path),
        "--schedulers",
        "compiler,profiling,dp,multiorder,exact",
        "--synthetic",
        "2",
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "bench_quick.csv")))
    graphs = {row["graph"] for row in rows}
    assert {"mobilenet_v2_0.35_96_int8", "tiny_inception_int8"} <= graphs and len(graphs) == 4
    by_case: dict = {}
    for row in rows:
        by_case.setdefault((row["graph"], row["K"]), {})[row["scheduler"]] = row
    for case, runs in by_case.items():
        assert set(runs) == {"compiler", "profiling", "dp", "multiorder", "exact"}, case
        exact = runs["exact"]
        if exact["exact_optimal"] == "True":
            for name, row in runs.items():
                assert float(row["bottleneck_ms"]) >= float(exact["bottleneck_ms"]) * (1 - 1e-6), (case, name)
                assert float(row["gap_to_exact_pct"]) >= -1e-4
        assert float(runs["compiler"]["speedup_vs_compiler"]) == 1.0
    assert (tmp_path / "bench_quick.md").read_text().count("| real |") == 5
    assert (tmp_path / "bench_quick_speedup.png").stat().st_size > 1000


def test_quick_bench_derived_runs_and_tables(tmp_path):
    """multiorder@t gets respect's time; respect+exact runs on every case with --hard-s 0; tables re-render from CSV."""
    r = bench(
        "--quick",
        "--out",
        str(tmp_path),
        "--ks",
        "3",
        "--schedulers",
        "compiler,dp,exact,respect,multiorder@t,respect+exact,respect-net",
        "--synthetic",
        "1",
        "--hard-s",
        "0",
    )
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "bench_quick.csv")))
    by_case: dict = {}
    for row in rows:
        by_case.setdefault(row["graph"], {})[row["scheduler"]] = row
    assert len(by_case) == 3
    assert by_case["mobilenet_v2_0.35_96_int8"]["compiler"]["one_order"] == "True"  # MobileNet v2: one order
    for graph, runs in by_case.items():
        one_order = runs["compiler"]["one_order"] == "True"
        assert set(runs) == {"compiler", "dp", "exact", "respect", "multiorder@t", "respect+exact"} | (
            {"respect-net"} if one_order else set()
        ), graph
        if one_order:  # respect skips the network there and says optimal; the forced network finds the same
            assert runs["respect"]["proved_optimal"] == "True"
            assert runs["respect-net"]["bottleneck_ms"] == runs["respect"]["bottleneck_ms"]
        exact, warm = runs["exact"], runs["respect+exact"]
        if exact["exact_optimal"] == "True" and warm["proved_optimal"] == "True":
            assert abs(float(warm["bottleneck_ms"]) - float(exact["bottleneck_ms"])) <= 1e-3 * float(exact["bottleneck_ms"])
        assert min(float(row["gap_to_best_pct"]) for row in runs.values()) == 0.0
    text = (tmp_path / "bench_quick.md").read_text()
    for heading in ("Per zoo model, K = 2..8:", "Per zoo model and K<", "Synthetic families", "warm start from respect"):
        assert heading in text
    assert text.count("| real | mobilenet_v2_0.35_96_int8 | 3 |") == 1  # the warm-start table
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- tools/bench.py: begin -->\nold table\n<!-- tools/bench.py: end -->\n\ntail\n")
    again = bench(
        "--from-csv",
        str(tmp_path / "bench_quick.csv"),
        "--out",
        str(tmp_path / "again"),
        "--readme",
        str(readme),
    )
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again/bench.md").read_text() == text  # same title: the run's metadata travels with the CSV
    doc = readme.read_text()
    assert "old table" not in doc and text in doc and doc.endswith("<!-- tools/bench.py: end -->\n\ntail\n")


def test_bench_cli_on_the_embedded_model(tmp_path):
    """tools.bench_cli times both commands and reads respect's own share from the plan it wrote."""
    (tmp_path / "zoo").mkdir()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools.bench_cli",
            "--zoo",
            str(tmp_path / "zoo"),
            "--runs",
            "1",
            "--out",
            str(tmp_path / "cli"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (row,) = list(csv.DictReader(open(tmp_path / "cli.csv")))
    assert row["model"] == "mobilenet_v2_0.35_96_int8"
    assert 0 < float(row["respect_solve_s"]) < float(row["respect_s"])
    assert float(row["ratio"]) == float(row["ratio_of_medians"]) == float(row["respect_s"]) / float(row["compiler_s"])
    assert "| mobilenet_v2_0.35_96_int8 |" in (tmp_path / "cli.md").read_text()


def wide_chain(n: int = 8, nbytes: int = 2**20) -> OpGraph:
    """``n`` ADD ops in a chain, each writing ``nbytes``: almost no compute, every stage moves 2 * nbytes over its
    link, so at K = n on the usb preset the shared host link (all stages' bytes at 500 MB/s) outlasts any stage."""
    tensors = tuple(TensorInfo(i, f"t{i}", "int8", (nbytes,), nbytes) for i in range(n + 1))
    ops = tuple(Op(i, "ADD", (i,), (i + 1,), 0, 0) for i in range(n))
    return OpGraph("wide_chain", ops, tensors, (0,), (n,))


def test_run_scheduler_reports_the_period_with_the_shared_link():
    g = wide_chain()
    rec = run_scheduler(g, 8, USB, "dp")
    assert rec.scheduler == "dp" and rec.k == 8 and rec.stages == tuple(range(8))
    slowest = max(c.ms for c in stage_costs(g, rec.stages, 8, USB))
    # t_invoke 0.148 ms + 1 MiB of element-wise output at 3.23e-10 s/B + 2 MiB over a 89.1 MB/s link: 23.88 ms
    assert rec.slowest_stage_ms == slowest == pytest.approx(0.148 + 2**20 * 3.23e-7 + 2 * 2**20 / 89.1e3, rel=1e-9)
    # 8 stages x 2 MiB over one 500 MB/s host controller: 33.55 ms, the period
    assert rec.shared_link_ms == pytest.approx(8 * 2 * 2**20 / USB.shared_link_bytes_per_s * 1e3)
    assert rec.period_ms == rec.shared_link_ms == pytest.approx(33.554432) and rec.period_ms > rec.slowest_stage_ms
    assert rec.latency_ms == pytest.approx(8 * slowest)
    assert rec.solve_seconds > 0 and rec.optimal is None and rec.lower_bound_ms is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.period_ms = 0.0  # type: ignore[misc]
    exact = run_scheduler(g, 8, USB, "exact")  # exact's bound includes the link: it meets it
    # the bound is in whole CP-SAT units: the shared link's per-byte coefficient is rounded (186856 for 186856.24)
    assert exact.optimal is True and exact.lower_bound_ms == pytest.approx(exact.period_ms, rel=1e-5)
    separate = run_scheduler(g, 8, USB_SEPARATE, SCHEDULERS["dp"], label="dp@separate")
    assert separate.scheduler == "dp@separate" and separate.shared_link_ms == 0.0
    assert separate.period_ms == separate.slowest_stage_ms == pytest.approx(slowest)


def test_bench_rows_carry_the_period():
    """tools.bench's bottleneck_ms column is the period, and its speedups are ratios of periods."""
    g = wide_chain()
    rows = {r["scheduler"]: r for r in bench_tool.bench([("synthetic", g)], [8], ["compiler", "dp"], {}, 2.0)}
    assert rows["dp"]["bottleneck_ms"] == rows["compiler"]["bottleneck_ms"] == round(33.554432, 4)
    one_tpu = period_ms(g, (0,) * 8, 1, USB)
    assert rows["dp"]["speedup_vs_1tpu"] == round(one_tpu / 33.554432, 4)
    assert rows["dp"]["speedup_vs_compiler"] == 1.0 and rows["dp"]["one_order"] is True


def test_device_loop_truth_is_the_same_spec_as_before_scaled_spec():
    """random_truth draws one log-uniform factor per constant of PERTURBED, in that order, and scales the usb
    preset by them as it did when it set each constant by hand (bit for bit; the draws of seed 1000 were
    pinned against the usb constants before issue 23's refit: the factors are the same)."""
    from tools.bench_device_loop import PERTURBED

    rng = np.random.default_rng(1000)
    factors = {key: float(np.exp(rng.uniform(np.log(0.5), np.log(2.0)))) for key in PERTURBED}
    truth = random_truth(np.random.default_rng(1000))
    assert truth.name == "truth" and truth.cache_bytes == int(USB.cache_bytes * factors["cache_bytes"]) == 11581169
    assert truth.efficiency["conv"] == min(1.0, USB.efficiency["conv"] * factors["efficiency.conv"]) == 1.0
    assert truth.efficiency["depthwise"] == USB.efficiency["depthwise"] * factors["efficiency.depthwise"]
    assert truth.t_invoke_s == USB.t_invoke_s * factors["t_invoke_s"]
    assert truth.io_bytes_per_s == USB.io_bytes_per_s * factors["io_bytes_per_s"]
    # the factors are those pinned before the refit: 0x1.f14afa239501dp-6 / 0.0316 for depthwise, and so on
    assert factors["efficiency.depthwise"] == pytest.approx(float.fromhex("0x1.f14afa239501dp-6") / 0.0316, rel=1e-15)
    assert factors["io_bytes_per_s"] == pytest.approx(float.fromhex("0x1.60eb9138005b7p+26") / 8.89e7, rel=1e-15)


def test_bench_pool_row_on_the_embedded_model_and_a_copy(tmp_path):
    """tools.bench_pool's row: the pool never below the own-TPUs plan, simulated within 5%, and the written pool
    run through run_pipeline bit-exact per model; its markdown says what the rows mean."""
    import shutil

    from respect_pass.partition import load_model
    from tools import bench_pool

    emb = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"
    copy = tmp_path / "copy.tflite"
    shutil.copyfile(emb, copy)
    loaded = {"a": load_model(emb, host_time="table"), "b": load_model(copy, host_time="table")}
    row = bench_pool._row(("a", "b"), (1.0, 3.0), loaded, 2, "usb", run=True)
    assert row.never_below and row.sim_off_pct <= 5 and row.tpus == 2
    assert row.run_verified == "true,true" and row.run_off_pct is not None and row.run_off_pct <= 5
    text = bench_pool._markdown([row], [], "usb", 1.0)
    assert "Never below the own-TPUs plan: 1/1 rows." in text and "| a+b | 1,3 | 2 |" in text
