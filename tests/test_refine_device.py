"""--refine-on-device: schedule, measure on a (simulated) device, refit, reschedule."""

import json
import os
import subprocess
import sys
from pathlib import Path

import crafting
import pytest
from strategies import BRANCHY

from hardware import USB
from hardware.calibrate import SimDevice
from hardware.kernel import cost_arrays, map_period_s
from respect_pass.partition import load_model
from respect_pass.refine_device import refine_on_device
from respect_pass.schedulers import get_scheduler
from tflite_io import RespectPassError

#: a device slower than the preset in every linear term, with the preset's cache
TRUTH = USB.with_(
    name="truth",
    t_invoke_s=3e-4,
    efficiency={"conv": 0.45, "depthwise": 0.06},
    elementwise_s_per_byte=8e-10,
    io_bytes_per_s=1.6e8,
    stream_bytes_per_s=3e8,
)


def period(model, stages, k, spec):
    return map_period_s(cost_arrays(model.graph, spec), stages, k)[0] * 1e3


@pytest.mark.parametrize("path, k", [(BRANCHY, 2), (BRANCHY, 4), (crafting.EMBEDDED, 3)])
def test_reaches_the_best_plan_for_the_device_within_three_rounds(path, k):
    model = load_model(path)
    device = SimDevice(TRUTH)
    ref = refine_on_device(model, k, USB, device, 3, scheduler="dp")
    best = period(model, get_scheduler("dp")(model.graph, k, TRUTH).stages, k, TRUTH)
    assert period(model, ref.plan.stages, k, TRUTH) <= 1.02 * best
    assert 1 <= ref.device_runs == device.runs == len(ref.rounds) <= 3
    assert [r["round"] for r in ref.rounds] == list(range(len(ref.rounds)))
    # the written plan is the best measured one, and the measurement is the device's (TRUTH's) period
    assert min(r["measured_bottleneck_ms"] for r in ref.rounds) == pytest.approx(
        period(model, ref.plan.stages, k, TRUTH), rel=1e-6
    )


def test_the_refit_moves_the_model_towards_the_device():
    model = load_model(BRANCHY)
    ref = refine_on_device(model, 2, USB, SimDevice(TRUTH), 1, scheduler="dp")
    stages = ref.plan.stages
    measured = ref.rounds[0]["measured_bottleneck_ms"]
    assert abs(period(model, stages, 2, ref.spec) - measured) < abs(period(model, stages, 2, USB) - measured)


def test_a_device_that_matches_the_model_stops_after_one_round():
    model = load_model(BRANCHY)
    device = SimDevice(USB)
    ref = refine_on_device(model, 3, USB, device, 3, scheduler="dp")
    assert ref.rounds[0]["predicted_bottleneck_ms"] == pytest.approx(ref.rounds[0]["measured_bottleneck_ms"], rel=1e-6)
    assert device.runs <= 2  # the refit changes nothing: the same plan comes back, or no gain


def test_zero_rounds_is_an_error():
    with pytest.raises(RespectPassError, match="at least 1 round"):
        refine_on_device(load_model(BRANCHY), 2, USB, SimDevice(USB), 0)


def respect_pass(*args, cwd=None, env=None):
    exe = Path(sys.executable).parent / "respect-pass"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


@pytest.mark.slow
def test_cli_records_every_round_in_plan_json(tmp_path):
    truth = tmp_path / "truth.json"
    truth.write_text(TRUTH.to_json())
    r = respect_pass(
        str(BRANCHY),
        "-n",
        "2",
        "-o",
        str(tmp_path / "out"),
        "--refine-on-device",
        "3",
        "--backend",
        "sim",
        "--device-spec",
        str(truth),
        "--json",
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    refined = doc["device_refinement"]
    assert refined["backend"] == "sim" and 1 <= refined["device_runs"] == len(refined["rounds"]) <= 3
    assert {"predicted_bottleneck_ms", "measured_bottleneck_ms", "device_runs"} <= set(refined["rounds"][0])
    assert refined["spec"]["name"].startswith("usb+device")
    assert json.loads(next((tmp_path / "out").glob("*_plan.json")).read_text())["device_refinement"] == refined


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--backend", "sim"], "applies only with --refine-on-device"),
        (["--refine-on-device", "2", "--stages", "0,1"], "does not combine with --refine-on-device"),
        (["--refine-on-device", "2", "--backend", "sim", "--devices", "usb:0"], "apply to --backend coral only"),
        (["--refine-on-device", "2", "--device-spec", "usb"], "applies to --backend sim only"),
        (["--refine-on-device", "2"], "edgetpu_compiler"),
    ],
)
def test_cli_errors_are_one_line_and_write_nothing(tmp_path, args, message):
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    r = respect_pass(str(BRANCHY), "-n", "2", "-o", str(tmp_path / "out"), *args, env=env)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
