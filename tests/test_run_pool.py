"""run_pipeline DIR on a pool directory (respect_pass/run_pool.py): the sim backend (every model verified
bit-exact, simulated beside predicted), bad input in one line, and the coral backend on CPU interpreters
standing in for Edge TPUs (their timings are the CPU's, not an Edge TPU's)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import types
from pathlib import Path

import crafting
import fake_edgetpu
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType

import respect_pass.run_pool as rp
from hardware import USB
from hardware.pool import interleave
from respect_pass.partition import load_model, planning_spec
from respect_pass.pool import PoolEntry, plan_pool
from respect_pass.pool_doc import pool_files, read_pool
from respect_pass.run_pipeline import main
from tflite_io import write_files

SIM_KEYS = {"backend", "pool", "tpus", "spec", "prediction_error", "verified", "models", "tpu_busy", "bound"}
MODEL_KEYS = {"model", "name", "weight", "throughput_ips", "predicted_throughput_ips", "latency_ms", "latency_p50_ms"}
MODEL_KEYS |= {"latency_p99_ms", "switches", "verified", "count"}


def copies(directory: Path, names=("a", "b")) -> list[Path]:
    """The embedded model under other names (the pool's models, different stems)."""
    directory.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(crafting.EMBEDDED, directory / f"{n}.tflite")) for n in names]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return [load_model(p, host_time="table") for p in copies(tmp_path_factory.mktemp("models"))]


def make_pool(directory: Path, models, tpus: int, weights=(1, 1), share: bool = True) -> dict:
    spec = planning_spec(USB)
    entries = [PoolEntry(m.path.stem, m.graph, w) for m, w in zip(models, weights)]
    files, doc = pool_files(plan_pool(entries, tpus, spec, share=share), models, spec)
    write_files(directory, files)
    return doc


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("tpus", "weights", "share", "modes"),
    [
        (1, (1, 1), True, ["cocompiled"]),
        (2, (1, 1), True, ["own", "own"]),
        (2, (1, 3), True, ["cocompiled"]),
        (2, (1, 3), False, ["own", "own"]),
        (3, (1, 1), True, ["cocompiled"]),
        (3, (1, 3), False, ["own", "own"]),
    ],
)
def test_sim_verifies_every_model_and_simulates_as_predicted(tmp_path, capsys, models, tpus, weights, share, modes):
    doc = make_pool(tmp_path, models, tpus, weights, share)
    assert [g["mode"] for g in doc["tpu_groups"]] == modes
    code, out, err = run(capsys, tmp_path, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert SIM_KEYS <= set(report) and report["backend"] == "sim" and report["pool"] is True
    assert report["tpus"] == tpus and report["spec"] == "usb" and report["verified"] is True
    assert [m["name"] for m in report["models"]] == ["a", "b"]
    assert len(report["tpu_busy"]) == report["tpus_used"] == doc["tpus_used"]
    assert all(0 < x <= 1 for x in report["tpu_busy"])
    for m, w, row in zip(report["models"], weights, doc["models"]):
        assert MODEL_KEYS <= set(m) and m["verified"] is True and m["weight"] == w and m["model"] == row["model"]
        assert m["count"] >= rp.MIN_SIM_REQUESTS
        assert m["throughput_ips"] == pytest.approx(m["predicted_throughput_ips"], rel=0.05)
        assert m["predicted_throughput_ips"] == pytest.approx(row["throughput_ips"], rel=1e-9)  # as planned
        assert m["latency_p99_ms"] >= m["latency_p50_ms"] > 0 and m["latency_ms"] > 0
    a, b = report["models"]
    assert b["count"] == weights[1] // weights[0] * a["count"]  # interleaved in proportion
    assert b["throughput_ips"] / a["throughput_ips"] == pytest.approx(weights[1] / weights[0], rel=0.05)
    code, out, err = run(capsys, tmp_path)
    assert code == 0, err
    lines = out.splitlines()
    assert "simulated /s" in lines[0] and "predicted /s" in lines[0]
    assert [line.split()[0] for line in lines[1:3]] == ["a", "b"] and all(line.endswith("bit-exact") for line in lines[1:3])
    assert f"simulated (usb spec) on {tpus} TPUs" in out and "predicted (device model, usb spec): bound by" in out
    assert lines[-1] == USB.error_line()


def test_tpus_must_be_the_pools_and_other_options(tmp_path, capsys, models):
    make_pool(tmp_path, models, 2, (1, 3))
    code, out, err = run(capsys, tmp_path, "--tpus", "2", "--json", "--count", "10")
    assert code == 0 and json.loads(out)["tpus"] == 2
    for args, expected in (
        (["--tpus", "3"], "--tpus 3, but"),
        (["--plot", tmp_path / "x.png"], "--plot draws one model's pipeline"),
        (["--devices", "usb:0"], "apply to --backend coral only"),
        (["--spec", "nope"], "not a preset"),
        (["--backend", "coral", "--runner", "pycoral"], "litert runner only"),
    ):
        code, out, err = run(capsys, tmp_path, *args)
        assert code == 2 and out == "" and err.count("\n") == 1 and expected in err, err
    code, out, err = run(capsys, tmp_path, "--spec", "pcie", "--json")  # --spec replaces pool.json's
    assert code == 0 and json.loads(out)["spec"] == "pcie"


def test_bad_pool_files_are_one_line(tmp_path, capsys, models):
    make_pool(tmp_path, models, 2, (1, 1))
    pool = tmp_path / "pool.json"
    doc = json.loads(pool.read_text())
    for text, expected in (
        ("{not json", "unreadable pool"),
        (json.dumps({**doc, "models": [{**doc["models"][0], "plan": "../x_plan.json"}]}), "is not in the directory"),
        (
            json.dumps({**doc, "models": [{**doc["models"][0], "weight": 0}, doc["models"][1]]}),
            "weight must be a positive number",
        ),
        (json.dumps({**doc, "tpu_groups": "x"}), "unreadable pool"),
        (json.dumps({**doc, "spec": "my-fitted"}), "pool.json names this spec: give --spec"),
    ):
        pool.write_text(text)
        code, out, err = run(capsys, tmp_path)
        assert code == 2 and out == "" and err.count("\n") == 1 and expected in err, err
    pool.write_text(json.dumps(doc))
    (tmp_path / "a_plan.json").unlink()
    code, out, err = run(capsys, tmp_path, "--json")
    assert code == 2 and out == "" and "a_plan.json" in err and err.count("\n") == 1
    make_pool(tmp_path, models, 2, (1, 1))
    (tmp_path / "b_segment_0_of_1.tflite").unlink()
    code, out, err = run(capsys, tmp_path)
    assert code == 2 and "b is missing segment(s) b_segment_0_of_1.tflite" in err and err.count("\n") == 1


def perturb(path: Path) -> None:
    """Change the weights of the segment's first convolution (a valid model that computes something else)."""
    model = schema.ModelT.InitFromPackedBuf(path.read_bytes(), 0)
    op = model.subgraphs[0].operators[0]
    buffer = model.buffers[model.subgraphs[0].tensors[op.inputs[1]].buffer]
    buffer.data = (np.asarray(buffer.data, dtype=np.uint8) ^ 0x5A).astype(np.uint8)
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))


