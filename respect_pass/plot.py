"""``--plot FILE.png``: why is each pipeline stage as slow as it is?

Left: per-stage time as stacked bars (compute, per-invoke/per-op overhead,
streamed parameters, input/output transfers) with the bottleneck marked.
Right: per-stage parameter bytes split into cached (on-chip) and streamed
(off-chip), with the Edge TPU's parameter-cache size as a horizontal line.
Stage records are the ``stages`` of ``run_pipeline --json`` (or the
cost-model breakdown of a plan); records with only a measured ``ms`` are
drawn as one bar.
"""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["stage_plot_png"]

_PARTS = (("compute_ms", "compute", "#4c72b0"), ("overhead_ms", "invoke/op overhead", "#8c8c8c"),
          ("stream_ms", "streamed parameters", "#dd8452"), ("io_ms", "input/output transfer", "#55a868"))
_MIB = 2**20


def stage_plot_png(stages: Sequence[Mapping[str, Any]], title: str, cache_bytes: int | None) -> bytes:
    """Render the two-panel stage chart and return the PNG bytes (nothing is written)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(len(stages)))
    fig, (ax_t, ax_p) = plt.subplots(1, 2, figsize=(4 + 1.1 * len(stages), 4.2), constrained_layout=True)
    bottom = [0.0] * len(stages)
    if all("compute_ms" in s for s in stages):
        for key, label, color in _PARTS:
            values = [float(s[key]) for s in stages]
            ax_t.bar(x, values, bottom=bottom, label=label, color=color)
            bottom = [b + v for b, v in zip(bottom, values)]
    else:
        bottom = [float(s["ms"]) for s in stages]
        ax_t.bar(x, bottom, label="measured", color="#4c72b0")
    worst = max(range(len(stages)), key=lambda i: bottom[i])
    ax_t.annotate("bottleneck", (worst, bottom[worst]), ha="center", va="bottom", fontsize=8)
    ax_t.set(xlabel="stage (Edge TPU)", ylabel="ms per inference", title="stage time", xticks=x,
             ylim=(0, 1.4 * max(bottom + [1e-9])))
    ax_t.legend(fontsize=7, loc="upper right")

    on = [(s.get("on_chip_bytes") or 0) / _MIB for s in stages]
    off = [(s.get("off_chip_bytes") or 0) / _MIB for s in stages]
    ax_p.bar(x, on, label="cached on chip", color="#4c72b0")
    ax_p.bar(x, off, bottom=on, label="streamed from host", color="#dd8452")
    if cache_bytes:
        ax_p.axhline(cache_bytes / _MIB, color="black", linestyle="--", linewidth=1,
                     label=f"parameter cache {cache_bytes / _MIB:.1f} MiB")
    top = max([a + b for a, b in zip(on, off)] + [(cache_bytes or 0) / _MIB, 1e-9])
    ax_p.set(xlabel="stage (Edge TPU)", ylabel="MiB", title="parameters", xticks=x, ylim=(0, 1.4 * top))
    ax_p.legend(fontsize=7, loc="upper right")
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
