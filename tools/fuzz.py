"""Fuzz benchmark: mutate a .tflite model and check that every mutant ends cleanly.

Method. Mutant ``i`` of a run is derived deterministically from ``(--seed, i)``
by one of eight operators applied to the bytes of ``--model`` (default: the
embedded MobileNetV2):

* ``flip``        XOR 1-8 random bytes anywhere with a random non-zero value;
* ``truncate``    cut the file at a uniformly random length;
* ``zero``        zero a range of 1-4096 bytes (log-uniform length);
* ``insert``      insert 1-64 random bytes at a random position;
* ``duplicate``   copy a range of 1-4096 bytes to a random position (inserted);
* ``head_tail``   flip 1-8 bytes within the first or the last 4 KiB;
* ``struct_flip`` flip 1-8 bytes in the flatbuffer's structure, i.e. anywhere
  outside the weight buffers (tables, vtables, vectors of shapes, tensor
  indices, quantization scales and zero points, operator codes, strings);
* ``int_field``   overwrite one aligned 32-bit word of the structure whose
  value is a small integer (a count, an index, an offset, an enum, a shape
  or zero point) with an interesting value (0, +-1, value+-1, 2*value,
  INT32_MIN/MAX, a random small or random 32-bit value).

Each mutant is written to its own temporary directory and handed, in a
freshly forked worker process (so that a segfault or an abort in LiteRT
kills only that mutant), to ``respect_pass.partition.partition(path, K,
outdir, verify=True, scheduler="dp")``. Outcomes:

* ``clean_error``     it raised a ``tflite_io.RespectPassError`` and wrote nothing;
* ``valid``           it returned, wrote exactly K segments and the plan, and the
                      ``run_pipeline`` sim backend (``open_pipeline`` + ``run_sim``,
                      which re-verifies the segments against the mutant) ran them;
* ``crash``           any other exception (in ``partition`` or in ``run_pipeline``),
                      or the worker died (a signal, or exit without a result);
* ``hang``            no result within ``--timeout`` seconds (the worker is killed);
* ``partial_output``  a clean error that left files behind, or a valid run that
                      wrote other files than the K segments and the plan;
* ``rejected_output`` ``partition`` wrote segments that ``run_pipeline`` then
                      rejected with a clean error (broken segments were written);
* ``input_modified``  the mutant file changed while it was processed.

The goal is 0 for every outcome but ``clean_error`` and ``valid``. With
``--cli [N]`` a sample of N mutants (crashes and other failures first, then a
random choice) also goes through the real console scripts in subprocesses:
``respect-pass MUTANT -n K -o DIR --verify`` and, when that succeeds,
``run_pipeline --tpus K DIR``; an error must be exit status 2 with exactly one
stderr line (``prog: error: ...``), no traceback and no output directory, and a
success must exit 0 in both. Writes ``<out>/fuzz.csv`` (one row per mutant),
``<out>/fuzz.md`` (the tables, date, machine, command and run time) and, with
``--cli``, ``<out>/fuzz_cli.csv``.

    python -m tools.fuzz                          # 10,000 mutants, K = 2, 2 workers
    python -m tools.fuzz --count 300 --out /tmp/f # quick check
    python -m tools.fuzz --count 3000 --cli 100 --keep-crashes results/fuzz_crashes
    python -m tools.fuzz --ids 17,254 --keep-crashes /tmp/c   # replay mutants of a run (same --seed)
"""

from __future__ import annotations

import argparse
import csv
import faulthandler
import hashlib
import json
import math
import multiprocessing as mp
import multiprocessing.connection as mpc
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

# Imported once in the parent so that every forked worker starts with the library loaded.
from ai_edge_litert import schema_py_generated as schema

from hardware import load_spec
from respect_pass.partition import partition
from respect_pass.run_pipeline import open_pipeline, run_sim
from tflite_io import RespectPassError, segment_file_name
from tools.common import commit, machine

ROOT = Path(__file__).resolve().parent.parent

