"""The ``respect-pass`` command line: a thin layer over :func:`respect_pass.partition`.

    respect-pass MODEL.tflite -n K -o DIR [--scheduler S] [--spec S] [--verify] [--compile] [--json]
    respect-pass inspect MODEL.tflite [--json]
    respect-pass sweep MODEL.tflite --max-tpus N [--json] [--plot F.png] [--spec S] [--scheduler S]
    respect-pass pool A.tflite B.tflite ... --tpus N -o DIR [--weights wA,wB | --rates rA,rB] [--json] [--plot F.png]

Every user error ends as one line on stderr and exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from hardware import PRESETS, SPEC_METAVAR, load_spec
from hardware.host_time import HOST_TIME_SOURCES
from hardware.placement import place_ops
from tflite_io import OpGraph, RespectPassError, write_files

from . import __version__
from .partition import PartitionResult, load_model, partition
from .plot import check_plot_path
from .schedulers import SCHEDULERS, get_scheduler
from .schedulers.given import parse_stages
from .sweep import format_sweep, idle_stage, sweep

__all__ = ["main", "OneLineParser", "run_cli"]

EXIT_USER_ERROR = 2


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``prog: error: ...``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def _partition_parser() -> OneLineParser:
    """The parser of ``respect-pass MODEL -n K -o DIR``, one argument group at a time."""
    parser = OneLineParser(
        prog="respect-pass",
        description="Schedule a full-integer .tflite model onto a pipeline of K Edge TPUs and write "
        "<stem>_segment_<i>_of_<K>.tflite files for edgetpu_compiler. "
        "Other commands: 'respect-pass inspect MODEL', 'respect-pass sweep MODEL --max-tpus N', "
        "'respect-pass pool A.tflite B.tflite ... --tpus N -o DIR', "
        "'respect-pass spec NAME', 'respect-pass calibrate', 'respect-pass devices', 'respect-pass train'; "
        "'run_pipeline DIR' runs a plan's segments.",
    )
    _add_target_arguments(parser)
    _add_profiling_arguments(parser)
    _add_search_arguments(parser)
    _add_output_arguments(parser)
    _add_device_arguments(parser)
    _add_reporting_arguments(parser)
    return parser


def _add_target_arguments(parser: argparse.ArgumentParser) -> None:
    """The model, K, the output directory and how the stages are chosen."""
    parser.add_argument("model", metavar="MODEL.tflite", help="full-integer quantized TFLite model (read only)")
    parser.add_argument(
        "-n",
        "--num_segments",
        type=int,
        required=True,
        metavar="K",
        help="number of Edge TPUs: the plan uses S <= K segments, the slowest on several TPUs (replicas) where that pays",
    )
    parser.add_argument(
        "--no-replicas",
        action="store_true",
        help="K segments, one TPU each (pycoral's PipelinedModelRunner runs no replicas)",
    )
    parser.add_argument("-o", "--out_dir", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument(
        "--scheduler",
        default=None,
        choices=sorted(set(SCHEDULERS) - {"given"}),
        help="scheduling algorithm (default: respect, the learned scheduler)",
    )
    parser.add_argument(
        "--stages",
        metavar="S0,S1,...",
        default=None,
        help="use this stage map instead of a scheduler: one stage index per op, in the model's op "
        "order (checked against the pipeline rules; plan.json says scheduler 'given')",
    )


def _add_profiling_arguments(parser: argparse.ArgumentParser) -> None:
    """The profiling scheduler's flags (libcoral partition_with_profiling's)."""
    profiling = parser.add_argument_group("profiling scheduler (libcoral partition_with_profiling's flags)")
    profiling.add_argument(
        "--diff_threshold_ns",
        type=int,
        default=None,
        metavar="NS",
        help="stop bisecting when the latency bounds are this close (default 1000000)",
    )
    profiling.add_argument(
        "--partition_search_step",
        type=int,
        default=None,
        metavar="N",
        help="ops added to or removed from a segment per search step (default 1)",
    )


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the dp, multiorder, exact and respect schedulers."""
    search = parser.add_argument_group("dp, multiorder and exact schedulers")
    search.add_argument(
        "--objective",
        choices=["latency", "memory"],
        default=None,
        help="latency: cost-model bottleneck, then latency (default); memory: RESPECT's "
        "alpha * max stage parameter bytes + crossing tensors",
    )
    search.add_argument(
        "--alpha", type=float, default=None, help="memory objective: weight per parameter byte (default 2^-20)"
    )
    search.add_argument(
        "--orders",
        dest="num_random",
        type=int,
        default=None,
        metavar="N",
        help="multiorder: random topological orders tried besides the heuristic ones (default 16)",
    )
    search.add_argument(
        "--time_limit",
        dest="time_limit_s",
        type=float,
        default=None,
        metavar="S",
        help="exact: CP-SAT time limit in seconds (default 30)",
    )
    search.add_argument("--workers", type=int, default=None, help="exact: CP-SAT worker threads (default 2)")
    search.add_argument(
        "--samples", type=int, default=None, help="respect: sampled orders besides the greedy one (default 8)"
    )
    search.add_argument(
        "--extra-samples",
        dest="extra_samples",
        type=int,
        default=None,
        metavar="N",
        help="respect: while the plan is >2%% above the lower bound, N more sampled and N random orders (default 0)",
    )


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """Seed, device model, and what is checked and written besides the segments."""
    parser.add_argument("--seed", type=int, default=None, help="seed of randomised schedulers")
    parser.add_argument("--spec", default="usb", metavar=SPEC_METAVAR, help="Edge TPU cost-model constants (default: usb)")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="chain the segments through LiteRT and require bit-exact boundary tensors before writing",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also run edgetpu_compiler -s on every segment (must be on PATH); fail if any op would run on the CPU",
    )
    parser.add_argument("--plot", metavar="FILE.png", help="also draw the predicted per-stage time and parameter breakdown")
    parser.add_argument(
        "--fix-batch",
        action="store_true",
        help="set a dynamic batch dimension (shape signature -1) to 1 in the segments (never in the input file)",
    )
    add_host_time_argument(parser)


