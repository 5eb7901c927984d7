"""The stage breakdown chart."""
import io

import matplotlib.image as mpimg

from hardware import USB, stage_costs
from respect_pass.plot import stage_plot_png
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