def test_a_model_gone_is_not_verified_and_a_mismatch_is_one_line(tmp_path, capsys):
    here = [load_model(p, host_time="table") for p in copies(tmp_path / "models")]
    make_pool(tmp_path / "pool", here, 2, (1, 1))
    (tmp_path / "models" / "a.tflite").unlink()
    code, out, err = run(capsys, tmp_path / "pool", "--json")
    assert code == 0, err
    report = json.loads(out)
    a, b = report["models"]
    assert report["verified"] is None and a["verified"] is None and "a.tflite is not there" in a["note"]
    assert b["verified"] is True and b["note"] is None
    code, out, err = run(capsys, tmp_path / "pool")
    assert code == 0 and "not checked: " in out.splitlines()[1] and out.splitlines()[2].endswith("bit-exact")
    perturb(tmp_path / "pool" / "b_segment_0_of_1.tflite")
    code, out, err = run(capsys, tmp_path / "pool")
    assert code == 2 and out == "" and err.count("\n") == 1 and "b: segments are not bit-exact with" in err, err


# ----------------------------------------------------------------- coral, on CPU interpreters


def cpu_factory(path, device):
    """LiteRT on the CPU in place of an Edge TPU (the fake compiler's segments still run there)."""
    return Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def compile_pool(directory: Path, doc: dict, bindir: Path) -> None:
    """Run pool.json's compile commands in ``directory`` with the fake edgetpu_compiler."""
    script = fake_edgetpu.install(bindir)
    env = {**os.environ, "PATH": f"{script.parent}{os.pathsep}{os.environ['PATH']}"}
    for group in doc["tpu_groups"]:
        for command in group["compile_commands"]:
            subprocess.run(command.split(), cwd=directory, env=env, check=True, capture_output=True, timeout=120)


class Recorder:
    """What the coral path opened (segment file, device) and pushed (model per request, in order)."""

    def __init__(self, monkeypatch, wrong_on=None):
        self.opened, self.pushed = [], []
        recorder = self

        class Runner(rp.LiteRtPipelinedRunner):
            def push(self, tensors):
                if tensors:
                    recorder.pushed.append(self._names[0].split()[0])
                super().push(tensors)

        monkeypatch.setattr(rp, "LiteRtPipelinedRunner", Runner)
        self.wrong_on = wrong_on

    def factory(self, path, device):
        self.opened.append((Path(path).name, device))
        it = cpu_factory(path, device)
        return Wrong(it) if (Path(path).name, device) == self.wrong_on else it


