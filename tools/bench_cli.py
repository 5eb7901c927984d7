"""Wall time of a fresh ``respect-pass`` process: the default scheduler against ``--scheduler compiler``.

What a user waits for: process start, imports, reading and placing the model, scheduling, writing the
segments. For every zoo model (and the embedded model), K = 4 by default, the two commands run back to back
``--runs`` times (which goes first alternates). The goal column is the median over runs of each pair's
ratio: on a shared VM whole seconds run slower or faster, and a pair sees the same state (the ratio of
the two medians, also shown, moved by up to 0.25 on a model whose scheduling takes 14 ms). Prints a
markdown table and writes CSV.

    python -m tools.bench_cli --runs 11 --out results/bench_cli
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tools.common import ROOT, commit, machine

__all__ = ["CliRun", "wall_s", "model_row", "report", "main"]

EMBEDDED = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"
GOAL = 1.3  # issue 13: the default call within 1.3x of --scheduler compiler


@dataclass(frozen=True)
class CliRun:
    """One ``respect-pass MODEL -n K -o TMP`` process."""

    #: seconds from process start to exit (wall clock)
    wall_s: float
    #: the scheduler's own share of them: ``solve_seconds`` in the plan it wrote
    solve_s: float


def wall_s(model: Path, k: int, scheduler: str | None) -> CliRun:
    """Run ``respect-pass MODEL -n K -o TMP`` (with ``--scheduler`` when given) once and time it."""
    exe = Path(sys.executable).parent / "respect-pass"
    out = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    cmd = [str(exe), str(model), "-n", str(k), "-o", str(out / "seg")]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        raise SystemExit(f"bench_cli: {' '.join(cmd)} failed: {done.stderr.strip()}")
    solve = json.loads((out / "seg" / f"{model.stem}_plan.json").read_text())["solve_seconds"]
    shutil.rmtree(out, ignore_errors=True)
    return CliRun(wall_s=seconds, solve_s=float(solve))


def model_row(model: Path, k: int, runs: int) -> dict:
    """``runs`` back-to-back pairs of the default call and ``--scheduler compiler`` on ``model`` (which goes first
    alternates): median wall seconds of each, respect's median scheduling share, and both ratios."""
    ours: list[float] = []
    solves: list[float] = []
    theirs: list[float] = []
    for run in range(runs):
        if run % 2:
            mine = wall_s(model, k, None)
            theirs.append(wall_s(model, k, "compiler").wall_s)
        else:
            theirs.append(wall_s(model, k, "compiler").wall_s)
            mine = wall_s(model, k, None)
        ours.append(mine.wall_s)
        solves.append(mine.solve_s)
    return {
        "model": model.stem,
        "k": k,
        "respect_s": statistics.median(ours),
        "respect_solve_s": statistics.median(solves),
        "compiler_s": statistics.median(theirs),
        "ratio_of_medians": statistics.median(ours) / statistics.median(theirs),
        "ratio": statistics.median(a / b for a, b in zip(ours, theirs)),
    }


def report(rows: list[dict], k: int, runs: int, rev: str) -> str:
    """The markdown table of ``rows`` with a header line saying when, where, at which commit and the goal."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    met = sum(r["ratio"] <= GOAL for r in rows)
    lines = [
        f"`respect-pass MODEL -n {k} -o DIR` wall time, default scheduler vs `--scheduler compiler` "
        f"({when}; {machine()}; commit {rev}; {runs} back-to-back pairs, median of the pair ratios; "
        f"goal: within {GOAL}x on every model; met on {met}/{len(rows)})",
        "",
        "`of which scheduling`: respect's own search (`solve_seconds` in its plan.json); the rest of a call (start, "
        "imports, reading, writing) is common to both columns.",
        "",
        "| model | respect (default) s | of which scheduling s | compiler s | ratio (median of pairs) | ratio of medians |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['respect_s']:.2f} | {r['respect_solve_s']:.3f} | {r['compiler_s']:.2f} | {r['ratio']:.2f} "
        f"| {r['ratio_of_medians']:.2f} |"
        for r in rows
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Time every model, write ``OUT.csv`` and ``OUT.md``, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--zoo", default=str(ROOT / "zoo"))
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--runs", type=int, default=11, help="back-to-back pairs per model (default 11)")
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_cli"))
    args = ap.parse_args(argv)
    if args.runs < 1:
        ap.error(f"--runs must be >= 1, got {args.runs}")
    rev = commit()  # before this run writes its own CSV into the tree
    rows = []
    for model in [EMBEDDED, *sorted(Path(args.zoo).glob("*.tflite"))]:
        row = model_row(model, args.k, args.runs)
        rows.append(row)
        print(
            f"{model.stem}: respect {row['respect_s']:.2f} s, compiler {row['compiler_s']:.2f} s, {row['ratio']:.2f}x",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = report(rows, args.k, args.runs, rev)
    Path(f"{out}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
