"""The PNG charts (respect_pass/plot.py): what they draw, read back from the matplotlib figures.

The stage chart of ``partition --plot`` and ``run_pipeline --plot`` and the sweep chart of ``sweep --plot`` are
captured where they are rendered (:func:`respect_pass.plot.figure_png`), so the figures checked are the ones the
commands write; their bars and lines must carry the numbers the plan, the cost model or the sweep reports."""

import io
import json
import math
from pathlib import Path

import crafting
import matplotlib.image as mpimg
import pytest
from matplotlib.patches import Rectangle
from strategies import BRANCHY

import respect_pass.plot as plot
from hardware import USB, stage_costs
from hardware.terms import cache_bytes
from respect_pass import partition
from respect_pass.plot import stage_figure, stage_plot_png, sweep_figure, sweep_plot_png
from respect_pass.run_pipeline import main as run_pipeline_main
from respect_pass.sweep import sweep
from tflite_io import read

MIB = 2**20
TIME_PARTS = [
    ("compute_ms", "compute"),
    ("overhead_ms", "invoke/op overhead"),
    ("stream_ms", "streamed parameters"),
    ("io_ms", "input/output transfer"),
    ("host_ms", "CPU ops (host)"),
]
CACHE_LABEL = f"parameter cache {cache_bytes(USB) / MIB:.1f} MiB"


def close(a, b) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def all_close(xs, ys) -> bool:
    xs, ys = list(xs), list(ys)
    return len(xs) == len(ys) and all(close(a, b) for a, b in zip(xs, ys))


def decode(png: bytes):
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(io.BytesIO(png), format="png")


@pytest.fixture
def rendered(monkeypatch):
    """Every figure rendered to PNG while the test runs, in order."""
    figures = []
    render = plot.figure_png

    def capture(fig, *args, **kwargs):
        figures.append(fig)
        return render(fig, *args, **kwargs)

    monkeypatch.setattr(plot, "figure_png", capture)
    return figures


def bars(ax) -> dict[str, list[Rectangle]]:
    """Each labelled bar series of ``ax`` (a BarContainer), by its legend label."""
    return {c.get_label(): list(c.patches) for c in ax.containers}


def heights(ax, label: str) -> list[float]:
    return [p.get_height() for p in bars(ax)[label]]


def stack_tops(ax) -> list[float]:
    """The top of each stacked bar: the series are stacked (each starts where the one below ends)."""
    series = list(bars(ax).values())
    tops = [p.get_y() for p in series[0]]
    for patches in series:
        assert all_close([p.get_y() for p in patches], tops), "the bar series are not stacked"
        tops = [p.get_y() + p.get_height() for p in patches]
    return tops


def bar_labels(ax):
    return [t.get_text() for t in ax.texts if t.get_gid() == "bar-label"]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def lines_by_label(ax) -> dict:
    return {line.get_label(): line for line in ax.get_lines()}


def check_stage_chart(fig, stages, stage_ms, title: str, cache_label: str | None) -> None:
    """The two-panel stage chart of ``stages`` (their ``as_json`` records) draws ``stage_ms`` and the records' parts."""
    n = len(stage_ms)
    ax_t, ax_p = fig.axes[:2]
    assert fig.get_suptitle() == title
    # left: time per stage, stacked from the cost model's parts; the stack is the stage's time
    assert [label for _, label in TIME_PARTS] == list(bars(ax_t))
    for key, label in TIME_PARTS:
        assert all_close(heights(ax_t, label), [s[key] for s in stages]), label
    assert all_close(stack_tops(ax_t), stage_ms)
    assert [round(p.get_x() + p.get_width() / 2) for p in bars(ax_t)["compute"]] == list(range(n))
    worst = max(range(n), key=lambda i: stage_ms[i])
    assert [i for i, t in enumerate(bar_labels(ax_t)) if t.endswith("\nbottleneck")] == [worst]
    assert (ax_t.get_xlabel(), ax_t.get_ylabel(), ax_t.get_title()) == ("stage (Edge TPU)", "ms per inference", "stage time")
    assert legend_texts(ax_t) == [label for _, label in TIME_PARTS]
    # right: cached and streamed parameter MiB per stage
    assert ax_p.get_yscale() == "linear"  # these stages are within LOG_RATIO of each other
    assert all_close(heights(ax_p, "cached on chip"), [s["on_chip_bytes"] / MIB for s in stages])
    assert all_close(heights(ax_p, "streamed from host"), [s["off_chip_bytes"] / MIB for s in stages])
    assert all_close(stack_tops(ax_p), [(s["on_chip_bytes"] + s["off_chip_bytes"]) / MIB for s in stages])
    assert (ax_p.get_xlabel(), ax_p.get_ylabel(), ax_p.get_title()) == ("stage (Edge TPU)", "MiB", "parameters")
    legend = legend_texts(ax_p)
    assert {"cached on chip", "streamed from host"} <= set(legend)
    if cache_label is not None:
        assert any(t.startswith(cache_label) for t in legend)