class Wrong:
    """An interpreter whose outputs in the pipeline's threads are off by one (a TPU computing wrongly)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def get_tensor(self, index):
        out = self.inner.get_tensor(index)
        return out + 1 if threading.current_thread().name.startswith("respect-pass-stage-") else out


def test_coral_runs_every_model_on_its_tpus_interleaved_by_weight(tmp_path, capsys, models, monkeypatch):
    doc = make_pool(tmp_path, models, 2, (1, 3))  # one co-compiled group on TPUs 0 and 1
    assert doc["tpu_groups"][0]["mode"] == "cocompiled"
    _, plans = read_pool(tmp_path)
    code, out, err = run(capsys, tmp_path, "--backend", "coral", "--devices", "usb:0,usb:1")
    assert code == 2 and err.count("\n") == 1 and "run the compile commands of pool.json" in err
    compile_pool(tmp_path, doc, tmp_path / "bin")
    rec = Recorder(monkeypatch)
    report = rp.run_pool_coral(
        tmp_path, doc, plans, count=40, warmup=2, devices=["pci:0", "usb:3"], interpreter_factory=rec.factory
    )
    # every TPU of the shared group holds both models (the co-compiled files), TPU i on the i-th device named
    files = {"a": "a_segment_0_of_1_edgetpu.tflite", "b": "b_segment_0_of_1_edgetpu.tflite"}
    assert sorted(rec.opened) == sorted((f, d) for f in files.values() for d in ("pci:0", "usb:3"))
    assert report["devices"] == ["pci:0", "usb:3"] and report["count"] == 40 and report["runner"] == "litert"
    a, b = report["models"]
    assert (a["count"], b["count"]) == (10, 30)
    assert [s["devices"] for s in a["stages"]] == [["pci:0", "usb:3"]] == [s["devices"] for s in b["stages"]]
    # warm-up and idle requests one at a time, then the loaded ones: all in the interleaved order, 1 to 3
    idle = interleave([1, 3], 2 * 2 + 40)
    assert rec.pushed == [["a", "b"][k] for k in [*idle, *interleave([1, 3], 40)]]
    for m in report["models"]:
        assert m["throughput_ips"] > 0 and m["latency_p99_ms"] >= m["latency_p50_ms"] > 0 and m["latency_ms"] > 0
        assert m["planned_throughput_ips"] == pytest.approx(
            next(r["throughput_ips"] for r in doc["models"] if r["name"] == m["name"])
        )
    # a TPU that computes wrongly: each result is checked against the one-by-one reference run
    monkeypatch.undo()
    rec = Recorder(monkeypatch, wrong_on=(files["b"], "usb:3"))
    with pytest.raises(rp.CoralError, match="differs from running the segments one by one"):
        rp.run_pool_coral(
            tmp_path, doc, plans, count=20, warmup=0, devices=["usb:0", "usb:3"], interpreter_factory=rec.factory
        )


def test_coral_cli_own_groups_with_replicas(tmp_path, capsys, models, monkeypatch):
    doc = make_pool(tmp_path, models, 3, (1, 3), share=False)  # a on TPU 0, b on TPUs 1 and 2
    compile_pool(tmp_path, doc, tmp_path / "bin")
    rec = Recorder(monkeypatch)
    monkeypatch.setattr(rp, "make_edgetpu_interpreter", rec.factory)
    monkeypatch.setattr(rp, "require_edgetpu_runtime", lambda library=None: None)
    monkeypatch.setattr(rp, "probe_runtime", lambda *a, **k: types.SimpleNamespace(runtime="fake"))
    argv = [tmp_path, "--backend", "coral", "--devices", "usb:0,usb:1,usb:2", "--count", "24", "--warmup", "1"]
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["pool"] is True and report["backend"] == "coral" and report["runtime"] == "fake"
    want = [[[f"usb:{d}" for d in seg["devices"]] for seg in plan["segments"]] for plan in read_pool(tmp_path)[1]]
    assert [[s["devices"] for s in m["stages"]] for m in report["models"]] == want
    assert {d for m in want[1] for d in m} == {"usb:1", "usb:2"} and want[0] == [["usb:0"]]
    assert sorted(rec.opened) == sorted(
        (f"{m['name']}_segment_{s['index']}_of_{len(m['stages'])}_edgetpu.tflite", d)
        for m in report["models"]
        for s in m["stages"]
        for d in s["devices"]
    )
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    lines = out.splitlines()
    assert "measured /s" in lines[0] and [line.split()[0] for line in lines[1:3]] == ["a", "b"]
    assert "measured (litert runner) on Edge TPUs usb:0, usb:1, usb:2" in out and "predicted" not in lines[0]
