"""Tabulated se_e2_a (DeePMD-kit's model compression): accuracy, order, derivatives, kernels."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from nnpot import NNPotCalculator, save_model
from nnpot.potentials import EnergyModel
from nnpot.potentials import testing as T
from nnpot.potentials.tabulate import quintic_table
from nnpot.potentials.tabulate_kernels import triton_available

from .conftest import ROOT, small_config


@pytest.fixture(scope="module")
def tabulated(small_model) -> EnergyModel:
    return small_model.tabulated()


def test_tabulated_matches_exact_float64(small_model, tabulated, water):
    frames = [water[0], water[57]]
    exact, tab = T.evaluate(small_model, frames), T.evaluate(tabulated, frames)
    np.testing.assert_allclose(tab["energy"], exact["energy"], rtol=1e-11)
    assert np.abs(tab["forces"] - exact["forces"]).max() < 1e-9 * np.abs(exact["forces"]).max()
    assert np.abs(tab["virial"] - exact["virial"]).max() < 1e-9 * np.abs(exact["virial"]).max()


def test_tabulated_float32_close_to_exact(small_model, water):
    exact = T.evaluate(small_model, [water[5]])
    tab32 = T.evaluate(small_model.tabulated().to(torch.float32), [water[5]])
    assert tab32["energy"][0] == pytest.approx(exact["energy"][0], rel=1e-6)
    assert np.abs(tab32["forces"] - exact["forces"]).max() < 1e-4 * np.abs(exact["forces"]).max()


def test_tabulated_forces_and_virial_are_derivatives(tabulated, water_atoms):
    assert T.check_forces(tabulated, water_atoms, rtol=1e-6) < 1e-6
    assert T.check_virial(tabulated, water_atoms, rtol=1e-6) < 1e-6


def test_quintic_interpolation_error_falls_as_h_to_the_sixth(small_model):
    """Bin-midpoint error of the Hermite quintic against the net: fitted order ~6."""
    net = small_model.descriptor.embeddings[0]
    widths, errors = [], []
    for inv_h in (2.0, 4.0, 8.0):
        h, nbins = 1.0 / inv_h, int(4 * inv_h)
        coeffs = quintic_table(net, -1.0, h, nbins)  # [nbins, 6, M]
        mid = -1.0 + h * (torch.arange(nbins, dtype=torch.float64) + 0.5)
        interp = (coeffs * (0.5 ** torch.arange(6, dtype=torch.float64))[None, :, None]).sum(1)
        with torch.no_grad():
            errors.append(float((interp - net(mid[:, None])).abs().max()))
        widths.append(h)
    order = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert 5.0 < order < 7.0, (widths, errors)


def test_tabulated_model_is_not_saved_and_e3nn_is_not_tabulated(tabulated, tmp_path):
    with pytest.raises(ValueError, match="exact model"):
        save_model(tabulated, tmp_path / "t.nnp")
    cfg = small_config()
    cfg.descriptor.type = "e3nn"
    with pytest.raises(ValueError, match="se_e2_a"):
        EnergyModel(cfg).tabulated()


def test_calculator_tabulate_flag(small_model, water_atoms):
    a, b = water_atoms.copy(), water_atoms.copy()
    a.calc = NNPotCalculator(small_model, device="cpu")
    b.calc = NNPotCalculator(small_model, device="cpu", tabulate=True)
    assert b.calc.model.is_tabulated and not small_model.is_tabulated
    np.testing.assert_allclose(b.get_forces(), a.get_forces(), atol=1e-9)
    np.testing.assert_allclose(b.get_stress(), a.get_stress(), atol=1e-11)


_KERNEL_CHECK = textwrap.dedent(
    """
    import torch
    from nnpot.potentials.tabulate_kernels import contract
    torch.manual_seed(0)
    M, nbins, lo, inv_h = 20, 40, -1.0, 8.0
    for dtype, tol in ((torch.float64, 1e-13), (torch.float32, 1e-5)):
        coeffs = torch.randn(nbins, 6, M, dtype=dtype)
        for n, k in ((3, 37), (2, 16), (0, 5)):
            rows = (torch.rand(n, k, 4, dtype=dtype) * 7 - 2).requires_grad_(True)  # some beyond the table
            ref = contract(rows, coeffs, lo, inv_h, fused=False)
            out = contract(rows, coeffs, lo, inv_h, fused=True)
            if n == 0:
                assert out.shape == (0, 4, M)
                continue
            w = torch.randn_like(ref)
            (gr,) = torch.autograd.grad((ref * w).sum(), rows)
            (gf,) = torch.autograd.grad((out * w).sum(), rows)
            scale = max(1.0, ref.abs().max().item())
            assert (out - ref).abs().max().item() <= tol * scale, (dtype, n, k)
            assert (gf - gr).abs().max().item() <= tol * max(1.0, gr.abs().max().item()), (dtype, n, k)
    print("ok")
    """
)


@pytest.mark.skipif(not triton_available(), reason="needs Triton (its CPU interpreter runs the kernels)")
def test_fused_kernels_match_reference_in_triton_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-c", _KERNEL_CHECK], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


@pytest.mark.gpu
def test_fused_cuda_tabulated_matches_exact_cpu(small_model, water_atoms):
    exact = T.evaluate(small_model, [water_atoms])
    gpu = T.evaluate(small_model.tabulated().to("cuda"), [water_atoms])
    np.testing.assert_allclose(gpu["forces"], exact["forces"], atol=1e-9)
    assert gpu["energy"][0] == pytest.approx(exact["energy"][0], rel=1e-11)
    gpu32 = T.evaluate(small_model.tabulated().to("cuda", torch.float32), [water_atoms])
    assert np.abs(gpu32["forces"] - exact["forces"]).max() < 1e-4 * np.abs(exact["forces"]).max()