@pytest.mark.parametrize("scheduler", ["respect", "dp"])
def test_partition_plot_draws_the_plans_stage_times(tmp_path, rendered, scheduler):
    png = tmp_path / "stages.png"
    result = partition(crafting.EMBEDDED, 3, tmp_path / "out", scheduler=scheduler, plot=png, replicas=False)
    assert png.is_file() and len(rendered) == 1
    stem = crafting.EMBEDDED.stem
    title = f"{stem}: 3 segments, {scheduler} scheduler (predicted, usb spec)"
    stage_ms = result.plan.stage_ms
    assert all_close(stage_ms, [s["predicted_ms"] for s in result.plan_doc["segments"]])
    check_stage_chart(rendered[0], result.stage_breakdown, stage_ms, title, CACHE_LABEL)
    assert decode(png.read_bytes()).shape[:2] == decode(plot.figure_png(rendered[0])).shape[:2]


def test_partition_plot_counts_the_cpu_ops_time(tmp_path, rendered):
    model = Path(__file__).resolve().parent / "data" / "evidence" / "movenet_like.tflite"
    result = partition(model, 2, tmp_path / "out", plot=tmp_path / "stages.png", replicas=False)
    assert any(s["host_ms"] > 0 for s in result.stage_breakdown)
    ax_t = rendered[0].axes[0]
    assert all_close(stack_tops(ax_t), result.plan.stage_ms)
    worst = max(range(2), key=lambda i: result.plan.stage_ms[i])
    assert [i for i, t in enumerate(bar_labels(ax_t)) if t.endswith("\nbottleneck")] == [worst]


def test_stage_chart_of_a_stage_map_draws_the_cost_models_stage_times(embedded_path):
    g = read(embedded_path)
    costs = stage_costs(g, [0] * 30 + [1] * 34, 2, USB)
    stages = [c.as_json() for c in costs]
    fig = stage_figure(stages, "two stages", USB.cache_bytes)
    check_stage_chart(fig, stages, [c.ms for c in costs], "two stages", CACHE_LABEL)
    assert all_close(stack_tops(fig.axes[1]), [c.param_bytes / MIB for c in costs])
    image = decode(stage_plot_png(stages, "two stages", USB.cache_bytes))
    assert image.shape[0] > 300 and image.shape[1] > 500


