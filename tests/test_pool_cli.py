"""``respect-pass pool``: several models on one pool of Edge TPUs, end to end (subprocess) and in process."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import crafting
import pytest
from strategies import BRANCHY

from respect_pass.cli import main

#: a few subprocess runs of the console script: left out of ``make test-fast``
pytestmark = pytest.mark.slow

EMB = crafting.EMBEDDED
EMB_STEM = EMB.stem
TINY_STEM = BRANCHY.stem
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "respect_pass", *args], capture_output=True, text=True, timeout=120)


def pool(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``respect-pass pool ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        rc = main(["pool", *args, "--host-time", "table"])
    except SystemExit as exc:  # argparse's own errors
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model under another name: a second model of the pool (same bytes, another file)."""
    path = tmp_path_factory.mktemp("models") / "copy.tflite"
    shutil.copyfile(EMB, path)
    return path


def plan_docs(out: Path) -> tuple[dict, list[dict]]:
    doc = json.loads((out / "pool.json").read_text())
    return doc, [json.loads((out / row["plan"]).read_text()) for row in doc["models"]]


def check_devices(doc: dict, plans: list[dict]) -> None:
    """Every segment on TPUs 0..N-1; TPUs of different groups disjoint; a model's segments within its group."""
    n = doc["tpus"]
    groups = [set(g["tpus"]) for g in doc["tpu_groups"]]
    assert all(a.isdisjoint(b) for i, a in enumerate(groups) for b in groups[i + 1 :])
    for row, plan in zip(doc["models"], plans):
        used = {d for seg in plan["segments"] for d in seg["devices"]}
        assert used and all(0 <= d < n for d in used)
        assert used <= groups[row["group"]]
        assert plan["tpus"] == n and plan["pool"] == "pool.json"


def test_pool_end_to_end_writes_every_file(tmp_path: Path) -> None:
    before = (digest(EMB), digest(BRANCHY))
    out = tmp_path / "out"
    r = run("pool", str(EMB), str(BRANCHY), "--tpus", "3", "-o", str(out), "--weights", "1,2", "--host-time", "table")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    doc, plans = plan_docs(out)
    segments = {seg["file"] for p in plans for seg in p["segments"]}
    assert {p.name for p in out.iterdir()} == segments | {f"{EMB_STEM}_plan.json", f"{TINY_STEM}_plan.json", "pool.json"}
    assert {"tpus", "models", "tpu_groups", "bound", "spec", "unmet"} <= set(doc)
    assert doc["tpus"] == 3 and doc["spec"] == "usb" and doc["objective"] == "weights"
    assert [row["model"] for row in doc["models"]] == [str(EMB.resolve()), str(BRANCHY.resolve())]
    assert [row["weight"] for row in doc["models"]] == [1.0, 2.0]
    assert [row["plan"] for row in doc["models"]] == [f"{EMB_STEM}_plan.json", f"{TINY_STEM}_plan.json"]
    x = [row["throughput_ips"] for row in doc["models"]]
    assert x[1] == pytest.approx(2 * x[0], rel=1e-9)  # every model at weight / unit
    for g in doc["tpu_groups"]:
        assert {"tpus", "models", "cocompile_order", "mode"} <= set(g)
        assert g["cocompile_order"] == (g["models"] if g["mode"] == "cocompiled" else [])
    assert sorted(m for g in doc["tpu_groups"] for m in g["models"]) == sorted([EMB_STEM, TINY_STEM])
    check_devices(doc, plans)
    # the table
    assert "pool of 3 Edge TPUs" in r.stdout and "predicted, usb spec" in r.stdout
    assert "segments x replicas" in r.stdout and "models (co-compile order)" in r.stdout
    for row in doc["models"]:
        assert f"{row['throughput_ips']:.1f}" in r.stdout and str(out / row["plan"]) in r.stdout
    assert f"bound (predicted, usb spec): {doc['bound']}" in r.stdout
    assert "every model on TPUs of its own (" in r.stdout and "that rate" in r.stdout
    assert f"compile (run in {out}):" in r.stdout and "edgetpu_compiler -s -o ." in r.stdout
    assert "device model 'usb'" in r.stdout
    assert (digest(EMB), digest(BRANCHY)) == before


