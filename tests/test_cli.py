"""End-to-end tests of the console scripts, run as subprocesses."""

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import crafting
import pytest
from strategies import BRANCHY

#: subprocess runs of the console scripts: left out of ``make test-fast``
pytestmark = pytest.mark.slow

STEM = "mobilenet_v2_0.35_96_int8"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "respect_pass", *args], capture_output=True, text=True, cwd=cwd, timeout=120
    )


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_happy_path_writes_segments_and_plan(tmp_path):
    """-n 4 is four TPUs: the embedded model fits one, so it runs as one segment on all four."""
    before = digest(crafting.EMBEDDED)
    out = tmp_path / "out"
    r = run(str(crafting.EMBEDDED), "-n", "4", "-o", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / f"{STEM}_plan.json").read_text())
    s = doc["num_segments"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{STEM}_segment_{i}_of_{s}.tflite" for i in range(s)] + [f"{STEM}_plan.json"]
    )
    assert doc["tpus"] == 4 and doc["scheduler"] == "respect" and s == 1
    assert doc["segments"][0]["replicas"] == 4 and doc["segments"][0]["devices"] == [0, 1, 2, 3]
    assert doc["predicted_bottleneck_ms"] == pytest.approx(doc["predicted_latency_ms"] / 4, rel=1e-9)
    assert sorted(i for s in doc["segments"] for i in s["ops"]) == list(range(64))
    assert "1 segment on 4 TPUs" in r.stdout and "0-3" in r.stdout
    assert digest(crafting.EMBEDDED) == before


def test_no_replicas_writes_one_segment_per_tpu(tmp_path):
    out = tmp_path / "out"
    r = run(str(crafting.EMBEDDED), "-n", "4", "-o", str(out), "--no-replicas")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{STEM}_segment_{i}_of_4.tflite" for i in range(4)] + [f"{STEM}_plan.json"]
    )
    assert "4 segments on 4 TPUs" in r.stdout


