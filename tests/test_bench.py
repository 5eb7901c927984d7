"""tools/bench.py --quick end to end: every scheduler runs and nothing beats a proven optimum."""

import csv
import subprocess
import sys
from pathlib import Path

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
