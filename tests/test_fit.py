"""The linear form of the device model (hardware.fit) equals the reference, and the fit recovers a spec."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import BRANCHY, examples, placed_dags

from hardware import PCIE, USB, stage_costs
from hardware.fit import Sample, fit_linear, fit_tile, predict_ms, stage_features, theta
from hardware.placement import placed
from respect_pass.generator import generate
from tflite_io import read

SCALED = USB.with_(
    name="scaled",
    t_invoke_s=2e-4,
    efficiency={"conv": 0.5, "depthwise": 0.05},
    elementwise_s_per_byte=6e-10,
    io_bytes_per_s=1.5e8,
    stream_bytes_per_s=3e8,
    stream_tile_positions=600,
    cache_bytes=2**20,
    cache_io_share=0.2,
    t_op_s=1e-6,
)


def one_stage_ms(graph, spec):
    return stage_costs(graph, (0,) * graph.num_ops, 1, spec)[0].ms


@settings(max_examples=examples(60), deadline=None)
@given(placed_dags(), st.sampled_from([USB, PCIE, SCALED]))
def test_features_times_theta_is_the_reference(graph, spec):
    assert stage_features(graph, spec) @ theta(spec) * 1e3 == pytest.approx(one_stage_ms(graph, spec), rel=1e-9)


def graphs():
    gs = [
        generate(f, n, seed) for f in ("residual", "inception", "squeeze_excite", "dense") for n, seed in ((40, 1), (90, 2))
    ]
    return gs + [placed(read(BRANCHY))]


def usb_with_scaled_discrete_constants():
    """The preset's linear constants with SCALED's cache, tile and per-op cost (what fit_linear keeps)."""
    return USB.with_(
        cache_bytes=SCALED.cache_bytes,
        cache_io_share=SCALED.cache_io_share,
        stream_tile_positions=SCALED.stream_tile_positions,
        t_op_s=SCALED.t_op_s,
    )


def test_fit_recovers_the_linear_constants_from_exact_times():
    samples = [Sample(g, one_stage_ms(g, SCALED)) for g in graphs()]
    prior = usb_with_scaled_discrete_constants()
    fitted = fit_linear(samples, prior)
    assert theta(fitted) == pytest.approx(theta(SCALED), rel=1e-6)
    assert predict_ms(samples, fitted) == pytest.approx([s.measured_ms for s in samples], rel=1e-9)


def test_a_constant_no_sample_informs_keeps_its_prior():
    # no depthwise op anywhere: the depthwise efficiency cannot be fitted
    samples = [
        Sample(g, one_stage_ms(g, SCALED)) for g in graphs() if not any(op.op_type == "DEPTHWISE_CONV_2D" for op in g.ops)
    ]
    assert samples
    prior = usb_with_scaled_discrete_constants()
    fitted = fit_linear(samples, prior)
    assert fitted.efficiency["depthwise"] == USB.efficiency["depthwise"]
    assert fitted.efficiency["conv"] == pytest.approx(SCALED.efficiency["conv"], rel=1e-6)


def test_the_prior_weight_pulls_a_small_refit_towards_the_prior():
    g = graphs()[0]
    samples = [Sample(g, 2 * one_stage_ms(g, USB))]  # one measurement, twice as slow as the prior says
    held = fit_linear(samples, USB, prior_weight=1.0)
    assert one_stage_ms(g, USB) < predict_ms(samples, held)[0] < samples[0].measured_ms
    ratio = theta(held)[:6] / theta(USB)[:6]
    assert np.all((ratio >= 1.0) & (ratio < 2.0))  # every informed constant slower, none past the data
    looser = fit_linear(samples, USB, prior_weight=0.01)
    assert predict_ms(samples, held)[0] < predict_ms(samples, looser)[0] <= samples[0].measured_ms * (1 + 1e-9)


def test_fit_tile_finds_a_tile_with_the_truths_tile_counts():
    truth = SCALED.with_(cache_bytes=0, cache_io_share=0.0)  # every layer streams: the tile matters everywhere
    samples = [Sample(g, one_stage_ms(g, truth)) for g in graphs()]
    fitted = fit_tile(samples, USB.with_(cache_bytes=0, cache_io_share=0.0, t_op_s=truth.t_op_s))
    assert fitted.stream_tile_positions != USB.stream_tile_positions
    assert predict_ms(samples, fitted) == pytest.approx([s.measured_ms for s in samples], rel=1e-6)
    assert np.allclose(theta(fitted), theta(truth), rtol=1e-6)
