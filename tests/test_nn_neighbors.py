"""The network core and the neighbor search."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list

from nnpot.errors import NeighborOverflowError
from nnpot.nn import MLP, path_norm, two_layer, weight_norm
from nnpot.potentials.neighbors import build_neighbors, neighbor_pairs


def test_mlp_deepmd_residuals_and_shapes():
    net = MLP([1, 25, 50, 100], act="tanh", resnet=True, final_linear=False, init="deepmd")
    assert net.residual == [0, 2, 2]  # 1->25 plain, then width doubles twice: concat(x, x)
    x = torch.randn(7, 1, dtype=torch.float64)
    assert net(x).shape == (7, 100)
    fit = MLP([16, 8, 8, 1], resnet=True, resnet_dt=True, init="deepmd")
    assert fit.residual == [0, 1, 0] and fit.dts[1].numel() == 8
    with pytest.raises(ValueError, match="unknown activation"):
        MLP([2, 2], act="swish9")


def test_two_layer_mean_field_and_path_norm():
    net = two_layer(3, 50, bias=False)
    x = torch.randn(4, 3, dtype=torch.float64)
    w, a = net.layers[0].weight, net.layers[1].weight
    expected = (torch.relu(x @ w.T) @ a.T) / 50
    torch.testing.assert_close(net(x), expected)
    manual = (a.abs().reshape(-1) * w.abs().sum(1)).sum() / 50
    torch.testing.assert_close(path_norm(net), manual)
    assert float(weight_norm(net)) == pytest.approx(float(torch.cat([w.reshape(-1), a.reshape(-1)]).norm()))


@pytest.mark.parametrize("method", ["cells", "all", "vesin"])
@pytest.mark.parametrize("seed", range(12))
def test_neighbor_pairs_equal_ase(seed, method):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    cell = np.diag(rng.uniform(2, 9, 3)) + rng.uniform(-2, 2, (3, 3))  # triclinic, often thinner than rc
    pbc = rng.integers(0, 2, 3).astype(bool)
    pos = rng.uniform(-0.3, 1.3, (n, 3)) @ cell
    rc = float(rng.uniform(1, 7))
    I, J, S = neighbor_list("ijS", Atoms(f"H{n}", positions=pos, cell=cell, pbc=pbc), rc)
    i, j, s = neighbor_pairs(torch.tensor(pos), torch.tensor(cell), torch.tensor(pbc), rc, method=method)
    assert len(i) == len(I)  # no pair twice
    assert set(zip(I, J, map(tuple, S))) == set(zip(i.tolist(), j.tolist(), map(tuple, s.tolist())))


def test_padded_layout_sorted_and_overflow_is_an_error(water):
    f = water[0]
    pos, cell = torch.tensor(f.positions), torch.tensor(f.cell)
    types = torch.tensor(np.where(f.numbers == 8, 0, 1))
    nb = build_neighbors(pos, cell, torch.tensor(f.pbc), types, 6.0, (46, 92))
    idx = nb.index[0, :46]
    real = idx[idx >= 0]
    assert torch.all(types[real] == 0)
    d = (pos[real] + nb.shifts[0, : len(real)] @ cell - pos[0]).norm(dim=-1)
    assert torch.all(d[1:] >= d[:-1]) and float(d.max()) < 6.0
    with pytest.raises(NeighborOverflowError, match=r"neighbors of O within the cutoff but sel allows 10; .*use sel = \["):
        build_neighbors(pos, cell, torch.tensor(f.pbc), types, 6.0, (10, 92), type_names=["O", "H"])
    counted = build_neighbors(pos, cell, torch.tensor(f.pbc), types, 6.0, (10, 92), on_overflow="count")
    assert counted.n_dropped > 0
