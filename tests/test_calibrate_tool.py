"""tools/calibrate.py: its fast predictions (hardware.fit's stage table) are the reference's on every sweep
figure, its memory-column fit counts as the reference caches, and its report has every section."""

import numpy as np
import pytest

from hardware import USB, stage_costs
from hardware.fit import UNITS
from tools import calibrate as cal
from tools import calibration_data as cd

pytestmark = pytest.mark.skipif(not cd.REFERENCE_DIR.is_dir(), reason="no shared/reference/public_measurements")

SLOW_LINK = USB.with_(name="slow-link", shared_link_bytes_per_s=1e8, stream_tile_positions=700)


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    figs, notes = cal.load_figures(cd.REFERENCE_DIR, tmp_path_factory.mktemp("nozoo"))
    return figs, notes


@pytest.mark.parametrize("spec", [USB, SLOW_LINK], ids=lambda s: s.name)
def test_fast_predictions_are_the_references_on_every_sweep_figure(figures, spec):
    figs, _ = figures
    fast = cal.spec_ms(cal.observe(figs, spec), spec)
    ref = [cal.figure_ms(stage_costs(f.graph, f.stages, f.segments, spec), f.segments, spec) for f in figs]
    assert fast == pytest.approx(ref, rel=1e-12)
    assert {f.segments for f in figs} == {1, 2, 4}
    if spec is SLOW_LINK:  # the shared link is the period of some rows
        obs = cal.observe(figs, spec)
        stage_s = obs.table.stage_seconds(spec)
        assert np.any(obs.table.period_seconds(stage_s, spec) > np.maximum.reduceat(stage_s, obs.table.starts))


def test_a_fit_result_predicts_as_its_spec(figures):
    figs, _ = figures
    obs = cal.observe(figs, USB)
    fr = cal.FitResult(np.log(cal.hw_fit.theta(SLOW_LINK)[:6]), (1, 1), 700, 0.0, 1)
    assert cal.predict_fit(obs, fr, SLOW_LINK) == pytest.approx(cal.spec_ms(obs, SLOW_LINK), rel=1e-12)


def test_the_memory_columns_cache_as_the_reference(figures):
    figs, _ = figures
    cal.predict_reference(figs, USB)
    rows = cal.memory_rows(figs)
    columns = cal.MemoryColumns.of(cal.memory_segments(figs))
    n1, n10 = columns.matches(USB, (0.01, 0.10))
    assert n1 == sum(r[-1] == "1%" for r in rows) and n10 == sum(r[-1] != "**no**" for r in rows)
    assert len(rows) == len(columns.io) > 200


def test_the_table_of_constants_lists_every_constant():
    rows = cal.spec_rows(USB, USB, {})
    names = [r[0] for r in rows]
    assert names[-1] == "cpu_op_s / cpu_macs_per_s" and set(names[:-1]) | {"cpu_op_s", "cpu_macs_per_s"} == set(UNITS)
    assert all(r[3] in ("1.000x", "=") for r in rows[:-1])


def test_no_fit_report_has_every_section(tmp_path):
    assert cal.main(["--no-fit", "--quiet", "--zoo", str(tmp_path / "nozoo"), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "calibration.md").read_text()
    for heading in (
        "Constants",
        "Summary per group",
        "ImageNet figures",
        "Sign of (K-segment figure - one TPU)",
        "Shared host link hypothesis",
        "Compiler memory columns",
        "Every reference figure",
        "Notes",
        "Per-segment memory",
    ):
        assert f"\n## {heading}" in text
    assert "missing, not predicted" in text and not (tmp_path / "usb_fitted.json").exists()
    assert len((tmp_path / "calibration.csv").read_text().splitlines()) == 1 + len(cd.load_sweeps())


@pytest.mark.slow
def test_the_fit_on_the_sweeps_writes_a_spec_that_predicts_them(tmp_path):
    pytest.importorskip("scipy")
    from hardware import load_spec

    assert cal.main(["--quiet", "--zoo", str(tmp_path / "nozoo"), "--out", str(tmp_path)]) == 0
    spec = load_spec(str(tmp_path / "usb_fitted.json"))
    text = (tmp_path / "calibration.md").read_text()
    lo, hi = cal.hw_fit.TILE_RANGE
    assert f"tile-count patterns in {lo}..{hi}" in text and "| t_invoke_s |" in text and "fitted (times)" in text
    assert "(leave-one-out: run with --loo)" in text
    figs, _ = cal.load_figures(cd.REFERENCE_DIR, tmp_path / "nozoo")
    cal.predict_reference(figs, spec)
    fitted = np.array([f.ratio for f in figs if f.fitted])
    assert np.exp(np.sqrt(np.mean(np.log(fitted) ** 2))) < 1.2  # the fitted sweeps within 20% rms