DEFAULT_MODEL = ROOT / "respect_pass" / "data" / "mobilenet_v2_0.35_96_int8.tflite"
OPERATORS = ("flip", "truncate", "zero", "insert", "duplicate", "head_tail", "struct_flip", "int_field")
OUTCOMES = ("clean_error", "valid", "crash", "hang", "partial_output", "rejected_output", "input_modified")
GOAL_ZERO = OUTCOMES[2:]
OUR_PACKAGES = ("tflite_io", "hardware", "respect_pass")
MUTANT_NAME = "mutant.tflite"


# ----------------------------------------------------------------------------------------------------------- mutation


@dataclass(frozen=True)
class Layout:
    """Where the weight buffers of the model lie; everything else is flatbuffer structure."""

    size: int
    structure: tuple[tuple[int, int], ...]  # (start, length) ranges outside the weight buffers
    small_words: tuple[int, ...]  # 4-aligned offsets in the structure holding a small int32


def layout(data: bytes) -> Layout:
    root = schema.Model.GetRootAsModel(data, 0)
    spans = []
    for i in range(root.BuffersLength()):
        tab = root.Buffers(i)._tab
        o = tab.Offset(4)  # Buffer.data
        if o and tab.VectorLen(o):
            spans.append((tab.Vector(o), tab.VectorLen(o)))
    spans.sort()
    structure, pos = [], 0
    for start, length in spans:
        if start > pos:
            structure.append((pos, start - pos))
        pos = max(pos, start + length)
    if pos < len(data):
        structure.append((pos, len(data) - pos))
    words = []
    for start, length in structure:
        for off in range((start + 3) // 4 * 4, start + length - 3, 4):
            if -256 <= int.from_bytes(data[off : off + 4], "little", signed=True) <= 65536:
                words.append(off)
    return Layout(len(data), tuple(structure), tuple(words))


def _loguniform(rng: random.Random, lo: int, hi: int) -> int:
    return min(hi, int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1)))))


def _flip(buf: bytearray, rng: random.Random, positions: list[int]) -> str:
    for p in positions:
        buf[p] ^= rng.randrange(1, 256)
    return ",".join(f"0x{p:x}" for p in sorted(positions))


def _structure_pos(rng: random.Random, lay: Layout) -> int:
    total = sum(n for _, n in lay.structure)
    k = rng.randrange(total)
    for start, length in lay.structure:
        if k < length:
            return start + k
        k -= length
    raise AssertionError


def mutate(data: bytes, lay: Layout, seed: int, index: int, operator: str | None = None) -> tuple[str, bytes, str]:
    """Mutant ``index`` of run ``seed``: (operator, bytes, description)."""
    rng = random.Random(f"{seed}:{index}")
    op = operator or rng.choice(OPERATORS)
    buf = bytearray(data)
    n = len(buf)
    if op == "flip":
        where = _flip(buf, rng, [rng.randrange(n) for _ in range(rng.randint(1, 8))])
        desc = f"xor bytes at {where}"
    elif op == "truncate":
        keep = rng.randrange(n)
        del buf[keep:]
        desc = f"truncate to {keep} of {n} bytes"
    elif op == "zero":
        length = _loguniform(rng, 1, 4096)
        start = rng.randrange(n - length)
        buf[start : start + length] = bytes(length)
        desc = f"zero {length} bytes at 0x{start:x}"
    elif op == "insert":
        length = _loguniform(rng, 1, 64)
        at = rng.randrange(n + 1)
        buf[at:at] = rng.randbytes(length)
        desc = f"insert {length} random bytes at 0x{at:x}"
    elif op == "duplicate":
        length = _loguniform(rng, 1, 4096)
        src = rng.randrange(n - length)
        at = rng.randrange(n + 1)
        buf[at:at] = data[src : src + length]
        desc = f"copy {length} bytes from 0x{src:x} to 0x{at:x}"
    elif op == "head_tail":
        span = min(4096, n)
        base = 0 if rng.random() < 0.5 else n - span
        where = _flip(buf, rng, [base + rng.randrange(span) for _ in range(rng.randint(1, 8))])
        desc = f"xor {'first' if base == 0 else 'last'} 4 KiB bytes at {where}"
    elif op == "struct_flip":
        where = _flip(buf, rng, [_structure_pos(rng, lay) for _ in range(rng.randint(1, 8))])
        desc = f"xor structure bytes at {where}"
    elif op == "int_field":
        off = rng.choice(lay.small_words)
        old = int.from_bytes(data[off : off + 4], "little", signed=True)
        new = old
        while new == old:
            new = rng.choice(
                [
                    0,
                    1,
                    -1,
                    old + 1,
                    old - 1,
                    2 * old,
                    2**31 - 1,
                    -(2**31),
                    rng.randint(-300, 300),
                    rng.randint(-(2**31), 2**31 - 1),
                ]
            )
        new = (new + 2**31) % 2**32 - 2**31
        buf[off : off + 4] = new.to_bytes(4, "little", signed=True)
        desc = f"int32 at 0x{off:x}: {old} -> {new}"
    else:
        raise ValueError(op)
    return op, bytes(buf), desc


