"""The layer-wise Kalman filter optimiser (``optimizer: lkf``): recursive least squares on a
linear model, the block layout, the forgetting factor, and training that learns energies fast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnpot.errors import ConfigError
from nnpot.training.kalman import LayerwiseKalman
from nnpot.training.trainer import Trainer

from .test_training import _config


@pytest.mark.parametrize("block", [1, 3, 64], ids=["one-per-block", "split-layers", "merged-layers"])
def test_linear_model_reaches_the_regularised_least_squares_fit(block):
    """y = X w + noise, lambda = 1, P0 = I. With one block the filter is recursive least
    squares: after every measurement once, w is exactly the ridge fit argmin |X w - y|^2 +
    |w|^2. Smaller blocks drop the cross-block covariance: the fit is then approximate, but a
    second pass over the data brings it close to least squares."""
    rng = np.random.default_rng(0)
    n, d = 60, 7
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.01 * rng.normal(size=n)
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    v = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    kf = LayerwiseKalman([w, v], block=block, lam=1.0, nue=1.0)
    assert sum(P.shape[0] for P in kf.P) == d and max(P.shape[0] for P in kf.P) <= block
    assert len(kf.P) == {1: 7, 3: 3, 64: 1}[block]  # 4 -> 3+1, then 3; or everything merged
    Xt = torch.as_tensor(X)

    def sweep():
        for i in range(n):
            kf.zero_grad()
            pred = Xt[i] @ torch.cat([w, v])
            pred.backward()
            kf.step(float(y[i] - pred.detach()))

    sweep()
    got = torch.cat([w, v]).detach().numpy()
    if block >= d:
        np.testing.assert_allclose(got, np.linalg.solve(X.T @ X + np.eye(d), X.T @ y), rtol=1e-10, atol=1e-12)
    else:
        sweep()
        got = torch.cat([w, v]).detach().numpy()
        lsq = np.linalg.lstsq(X, y, rcond=None)[0]
        assert np.linalg.norm(got - lsq) < 0.05 * np.linalg.norm(lsq)


def test_forgetting_factor_rises_towards_one():
    p = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    kf = LayerwiseKalman([p], lam=0.98, nue=0.9)
    for _ in range(50):
        p.grad = torch.ones(2, dtype=torch.float64)
        kf.step(0.0)
    assert kf.lam == pytest.approx(1 - 0.02 * 0.9 ** 50, rel=1e-12)


def test_lkf_training_learns_the_energies_fast(tmp_path):
    """Three filter steps take the energy error down 5x (Adam needs hundreds) and do not spoil
    the forces. (An interrupted run resumes exactly: ``test_training.py``'s resume test.)"""
    t = Trainer(_config(6, ("optimizer=lkf", "kalman_block=256", "kalman_force_atoms=12")), tmp_path / "r",
                progress=False)
    before = t.validate()
    for _ in range(3):
        t.step()
    after = t.validate()
    assert after["energy_rmse_per_atom"] < 0.2 * before["energy_rmse_per_atom"]
    assert after["force_rmse"] < 1.05 * before["force_rmse"]


def test_bad_optimizer_settings_are_named():
    with pytest.raises(ConfigError, match="optimizer: 'sgd'; allowed: 'adam', 'lkf'"):
        _config(2, ["optimizer=sgd"]).validate()
    with pytest.raises(ConfigError, match="kalman_lambda"):
        _config(2, ["optimizer=lkf", "kalman_lambda=1.5"]).validate()
    with pytest.raises(ConfigError, match="weight_decay"):
        _config(2, ["weight_decay=-1"]).validate()


def test_a_covariance_too_large_for_memory_is_refused_before_it_is_allocated():
    p = torch.nn.Parameter(torch.zeros(1000, dtype=torch.float64))
    with pytest.raises(MemoryError, match="needs 0.0 GiB for 1,000 weights in blocks of 500.*lower kalman_block"):
        LayerwiseKalman([p], block=500, max_bytes=4_000_000 - 1)  # two 500^2 blocks of 8 bytes: 4 MB
    assert len(LayerwiseKalman([p], block=500, max_bytes=4_000_000).P) == 2
