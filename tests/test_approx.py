"""Quick versions of the approximation studies: measured slopes against theory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnpot.approx import fit_rate, fit_with_floor
from nnpot.approx.barron import BarronConfig, barron_mc
from nnpot.approx.depth import yarotsky_error
from nnpot.approx.integrators import IntegratorConfig, integrator_order
from nnpot.cli import main


@pytest.mark.parametrize("true_slope", [-0.5, -1.0, -2.0])
def test_slope_fitter_recovers_known_exponents(true_slope):
    rng = np.random.default_rng(3)
    n = np.repeat([10, 30, 100, 300, 1000, 3000], 5).astype(float)
    err = 2.0 * n ** true_slope * np.exp(rng.normal(0, 0.05, n.shape))
    fit = fit_rate(n, err)
    assert fit.slope == pytest.approx(true_slope, abs=0.03)
    assert fit.slope_ci[0] < true_slope < fit.slope_ci[1]


def test_floor_fit_recovers_floor_and_slope():
    n = np.array([10, 30, 100, 300, 1000, 3000, 10000], float)
    fit = fit_with_floor(n, 0.01 + 3.0 * n ** -1.0)
    assert fit.floor == pytest.approx(0.01, rel=0.05)
    assert fit.slope == pytest.approx(-1.0, abs=0.05)


def test_barron_monte_carlo_rate_is_dimension_free():
    result = barron_mc(BarronConfig(dims=[2, 10, 100], widths=[16, 64, 256, 1024], seeds=8, n_test=2000,
                                    grid_dims=[2], grid_points_per_dim=[3, 5, 9, 17, 33]))
    for s in result.series[:3]:
        assert s.fit.slope == pytest.approx(-0.5, abs=0.1), s.label
    grid = result.series[3]
    assert grid.fit.slope == pytest.approx(-2.0 / 2, abs=0.1)


@pytest.mark.parametrize("m", range(1, 8))
def test_yarotsky_error_is_exact(m):
    assert yarotsky_error(m) == pytest.approx(2.0 ** (-2 * m - 2), abs=1e-12)


def test_integrator_orders():
    result = integrator_order(IntegratorConfig(water=False))
    slopes = {s.label.split(",")[0]: s.fit.slope for s in result.series}
    assert slopes["velocity Verlet"] == pytest.approx(2.0, abs=0.05)
    assert slopes["RK4"] == pytest.approx(4.0, abs=0.1)
    assert slopes["explicit Euler"] == pytest.approx(1.0, abs=0.2)


def test_verlet_order_on_water_potential():
    result = integrator_order(IntegratorConfig(timesteps=[0.1, 0.05], water_timesteps_fs=[1.0, 0.5, 0.25],
                                               water_t_end_fs=5.0))
    assert result.series[-1].fit.slope == pytest.approx(2.0, abs=0.1)


def test_cli_writes_json_and_plot(tmp_path, capsys):
    assert main(["approx", "depth", "--quick", "--json", str(tmp_path / "d.json"), "--plot", str(tmp_path / "d.png")]) == 0
    data = json.loads((tmp_path / "d.json").read_text())
    assert {"slope", "slope_ci", "theory_slope"} <= set(data)
    assert data["slope"] == pytest.approx(-2.0, abs=1e-9)
    assert (tmp_path / "d.png").stat().st_size > 1000


def test_decomposition_gap_below_path_norm_bound():
    from nnpot.approx.decomposition import decomposition

    result = decomposition()
    assert result.notes["gap_below_bound"]
    bound = next(s for s in result.series if s.label.startswith("path-norm"))
    assert bound.fit.slope == pytest.approx(-0.5, abs=0.1)
