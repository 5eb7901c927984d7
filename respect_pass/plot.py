"""The PNG charts: ``--plot`` of a partition run and of ``run_pipeline``, and ``sweep --plot``.

Stage chart (:func:`stage_figure`), "why is each pipeline stage as slow as it is?": left, per-stage
time as stacked bars (compute, per-invoke/per-op overhead, streamed parameters, input/output
transfers, ops on the host CPU) with the bottleneck marked; right, per-stage parameter bytes split into cached (on-chip)
and streamed (off-chip). Every bar is labelled with its ms or MiB, and the parameter axis is scaled
to the data (logarithmic when the stages differ by more than :data:`LOG_RATIO`), so small stages stay
visible; the Edge TPU's parameter cache is drawn as a line when it is within 2x of the largest stage
and named in a note otherwise. Stage records are the ``stages`` of ``run_pipeline --json`` (or the
cost-model breakdown of a plan); records with only a measured ``ms`` are drawn as one bar.

Sweep chart (:func:`sweep_figure`): throughput (and speedup over one TPU) against K for the chosen
scheduler and the compiler's split, the recommended K marked; and the speedup over the compiler's
split at each K.

Figures are built without pyplot (no global state) and rendered with the Agg canvas.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tflite_io import OutputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from .sweep import SweepResult

__all__ = ["LOG_RATIO", "check_plot_path", "figure_png", "stage_figure", "stage_plot_png", "sweep_figure", "sweep_plot_png"]

_PARTS = (
    ("compute_ms", "compute", "#4c72b0"),
    ("overhead_ms", "invoke/op overhead", "#8c8c8c"),
    ("stream_ms", "streamed parameters", "#dd8452"),
    ("io_ms", "input/output transfer", "#55a868"),
    ("host_ms", "CPU ops (host)", "#c44e52"),
)
_MIB = 2**20
#: The parameter axis turns logarithmic when the largest stage holds more than this many times the smallest.
LOG_RATIO = 50.0
#: The cache line is drawn when it is at most this many times the largest stage's parameters.
_CACHE_IN_VIEW = 2.0


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def figure_png(fig: Figure, dpi: int = 110) -> bytes:
    """Render ``fig`` with the Agg canvas and return the PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _mib(value: float) -> str:
    """A MiB label that stays informative for small stages: ``12.3``, ``0.45``, ``0.056``, ``0``."""
    if value == 0:
        return "0 MiB"
    if value >= 10:
        return f"{value:.1f} MiB"
    if value >= 0.1:
        return f"{value:.2f} MiB"
    return f"{value:.2g} MiB" if value >= 0.001 else "<0.001 MiB"


def _label_bars(ax: Axes, tops: Sequence[float], texts: Sequence[str], log: bool = False) -> None:
    """Write ``texts[i]`` just above bar ``i`` (rotated when there are many bars)."""
    many = len(tops) > 8
    for i, (top, text) in enumerate(zip(tops, texts)):
        ax.text(
            i,
            top * (1.08 if log else 1.0),
            text,
            ha="center",
            va="bottom",
            fontsize=7,
            rotation=90 if many else 0,
            gid="bar-label",
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5},
        )


def stage_figure(stages: Sequence[Mapping[str, Any]], title: str, cache_bytes: int | None) -> Figure:
    """Build the two-panel stage chart (see the module docstring); nothing is rendered."""
    n = len(stages)
    x = list(range(n))
    fig = _figure(4 + 1.2 * n, 4.4)
    ax_t, ax_p = fig.subplots(1, 2)
    bottom = [0.0] * n
    if all("compute_ms" in s for s in stages):
        for key, label, color in _PARTS:
            values = [float(s.get(key, 0.0)) for s in stages]
            ax_t.bar(x, values, bottom=bottom, label=label, color=color)
            bottom = [b + v for b, v in zip(bottom, values)]
    else:
        bottom = [float(s["ms"]) for s in stages]
        ax_t.bar(x, bottom, label="measured", color="#4c72b0")
    worst = max(range(n), key=lambda i: bottom[i])
    _label_bars(ax_t, bottom, [f"{ms:.3g} ms" + ("\nbottleneck" if i == worst else "") for i, ms in enumerate(bottom)])
    ax_t.set(
        xlabel="stage (Edge TPU)",
        ylabel="ms per inference",
        title="stage time",
        xticks=x,
        ylim=(0, 1.45 * max(bottom + [1e-9])),
    )
    ax_t.legend(fontsize=7, loc="upper right")
    _parameter_panel(ax_p, stages, cache_bytes)
    fig.suptitle(title, fontsize=10)
    return fig


