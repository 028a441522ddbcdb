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
from nnpot.potentials.descriptors.se_e2_a_tables import quintic_table
from nnpot.potentials.descriptors.se_e2_a_kernels import triton_available

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
    from nnpot.potentials.descriptors.e3nn import E3nnConfig

    cfg = small_config()
    cfg.descriptor = E3nnConfig(sel=[46, 92], channels=4, radial_neuron=[8])
    with pytest.raises(ValueError, match="descriptor 'e3nn' has no tabulated form"):
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
    import sys, torch
    sys.path.insert(0, "tests")
    from conftest import WATER, small_config
    from nnpot.data import H5Dataset
    from nnpot.potentials import EnergyModel, apply_stats, make_batch
    from nnpot.potentials.descriptors import se_e2_a_kernels as tabulate_kernels
    water = H5Dataset(WATER)
    frames = [water[i] for i in (0, 9)]
    cases = (("float64", 1e-12, 2048, True), ("float32", 2e-5, 2048, True), ("float64", 1e-12, 1, True),
             ("float64", 1e-12, 2048, False))
    for dtype, tol, programs, one_side in cases:
        tabulate_kernels._PROGRAMS = programs  # 1: each center's slots in one program, else shared
        config = small_config()
        config.descriptor.type_one_side = one_side  # False: a table per (center, neighbor) type pair
        model = EnergyModel(config)
        apply_stats(model, frames, [f.energy for f in frames])
        model = model.tabulated().to(getattr(torch, dtype))
        d = model.descriptor
        batch = make_batch(frames, model.type_map, 6.5, [64, 128], dtype=model.dtype)  # slots beyond rcut too
        some = slice(180, 204)  # a few centers of each frame's edge: the interpreter is slow
        rij = batch.edge_vectors()[some].detach().requires_grad_(True)
        mask, types = (batch.neighbors.index >= 0)[some], batch.types[some]
        cap = batch.neighbors.capacity
        outs = []
        for fused in (False, True):
            d.fused = fused
            D = d(rij, mask, types, cap)
            w = torch.linspace(-1, 1, D.numel(), dtype=D.dtype).view_as(D)
            (g,) = torch.autograd.grad((D * w).sum(), rij)
            outs.append((D, g))
        (D0, g0), (D1, g1) = outs
        assert (D1 - D0).abs().max() <= tol * D0.abs().max(), (dtype, (D1 - D0).abs().max())
        assert (g1 - g0).abs().max() <= tol * g0.abs().max(), (dtype, (g1 - g0).abs().max())
    print("ok")
    """
)


@pytest.mark.skipif(not triton_available(), reason="needs Triton (its CPU interpreter runs the kernels)")
def test_fused_kernels_match_reference_in_triton_interpreter():
    """The Triton kernels (environment, normalisation, table, contraction and its gradient)
    against the torch reference path, run by Triton's CPU interpreter."""
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