# ------------------------------------------------------------------------------------------------------------ workers


def _where(exc: BaseException) -> str:
    """The deepest frame of the traceback that lies in our packages."""
    found = "(not in our code)"
    for fr in traceback.extract_tb(exc.__traceback__):
        try:
            rel = Path(fr.filename).resolve().relative_to(ROOT)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] in OUR_PACKAGES:
            found = f"{rel}:{fr.lineno} {fr.name}"
    return found


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else "")[:limit]


def _crash(stage: str, exc: BaseException) -> dict[str, Any]:
    return {
        "outcome": "crash",
        "stage": stage,
        "exc": type(exc).__name__,
        "msg": _first_line(exc),
        "where": _where(exc),
        "tb": "".join(traceback.format_exception(exc)),
    }


def _stray(task: Path, allowed: set[str]) -> list[str]:
    """Files under ``task`` other than the mutant and ``allowed`` (paths relative to ``task``)."""
    found = []
    for p in sorted(task.rglob("*")):
        rel = str(p.relative_to(task))
        if p.is_file() and rel not in allowed and rel != f"in/{MUTANT_NAME}" and rel != "stderr.txt":
            found.append(rel)
        elif p.is_dir() and not any(p.iterdir()) and rel != "in":
            found.append(rel + "/")
    return found


def check_mutant(task: Path, k: int, verify: bool, scheduler: str) -> dict[str, Any]:
    """partition + run_pipeline on ``task/in/mutant.tflite``; the classification (without hashes)."""
    model, out = task / "in" / MUTANT_NAME, task / "out"
    try:
        partition(model, k, out, verify=verify, scheduler=scheduler)
    except RespectPassError as exc:
        msg = _first_line(exc)
        left = _stray(task, set())
        if left:
            return {
                "outcome": "partial_output",
                "stage": "partition",
                "exc": type(exc).__name__,
                "msg": msg,
                "where": "left " + " ".join(left[:5]),
            }
        return {"outcome": "clean_error", "stage": "partition", "exc": type(exc).__name__, "msg": msg}
    except BaseException as exc:  # noqa: BLE001 - everything else is a crash, even SystemExit
        return _crash("partition", exc)
    stem = Path(MUTANT_NAME).stem
    expected = {f"out/{segment_file_name(stem, i, k)}" for i in range(k)} | {f"out/{stem}_plan.json"}
    left = _stray(task, expected)
    missing = [e for e in sorted(expected) if not (task / e).is_file()]
    if left or missing:
        return {
            "outcome": "partial_output",
            "stage": "partition",
            "exc": "",
            "msg": "",
            "where": f"stray {left[:5]} missing {missing}",
        }
    try:
        report = run_sim(open_pipeline(out).segments, load_spec("usb"), count=2)
        json.dumps(report)
    except RespectPassError as exc:
        return {"outcome": "rejected_output", "stage": "run_pipeline", "exc": type(exc).__name__, "msg": _first_line(exc)}
    except BaseException as exc:  # noqa: BLE001
        return _crash("run_pipeline", exc)
    return {"outcome": "valid", "stage": "", "verified": report.get("verified")}