def _parameter_panel(ax: Axes, stages: Sequence[Mapping[str, Any]], cache_bytes: int | None) -> None:
    """Cached and streamed MiB per stage, labelled, on an axis scaled to the stages."""
    x = list(range(len(stages)))
    on = [(s.get("on_chip_bytes") or 0) / _MIB for s in stages]
    off = [(s.get("off_chip_bytes") or 0) / _MIB for s in stages]
    total = [a + b for a, b in zip(on, off)]
    largest = max(total + [0.0])
    nonzero = [t for t in total if t > 0]
    log = bool(nonzero) and largest > LOG_RATIO * min(nonzero)
    floor = min(nonzero) / 3 if log else 0.0
    # on a log axis a bar cannot start at 0: the cached part starts at the floor
    ax.bar(x, [max(a - floor, 0.0) if a else 0.0 for a in on], bottom=floor, label="cached on chip", color="#4c72b0")
    ax.bar(x, off, bottom=[max(a, floor) for a in on], label="streamed from host", color="#dd8452")
    _label_bars(ax, [max(t, floor) for t in total], [_mib(t) for t in total], log)
    cache = (cache_bytes or 0) / _MIB
    top = max(largest, 1e-6)
    if cache and cache <= _CACHE_IN_VIEW * top:
        ax.axhline(cache, color="black", linestyle="--", linewidth=1, label=f"parameter cache {cache:.1f} MiB")
        top = max(top, cache)
    elif cache:  # a legend entry without a mark
        ax.plot(
            [],
            [],
            linestyle="none",
            label=f"parameter cache {cache:.1f} MiB\n(off scale: {cache / top:.0f}x the largest stage)",
        )
    if log:
        ax.set_yscale("log")
        ax.set_ylim(floor, top * 6)
    else:
        ax.set_ylim(0, 1.45 * top)
    ax.set(xlabel="stage (Edge TPU)", ylabel="MiB" + (" (log scale)" if log else ""), title="parameters", xticks=x)
    ax.legend(fontsize=7, loc="upper right")


def stage_plot_png(stages: Sequence[Mapping[str, Any]], title: str, cache_bytes: int | None) -> bytes:
    """Render the two-panel stage chart and return the PNG bytes (nothing is written)."""
    return figure_png(stage_figure(stages, title, cache_bytes))


def sweep_figure(result: SweepResult) -> Figure:
    """Build the sweep chart of :func:`respect_pass.sweep.sweep`'s result; nothing is rendered."""
    fig = _figure(10, 4.2)
    ax_t, ax_c = fig.subplots(1, 2)
    ours = [(r.k, r.throughput_ips) for r in result.rows if r.throughput_ips is not None]
    theirs = [(r.k, 1e3 / r.compiler_bottleneck_ms) for r in result.rows if r.compiler_bottleneck_ms]
    ks = [r.k for r in result.rows]
    if ours:
        ax_t.plot(*zip(*ours), marker="o", color="#4c72b0", label=f"{result.scheduler} scheduler")
    if theirs:
        ax_t.plot(*zip(*theirs), marker="s", linestyle="--", color="#dd8452", label="compiler split")
    best = dict(ours)
    if result.recommended is not None:
        k, ips = result.recommended, best[result.recommended]
        ax_t.axvline(k, color="#55a868", linestyle=":", linewidth=1)
        ax_t.plot([k], [ips], marker="*", markersize=16, color="#55a868", linestyle="none", label=f"recommended K={k}")
        ax_t.annotate(f"K={k}: {ips:.0f}/s", (k, ips), textcoords="offset points", xytext=(6, -14), fontsize=8)
    values = [v for _, v in ours + theirs]
    ax_t.set(
        xlabel="Edge TPUs (K)",
        ylabel="inferences / s (predicted)",
        title="throughput",
        xticks=ks,
        ylim=(0, 1.25 * max(values + [1e-9])),
    )
    base = best.get(1)
    if base:  # the same curve read as speedup over one TPU
        second = ax_t.secondary_yaxis("right", functions=(lambda y: y / base, lambda s: s * base))
        second.set_ylabel("speedup over 1 TPU")
    ax_t.legend(fontsize=7, loc="lower right")
    bars = [(r.k, r.speedup_vs_compiler) for r in result.rows if r.speedup_vs_compiler is not None]
    speedups = [s for _, s in bars]
    ax_c.bar([k for k, _ in bars], speedups, color=["#55a868" if k == result.recommended else "#4c72b0" for k, _ in bars])
    for k, s in bars:
        ax_c.text(k, s, f"{s:.2f}x", ha="center", va="bottom", fontsize=7, gid="bar-label")
    ax_c.axhline(1.0, color="black", linestyle="--", linewidth=1)
    ax_c.set(
        xlabel="Edge TPUs (K)",
        ylabel="compiler period / ours",
        title="speedup over the compiler split",
        xticks=ks,
        ylim=(0, 1.2 * max(speedups + [1.0])),
    )
    fig.suptitle(f"{result.model.rsplit('/', 1)[-1]}: {result.spec} spec (predicted)", fontsize=10)
    return fig


def sweep_plot_png(result: SweepResult) -> bytes:
    """Render :func:`sweep_figure` and return the PNG bytes (nothing is written)."""
    return figure_png(sweep_figure(result))


def check_plot_path(plot: str | Path, out_dir: str | Path | None = None) -> Path:
    """The path of a PNG to write, checked before any work: a ``.png`` name whose directory exists
    (or is ``out_dir``, created by the same run), not a directory."""
    path = Path(plot)
    if path.suffix.lower() != ".png":
        raise OutputError(str(path), "the plot must be a .png file")
    if path.is_dir():
        raise OutputError(str(path), "is a directory")
    if not (path.parent.is_dir() or (out_dir is not None and path.parent.resolve() == Path(out_dir).resolve())):
        raise OutputError(str(path), "its directory does not exist")
    return path