def test_embedded_and_its_copy_on_two_tpus(capsys: pytest.CaptureFixture[str], tmp_path: Path, copy: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "copy_segment_1_of_3.tflite").write_bytes(b"a plan with another number of segments")
    rc, text, err = pool(capsys, str(EMB), str(copy), "--tpus", "2", "-o", str(out))
    assert rc == 0 and err == "", err
    assert not (out / "copy_segment_1_of_3.tflite").exists()  # stale: removed
    doc, plans = plan_docs(out)
    assert [row["name"] for row in doc["models"]] == [EMB_STEM, "copy"]
    check_devices(doc, plans)
    assert (out / "copy_plan.json").is_file() and f"{out / 'copy_plan.json'}" in text
    assert doc["own_tpus_throughput_ips"] is not None and "every model on TPUs of its own" in text


def test_no_share_gives_each_model_tpus_of_its_own(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, text, _ = pool(capsys, str(EMB), str(BRANCHY), "--tpus", "5", "-o", str(out), "--weights", "10,1", "--no-share")
    assert rc == 0
    doc, plans = plan_docs(out)
    assert [g["mode"] for g in doc["tpu_groups"]] == ["own", "own"]
    assert all(len(g["models"]) == 1 and g["cocompile_order"] == [] for g in doc["tpu_groups"])
    check_devices(doc, plans)
    for g in doc["tpu_groups"]:  # one compile per segment
        [m] = [i for i, row in enumerate(doc["models"]) if row["name"] == g["models"][0]]
        assert len(g["compile_commands"]) == len(plans[m]["segments"])
    assert "this plan (--no-share)" in text


def test_one_tpu_shares_it(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, text, _ = pool(capsys, str(EMB), str(BRANCHY), "--tpus", "1", "-o", str(out))
    assert rc == 0
    doc, plans = plan_docs(out)
    [group] = doc["tpu_groups"]
    assert group["tpus"] == [0] and group["mode"] in ("cocompiled", "separate")
    assert all(seg["devices"] == [0] for p in plans for seg in p["segments"])
    assert "not possible: fewer TPUs than models" in text and doc["own_tpus_throughput_ips"] is None


def test_one_model_is_a_pool(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, text, _ = pool(capsys, str(EMB), "--tpus", "2", "-o", str(out))
    assert rc == 0
    doc, plans = plan_docs(out)
    assert doc["tpu_groups"][0]["mode"] == "own" and len(doc["models"]) == 1
    check_devices(doc, plans)
    assert "every model on TPUs of its own: this plan" in text


def test_json_prints_pool_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, text, _ = pool(capsys, str(EMB), str(BRANCHY), "--tpus", "2", "-o", str(out), "--json")
    assert rc == 0
    assert json.loads(text) == json.loads((out / "pool.json").read_text())


def test_rates_met_with_fewest_tpus(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, text, err = pool(capsys, str(EMB), str(BRANCHY), "--tpus", "4", "-o", str(out), "--rates", "100,200")
    assert rc == 0 and err == ""
    doc, _ = plan_docs(out)
    assert doc["objective"] == "rates" and doc["unmet"] == []
    assert [row["rate"] for row in doc["models"]] == [100.0, 200.0]
    assert all(row["throughput_ips"] >= row["rate"] for row in doc["models"])
    assert f"all rates met with {doc['tpus_used']} of 4 TPUs (predicted, usb spec)" in text
    assert doc["tpus_used"] == 1  # both small models meet these rates on one TPU
    assert "rate /s" in text and "meets every rate" in text


def test_rates_unmet_are_warnings(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    rc, text, err = pool(capsys, str(EMB), str(BRANCHY), "--tpus", "2", "-o", str(out), "--rates", "1e9,1")
    assert rc == 0
    doc, _ = plan_docs(out)
    assert doc["unmet"] and doc["tpus_used"] <= 2
    lines = err.splitlines()
    assert lines == [f"respect-pass pool: warning: {u}" for u in doc["unmet"]]
    assert any(EMB_STEM in u and "cannot be met" in u for u in doc["unmet"])
    assert "all rates met" not in text
    first, second = doc["models"]
    assert first["rate"] == 1e9 and first["weight"] < 1e9  # the interleave's proportion as planned
    assert second["rate"] == second["weight"] == 1 and second["throughput_ips"] >= 1 - 1e-6  # met in full
    assert f"{1e9:>9.6g}" in text  # the table shows the rate asked for


def test_plot_writes_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    png = out / "pool.png"  # in the output directory, created by the same run
    rc, text, _ = pool(capsys, str(EMB), str(BRANCHY), "--tpus", "3", "-o", str(out), "--plot", str(png))
    assert rc == 0
    assert png.read_bytes().startswith(PNG_MAGIC) and f"plot: {png}" in text


def test_pool_figure_labels(tmp_path: Path) -> None:
    """One bar segment per model per TPU it serves, labelled; the title names the spec and says predicted."""
    from hardware import load_spec
    from respect_pass.partition import load_model, planning_spec
    from respect_pass.pool import PoolEntry, plan_pool
    from respect_pass.pool_cli import pool_figure

    spec = planning_spec(load_spec("usb"))
    graphs = [load_model(p, host_time="table").graph for p in (EMB, BRANCHY)]
    plan = plan_pool([PoolEntry("a", graphs[0], 1.0), PoolEntry("b", graphs[1], 1.0)], 3, spec, share=False)
    fig = pool_figure(plan, spec)
    [ax] = fig.axes
    title = fig.get_suptitle()
    assert "usb" in title and "predicted" in title
    labels = [t.get_text() for t in ax.texts]
    expected = [n for n, p in zip("ab", plan.plans) for d in p.devices() for _ in d]
    assert sorted(t for t in labels if t != "idle") == sorted(expected)
    assert len(ax.patches) == len(expected)


# -- bad input: one line on stderr, exit 2, nothing written


def bad_cases(tmp: Path, copy: Path) -> dict[str, tuple[list[str], str]]:
    other = tmp / "other"
    other.mkdir(exist_ok=True)
    same_stem = other / EMB.name
    shutil.copyfile(EMB, same_stem)
    garbage = tmp / "garbage.tflite"
    garbage.write_bytes(b"not a flatbuffer at all")
    twice = str(EMB.parent / ".." / "data" / EMB.name)
    e, t = str(EMB), str(BRANCHY)
    return {
        "same file twice": ([e, twice, "--tpus", "2"], "given twice"),
        "same stem": ([e, str(same_stem), "--tpus", "2"], "same name"),
        "weights count": ([e, t, "--tpus", "2", "--weights", "1,2,3"], "3 number(s) for 2 model(s)"),
        "weight not a number": ([e, t, "--tpus", "2", "--weights", "1,x"], "'x' is not a positive number"),
        "weight zero": ([e, t, "--tpus", "2", "--weights", "0,1"], "'0' is not a positive number"),
        "weight negative": ([e, t, "--tpus", "2", "--weights", "1,-2"], "'-2' is not a positive number"),
        "weight nan": ([e, t, "--tpus", "2", "--weights", "nan,1"], "not a positive number"),
        "rate inf": ([e, t, "--tpus", "2", "--rates", "inf,1"], "--rates: 'inf' is not a positive number"),
        "weights and rates": ([e, t, "--tpus", "2", "--weights", "1,1", "--rates", "1,1"], "not allowed with"),
        "tpus zero": ([e, t, "--tpus", "0"], "between 1 and"),
        "tpus too many": ([e, t, "--tpus", "17"], "between 1 and"),
        "no-share fewer tpus": ([e, t, "--tpus", "1", "--no-share"], "without sharing"),
        "missing model": ([e, str(tmp / "missing.tflite"), "--tpus", "2"], "missing.tflite"),
        "invalid model": ([e, str(garbage), "--tpus", "2"], "garbage.tflite"),
        "plot not png": ([e, t, "--tpus", "2", "--plot", str(tmp / "p.jpg")], ".png"),
        "unknown spec": ([e, t, "--tpus", "2", "--spec", "nonesuch"], "nonesuch"),
        "missing --tpus": ([e, t], "--tpus"),
        "copy twice": ([str(copy), str(copy), "--tpus", "2"], "given twice"),
    }


#: the cases of :func:`bad_cases` (a test per case; the files they need are made in each test's tmp_path)
NAMES = [
    "same file twice",
    "same stem",
    "weights count",
    "weight not a number",
    "weight zero",
    "weight negative",
    "weight nan",
    "rate inf",
    "weights and rates",
    "tpus zero",
    "tpus too many",
    "no-share fewer tpus",
    "missing model",
    "invalid model",
    "plot not png",
    "unknown spec",
    "missing --tpus",
    "copy twice",
]


@pytest.mark.parametrize("case", NAMES)
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, copy: Path
) -> None:
    args, needle = bad_cases(tmp_path, copy)[case]
    out = tmp_path / "out"
    rc, text, err = pool(capsys, *args, "-o", str(out))
    assert rc == 2, (text, err)
    assert len(err.splitlines()) == 1 and err.startswith("respect-pass pool: error: "), err
    assert needle in err and "Traceback" not in err
    assert not out.exists()


def test_bad_input_leaves_an_existing_directory_as_it_was(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("keep")
    rc, _, err = pool(capsys, str(EMB), str(BRANCHY), "--tpus", "2", "-o", str(out), "--weights", "1,0")
    assert rc == 2 and len(err.splitlines()) == 1
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unwritable_out_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """-o naming a file, or a directory below a file: one line, the file unchanged."""
    a_file = tmp_path / "a_file"
    a_file.write_text("keep")
    for out in (a_file, a_file / "sub"):
        rc, _, err = pool(capsys, str(EMB), str(BRANCHY), "--tpus", "2", "-o", str(out))
        assert rc == 2 and len(err.splitlines()) == 1 and "cannot write output directory" in err, err
        assert a_file.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_bad_input_as_a_process(tmp_path: Path) -> None:
    """The console script itself: one line, exit 2, no traceback, nothing written."""
    out = tmp_path / "out"
    r = run("pool", str(EMB), str(tmp_path / "missing.tflite"), "--tpus", "2", "-o", str(out))
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("respect-pass pool: error: ")
    assert not out.exists()


def test_help_lists_pool() -> None:
    r = run("--help")
    assert r.returncode == 0 and "respect-pass pool" in r.stdout
    r = run("pool", "--help")
    assert r.returncode == 0 and "--rates" in r.stdout and "--no-share" in r.stdout


def test_a_dynamic_batch_needs_fix_batch_and_the_plan_records_it(capsys, tmp_path):
    dyn = tmp_path / "dyn.tflite"
    dyn.write_bytes(crafting.dynamic_batch(EMB.read_bytes()))
    rc, out, err = pool(capsys, str(dyn), str(EMB), "--tpus", "2", "-o", str(tmp_path / "refused"))
    assert rc == 2 and out == "" and "--fix-batch" in err and err.count("\n") == 1
    assert not (tmp_path / "refused").exists()
    rc, out, err = pool(capsys, str(dyn), str(EMB), "--tpus", "2", "-o", str(tmp_path / "out"), "--fix-batch")
    assert rc == 0, err
    assert json.loads((tmp_path / "out" / "dyn_plan.json").read_text())["fixed_batch"]
    assert "fixed_batch" not in json.loads((tmp_path / "out" / f"{EMB_STEM}_plan.json").read_text())


def test_verify_checks_every_model_before_anything_is_written(capsys, tmp_path, copy, monkeypatch):
    rc, out, err = pool(capsys, str(EMB), str(copy), "--tpus", "2", "-o", str(tmp_path / "ok"), "--verify")
    assert rc == 0 and "verified: every model's segments chain bit-exact" in out, err
    import respect_pass.pool_doc as pool_doc
    from tflite_io import VerifyReport

    def broken(model, stages, blobs):
        return VerifyReport(trials=1, tensors_checked=1, mismatches=("output 'x' differs",))

    monkeypatch.setattr(pool_doc, "verify_model_segments", broken)
    rc, out, err = pool(capsys, str(EMB), str(copy), "--tpus", "2", "-o", str(tmp_path / "bad"), "--verify")
    assert rc == 2 and out == "" and err.count("\n") == 1 and f"{EMB_STEM}: output 'x' differs" in err
    assert not (tmp_path / "bad").exists()
