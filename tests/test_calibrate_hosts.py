"""tools/calibrate_hosts.py: a host preset's constants recovered from figures a known host produced, with
leave-one-out, and the host speed fitted to host-op-heavy figures."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from conftest import chain_graph

from hardware import USB, stage_costs
from tools import calibrate_hosts as hosts
from tools import calibration_data as cd

#: A Dev-Board-like host the fit has to find: slower invocation, faster activations, slower streaming.
TRUTH = USB.with_(
    name="devboard", t_invoke_s=1.5e-3, io_bytes_per_s=3e8, stream_bytes_per_s=2e8, shared_link_bytes_per_s=0.0
)


def _graphs():
    """Models that tell invocation, activation link and streaming apart: small and large parameters (the
    large ones stream), small and large activations."""
    out = {}
    for i, (params, act) in enumerate([(2**20, 1000), (2**20, 400_000), (12 * 2**20, 1000), (24 * 2**20, 50_000),
                                       (3 * 2**20, 150_000), (30 * 2**20, 300_000)]):  # fmt: skip
        n = 6
        out[f"m{i}.tflite"] = chain_graph([params // n] * n, act_bytes=act, name=f"m{i}")
    return out


def _ms(graph, spec) -> float:
    return stage_costs(graph, (0,) * graph.num_ops, 1, spec)[0].ms


@pytest.fixture
def figures(monkeypatch):
    graphs = _graphs()

    def host_figures(host: str):
        return tuple(cd.HostFigure(name, name, host, _ms(g, TRUTH), "synthetic") for name, g in graphs.items())

    monkeypatch.setattr(cd, "host_figures", host_figures)
    return graphs


def test_a_hosts_constants_are_recovered_with_leave_one_out(figures):
    fit = hosts.fit_host(hosts.HOSTS["devboard"], USB, figures.get, (1.0, "given"), fit_scale=False)
    assert fit.spec.t_invoke_s == pytest.approx(TRUTH.t_invoke_s, rel=0.01)
    assert fit.spec.io_bytes_per_s == pytest.approx(TRUTH.io_bytes_per_s, rel=0.01)
    assert fit.spec.stream_bytes_per_s == pytest.approx(TRUTH.stream_bytes_per_s, rel=0.01)
    assert all(r.ratio == pytest.approx(1.0, rel=0.01) and r.loo_ratio == pytest.approx(1.0, rel=0.02) for r in fit.rows)
    assert 1.0 <= fit.spec.typical_error <= 1.02
    lo, hi = fit.spread["io_bytes_per_s"]
    assert lo <= fit.spec.io_bytes_per_s <= hi or lo == pytest.approx(hi, rel=0.01)


def test_rates_stay_under_the_links_payload_rate(figures, monkeypatch):
    """A host whose figures would need a faster link than USB 2 carries gets USB 2's rate, not more."""
    fit = hosts.fit_host(hosts.HOSTS["rpi3"], USB, figures.get, (1.0, "given"), fit_scale=False)
    assert fit.spec.io_bytes_per_s <= hosts.LINK_MAX_BYTES_PER_S["usb2"] * 1.001
    assert fit.spec.stream_bytes_per_s <= hosts.LINK_MAX_BYTES_PER_S["usb2"] * 1.001
    assert fit.spec.typical_error > 1.05  # so it cannot fit them: the error says so


def test_typical_error_is_the_geometric_mean_of_held_out_misses():
    rows = [
        hosts.HostRow("a", "s", 10.0, 10.0, 12.0),
        hosts.HostRow("b", "s", 10.0, 10.0, 10.0 / 1.5),
        hosts.HostRow("c", "s", 10.0, 10.0, None, "excluded"),
    ]
    assert hosts.typical_error(rows) == pytest.approx(math.sqrt(1.2 * 1.5))


def test_the_host_speed_is_fitted_to_host_heavy_figures():
    g = chain_graph([4000] * 5, act_bytes=2000)
    last = g.num_ops - 1
    heavy = replace(g, host_ops=frozenset({last}), host_times=((last, 5e-3),))
    light = chain_graph([4000] * 5, act_bytes=2000, name="light")
    truth = USB.with_(host_op_scale=7.0)
    rows = [(heavy, _ms(heavy, truth)), (light, _ms(light, truth))]
    scale, used = hosts.fit_scale(rows, USB, prior=2.0)
    assert scale == pytest.approx(7.0, rel=1e-3) and used == [0]
    assert hosts.fit_scale([rows[1]], USB, prior=2.0) == (2.0, [])  # nothing informs it: the prior


def test_features_give_the_reference_stage_time():
    g = chain_graph([300_000] * 40, act_bytes=70_000)
    last = g.num_ops - 1
    g = replace(g, host_ops=frozenset({last}), host_times=((last, 2e-3),))
    spec = USB.with_(host_op_scale=3.0)
    assert float(hosts.features(g, spec) @ hosts.extended_theta(spec)) == pytest.approx(
        stage_costs(g, (0,) * g.num_ops, 1, spec)[0].total_s, rel=1e-12
    )
