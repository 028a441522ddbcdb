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


def _by_label(result):
    return {s.label: s for s in result.series}


def test_barron_monte_carlo_rate_is_dimension_free():
    result = barron_mc(BarronConfig(dims=[2, 10, 100], widths=[16, 64, 256, 1024], seeds=8, n_test=2000,
                                    trained_seeds=1, train_steps=300, train_batch=256,
                                    grid_dims=[2], grid_points_per_dim=[3, 5, 9, 17, 33]))
    series = _by_label(result)
    for d in (2, 10, 100):
        sampled, trained = series[f"sampled network, d={d}"], series[f"trained network, d={d}"]
        assert sampled.fit.slope == pytest.approx(-0.5, abs=0.1), sampled.label
        # training from the sampled network only improves on it, at least at the Monte Carlo rate
        assert np.all(np.mean(trained.errors, 1) < np.mean(sampled.errors, 1)), trained.label
        assert trained.fit.slope < -0.45, trained.label
    assert series["grid interpolation, d=2"].fit.slope == pytest.approx(-2.0 / 2, abs=0.1)


def test_random_features_lose_to_trained_networks_on_a_single_neuron():
    from nnpot.approx.barron import RandomFeaturesConfig, random_features

    result = random_features(RandomFeaturesConfig(widths=[8, 32, 128], n_train=4000, n_test=2000, train_steps=400,
                                                  seeds=1, lbfgs_iterations=150))
    rf, trained = result.series
    assert rf.fit.slope < -0.1  # random features do improve with width, slowly
    assert np.mean(rf.errors[-1]) > 0.2
    assert np.all(np.mean(trained.errors, 1) < 0.01)  # one neuron is enough for a trained network


def test_depth_separation_at_equal_parameter_count():
    from nnpot.approx.depth import DepthConfig, depth_study, hidden_widths

    assert hidden_widths(20, 2000, 1) == [91]  # 91 * 21 + 91 + 1 = 2003 parameters
    k = hidden_widths(20, 2000, 2)[0]
    assert abs(k * 21 + k * (k + 1) + k + 1 - 2000) < 2 * k
    result = depth_study(DepthConfig.quick())
    ratio = result.notes["shallow_over_deep_at_largest"]
    # the sphere's kink needs depth; |x| does not
    assert ratio["||x| - 1|"] > 1.5
    assert ratio["||x| - 1|"] > 2 * ratio["|x|"]
    assert result.primary.fit.slope == pytest.approx(-2.0, abs=1e-9)


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
    assert main(["approx", "depth", "--quick", "--set", "separation=false", "--json", str(tmp_path / "d.json"), "--plot", str(tmp_path / "d.png")]) == 0
    data = json.loads((tmp_path / "d.json").read_text())
    assert {"slope", "slope_ci", "theory_slope"} <= set(data)
    assert data["slope"] == pytest.approx(-2.0, abs=1e-9)
    assert (tmp_path / "d.png").stat().st_size > 1000


def test_decomposition_separates_the_three_errors():
    from nnpot.approx.decomposition import decomposition

    result = decomposition()
    series = {s.label.split(":")[0]: s for s in result.series}
    assert result.notes["gap_below_bound"]
    assert series["Rademacher bound 2Q sqrt(2 ln(2d)/n)"].fit.slope == pytest.approx(-0.5, abs=0.1)
    # approximation: near the sharp rate -(1/2 + 3/(2d)) = -0.8 at d = 5, and faster than Monte Carlo
    assert -1.1 < series["approximation"].fit.slope < -0.6
    assert series["estimation"].fit.slope < -0.5  # the gap shrinks with n
    assert series["optimisation"].fit.slope < -0.3  # and the error with training time


def test_cli_set_overrides_the_study_config(tmp_path):
    from nnpot.approx import study_config
    from nnpot.errors import ConfigError

    config = study_config("barron-mc", quick=True, overrides=["widths=[4, 8]", "seeds=3"])
    assert config.widths == [4, 8] and config.seeds == 3 and config.train_steps == 300
    with pytest.raises(ConfigError, match="config keys are"):
        study_config("depth", overrides=["width=3"])
    assert main(["approx", "depth", "--set", "separation=false", "--set", "depths=[2, 3, 4]",
                 "--json", str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["series"][0]["params"] == [4.0, 8.0, 16.0]


def test_approximation_example_runs(tmp_path):
    """examples/approximation_study.py, as a user would run it."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "approximation_study.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sampled network, d=100: slope" in done.stdout and "your data: error ~ n^-0.3" in done.stdout
    assert (tmp_path / "barron.png").stat().st_size > 1000
    assert json.loads((tmp_path / "barron.json").read_text())["theory_slope"] == -0.5


def test_learning_curve_study_on_water(tmp_path):
    """The study a user runs on their own data: one model per frame count, scored on held-out
    frames; asking for more frames than the file holds is a clear error."""
    from nnpot.approx.learning import LearningCurveConfig, learning_curve

    config = LearningCurveConfig.quick()
    config.frames, config.widths, config.steps = [4, 8], [], 20  # the width series is optional
    result = learning_curve(config)
    labels = [s.label for s in result.series]
    assert labels == ["force RMSE vs training frames", "energy RMSE per atom vs training frames"]
    errors = np.array([e for s in result.series for e in np.ravel(s.errors)])
    assert np.all(np.isfinite(errors)) and np.all(errors > 0)
    assert np.all(np.array(result.series[0].errors) < 5.0)  # eV/A: a trained-for-20-steps model, not garbage
    assert result.notes["full_batch"] is False


def test_learning_curve_full_batch_trains_on_the_whole_set(monkeypatch):
    """With ``full_batch`` each point's trainer takes all of its frames in every step (and one
    frame per step without it); the curve's points stay finite and sane."""
    from nnpot.approx import learning
    from nnpot.approx.learning import LearningCurveConfig, learning_curve
    from nnpot.training import trainer as train

    batch_sizes = []

    class Recording(train.Trainer):
        def __init__(self, config, *args, **kwargs):
            batch_sizes.append(config.batch_size)
            super().__init__(config, *args, **kwargs)

    monkeypatch.setattr(learning, "Trainer", Recording)
    config = LearningCurveConfig.quick()
    config.frames, config.widths, config.steps, config.full_batch = [1, 3], [], 15, True
    result = learning_curve(config)
    assert batch_sizes == [1, 3] and result.notes["full_batch"] is True
    errors = np.ravel(result.series[0].errors)
    assert np.all(np.isfinite(errors)) and np.all(errors < 5.0)  # eV/A


def test_learning_curve_rejects_too_many_frames():
    from nnpot.approx.learning import LearningCurveConfig, learning_curve

    config = LearningCurveConfig.quick()
    config.frames, config.widths, config.steps = [10_000], [], 20
    with pytest.raises(ValueError, match="fewer than 10000"):
        learning_curve(config)