def test_verify_and_json(tmp_path):
    r = run(str(crafting.EMBEDDED), "-n", "3", "-o", str(tmp_path), "--verify", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["tpus"] == 3 and len(doc["segments"]) == doc["num_segments"] <= 3
    assert sum(s["replicas"] for s in doc["segments"]) <= 3


def test_verify_and_json_without_replicas_is_one_tpu_per_segment(tmp_path):
    r = run(str(crafting.EMBEDDED), "-n", "3", "-o", str(tmp_path), "--verify", "--json", "--no-replicas")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["tpus"] == doc["num_segments"] == 3 and [s["replicas"] for s in doc["segments"]] == [1, 1, 1]


def test_verify_table_mentions_bit_exact(tmp_path):
    r = run(str(crafting.EMBEDDED), "-n", "2", "-o", str(tmp_path), "--verify")
    assert r.returncode == 0 and "bit-exact" in r.stdout


def test_inspect_table_and_json():
    r = run("inspect", str(crafting.EMBEDDED))
    assert r.returncode == 0
    assert "64 ops" in r.stdout and "FULLY_CONNECTED" in r.stdout
    j = json.loads(run("inspect", str(crafting.EMBEDDED), "--json").stdout)
    assert j["num_ops"] == 64 and len(j["ops"]) == 64


def _bad_files(tmp: Path) -> dict[str, Path]:
    data = crafting.EMBEDDED.read_bytes()
    files = {
        "not_flatbuffer": b"hello, this is not a model at all\n" * 10,
        "wrong_identifier": crafting.wrong_identifier(data),
        "truncated": data[: len(data) // 2],
        "corrupted": data[:64] + bytes(b ^ 0xA5 for b in data[64:2000]) + data[2000:],
        "float": crafting.float_model(data),
        "subgraphs": crafting.two_subgraphs(data),
        "dynamic": crafting.dynamic_batch(data),
        "compiled": crafting.compiled(data),
        "bad_quantization": crafting.bad_zero_point(data),
        "empty": b"",
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = tmp / f"{name}.tflite"
        paths[name].write_bytes(blob)
    paths["missing"] = tmp / "missing.tflite"
    return paths


BAD = [
    "not_flatbuffer",
    "wrong_identifier",
    "truncated",
    "corrupted",
    "float",
    "subgraphs",
    "dynamic",
    "compiled",
    "bad_quantization",
    "empty",
    "missing",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_model_gives_one_line_and_no_output(tmp_path, case):
    path = _bad_files(tmp_path)[case]
    out = tmp_path / "out"
    r = run(str(path), "-n", "2", "-o", str(out))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("respect-pass: error: "), r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    r = run("inspect", str(path))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args,match",
    [
        (["-n", "0"], "between 1 and 64"),
        (["-n", "65", "--no-replicas"], "between 1 and 64"),
        (["-n", "65"], "number of TPUs must be between 1 and 64, got 65"),
        (["-n", "x"], "invalid int value"),
        (["-n", "2", "--scheduler", "magic"], "invalid choice"),
    ],
)
def test_bad_arguments(tmp_path, args, match):
    out = tmp_path / "out"
    extra = [] if "-o" in args else ["-o", str(out)]
    r = run(str(crafting.EMBEDDED), *args, *extra)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0]
    assert not out.exists()


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    r = run(str(crafting.EMBEDDED), "-n", "2", "-o", str(blocker / "out"))
    assert r.returncode == 2 and "cannot write output directory" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run(str(crafting.EMBEDDED), "-n", "2", "-o", str(blocker))
    assert r.returncode == 2 and "not a directory" in r.stderr
    assert blocker.read_text() == "x"


def test_failure_leaves_existing_output_dir_untouched(tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    r = run(str(crafting.EMBEDDED), "-n", "99", "--no-replicas", "-o", str(tmp_path))
    assert r.returncode == 2
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "respect-pass"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("respect-pass ")


def test_plan_predictions_come_from_the_cost_model(tmp_path):
    from hardware import PCIE, stage_costs
    from tflite_io import read

    r = run(str(crafting.EMBEDDED), "-n", "3", "--no-replicas", "-o", str(tmp_path), "--spec", "pcie", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    g = read(crafting.EMBEDDED)
    stages = [0] * g.num_ops
    for seg in doc["segments"]:
        for i in seg["ops"]:
            stages[i] = seg["index"]
    want = [c.ms for c in stage_costs(g, stages, 3, PCIE)]
    assert [s["predicted_ms"] for s in doc["segments"]] == pytest.approx(want)
    assert doc["predicted_bottleneck_ms"] == pytest.approx(max(want))
    assert doc["predicted_latency_ms"] == pytest.approx(sum(want))


def test_spec_file_and_bad_spec(tmp_path):
    spec = tmp_path / "mine.json"
    spec.write_text('{"io_bytes_per_s": 1e6}')
    slow = json.loads(
        run(str(crafting.EMBEDDED), "-n", "2", "-o", str(tmp_path / "a"), "--spec", str(spec), "--json").stdout
    )
    fast = json.loads(run(str(crafting.EMBEDDED), "-n", "2", "-o", str(tmp_path / "b"), "--json").stdout)
    assert slow["predicted_latency_ms"] > fast["predicted_latency_ms"]
    spec.write_text("{oops")
    r = run(str(crafting.EMBEDDED), "-n", "2", "-o", str(tmp_path / "c"), "--spec", str(spec))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "unreadable JSON" in r.stderr
    assert not (tmp_path / "c").exists()


def test_compile_with_fake_compiler_writes_compiled_files_and_logs(tmp_path, fake_compiler):
    out = tmp_path / "out"
    r = run(str(crafting.EMBEDDED), "-n", "2", "--no-replicas", "-o", str(out), "--compile")
    assert r.returncode == 0, r.stderr
    names = {p.name for p in out.iterdir()}
    for i in range(2):
        assert {
            f"{STEM}_segment_{i}_of_2.tflite",
            f"{STEM}_segment_{i}_of_2_edgetpu.tflite",
            f"{STEM}_segment_{i}_of_2_edgetpu.log",
        } <= names
    doc = json.loads((out / f"{STEM}_plan.json").read_text())
    assert doc["compiler_version"] == "16.0.384591198"
    seg = doc["segments"][1]
    assert seg["edgetpu_file"] == f"{STEM}_segment_1_of_2_edgetpu.tflite"
    assert seg["compiler"]["cpu_ops"] == 0 and seg["compiler"]["on_chip_bytes"] == round(6.28 * 2**20)
    assert "ops on the Edge TPU" in r.stdout


@pytest.mark.parametrize(
    "mode, match",
    [("cpu", "would run on the CPU where our placement expected 0: CUSTOM x1"), ("fail", "edgetpu_compiler failed")],
)
def test_compile_failure_on_one_segment_writes_nothing(tmp_path, fake_compiler, monkeypatch, mode, match):
    monkeypatch.setenv("FAKE_EDGETPU_MODE", mode)
    monkeypatch.setenv("FAKE_EDGETPU_FAIL_ON", "segment_1_of_3")
    out = tmp_path / "out"
    r = run(str(crafting.EMBEDDED), "-n", "3", "--no-replicas", "-o", str(out), "--compile")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "segment_1_of_3" in r.stderr and match in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".respect-pass-*"))


def test_compile_without_compiler_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    out = tmp_path / "out"
    r = run(str(crafting.EMBEDDED), "-n", "2", "--no-replicas", "-o", str(out), "--compile")
    assert r.returncode == 2 and "edgetpu_compiler not found on PATH" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not out.exists()


def test_profiling_scheduler_through_the_cli(tmp_path):
    out = tmp_path / "out"
    r = run(
        str(crafting.EMBEDDED),
        "-n",
        "3",
        "-o",
        str(out),
        "--scheduler",
        "profiling",
        "--diff_threshold_ns",
        "10000",
        "--partition_search_step",
        "2",
        "--verify",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["scheduler"] == "profiling" and doc["scheduler_stats"]["device_runs"] > 0
    assert sorted(i for s in doc["segments"] for i in s["ops"]) == list(range(64))
    bad = run(str(crafting.EMBEDDED), "-n", "3", "-o", str(tmp_path / "x"), "--partition_search_step", "2")
    assert (
        bad.returncode == 2
        and "--partition_search_step does not apply to --scheduler respect (only to: profiling)" in bad.stderr
    )


def test_plot_is_written_and_a_bad_plot_path_writes_nothing(tmp_path):
    out, png = tmp_path / "out", tmp_path / "stages.png"
    r = run(str(crafting.EMBEDDED), "-n", "3", "-o", str(out), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes()[:4] == b"\x89PNG" and f"plot: {png}" in r.stdout
    for bad in (tmp_path / "missing" / "x.png", tmp_path / "x.txt"):
        r = run(str(crafting.EMBEDDED), "-n", "3", "-o", str(tmp_path / "out2"), "--plot", str(bad))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out2").exists() and not bad.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("--scheduler", "dp"),
        ("--scheduler", "dp", "--objective", "memory"),
        ("--scheduler", "multiorder", "--orders", "3", "--seed", "7"),
        ("--scheduler", "exact", "--time_limit", "20", "--workers", "1"),
        ("--scheduler", "respect", "--samples", "2"),
        ("--scheduler", "respect+exact", "--time_limit", "20"),
    ],
)
def test_dp_and_multiorder_through_the_cli(tmp_path, args):
    r = run(str(crafting.EMBEDDED), "-n", "3", "--no-replicas", "-o", str(tmp_path / "o"), "--verify", "--json", *args)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["scheduler"] == args[1] and doc["objective"] == (args[3] if "--objective" in args else "latency")
    if args[1] in ("exact", "respect+exact"):
        assert doc["optimal"] is True and doc["lower_bound_ms"] == pytest.approx(doc["predicted_bottleneck_ms"])


def test_bad_respect_flags_are_one_line(tmp_path):
    r = run(str(crafting.EMBEDDED), "-n", "2", "-o", str(tmp_path / "o"), "--samples", "-1")
    assert r.returncode == 2 and r.stderr == "respect-pass: error: --samples must be >= 0, got -1\n"
    assert not (tmp_path / "o").exists()
    r = run(str(crafting.EMBEDDED), "-n", "2", "-o", str(tmp_path / "o"), "--extra-samples", "-2")
    assert r.returncode == 2 and r.stderr == "respect-pass: error: --extra-samples must be >= 0, got -2\n"
    assert not (tmp_path / "o").exists()
    r = run("train", "--bogus")
    assert r.returncode == 2 and r.stderr == "respect-pass train: error: unrecognized arguments: --bogus\n"


def test_given_stage_map_is_written_verified_and_predicted(tmp_path):
    """--stages: a user's map (here: ops 0-10, then the rest from the first output op on) goes through the usual checks."""
    stages = ",".join(["0"] * 11 + ["1"] * 23)
    out = tmp_path / "given"
    r = run(str(BRANCHY), "-n", "2", "--no-replicas", "-o", str(out), "--stages", stages, "--verify", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["scheduler"] == "given"
    assert [s["ops"] for s in doc["segments"]] == [list(range(11)), list(range(11, 34))]
    assert doc["predicted_bottleneck_ms"] > 0


@pytest.mark.parametrize(
    "stages,match",
    [
        ("0,x", "entry 1 is 'x'"),
        ("0,1", "stage map has 2 entries for 34 ops"),
        (",".join(["0"] * 12 + ["1"] * 22), r"op 11 \(FULLY_CONNECTED\) produces a model output but is in stage 0"),
    ],
)
def test_given_stage_map_errors_name_the_problem(tmp_path, stages, match):
    r = run(str(BRANCHY), "-n", "2", "-o", str(tmp_path / "o"), "--stages", stages)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert re.search(match, r.stderr), r.stderr
    assert not (tmp_path / "o").exists()


def test_spec_prints_a_preset_that_spec_file_reads_back(tmp_path):
    r = run("spec", "usb-separate")
    assert r.returncode == 0, r.stderr
    path = tmp_path / "mine.json"
    path.write_text(r.stdout)
    from hardware import USB_SEPARATE, load_spec

    assert load_spec(str(path)) == USB_SEPARATE
    r = run("spec", "nope")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "invalid choice" in r.stderr


def _spec_file(tmp: Path, **changes) -> Path:
    """A spec JSON: the usb preset with ``changes``."""
    doc = json.loads(run("spec", "usb").stdout)
    doc.update(changes, name="crafted")
    path = tmp / "crafted_spec.json"
    path.write_text(json.dumps(doc))
    return path


def test_idle_stage_warning_is_one_stderr_line(tmp_path):
    """Without a per-invoke cost the embedded model is input-bound: a third TPU idles and K=2 does as well."""
    spec = _spec_file(tmp_path, t_invoke_s=0.0)
    r = run(str(crafting.EMBEDDED), "-n", "3", "--no-replicas", "-o", str(tmp_path / "o"), "--spec", str(spec), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["num_segments"] == 3  # stdout is the plan JSON only
    assert r.stderr.count("\n") == 1
    assert re.fullmatch(
        r"respect-pass: warning: (stage \d is idle \d+% of the period \([\d.]+ of [\d.]+ ms\)|"
        r"stages (\d \(\d+%, [\d.]+ ms\)(, )?)+ are idle most of the [\d.]+ ms period); "
        r"K=[12] gives (the same|a shorter) period \([\d.]+ ms(, the fewest TPUs that do)?\)"
        r"(; with replicas \(without --no-replicas\) K=3 gives [\d.]+ ms)?\n",
        r.stderr,
    ), r.stderr


def test_no_idle_warning_where_every_stage_works_or_fewer_tpus_are_slower(tmp_path):
    for n, spec in (("1", "usb"), ("4", "usb"), ("4", str(_spec_file(tmp_path, t_invoke_s=0.0, peak_macs_per_s=1e10)))):
        r = run(str(crafting.EMBEDDED), "-n", n, "-o", str(tmp_path / f"o{n}"), "--spec", spec)
        assert r.returncode == 0 and "warning" not in r.stderr, (n, spec, r.stderr)


ASPP = Path(__file__).parent / "data" / "evidence" / "deeplab_v3_aspp_int8.tflite"


def _run_pipeline(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "run_pipeline"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)


def test_host_ops_are_measured_and_plan_and_simulation_agree(tmp_path):
    """A DeepLab-like model with host ops: the plan records the host ops' measured times, and the simulator
    costs the segments as the plan did (the plan's model, stage map and host times), so plan and simulation
    give the same stage times and period."""
    from hardware import USB

    out = tmp_path / "out"
    r = run(str(ASPP), "-n", "2", "-o", str(out), "--no-replicas", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    host = {v for seg in doc["segments"] for v in seg["cpu_ops"]}
    assert host and {int(v) for v in doc["host_times"]} == host
    assert all(0 < t < 1 for t in doc["host_times"].values())
    assert doc["spec"] == "usb" and doc["prediction_error"] == USB.typical_error
    sim = _run_pipeline(str(out), "--backend", "sim", "--json")
    assert sim.returncode == 0, sim.stderr
    report = json.loads(sim.stdout)
    assert report["predicted_period_ms"] == pytest.approx(doc["predicted_bottleneck_ms"], rel=1e-9)
    assert [s["ms"] for s in report["stages"]] == pytest.approx([s["predicted_ms"] for s in doc["segments"]], rel=1e-9)
    assert report["prediction_error"] == USB.typical_error
    table = run(str(ASPP), "-n", "2", "-o", str(tmp_path / "table"), "--no-replicas", "--json", "--host-time", "table")
    assert table.returncode == 0, table.stderr
    assert json.loads(table.stdout)["host_times"] == {}


def test_text_outputs_say_how_far_the_device_model_typically_is(tmp_path):
    r = run(str(crafting.EMBEDDED), "-n", "2", "-o", str(tmp_path / "o"), "--spec", "devboard")
    assert r.returncode == 0, r.stderr
    assert "device model 'devboard': predictions are typically within x" in r.stdout
    s = run("sweep", str(crafting.EMBEDDED), "--max-tpus", "2", "--json", "--spec", "rpi4")
    assert s.returncode == 0, s.stderr
    from hardware import RPI4

    assert json.loads(s.stdout)["prediction_error"] == RPI4.typical_error


def test_spec_prints_every_preset():
    from hardware import PRESETS

    for name in PRESETS:
        r = run("spec", name)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["name"] == name
    helped = run("--help")
    assert all(name in helped.stdout for name in PRESETS)


def test_a_rerun_with_another_k_leaves_no_stale_segments_and_v_logs_the_steps(tmp_path):
    out = tmp_path / "out"
    assert run(str(crafting.EMBEDDED), "-n", "4", "--no-replicas", "-o", str(out)).returncode == 0
    r = run(str(crafting.EMBEDDED), "-n", "2", "--no-replicas", "-o", str(out), "-v")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [f"{STEM}_plan.json"] + [
        f"{STEM}_segment_{i}_of_2.tflite" for i in range(2)
    ]
    assert "removed 4 file(s) of a plan with another number of segments" in r.stderr
    for step in (
        "device model usb",
        "64 ops, 0 on the CPU",
        "respect scheduler: 2 stages",
        "built 2 segment files",
        "wrote 3 files",
    ):
        assert step in r.stderr, step


def test_plan_simulation_and_plot_give_one_parameter_figure_and_columns_that_add_up(tmp_path):
    out = tmp_path / "out"
    r = run(str(crafting.EMBEDDED), "-n", "2", "--no-replicas", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    sim = _run_pipeline(str(out), "--json")
    report = json.loads(sim.stdout)
    assert [s["param_bytes"] for s in doc["segments"]] == [s["param_bytes"] for s in report["stages"]]
    assert [s["param_bytes"] for s in report["stages"]] == [
        s["on_chip_bytes"] + s["off_chip_bytes"] for s in report["stages"]
    ]
    text = _run_pipeline(str(out)).stdout.splitlines()
    assert text[0].split()[:8] == ["seg", "tpus", "ms", "=", "invoke", "+", "tpu", "+"]
    for line in text[1:3]:
        cells = line.split()
        ms, parts = float(cells[2]), [float(c) for c in cells[3:8]]
        assert sum(parts) == pytest.approx(ms, abs=0.003), line
    assert text[3].startswith("ms = invoke (the runtime's call) + tpu")
    assert "for one request alone" in text[4] and "each waits its turn too" in text[4]


def test_the_table_explains_its_columns_and_help_points_to_the_commands(tmp_path):
    r = run(str(crafting.EMBEDDED), "-n", "2", "--no-replicas", "-o", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    assert "in / out: the tensors it receives / sends" in r.stdout
    spec_help = run("spec", "--help").stdout
    assert "respect-pass calibrate" in spec_help and "tools/calibrate.py" not in spec_help
    helped = " ".join(run("--help").stdout.split())
    for command in ("inspect", "sweep", "spec", "calibrate", "devices", "train", "run_pipeline"):
        assert command in helped, command


def test_calibrate_prints_rounded_constants(tmp_path):
    r = run("calibrate", "--backend", "sim", "-o", str(tmp_path / "fit.json"))
    assert r.returncode == 0, r.stderr
    constants = [line for line in r.stdout.splitlines() if line.startswith("  ") and " = " in line]
    # 4 significant digits: never a float like 0.00011699999999999998
    assert constants and not any(re.search(r"\d{9,}", line.split(" = ")[1]) for line in constants)
    assert "Edge TPU clock: max" in r.stdout
