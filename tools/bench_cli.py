"""Wall time of a fresh ``respect-pass`` process: the default scheduler against ``--scheduler compiler``.

What a user waits for: process start, imports, reading and placing the model, scheduling, writing the
segments. For every zoo model (and the embedded model), K = 4 by default, each command runs ``--runs``
times, alternating, and the median is kept. Prints a markdown table and writes CSV.

    python -m tools.bench_cli --runs 3 --out results/bench_cli
"""

from __future__ import annotations

import argparse
import csv
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from tools.common import ROOT, commit, machine

EMBEDDED = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"
GOAL = 1.3  # issue 13: the default call within 1.3x of --scheduler compiler


def wall_s(model: Path, k: int, scheduler: str | None) -> float:
    """Seconds one ``respect-pass MODEL -n K -o TMP`` process takes, start to exit."""
    exe = Path(sys.executable).parent / "respect-pass"
    out = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    cmd = [str(exe), str(model), "-n", str(k), "-o", str(out / "seg")]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_cli: {' '.join(cmd)} failed: {done.stderr.strip()}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--zoo", default=str(ROOT / "zoo"))
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench_cli"))
    args = ap.parse_args(argv)
    models = [EMBEDDED, *sorted(Path(args.zoo).glob("*.tflite"))]
    rows = []
    for model in models:
        ours, theirs = [], []
        for _ in range(args.runs):
            theirs.append(wall_s(model, args.k, "compiler"))
            ours.append(wall_s(model, args.k, None))
        row = {
            "model": model.stem,
            "k": args.k,
            "respect_s": statistics.median(ours),
            "compiler_s": statistics.median(theirs),
        }
        row["ratio"] = row["respect_s"] / row["compiler_s"]
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
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    met = sum(r["ratio"] <= GOAL for r in rows)
    lines = [
        f"`respect-pass MODEL -n {args.k} -o DIR` wall time, default scheduler vs `--scheduler compiler` "
        f"({when}; {machine()}; commit {commit()}; median of {args.runs} alternating runs each; "
        f"goal: within {GOAL}x on every model; met on {met}/{len(rows)})",
        "",
        "| model | respect (default) s | compiler s | ratio |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r['model']} | {r['respect_s']:.2f} | {r['compiler_s']:.2f} | {r['ratio']:.2f} |" for r in rows]
    report = "\n".join(lines) + "\n"
    Path(f"{out}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
