"""The stage breakdown chart."""

import io

import matplotlib.image as mpimg

from hardware import USB, stage_costs
from respect_pass.plot import stage_figure, stage_plot_png, sweep_figure, sweep_plot_png
from respect_pass.sweep import sweep
from tflite_io import read


def decode(png: bytes):
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return mpimg.imread(io.BytesIO(png), format="png")


def test_cost_model_breakdown_renders(embedded_path):
    g = read(embedded_path)
    stages = [c.as_json() for c in stage_costs(g, [0] * 30 + [1] * 34, 2, USB)]
    image = decode(stage_plot_png(stages, "two stages", USB.cache_bytes))
    assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 0.05


def test_measured_only_stages_render():
    image = decode(stage_plot_png([{"ms": 1.0}, {"ms": 2.5, "on_chip_bytes": 10, "off_chip_bytes": None}], "coral", None))
    assert image.std() > 0.05


def bar_labels(ax):
    return [t.get_text() for t in ax.texts if t.get_gid() == "bar-label"]


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


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


def test_stages_far_apart_get_a_log_axis_and_zero_stages_a_label():
    stages = [
        {"ms": 1.0, "on_chip_bytes": 5 * 2**20, "off_chip_bytes": 10 * 2**20},
        {"ms": 0.2, "on_chip_bytes": 2000},
        {"ms": 0.1, "on_chip_bytes": 0},
    ]
    ax_t, ax_p = stage_figure(stages, "t", USB.cache_bytes).axes[:2]
    assert ax_p.get_yscale() == "log" and ax_p.get_ylim()[0] > 0
    assert bar_labels(ax_p) == ["15.0 MiB", "0.0019 MiB", "0 MiB"]
    assert bar_labels(ax_t) == ["1 ms\nbottleneck", "0.2 ms", "0.1 ms"]


def test_sweep_figure_marks_the_recommended_k(embedded_path):
    result = sweep(embedded_path, 4, USB, "dp")
    fig = sweep_figure(result)
    ax_t, ax_c = fig.axes[:2]
    assert any(t == f"recommended K={result.recommended}" for t in legend_texts(ax_t))
    assert bar_labels(ax_c) == [f"{r.speedup_vs_compiler:.2f}x" for r in result.rows]
    image = decode(sweep_plot_png(result))
    assert image.shape[1] > 800 and image.std() > 0.05