def test_run_pipeline_plot_draws_the_simulated_stage_times(tmp_path, rendered, capsys):
    partition(BRANCHY, 3, tmp_path / "segs", replicas=False)
    png = tmp_path / "pipeline.png"
    assert run_pipeline_main(["--tpus", "3", str(tmp_path / "segs"), "--plot", str(png), "--json", "--count", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert png.is_file() and len(rendered) == 1
    stages = report["stages"]
    check_stage_chart(rendered[0], stages, [s["ms"] for s in stages], "3 segments, simulated (usb spec)", CACHE_LABEL)
    assert report["bottleneck_ms"] >= max(s["ms"] for s in stages) * (1 - 1e-9)


def test_measured_only_stages_are_one_bar_each():
    stages = [{"ms": 1.0}, {"ms": 2.5, "on_chip_bytes": 10, "off_chip_bytes": None}]
    fig = stage_figure(stages, "coral", None)
    ax_t, ax_p = fig.axes[:2]
    assert list(bars(ax_t)) == ["measured"] and heights(ax_t, "measured") == [1.0, 2.5]
    assert legend_texts(ax_t) == ["measured"] and bar_labels(ax_t) == ["1 ms", "2.5 ms\nbottleneck"]
    assert all_close(stack_tops(ax_p), [0.0, 10 / MIB])
    assert legend_texts(ax_p) == ["cached on chip", "streamed from host"]  # no cache without a spec
    assert fig.get_suptitle() == "coral"
    assert decode(stage_plot_png(stages, "coral", None)).std() > 0.05


def test_every_bar_is_labelled_and_the_parameter_axis_fits_the_stages(embedded_path):
    g = read(embedded_path)
    costs = stage_costs(g, [0] * 30 + [1] * 30 + [2] * 4, 3, USB)
    fig = stage_figure([c.as_json() for c in costs], "three stages", USB.cache_bytes)
    ax_t, ax_p = fig.axes[:2]
    times = bar_labels(ax_t)
    assert len(times) == 3 and all(t.startswith(f"{c.ms:.3g} ms") for t, c in zip(times, costs))
    assert sum("bottleneck" in t for t in times) == 1
    assert bar_labels(ax_p) == [
        f"{c.param_bytes / 2**20:.2g} MiB" if c.param_bytes < 0.1 * 2**20 else f"{c.param_bytes / 2**20:.2f} MiB"
        for c in costs
    ]
    # the 7.8 MiB cache is far above these stages: named in the legend, not drawn, the axis fits the data
    largest = max(c.param_bytes for c in costs) / 2**20
    assert ax_p.get_ylim()[1] < 2 * largest and not [line for line in ax_p.get_lines() if len(line.get_ydata())]
    assert any("parameter cache" in t and "off scale" in t for t in legend_texts(ax_p))


def test_cache_line_is_drawn_when_in_view():
    stages = [{"ms": 1.0, "on_chip_bytes": 6 * 2**20, "off_chip_bytes": 2**20}, {"ms": 2.0, "on_chip_bytes": 4 * 2**20}]
    ax_p = stage_figure(stages, "t", 8 * 2**20).axes[1]
    assert [line.get_ydata()[0] for line in ax_p.get_lines()] == [8.0]
    assert bar_labels(ax_p) == ["7.00 MiB", "4.00 MiB"] and ax_p.get_yscale() == "linear"
    assert heights(ax_p, "cached on chip") == [6.0, 4.0] and heights(ax_p, "streamed from host") == [1.0, 0.0]
    assert set(legend_texts(ax_p)) == {"cached on chip", "streamed from host", "parameter cache 8.0 MiB"}


def test_stages_far_apart_get_a_log_axis_and_zero_stages_a_label():
    stages = [
        {"ms": 1.0, "on_chip_bytes": 5 * 2**20, "off_chip_bytes": 10 * 2**20},
        {"ms": 0.2, "on_chip_bytes": 2000},
        {"ms": 0.1, "on_chip_bytes": 0},
    ]
    ax_t, ax_p = stage_figure(stages, "t", USB.cache_bytes).axes[:2]
    assert ax_p.get_yscale() == "log" and ax_p.get_ylim()[0] > 0
    assert ax_p.get_ylabel() == "MiB (log scale)"
    # on the log axis the cached bars start at the floor; the stacks still reach each stage's MiB
    floor = ax_p.get_ylim()[0]
    assert all_close(stack_tops(ax_p), [15.0, 2000 / MIB, floor])
    assert bar_labels(ax_p) == ["15.0 MiB", "0.0019 MiB", "0 MiB"]
    assert bar_labels(ax_t) == ["1 ms\nbottleneck", "0.2 ms", "0.1 ms"]


@pytest.mark.parametrize("scheduler", ["respect", "dp"])
def test_sweep_chart_draws_the_sweeps_throughput_and_speedups(embedded_path, scheduler):
    result = sweep(embedded_path, 4, USB, scheduler)
    assert result.recommended is not None
    ks = [r.k for r in result.rows]
    fig = sweep_figure(result)
    ax_t, ax_c = fig.axes[:2]
    assert fig.get_suptitle() == f"{embedded_path.name}: usb spec (predicted)"
    # left: predicted throughput of the scheduler's and of the compiler's plans against K
    lines = lines_by_label(ax_t)
    ours, theirs = lines[f"{scheduler} scheduler"], lines["compiler split"]
    assert list(ours.get_xdata()) == ks and all_close(ours.get_ydata(), [r.throughput_ips for r in result.rows])
    assert all_close(ours.get_ydata(), [1e3 / r.bottleneck_ms for r in result.rows])
    assert list(theirs.get_xdata()) == ks
    assert all_close(theirs.get_ydata(), [1e3 / r.compiler_bottleneck_ms for r in result.rows])
    star = lines[f"recommended K={result.recommended}"]
    best = next(r for r in result.rows if r.k == result.recommended)
    assert list(star.get_xdata()) == [result.recommended] and all_close(star.get_ydata(), [best.throughput_ips])
    assert (ax_t.get_xlabel(), ax_t.get_ylabel(), ax_t.get_title()) == (
        "Edge TPUs (K)",
        "inferences / s (predicted)",
        "throughput",
    )
    assert [a.get_ylabel() for a in ax_t.child_axes] == ["speedup over 1 TPU"]
    assert legend_texts(ax_t) == [f"{scheduler} scheduler", "compiler split", f"recommended K={result.recommended}"]
    # right: one bar per K, its height the speedup over the compiler's split
    (speedups,) = bars(ax_c).values()
    assert [round(p.get_x() + p.get_width() / 2) for p in speedups] == ks
    assert all_close([p.get_height() for p in speedups], [r.speedup_vs_compiler for r in result.rows])
    assert all_close([p.get_height() for p in speedups], [r.compiler_bottleneck_ms / r.bottleneck_ms for r in result.rows])
    assert bar_labels(ax_c) == [f"{r.speedup_vs_compiler:.2f}x" for r in result.rows]
    assert (ax_c.get_xlabel(), ax_c.get_ylabel(), ax_c.get_title()) == (
        "Edge TPUs (K)",
        "compiler period / ours",
        "speedup over the compiler split",
    )
    image = decode(sweep_plot_png(result))
    assert image.shape[1] > 800 and image.std() > 0.05
