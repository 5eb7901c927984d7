"""respect-pass calibrate: the designed micro-models, measured on a simulated device with hidden constants,
give back a spec that predicts other models as the hidden one does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import crafting
import pytest
from strategies import BRANCHY

from hardware import USB, load_spec, pipeline_period_ms, stage_costs
from hardware.calibrate import MAX_CACHE, CoralDevice, SimDevice, cache_from, calibrate, design, tell_clock
from hardware.compiler import CompilerError
from hardware.placement import placed
from respect_pass.generator import generate
from respect_pass.schedulers import get_scheduler
from tflite_io import read

pytestmark = pytest.mark.slow  # calibration loops on the simulated device and the CLI in subprocesses

#: every constant of the preset scaled by a factor in 0.5-2x (the issue's test of the loop)
TRUTH = USB.with_(
    name="truth",
    t_invoke_s=USB.t_invoke_s * 1.7,
    efficiency={"conv": 0.55, "depthwise": 0.05},
    elementwise_s_per_byte=USB.elementwise_s_per_byte * 0.6,
    io_bytes_per_s=USB.io_bytes_per_s * 1.8,
    stream_bytes_per_s=USB.stream_bytes_per_s * 0.7,
    stream_tile_positions=1400,
    cache_bytes=int(USB.cache_bytes * 0.8),
    cache_io_share=USB.cache_io_share * 1.5,
    shared_link_bytes_per_s=USB.shared_link_bytes_per_s * 0.5,
)


def held_out():
    return [
        placed(read(crafting.EMBEDDED)),
        placed(read(BRANCHY)),
        generate("residual", 120, 3),
        generate("inception", 150, 4),
        generate("squeeze_excite", 100, 5),
    ]


def test_every_probe_isolates_a_term_and_fits_the_cache_bounds():
    probes = design()
    assert {p.term for p in probes} >= {"t_invoke", "conv", "depthwise", "elementwise", "io", "stream", "stream tile"}
    assert len({p.name for p in probes}) == len(probes)
    # a streaming probe's one big layer is larger than any cache the bisections can find
    big = read_graph(next(p for p in probes if p.name == "stream-dense").build())
    assert max(op.param_bytes for op in big.ops) > MAX_CACHE


def read_graph(data):
    from hardware.calibrate import graph_of

    return graph_of(data)


@pytest.fixture(scope="module")
def calibration():
    device = SimDevice(TRUTH)
    return device, calibrate(device, USB)


def test_calibration_uses_at_most_60_measurements(calibration):
    device, cal = calibration
    assert cal.measurements == device.runs <= 60
    assert len(cal.rows) == cal.measurements - 1  # one pipeline run besides the single-TPU probes
    assert all(p == pytest.approx(m, rel=0.02) for _, m, p in cal.rows)


def test_fitted_spec_predicts_held_out_models_within_5_percent_at_k_1_to_8(calibration):
    _, cal = calibration
    dp = get_scheduler("dp")
    errors = []
    for g in held_out():
        for k in range(1, 9):
            plan = dp(g, k, cal.spec)
            fitted = pipeline_period_ms(stage_costs(g, plan.stages, k, cal.spec), cal.spec)
            truth = pipeline_period_ms(stage_costs(g, plan.stages, k, TRUTH), TRUTH)
            errors.append(abs(fitted / truth - 1))
    assert max(errors) < 0.05, max(errors)


def test_the_fit_finds_the_hidden_cache_and_link(calibration):
    _, cal = calibration
    assert cal.spec.cache_bytes == pytest.approx(TRUTH.cache_bytes, rel=0.01)
    assert cal.spec.cache_io_share == pytest.approx(TRUTH.cache_io_share, rel=0.05)
    assert cal.spec.shared_link_bytes_per_s == pytest.approx(TRUTH.shared_link_bytes_per_s, rel=0.02)
    assert cal.shared_link.startswith("shared")


def test_separate_links_are_recognised():
    device = SimDevice(TRUTH.with_(shared_link_bytes_per_s=0.0))
    from hardware.calibrate import _fit_shared_link

    rate, how = _fit_shared_link(device, TRUTH, 0)
    assert rate == 0.0 and how.startswith("not shared") and device.runs == 1


def test_the_coral_device_needs_the_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CompilerError, match="edgetpu_compiler"):
        CoralDevice().time_model(design()[0].build(), "invoke")


def cli(*args):
    exe = Path(sys.executable).parent / "respect-pass"
    return subprocess.run([str(exe), "calibrate", *args], capture_output=True, text=True, timeout=300)


def test_cli_sim_loop_writes_a_spec_that_loads(tmp_path):
    truth = tmp_path / "truth.json"
    truth.write_text(TRUTH.to_json())
    out = tmp_path / "fitted.json"
    r = cli("--backend", "sim", "--device-spec", str(truth), "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["measurements"] <= 60 and doc["backend"] == "sim" and len(doc["rows"]) == doc["measurements"] - 1
    spec = load_spec(str(out))
    assert spec.name == "fitted" and spec.cache_bytes == pytest.approx(TRUTH.cache_bytes, rel=0.01)


def test_the_text_report_lists_every_probe_and_the_constants(calibration):
    from respect_pass.calibrate_cli import format_calibration

    _, cal = calibration
    text = format_calibration(cal, "sim")
    assert all(label in text for label, _, _ in cal.rows)
    assert f"fitted on {cal.measurements} sim measurements" in text and "cache_io_share" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "sim", "-o", "fitted.txt"], "must be a .json file"),
        (["--backend", "coral", "--device-spec", "usb", "-o", "f.json"], "applies to --backend sim only"),
        (["--backend", "sim", "--devices", "usb:0", "-o", "f.json"], "applies to --backend coral only"),
        (["--backend", "sim", "--device-spec", "nope.json", "-o", "f.json"], "nope.json"),
        (["--backend", "sim", "--jitter", "-0.1", "-o", "f.json"], "--jitter must be >= 0, got -0.1"),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, args, message):
    r = subprocess.run(
        [str(Path(sys.executable).parent / "respect-pass"), "calibrate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_cli_coral_without_the_compiler_is_one_line(tmp_path):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    r = subprocess.run(
        [
            str(Path(sys.executable).parent / "respect-pass"),
            "calibrate",
            "--backend",
            "coral",
            "-o",
            str(tmp_path / "f.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert r.returncode == 2 and "edgetpu_compiler" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "f.json").exists()


def test_cache_from_finds_a_cache_and_share_every_observation_agrees_with():
    c0, share = 9_000_000, 0.4
    seen = []
    for n in range(8000, 9500, 16):  # the dense family: 1024 * n bytes, n + 16 bytes over the link
        seen.append((1024 * n, n + 16, 1024 * n > c0 - share * (n + 16)))
    for f in range(3000, 6000, 16):  # the conv family: 1032 * F bytes, 1 MiB + 1024 * F bytes over the link
        io = 2**20 + 1024 * f
        seen.append((1032 * f, io, 1032 * f > c0 - share * io))
    cache, s = cache_from(seen)
    assert all((p > cache - s * io) == streamed for p, io, streamed in seen)
    assert cache == pytest.approx(c0, rel=0.002) and s == pytest.approx(share, rel=0.02)


def test_calibrate_tells_the_reduced_clock_apart():
    """A device at libedgetpu1-std's clock runs TPU compute at half the rate: the fit reads it as std, with
    the chip's own efficiencies, and a device at the max clock stays max."""
    std_truth = TRUTH.with_(clock="std")
    cal = calibrate(SimDevice(std_truth), USB)
    assert cal.spec.clock == "std" and cal.clock.startswith("std")
    assert cal.spec.efficiency["conv"] == pytest.approx(TRUTH.efficiency["conv"], rel=0.05)
    assert cal.spec.efficiency["depthwise"] == pytest.approx(TRUTH.efficiency["depthwise"], rel=0.05)


def test_tell_clock_keeps_a_fit_at_the_priors_rate():
    same, why = tell_clock(USB.with_(name="fit"), USB)
    assert same.clock == "max" and "1.00 of the usb chip's rate" in why
    half = USB.with_(
        efficiency={k: v / 2 for k, v in USB.efficiency.items()}, elementwise_s_per_byte=USB.elementwise_s_per_byte * 2
    )
    std, why = tell_clock(half, USB)
    assert std.clock == "std" and std.efficiency == pytest.approx(USB.efficiency) and "std" in why
    assert std.elementwise_s_per_byte == pytest.approx(USB.elementwise_s_per_byte)