def add_host_time_argument(parser: argparse.ArgumentParser) -> None:
    """``--host-time measured|table``, the same for every command that plans."""
    parser.add_argument(
        "--host-time",
        choices=HOST_TIME_SOURCES,
        default="measured",
        help="cost host (CPU) ops as timed by LiteRT on this machine, one op at a time, cached (measured, the "
        "default), or by the device model's table (table)",
    )


def _add_device_arguments(parser: argparse.ArgumentParser) -> None:
    """Measuring on a device (--refine-on-device) and which device."""
    device = parser.add_argument_group("measuring on a device (--refine-on-device)")
    device.add_argument(
        "--refine-on-device",
        type=int,
        default=0,
        metavar="N",
        help="schedule, run the segments on the device, refit the device model, reschedule: at most N "
        "rounds, stopping when the measured period stops improving; plan.json records each round",
    )
    device.add_argument(
        "--backend",
        choices=["coral", "sim"],
        default=None,
        help="coral: Edge TPUs (needs edgetpu_compiler and the runtime; default); sim: a simulated device",
    )
    device.add_argument(
        "--device-spec",
        default=None,
        metavar="TRUTH.json|PRESET",
        help="sim: the constants the simulated device really has (default: the usb preset)",
    )
    device.add_argument("--devices", default=None, metavar="usb:0,...", help="coral: the Edge TPU of each segment")
    device.add_argument("--runner", choices=["auto", "litert", "pycoral"], default=None, help="coral: pipelined runner")


def _add_reporting_arguments(parser: argparse.ArgumentParser) -> None:
    """What is printed: JSON or a table, progress logging, the version."""
    parser.add_argument("--json", action="store_true", help="print the plan JSON instead of a table")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    parser.add_argument("--version", action="version", version=f"respect-pass {__version__}")


