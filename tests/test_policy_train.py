"""``respect-pass train --quick``: lowers the validation gap, is deterministic, writes a loadable checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest
from strategies import BRANCHY

from hardware import USB
from respect_pass.policy.checkpoint import load_checkpoint
from respect_pass.policy.train_cli import build_parser, train_main
from respect_pass.schedulers.respect import respect_schedule
from tflite_io import read, validate_stage_map

#: policy training runs: left out of ``make test-fast``
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    argv = ["--quick", "--out", str(root / "run"), "--cache", str(root / "cache"), "--no-progress"]
    assert train_main(argv) == 0
    return root, argv


def test_quick_training_lowers_the_validation_gap(quick_run):
    root, _ = quick_run
    doc = json.loads((root / "run" / "respect_policy.json").read_text())
    history = doc["metrics"]["history"]
    assert history[0]["phase"] == "init"
    assert doc["metrics"]["val_gap_greedy"] < history[0]["gap"]
    assert {h["phase"] for h in history} >= {"imitation", "reinforce"}
    args = json.loads((root / "run" / "args.json").read_text())
    assert args["quick"] and args["max_ops"] <= 120 and args == doc["train_args"]
    assert list((root / "cache").glob("exact_*.json"))  # labels cached on disk


def test_quick_checkpoint_loads_and_schedules(quick_run):
    root, _ = quick_run
    npz = root / "run" / "respect_policy.npz"
    with np.load(npz, allow_pickle=False) as data:
        assert all(data[k].dtype.kind == "f" for k in data.files)
    load_checkpoint(npz)
    graph = read(BRANCHY)  # several topological orders: the quick-trained network decides the order
    plan = respect_schedule(
        graph, 3, USB, checkpoint=npz, samples=2, heuristics=False, refine_rounds=0, one_order_shortcut=False
    )
    validate_stage_map(graph, plan.stages, 3)
    assert plan.stats.number("policy_ms") > 0
    assert str(plan.stats["best_order"]).startswith(("greedy", "sample")) or plan.stats["best_order"] == "execution"


def test_training_is_deterministic_from_the_cache(quick_run, tmp_path):
    root, argv = quick_run
    again = [a if a != str(root / "run") else str(tmp_path / "again") for a in argv]
    assert train_main(again) == 0
    with np.load(root / "run" / "respect_policy.npz") as a, np.load(tmp_path / "again" / "respect_policy.npz") as b:
        assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)


def test_train_command_line_errors(capsys, tmp_path):
    argv = ["--quick", "--graphs", "0", "--val-graphs", "0", "--out", str(tmp_path / "x"), "--no-progress"]
    assert train_main(argv + ["--cache", str(tmp_path / "c")]) == 2
    assert "respect-pass train: error" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--loss", "nope"])


def test_fine_tuning_starts_from_the_init_checkpoint_and_keeps_its_shape(quick_run, tmp_path):
    root, _ = quick_run
    init = root / "run" / "respect_policy.npz"
    out = tmp_path / "tuned"
    argv = ["--quick", "--init", str(init), "--teacher", "respect+exact", "--graphs", "8", "--val-graphs", "4"]
    argv += ["--epochs", "1", "--rl-epochs", "1", "--hidden", "16", "--out", str(out), "--cache", str(tmp_path / "c")]
    assert train_main(argv + ["--no-progress"]) == 0
    doc = json.loads((out / "respect_policy.json").read_text())
    assert doc["metrics"]["init"]["path"] == str(init)
    history = doc["metrics"]["history"]
    assert history[0]["phase"] == "init"
    assert doc["metrics"]["val_gap_greedy"] <= history[0]["gap"]  # the best on validation, the start included
    with np.load(init) as a, np.load(out / "respect_policy.npz") as b:  # --hidden 16 lost to the checkpoint's width
        assert a.files == b.files and all(a[k].shape == b[k].shape for k in a.files)
    assert list((tmp_path / "c").glob("respect+exact_*.json"))  # labels from CP-SAT warm-started by the policy


def test_fine_tuning_from_a_missing_checkpoint_is_one_error_line(capsys, tmp_path):
    argv = ["--quick", "--init", str(tmp_path / "none.npz"), "--out", str(tmp_path / "x"), "--no-progress"]
    assert train_main(argv + ["--cache", str(tmp_path / "c"), "--graphs", "4", "--val-graphs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "respect-pass train: error" in err and "none.npz" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "c").exists()  # nothing written
