"""The linear form of the device model (hardware.fit) equals the reference, and the fit recovers a spec."""

import math
from dataclasses import fields

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import BRANCHY, examples, placed_dags

from hardware import PCIE, USB, EdgeTpuSpec, latency_ms, pipeline_period_ms, stage_costs
from hardware.fit import (
    FITTED,
    TILE_RANGE,
    UNITS,
    Sample,
    constant_rows,
    constants,
    fit_linear,
    fit_tile,
    predict_ms,
    rounded,
    stage_features,
    stage_table,
    theta,
    tile_ranges,
    with_theta,
)
from hardware.placement import placed
from respect_pass.generator import generate
from respect_pass.orders import random_stage_map
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


@settings(max_examples=examples(60), deadline=None)
@given(
    st.lists(placed_dags(max_ops=10), min_size=1, max_size=3),
    st.sampled_from([USB, PCIE, SCALED, SCALED.with_(shared_link_bytes_per_s=1e8)]),
    st.randoms(use_true_random=False),
)
def test_a_stage_table_predicts_every_pipeline_as_the_reference(graphs, spec, rng):
    pipelines = []
    for g in graphs:
        k = rng.randint(1, 3)
        stages = random_stage_map(g, k, rng)
        pipelines.append((g, (0,) * g.num_ops, 1) if stages is None else (g, tuple(stages), k))
    table = stage_table(pipelines, spec)
    stage_s = table.stage_seconds(spec)
    costs = [stage_costs(g, stages, k, spec) for g, stages, k in pipelines]
    assert stage_s * 1e3 == pytest.approx([c.ms for cs in costs for c in cs], rel=1e-12)
    assert table.latency_seconds(stage_s) * 1e3 == pytest.approx([latency_ms(cs) for cs in costs], rel=1e-12)
    want = [pipeline_period_ms(cs, spec) for cs in costs]
    assert table.period_seconds(stage_s, spec) * 1e3 == pytest.approx(want, rel=1e-12)
    one = stage_table([(g, (0,) * g.num_ops, 1) for g in graphs], spec)
    assert one.features(one.tiles(spec)) == pytest.approx(np.array([stage_features(g, spec) for g in graphs]), rel=1e-12)


@settings(max_examples=examples(100), deadline=None)
@given(st.lists(st.integers(1, 30000), max_size=4), st.integers(1, 200), st.integers(200, 3000))
def test_tile_ranges_cover_the_range_with_the_same_tile_counts_in_each(positions, lo, hi):
    ranges = tile_ranges(positions, lo, hi)
    assert ranges[0][0] == lo and ranges[-1][1] == hi
    assert all(b + 1 == c for (_, b), (c, _) in zip(ranges, ranges[1:]))
    for a, b in ranges:
        assert all(math.ceil(p / a) == math.ceil(p / b) for p in positions)
    for (_, b), (c, _) in zip(ranges, ranges[1:]):  # neighbours differ in some count: no range could be wider
        assert any(math.ceil(p / b) != math.ceil(p / c) for p in positions)


def test_without_positions_the_tile_range_is_one_range():
    assert tile_ranges([]) == [TILE_RANGE]


def test_constants_name_every_cost_constant_of_the_spec():
    names = {f.name for f in fields(EdgeTpuSpec)} - {"name", "efficiency", "clock", "typical_error"}
    names |= {f"efficiency {kind}" for kind in USB.efficiency}
    assert set(constants(SCALED)) == names == set(UNITS) and list(constants(SCALED)) == list(UNITS)
    assert constants(SCALED)["efficiency conv"] == 0.5 and constants(SCALED)["cache_bytes"] == 2**20
    assert [(n, v) for n, v, _ in constant_rows(SCALED)] == list(constants(SCALED).items())
    assert set(FITTED) <= names


def test_the_fitted_constants_are_theta_in_their_own_units():
    c = constants(SCALED)
    th = np.array([c["t_invoke_s"], 1 / c["efficiency conv"], 1 / c["efficiency depthwise"]])
    th = np.append(th, [c["elementwise_s_per_byte"], 1 / c["io_bytes_per_s"], 1 / c["stream_bytes_per_s"], 1.0])
    assert theta(SCALED) == pytest.approx(th, rel=1e-15)
    assert constants(with_theta(USB, theta(SCALED))) == pytest.approx({**constants(USB), **{k: c[k] for k in FITTED}})


def test_rounded_rounds_only_the_fitted_constants():
    odd = with_theta(SCALED, theta(SCALED) * 1.0123456)
    r = constants(rounded(odd))
    for name, value in constants(odd).items():
        assert r[name] == (float(f"{value:.3g}") if name in FITTED else value)
