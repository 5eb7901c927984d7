"""I/O benchmark: read + plan + write + verify times for the zoo.

For every model in the zoo cache (``tools/build_zoo.py``) and every K, times
reading the .tflite into an OpGraph, planning with the ``compiler`` scheduler,
building and writing the K segment files (all or nothing, to a temporary
directory), and verifying that the chained segments are bit-exact with the
full model (every boundary tensor, two random inputs). It also verifies
``--random`` random valid stage maps (random topological order, random cuts:
non-contiguous wherever the graph branches). Prints a markdown table and saves
CSV.

    python -m tools.bench_io                 # K = 4 and 8
    python -m tools.bench_io --ks 2-8        # every K from 2 to 8
"""

from __future__ import annotations

import argparse
import csv
import platform
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from respect_pass.orders import random_stage_map
from respect_pass.schedulers.compiler import compiler_schedule
from tflite_io import build_segments, read_model, segment_file_name, verify_segments, write_files
from tools.build_zoo import ZOO
from tools.common import parse_ks

ROOT = Path(__file__).resolve().parent.parent


def random_maps_exact(model, k: int, count: int, seed: int) -> str:
    """Verify ``count`` random (generally non-contiguous) valid maps; 'passed/drawn'."""
    rng = random.Random(seed)
    maps = [m for m in (random_stage_map(model.graph, k, rng) for _ in range(count)) if m is not None]
    ok = sum(verify_segments(model.data, build_segments(model, m, k)[1], trials=1).ok for m in maps)
    return f"{ok}/{len(maps)}"


def bench(path: Path, k: int, random_maps: int = 0) -> dict:
    t0 = time.perf_counter()
    model = read_model(path)
    t1 = time.perf_counter()
    plan = compiler_schedule(model.graph, k)
    t2 = time.perf_counter()
    _, blobs = build_segments(model, plan.stages, k)
    with tempfile.TemporaryDirectory() as tmp:
        write_files(Path(tmp) / "out", {segment_file_name(path.stem, i, k): b for i, b in enumerate(blobs)})
    t3 = time.perf_counter()
    report = verify_segments(model.data, blobs)
    t4 = time.perf_counter()
    return {
        "model": path.stem,
        "K": k,
        "ops": model.graph.num_ops,
        "MB": round(len(model.data) / 1e6, 1),
        "read_s": round(t1 - t0, 3),
        "plan_s": round(t2 - t1, 4),
        "write_s": round(t3 - t2, 3),
        "read_write_s": round(t1 - t0 + t3 - t2, 3),
        "verify_s": round(t4 - t3, 2),
        "boundary_tensors": report.tensors_checked,
        "bit_exact": report.ok,
        "random_maps_exact": random_maps_exact(model, k, random_maps, seed=k) if random_maps else "-",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", type=Path, default=ROOT / "zoo", help="zoo cache directory")
    p.add_argument("--ks", default="4,8", help="K values: '4,8' or a range '2-8'")
    p.add_argument("--random", type=int, default=3, help="random non-contiguous maps verified per model and K")
    p.add_argument("--csv", type=Path, default=ROOT / "results" / "bench_io.csv")
    args = p.parse_args(argv)
    models = [args.zoo / e.filename for e in ZOO]
    missing = [m.name for m in models if not m.is_file()]
    if missing:
        print(f"bench_io: {missing} not in {args.zoo}; run tools/build_zoo.py first", file=sys.stderr)
        return 2
    rows = [bench(m, k, args.random) for m in models for k in parse_ks(args.ks)]
    cols = list(rows[0])
    print(
        f"bench_io {date.today()} on {platform.machine()} {platform.processor() or ''} "
        f"({len(rows)} runs, python {platform.python_version()})"
    )
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)
    bad = [
        r
        for r in rows
        if not r["bit_exact"]
        or (r["random_maps_exact"] != "-" and r["random_maps_exact"].split("/")[0] != r["random_maps_exact"].split("/")[1])
    ]
    print(f"{len(rows) - len(bad)}/{len(rows)} bit-exact; CSV: {args.csv}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