def _inspect_parser() -> OneLineParser:
    p = OneLineParser(
        prog="respect-pass inspect",
        description="Print the operator table of a .tflite model, "
        "with the device (Edge TPU or CPU) edgetpu_compiler would place each op on, and why.",
    )
    p.add_argument("model", metavar="MODEL.tflite")
    p.add_argument("--fix-batch", action="store_true", help="accept a dynamic batch dimension (as 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.2f}"


def format_inspect(graph: OpGraph) -> str:
    """The human-readable op table of ``respect-pass inspect``."""
    rows = [f"{'op':>4}  {'type':<28} {'params (B)':>12} {'MACs':>14} {'out (B)':>10}  device"]
    for op, where in zip(graph.ops, place_ops(graph)):
        out_bytes = sum(graph.tensors[t].nbytes for t in op.outputs)
        device = "tpu" if where.device == "tpu" else f"cpu  ({where.reason})"
        rows.append(f"{op.index:>4}  {op.label:<28} {op.param_bytes:>12,} {op.macs:>14,} {out_bytes:>10,}  {device}")
    rows.append("-" * len(rows[0]))
    cpu = len(graph.host_ops)
    rows.append(
        f"placement: {graph.num_ops - cpu} ops on the Edge TPU, {cpu} on the CPU"
        + (f" (ops {_ranges(sorted(graph.host_ops))})" if cpu else "")
    )
    rows.append(
        f"{graph.num_ops} ops, {len(graph.edges)} activation edges, "
        f"{graph.total_param_elements:,} parameters ({_mb(graph.total_param_bytes)} MiB), "
        f"{graph.total_macs / 1e6:,.1f} M MACs"
    )
    ins = ", ".join(f"{graph.tensors[t].name} {list(graph.tensors[t].shape)} {graph.tensors[t].dtype}" for t in graph.inputs)
    outs = ", ".join(
        f"{graph.tensors[t].name} {list(graph.tensors[t].shape)} {graph.tensors[t].dtype}" for t in graph.outputs
    )
    rows.append(f"inputs: {ins}")
    rows.append(f"outputs: {outs}")
    return "\n".join(rows)


def _ranges(values: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``'1-3, 7'``."""
    out: list[str] = []
    for v in values:
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


def inspect_json(graph: OpGraph) -> dict:
    """``respect-pass inspect --json``: the op table (with each op's device and reason) and totals."""
    return {
        "model": graph.name,
        "num_ops": graph.num_ops,
        "tpu_ops": len(graph.tpu_ops),
        "cpu_ops": sorted(graph.host_ops),
        "param_bytes": graph.total_param_bytes,
        "param_count": graph.total_param_elements,
        "macs": graph.total_macs,
        "ops": [
            {
                "index": op.index,
                "type": op.label,
                "param_bytes": op.param_bytes,
                "macs": op.macs,
                "output_bytes": sum(graph.tensors[t].nbytes for t in op.outputs),
                "device": where.device,
                "reason": where.reason,
            }
            for op, where in zip(graph.ops, place_ops(graph))
        ],
    }


def format_result(result: PartitionResult) -> str:
    """Human-readable summary of a partition run."""
    doc = result.plan_doc
    segments = f"{doc['num_segments']} segment{'s' if doc['num_segments'] != 1 else ''}"
    rows = [
        f"{segments} on {doc['tpus']} TPUs of {doc['model']} (scheduler: {doc['scheduler']})",
        f"{'seg':>3}  {'TPUs':>7}  {'ops':>5}  {'params MiB':>10}  {'pred ms':>8}  {'in':>3}  {'out':>3}  file",
    ]
    for seg in doc["segments"]:
        tpus = _ranges(seg["devices"])
        rows.append(
            f"{seg['index']:>3}  {tpus:>7}  {len(seg['ops']):>5}  {_mb(seg['param_bytes']):>10}  "
            f"{seg['predicted_ms']:>8.3f}  {len(seg['inputs']):>3}  {len(seg['outputs']):>3}  "
            f"{result.segment_paths[seg['index']]}"
        )
    rows.append(
        "TPUs: the TPUs running the segment; params: its parameters as the compiler lays them out; "
        "in / out: the tensors it receives / sends"
    )
    rows.append(
        f"predicted: period {doc['predicted_bottleneck_ms']:.3f} ms "
        f"({1e3 / doc['predicted_bottleneck_ms']:.1f} inferences/s), latency {doc['predicted_latency_ms']:.3f} ms"
    )
    rows.append(result.spec.error_line())
    if any(seg["replicas"] > 1 for seg in doc["segments"]):
        pipeline = doc["scheduler_stats"].get("pipeline_bottleneck_ms")
        rows.append(
            "replicas: each request runs on one TPU of each segment (our runner; pycoral's takes --no-replicas)"
            + (f"; {doc['tpus']} one-TPU stages would give {pipeline:.3f} ms" if pipeline else "")
        )
    rows.append(f"plan: {result.plan_path}")
    if result.plot_path is not None:
        rows.append(f"plot: {result.plot_path}")
    for seg in doc["segments"]:
        if "compiler" in seg:
            c = seg["compiler"]
            rows.append(
                f"compiled {seg['edgetpu_file']}: {c['tpu_ops']}/{c['total_ops']} ops on the Edge TPU, "
                f"{_mb(c['on_chip_bytes'] or 0)} MiB cached, {_mb(c['off_chip_bytes'] or 0)} MiB streamed"
            )
    cpu = [(seg["index"], seg["cpu_ops"], seg["predicted_host_ms"]) for seg in doc["segments"] if seg.get("cpu_ops")]
    for k, ops, ms in cpu:
        rows.append(f"segment {k}: ops {_ranges(ops)} run on the CPU (predicted {ms:.3f} ms of host time)")
    refined = doc.get("device_refinement")
    if refined:
        for r in refined["rounds"]:
            rows.append(
                f"round {r['round']} on the {refined['backend']} device: predicted "
                f"{r['predicted_bottleneck_ms']:.3f} ms, measured {r['measured_bottleneck_ms']:.3f} ms"
            )
        rows.append(
            f"refined on the device in {refined['device_runs']} pipeline run(s); the plan with the best "
            "measured period is written, predicted with the refitted device model"
        )
    if result.verify is not None:
        rows.append(
            f"verified: {result.verify.tensors_checked} boundary/output tensors bit-exact "
            f"over {result.verify.trials} random inputs"
        )
        if result.verify.stopped_before:
            rows.append(
                f"verified up to {', '.join(result.verify.stopped_before)} only: LiteRT has no kernel for it; "
                "the segments' wiring was checked by tensor name"
            )
    return "\n".join(rows)


def terminal_progress(**kwargs: Any) -> Any:
    """A tqdm bar on stderr, shown only when stderr is a terminal (the library's ``progress=`` hook)."""
    from tqdm import tqdm

    return tqdm(file=sys.stderr, disable=None, leave=False, **kwargs)


def run_cli(prog: str, body, argv: Sequence[str]) -> int:
    """Run ``body(argv)``, turning user errors into one stderr line and exit status 2."""
    try:
        return body(argv)
    except RespectPassError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _spec(argv: Sequence[str]) -> int:
    p = OneLineParser(
        prog="respect-pass spec",
        description="Print a device-model preset as the JSON that "
        "--spec FILE.json reads (edit it, or fit your own TPUs with 'respect-pass calibrate').",
    )
    p.add_argument("name", choices=sorted(PRESETS), help="preset name")
    print(PRESETS[p.parse_args(argv).name].to_json(), end="")
    return 0


def _inspect(argv: Sequence[str]) -> int:
    args = _inspect_parser().parse_args(argv)
    graph = load_model(args.model, args.fix_batch, host_time="table").graph
    print(json.dumps(inspect_json(graph), indent=2) if args.json else format_inspect(graph))
    return 0


#: Scheduler keyword -> command-line flag.
_OPTION_FLAGS = {
    "diff_threshold_ns": "--diff_threshold_ns",
    "partition_search_step": "--partition_search_step",
    "objective": "--objective",
    "alpha": "--alpha",
    "num_random": "--orders",
    "time_limit_s": "--time_limit",
    "workers": "--workers",
    "seed": "--seed",
    "samples": "--samples",
    "extra_samples": "--extra-samples",
}


def scheduler_options(scheduler: str, given: dict[str, Any]) -> dict[str, Any]:
    """The options set on the command line, checked against the keyword arguments ``scheduler`` takes."""
    accepted = inspect.signature(get_scheduler(scheduler)).parameters
    options = {k: v for k, v in given.items() if v is not None}
    for key in options:
        if key not in accepted:
            users = sorted(n for n, f in SCHEDULERS.items() if key in inspect.signature(f).parameters)
            raise RespectPassError(
                f"{_OPTION_FLAGS[key]} does not apply to --scheduler {scheduler} (only to: {', '.join(users)})"
            )
    return options


def _partition(argv: Sequence[str]) -> int:
    args = _partition_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    spec = load_spec(args.spec)
    if args.stages is not None and args.scheduler is not None:
        raise RespectPassError("--stages gives the plan itself; it does not combine with --scheduler")
    given = {"stages": parse_stages(args.stages)} if args.stages is not None else {}
    args.scheduler = "given" if given else args.scheduler or "respect"
    options = {**scheduler_options(args.scheduler, {k: getattr(args, k) for k in _OPTION_FLAGS}), **given}
    if (
        args.scheduler in ("exact", "respect+exact") and sys.stderr.isatty()
    ):  # the one scheduler that may run for many seconds
        print(f"exact: solving with CP-SAT (time limit {options.get('time_limit_s', 30.0):g} s)...", file=sys.stderr)
    device = _device(args)
    result = partition(
        args.model,
        args.num_segments,
        args.out_dir,
        scheduler=args.scheduler,
        verify=args.verify,
        spec=spec,
        compile=args.compile,
        scheduler_options=options,
        plot=args.plot,
        progress=terminal_progress,
        fix_batch=args.fix_batch,
        refine_rounds=args.refine_on_device,
        device=device,
        replicas=not args.no_replicas,
        host_time=args.host_time,
    )
    print(json.dumps(result.plan_doc, indent=2) if args.json else format_result(result))
    if not args.refine_on_device:  # a refined plan is predicted with the refitted spec: no like-for-like K - 1
        # the spec that predicted the plan (its host speed set for this machine), not the one given
        idle = idle_stage(result.graph, result.plan, result.spec, options, replicas=not args.no_replicas)
        if idle is not None:
            print(f"respect-pass: warning: {idle.message}", file=sys.stderr)
    return 0


def _sweep_parser() -> OneLineParser:
    p = OneLineParser(
        prog="respect-pass sweep",
        description="Plan a model for K = 1..N Edge TPUs (nothing is "
        "written) and print each K's predicted period, latency and throughput, the speedup over one "
        "TPU and over the compiler's split, and the recommended K: the smallest within 2% of the "
        "best throughput.",
    )
    p.add_argument("model", metavar="MODEL.tflite")
    p.add_argument(
        "--max-tpus",
        type=int,
        required=True,
        metavar="N",
        help="largest K to plan (capped at the largest K the model allows)",
    )
    p.add_argument(
        "--scheduler",
        default="respect",
        choices=sorted(set(SCHEDULERS) - {"given"}),
        help="scheduling algorithm (default: respect)",
    )
    p.add_argument(
        "--spec",
        default="usb",
        metavar=SPEC_METAVAR,
        help="Edge TPU cost-model constants (default: usb)",
    )
    p.add_argument("--plot", metavar="FILE.png", help="also draw throughput and speedup against K")
    p.add_argument("--no-replicas", action="store_true", help="pipelines only: K segments, one TPU each")
    p.add_argument("--fix-batch", action="store_true", help="accept a dynamic batch dimension (as 1)")
    add_host_time_argument(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return p


def _sweep(argv: Sequence[str]) -> int:
    args = _sweep_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    if args.max_tpus < 1:
        raise RespectPassError(f"--max-tpus must be at least 1, got {args.max_tpus}")
    spec = load_spec(args.spec)
    plot = check_plot_path(args.plot) if args.plot is not None else None
    result = sweep(
        args.model,
        args.max_tpus,
        spec,
        args.scheduler,
        fix_batch=args.fix_batch,
        replicas=not args.no_replicas,
        host_time=args.host_time,
    )
    if plot is not None:
        from .plot import sweep_plot_png

        write_files(plot.parent, {plot.name: sweep_plot_png(result)})
    print(json.dumps(result.as_json(), indent=2) if args.json else format_sweep(result))
    if plot is not None and not args.json:
        print(f"plot: {plot}")
    return 0


def _device(args: Any) -> Any:
    """The device ``--refine-on-device`` measures on, from --backend / --device-spec / --devices / --runner."""
    from hardware.calibrate import CoralDevice, SimDevice
    from hardware.compiler import find_compiler
    from hardware.devices import parse_devices

    given = [
        f
        for f, v in (
            ("--backend", args.backend),
            ("--device-spec", args.device_spec),
            ("--devices", args.devices),
            ("--runner", args.runner),
        )
        if v is not None
    ]
    if not args.refine_on_device:
        if given:
            raise RespectPassError(f"{given[0]} applies only with --refine-on-device N")
        return None
    if args.refine_on_device < 1:
        raise RespectPassError(f"--refine-on-device needs at least 1 round, got {args.refine_on_device}")
    if args.stages is not None:
        raise RespectPassError("--stages gives the plan itself; it does not combine with --refine-on-device")
    if (args.backend or "coral") == "sim":
        if args.devices or args.runner:
            raise RespectPassError("--devices and --runner apply to --backend coral only")
        return SimDevice(load_spec(args.device_spec or "usb"))
    if args.device_spec is not None:
        raise RespectPassError("--device-spec applies to --backend sim only (a real device has its own constants)")
    find_compiler()  # fail before scheduling
    return CoralDevice(devices=parse_devices(args.devices) if args.devices else None, runner=args.runner or "auto")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``respect-pass`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "inspect":
        return run_cli("respect-pass inspect", _inspect, argv[1:])
    if argv and argv[0] == "sweep":
        return run_cli("respect-pass sweep", _sweep, argv[1:])
    if argv and argv[0] == "pool":
        from .pool_cli import pool_main

        return run_cli("respect-pass pool", pool_main, argv[1:])
    if argv and argv[0] == "spec":
        return run_cli("respect-pass spec", _spec, argv[1:])
    if argv and argv[0] == "devices":
        from .devices_cli import devices_main

        return run_cli("respect-pass devices", devices_main, argv[1:])
    if argv and argv[0] == "calibrate":
        from .calibrate_cli import calibrate_main

        return run_cli("respect-pass calibrate", calibrate_main, argv[1:])
    if argv and argv[0] == "train":
        if importlib.util.find_spec("torch") is None:
            print(
                "respect-pass train: error: training needs torch: pip install 'respect-pass[train]' "
                "(torch==2.13.0, a CPU wheel)",
                file=sys.stderr,
            )
            return EXIT_USER_ERROR
        from .policy import train_main

        return run_cli("respect-pass train", train_main, argv[1:])
    return run_cli("respect-pass", _partition, argv)


if __name__ == "__main__":
    sys.exit(main())