def _worker(conn: Any, task: str, k: int, verify: bool, scheduler: str, mem_mb: int) -> None:
    fd = os.open(os.path.join(task, "stderr.txt"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    faulthandler.enable(file=sys.stderr)  # a fatal signal leaves the Python stack in stderr.txt
    if mem_mb:
        lim = mem_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = check_mutant(Path(task), k, verify, scheduler)
    except BaseException as exc:  # noqa: BLE001 - e.g. a crash while classifying
        result = _crash("fuzz", exc)
    conn.send(result)
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _last_stderr(task: Path) -> str:
    try:
        lines = [ln.strip() for ln in (task / "stderr.txt").read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def _stderr_text(task: Path, limit: int = 4000) -> str:
    try:
        return (task / "stderr.txt").read_text(errors="replace")[-limit:]
    except OSError:
        return ""


_FAULT_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)')


def _died_where(task: Path) -> str:
    """The deepest frame in our code of the stack faulthandler wrote when the worker died, else stderr's last line."""
    try:
        text = (task / "stderr.txt").read_text(errors="replace")
    except OSError:
        text = ""
    for m in _FAULT_FRAME.finditer(text):  # most recent call first
        try:
            rel = Path(m["file"]).resolve().relative_to(ROOT)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] in OUR_PACKAGES:
            return f"{rel}:{m['line']} {m['func']}"
    return _last_stderr(task) or "(no stderr)"


def run_library(
    ids: list[int], data: bytes, lay: Layout, args: argparse.Namespace, tmp: Path, keep: Path | None
) -> list[dict[str, Any]]:
    """Every mutant through partition + run_pipeline in forked workers, ``args.jobs`` at a time."""
    ctx = mp.get_context("fork")
    pending = list(ids)
    running: dict[int, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    t0 = last_report = time.monotonic()

    def start(i: int) -> None:
        op, blob, desc = mutate(data, lay, args.seed, i)
        task = tmp / f"m{i}"
        (task / "in").mkdir(parents=True)
        (task / "in" / MUTANT_NAME).write_bytes(blob)
        recv, send = ctx.Pipe(duplex=False)
        p = ctx.Process(
            target=_worker, args=(send, str(task), args.K, args.verify, args.scheduler, args.mem_mb), daemon=True
        )
        p.start()
        send.close()
        running[i] = {
            "proc": p,
            "conn": recv,
            "t": time.monotonic(),
            "op": op,
            "desc": desc,
            "task": task,
            "sha": hashlib.sha256(blob).hexdigest(),
            "blob": blob,
            "result": None,
        }

    def finish(i: int, result: dict[str, Any]) -> None:
        r = running.pop(i)
        p = r["proc"]
        if p.is_alive():
            p.join(2)
            if p.is_alive():
                p.kill()
                p.join()
        r["conn"].close()
        model = r["task"] / "in" / MUTANT_NAME
        for key in ("msg", "where", "tb"):
            if isinstance(result.get(key), str):
                result[key] = result[key].replace(str(model), "MUTANT").replace(str(r["task"]), "TASK")
        if result["outcome"] not in ("hang",) and (not model.is_file() or _sha(model) != r["sha"]):
            result = {**result, "outcome": "input_modified", "where": f"was {result['outcome']}"}
        row = {"id": i, "operator": r["op"], "mutation": r["desc"], "seconds": round(time.monotonic() - r["t"], 3), **result}
        rows.append(row)
        if keep is not None and row["outcome"] in GOAL_ZERO:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{i}_{r['op']}.tflite").write_bytes(r["blob"])
            (keep / f"{i}_{r['op']}.txt").write_text(
                f"mutant {i} (seed {args.seed}): {r['desc']}\noutcome: {row['outcome']} ({row.get('stage', '')})\n"
                f"{detail(row)}\n\n{row.get('tb', '')}worker stderr:\n{_stderr_text(r['task'])}\n"
            )
        shutil.rmtree(r["task"], ignore_errors=True)

    try:
        while pending or running:
            while pending and len(running) < args.jobs:
                start(pending.pop(0))
            waitables = {r["conn"]: i for i, r in running.items()}
            waitables.update({r["proc"].sentinel: i for i, r in running.items()})
            ready = mpc.wait(list(waitables), timeout=0.5)
            for w in ready:
                i = waitables[w]
                if i not in running:
                    continue
                r = running[i]
                if r["conn"].poll():
                    try:
                        finish(i, r["conn"].recv())
                        continue
                    except (EOFError, OSError):  # the worker ended without sending a result
                        r["proc"].join(2)
                if not r["proc"].is_alive():
                    code = r["proc"].exitcode
                    how = (
                        f"killed by {signal.Signals(-code).name}"
                        if code is not None and code < 0
                        else f"exit status {code} without a result"
                    )
                    finish(
                        i,
                        {"outcome": "crash", "stage": "worker", "exc": "died", "msg": how, "where": _died_where(r["task"])},
                    )
            now = time.monotonic()
            for i, r in list(running.items()):
                if now - r["t"] > args.timeout:
                    r["proc"].kill()
                    finish(i, {"outcome": "hang", "stage": "", "msg": f"no result after {args.timeout:g} s"})
            if now - last_report > 30 or (not pending and not running):
                done = len(rows)
                counts = Counter(r["outcome"] for r in rows)
                print(
                    f"[fuzz] {done}/{len(ids)} in {now - t0:.0f} s ({done / max(now - t0, 1e-9):.1f}/s): "
                    + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                    file=sys.stderr,
                    flush=True,
                )
                last_report = now
    finally:
        for r in running.values():
            r["proc"].kill()
    rows.sort(key=lambda r: r["id"])
    return rows


# ---------------------------------------------------------------------------------------------------------------- CLI


def _run(cmd: list[str], timeout: float) -> tuple[int | None, str, str]:
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, errors="replace")
        return p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired:
        return None, "", ""


def _cli_error_ok(rc: int | None, err: str, prog: str) -> str:
    """'' when (rc, stderr) is a clean one-line user error of ``prog``, else what is wrong."""
    lines = err.splitlines()
    if rc is not None and rc < 0:
        return f"killed by {signal.Signals(-rc).name}"
    if "Traceback" in err:
        last = [ln for ln in lines if ln.strip()]
        return f"traceback: {last[-1][:200] if last else ''}"
    if rc != 2:
        return f"exit status {rc}"
    if len(lines) != 1:
        return f"{len(lines)} stderr lines: {' | '.join(lines[:3])[:200]}"
    if not lines[0].startswith(f"{prog}: error: "):
        return f"stderr is not '{prog}: error: ...': {lines[0][:200]}"
    return ""


def cli_check(i: int, data: bytes, lay: Layout, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    op, blob, desc = mutate(data, lay, args.seed, i)
    task = tmp / f"cli{i}"
    (task / "in").mkdir(parents=True)
    model, out = task / "in" / MUTANT_NAME, task / "out"
    model.write_bytes(blob)
    bindir = Path(sys.executable).parent
    row: dict[str, Any] = {"id": i, "operator": op, "mutation": desc}
    try:
        cmd = [str(bindir / "respect-pass"), str(model), "-n", str(args.K), "-o", str(out)]
        if args.verify:
            cmd.append("--verify")
        rc, _, err = _run(cmd, 3 * args.timeout)
        if rc is None:
            return {**row, "outcome": "hang", "detail": "respect-pass: no exit"}
        if hashlib.sha256(model.read_bytes()).digest() != hashlib.sha256(blob).digest():
            return {**row, "outcome": "input_modified", "detail": "respect-pass changed its input"}
        if rc != 0:
            bad = _cli_error_ok(rc, err, "respect-pass")
            if bad:
                return {**row, "outcome": "crash", "detail": f"respect-pass: {bad}"}
            left = _stray(task, set())
            if left:
                return {**row, "outcome": "partial_output", "detail": f"respect-pass: {err.strip()[:200]}; left {left[:5]}"}
            return {**row, "outcome": "clean_error", "detail": _normalize(err.strip(), model)}
        rc, _, err = _run([str(bindir / "run_pipeline"), "--tpus", str(args.K), str(out), "--count", "2"], 3 * args.timeout)
        if rc is None:
            return {**row, "outcome": "hang", "detail": "run_pipeline: no exit"}
        if rc == 0:
            return {**row, "outcome": "valid", "detail": ""}
        bad = _cli_error_ok(rc, err, "run_pipeline")
        if bad:
            return {**row, "outcome": "crash", "detail": f"run_pipeline: {bad}"}
        return {**row, "outcome": "rejected_output", "detail": "run_pipeline: " + _normalize(err.strip(), model)}
    finally:
        shutil.rmtree(task, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------- report


def _normalize(msg: str, model: Path | None = None) -> str:
    """A message with paths and numbers masked, to group similar errors."""
    if model is not None:
        msg = msg.replace(str(model), "MUTANT").replace(str(model.parent.parent), "TASK")
    msg = re.sub(r"(?<![\w.])/[^\s:'\"()]+", "PATH", msg)
    msg = re.sub(r"0x[0-9a-f]+|\d+(\.\d+)?", "#", msg)
    return msg


def detail(row: dict[str, Any]) -> str:
    o = row["outcome"]
    if o in ("clean_error", "rejected_output"):
        return f"{row.get('stage')}: {row.get('exc')}: {row.get('msg')}"
    if o in ("crash", "partial_output", "input_modified"):
        return f"{row.get('stage')}: {row.get('exc')}: {row.get('msg')} @ {row.get('where')}"
    if o == "hang":
        return row.get("msg", "")
    return "" if row.get("verified") else f"verified={row.get('verified')}"


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}" if total else "-"


def outcome_table(rows: list[dict[str, Any]], title: str = "outcome") -> list[str]:
    counts = Counter(r["outcome"] for r in rows)
    out = [f"| {title} | count | % | goal |", "|---|---|---|---|"]
    for o in OUTCOMES:
        out.append(f"| {o} | {counts.get(o, 0):,} | {_pct(counts.get(o, 0), len(rows))} | {'0' if o in GOAL_ZERO else ''} |")
    out.append(f"| **total** | {len(rows):,} | 100.0 | |")
    return out


def crash_groups(rows: list[dict[str, Any]]) -> list[str]:
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["outcome"] in ("crash", "partial_output", "input_modified", "rejected_output"):
            where = r.get("where", "")
            where = re.sub(r":\d+ ", " ", where)
            key: tuple[str, ...] = (
                r["outcome"],
                r.get("stage", ""),
                r.get("exc", ""),
                _normalize(r.get("msg", ""))[:90],
                where,
            )
            groups[key].append(r)
    if not groups:
        return ["No crashes, partial outputs, rejected outputs or modified inputs."]
    out = [
        "| count | outcome | stage | exception | message (first line) | deepest frame in our code | example mutant |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, rs in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        ex = rs[0]
        msg = ex.get("msg", "").replace("|", "\\|")[:160]
        out.append(
            f"| {len(rs)} | {key[0]} | {key[1]} | {key[2]} | {msg} | {ex.get('where', '')} | "
            f"#{ex['id']} {ex['operator']}: {ex['mutation'][:80]} |"
        )
    return out


def operator_table(rows: list[dict[str, Any]]) -> list[str]:
    by_op: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        by_op[r["operator"]][r["outcome"]] += 1
    out = ["| operator | mutants | " + " | ".join(OUTCOMES) + " |", "|---|---" + "|---" * len(OUTCOMES) + "|"]
    for op in OPERATORS:
        c = by_op.get(op, Counter())
        out.append(f"| {op} | {sum(c.values()):,} | " + " | ".join(f"{c.get(o, 0):,}" for o in OUTCOMES) + " |")
    return out


def clean_error_table(rows: list[dict[str, Any]], top: int = 15) -> list[str]:
    c = Counter(
        f"{r.get('stage')}: {r.get('exc')}: {_normalize(r.get('msg', ''))[:120]}"
        for r in rows
        if r["outcome"] == "clean_error"
    )
    out = ["| count | clean error (paths -> PATH, numbers -> #) |", "|---|---|"]
    for msg, n in c.most_common(top):
        out.append(f"| {n:,} | {msg.replace('|', chr(92) + '|')} |")
    if len(c) > top:
        out.append(f"| {sum(n for _, n in c.most_common()[top:]):,} | ({len(c) - top} other kinds) |")
    return out


# ------------------------------------------------------------------------------------------------------------- main


def _ids(text: str) -> list[int]:
    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of mutant numbers: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model to mutate (default: the embedded one)")
    ap.add_argument("--count", type=int, default=10000, help="number of mutants (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="run seed; mutant i depends only on (seed, i, model)")
    ap.add_argument("--ids", type=_ids, help="only these mutant numbers (comma-separated), e.g. to replay crashes")
    ap.add_argument("--jobs", type=int, default=2, help="worker processes at a time (default 2)")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per mutant before it counts as a hang")
    ap.add_argument("--K", type=int, default=2, help="number of segments (default 2)")
    ap.add_argument("--scheduler", default="dp", help="scheduler given to partition (default dp: fast)")
    ap.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="partition(..., verify=True) and respect-pass --verify (default on)",
    )
    ap.add_argument(
        "--mem-mb",
        type=int,
        default=8192,
        help="address-space limit of a worker in MiB, so a huge allocation fails fast (0: none)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="directory for fuzz.csv and fuzz.md")
    ap.add_argument(
        "--keep-crashes",
        type=Path,
        metavar="DIR",
        help="save every mutant whose outcome should not happen (and its traceback) here",
    )
    ap.add_argument(
        "--cli",
        type=int,
        nargs="?",
        const=100,
        default=0,
        metavar="N",
        help="also run N mutants (default 100; failures first) through the respect-pass and run_pipeline console scripts",
    )
    args = ap.parse_args(argv)
    if args.count < 1 or args.jobs < 1 or args.timeout <= 0 or args.K < 1:
        ap.error("--count, --jobs, --timeout and --K must be positive")
    command = " ".join(["python -m tools.fuzz", *(sys.argv[1:] if argv is None else argv)])
    data = args.model.read_bytes()
    model_sha = hashlib.sha256(data).hexdigest()
    lay = layout(data)
    ids = args.ids if args.ids is not None else list(range(args.count))
    print(
        f"[fuzz] {args.model.name}: {len(data):,} bytes, {sum(n for _, n in lay.structure):,} of structure, "
        f"{len(lay.small_words):,} small int32 words; {len(ids):,} mutants, K = {args.K}, {args.jobs} jobs",
        file=sys.stderr,
    )
    keep = args.keep_crashes
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="respect-fuzz-") as tmpname:
        tmp = Path(tmpname)
        # the unmutated model must come out valid, or the run means nothing
        base = tmp / "baseline"
        (base / "in").mkdir(parents=True)
        (base / "in" / MUTANT_NAME).write_bytes(data)
        baseline = check_mutant(base, args.K, args.verify, args.scheduler)
        if baseline["outcome"] != "valid":
            print(f"[fuzz] the unmutated model is not valid: {baseline}", file=sys.stderr)
            return 1
        rows = run_library(ids, data, lay, args, tmp, keep)
        lib_s = time.monotonic() - t0
        cli_rows: list[dict[str, Any]] = []
        if args.cli:
            rank = random.Random(f"{args.seed}:cli")
            bad = [r["id"] for r in rows if r["outcome"] in GOAL_ZERO]
            rest = [r["id"] for r in rows if r["outcome"] not in GOAL_ZERO]
            rank.shuffle(rest)
            sample = sorted((bad[: args.cli // 2] + rest)[: args.cli])
            print(f"[fuzz] CLI check of {len(sample)} mutants", file=sys.stderr, flush=True)
            with ThreadPoolExecutor(args.jobs) as pool:
                cli_rows = list(pool.map(lambda i: cli_check(i, data, lay, args, tmp), sample))
    seconds = time.monotonic() - t0
    if hashlib.sha256(args.model.read_bytes()).hexdigest() != model_sha:
        print(f"[fuzz] {args.model} changed during the run!", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "fuzz.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "operator", "outcome", "detail", "mutation", "seconds"])
        for r in rows:
            w.writerow([r["id"], r["operator"], r["outcome"], detail(r), r["mutation"], r["seconds"]])
    lib_by_id = {r["id"]: r["outcome"] for r in rows}
    if cli_rows:
        with open(args.out / "fuzz_cli.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "operator", "outcome", "library_outcome", "detail", "mutation"])
            for r in cli_rows:
                w.writerow([r["id"], r["operator"], r["outcome"], lib_by_id[r["id"]], r["detail"], r["mutation"]])

    rate = len(rows) / lib_s
    title = (
        f"Fuzz benchmark run on {datetime.now():%Y-%m-%d %H:%M} ({machine()}; commit {commit()}; `{command}`; "
        f"{seconds:.0f} s, {rate:.2f} mutants/s with {args.jobs} jobs). Model {args.model.name} "
        f"({len(data):,} bytes), K = {args.K}, scheduler {args.scheduler}, verify={args.verify}, "
        f"timeout {args.timeout:g} s, seed {args.seed}."
    )
    md = [
        title,
        "",
        *outcome_table(rows),
        "",
        "Crashes and other failures, grouped:",
        "",
        *crash_groups(rows),
        "",
        "Outcomes per mutation operator:",
        "",
        *operator_table(rows),
        "",
        "Most frequent clean errors:",
        "",
        *clean_error_table(rows),
    ]
    if cli_rows:
        agree = sum(1 for r in cli_rows if r["outcome"] == lib_by_id[r["id"]])
        md += [
            "",
            (
                f"Console scripts (`respect-pass MUTANT -n {args.K} -o DIR{' --verify' if args.verify else ''}`, "
                f"then `run_pipeline --tpus {args.K} DIR`) on {len(cli_rows)} of the mutants (failures first); "
                f"same outcome as the library run for {agree}/{len(cli_rows)}:"
            ),
            "",
            *outcome_table(cli_rows, "CLI outcome"),
        ]
        failures = Counter((r["outcome"], _normalize(r["detail"])[:150]) for r in cli_rows if r["outcome"] in GOAL_ZERO)
        if failures:
            md += ["", "| count | CLI outcome | detail |", "|---|---|---|"]
            md += [f"| {n} | {o} | {d.replace('|', chr(92) + '|')} |" for (o, d), n in failures.most_common()]
        diff = Counter((lib_by_id[r["id"]], r["outcome"]) for r in cli_rows if r["outcome"] != lib_by_id[r["id"]])
        if diff:
            md += ["", "| library outcome | CLI outcome | count |", "|---|---|---|"]
            md += [f"| {a} | {b} | {n} |" for (a, b), n in diff.most_common()]
    text = "\n".join(md) + "\n"
    (args.out / "fuzz.md").write_text(text)
    print(text)
    return 1 if any(r["outcome"] in GOAL_ZERO for r in rows + cli_rows) else 0


if __name__ == "__main__":
    sys.exit(main())
