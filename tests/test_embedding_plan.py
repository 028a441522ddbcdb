"""se_e2_a evaluates each embedding net once per distinct input: same numbers, less work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms

from nnpot.potentials import EnergyModel, derivatives, make_batch
from nnpot.potentials.descriptors.se_e2_a import plan_embeddings

from .conftest import small_config

TOL = {torch.float64: 1e-10, torch.float32: 2e-5}  # relative to the largest value compared


def _molecule_in_small_cell() -> Atoms:
    """One water molecule in a triclinic cell much smaller than the 6 A cutoff: every atom sees
    many periodic images of itself and of the others, so self-image pairs (a, a, S) occur."""
    atoms = Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]],
                  cell=[[4.6, 0.0, 0.0], [0.9, 4.4, 0.0], [0.5, -0.7, 4.9]], pbc=True)
    atoms.positions += 0.3
    return atoms


def _structures(water) -> dict[str, list[Atoms]]:
    bulk = water[3].to_atoms()
    cluster = bulk[np.linalg.norm(bulk.positions - bulk.positions[0], axis=1) < 7.0]
    cluster.pbc = False
    slab = bulk.copy()
    slab.pbc = [True, True, False]
    return {"bulk_batch": [bulk, water[8].to_atoms()], "small_cell": [_molecule_in_small_cell()],
            "cluster": [cluster], "slab": [slab]}


def _assert_same(a: dict, b: dict) -> None:
    for key in ("energy", "forces", "virial", "atom_energy", "atom_virial"):
        scale = float(a[key].abs().max()) or 1.0
        tol = TOL[a[key].dtype] * scale
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=tol, msg=lambda m: f"{key}: {m}")


def _derivatives(model, batch, share: bool, **kwargs):
    """:func:`derivatives` with the se_e2_a setting ``share_embeddings`` on or off."""
    config = model.descriptor.config
    before, config.share_embeddings = config.share_embeddings, "on" if share else "off"
    try:
        return derivatives(model, batch, **kwargs)
    finally:
        config.share_embeddings = before


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["bulk_batch", "small_cell", "cluster", "slab"])
def test_shared_embeddings_give_the_same_energy_forces_and_virials(small_model, water, case, dtype):
    model = small_model if dtype == "float64" else EnergyModel(small_config("float32"))
    if dtype == "float32":
        model.load_state_dict({k: v.float() for k, v in small_model.state_dict().items()})
    batch = make_batch(_structures(water)[case], model.type_map, model.cutoff, model.sel, dtype=model.dtype)
    plain = _derivatives(model, batch, False, atom_virial=True)
    _assert_same(plain, _derivatives(model, batch, True, atom_virial=True))
    _assert_same(plain, _derivatives(model, batch, True, atom_virial=True, chunk_size=50))


def test_training_gradients_are_unchanged(small_model, water):
    """The force loss's parameter gradients (double backward) do not see the sharing."""
    batch = make_batch([water[3].to_atoms()], small_model.type_map, 6.0, small_model.sel, tight=True)
    params = [p for p in small_model.parameters() if p.requires_grad]
    grads = []
    for share in (False, True):
        out = _derivatives(small_model, batch, share, create_graph=True)
        loss = (out["forces"] ** 2).mean() + (out["energy"] / 192) ** 2 + (out["virial"] ** 2).mean()
        grads.append(torch.autograd.grad(loss, params))
    for plain, shared in zip(*grads):
        torch.testing.assert_close(shared, plain, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("case", ["bulk_batch", "small_cell"])
def test_plan_evaluates_each_distinct_input_once(small_model, water, case):
    """Same-type pairs share one row with their reverse, other real slots have their own, and
    the empty slots of centers of one type share one row."""
    batch = make_batch(_structures(water)[case], small_model.type_map, 6.0, small_model.sel)
    nb, types = batch.neighbors, batch.types
    n = types.numel()
    plan = plan_embeddings(nb.index, nb.shifts, torch.arange(n), types, nb.capacity)
    start, expected = 0, 0
    for t, cap in enumerate(nb.capacity):
        idx = nb.index[:, start:start + cap]
        start += cap
        rows, first = plan.rows[t], plan.first[t]
        assert torch.equal(rows[first], torch.arange(first.numel()))  # each row's source slot reads it
        count = torch.bincount(rows, minlength=first.numel()).view(-1)
        real = (idx >= 0).view(-1)
        same = (real.view(idx.shape) & (types[:, None] == t)).view(-1)
        assert bool((count[rows[same]] == 2).all()), "a same-type pair must share with its reverse"
        assert bool((count[rows[real & ~same]] == 1).all())
        empty_types = types[:, None].expand_as(idx).reshape(-1)[~real]
        assert rows[~real].unique().numel() == empty_types.unique().numel()
        expected += int(same.sum()) // 2 + int((real & ~same).sum()) + empty_types.unique().numel()
    assert plan.n_evaluations == expected
    if case == "bulk_batch":  # water: over a third fewer embedding evaluations than slots
        assert plan.n_evaluations < 0.65 * nb.index.numel()


def test_plan_cache_reuses_a_batch_plan_and_respects_its_budget(small_model, water):
    from nnpot.potentials.descriptors.se_e2_a import PlanCache

    batch = make_batch([water[3].to_atoms()], small_model.type_map, 6.0, small_model.sel, tight=True)
    calls = []
    plain = _derivatives(small_model, batch, True, atom_virial=True)
    batch.key = ("test-plan-cache", 3)  # a recurring batch: its plan is kept by the descriptor
    cache = small_model.descriptor.plan_cache
    for _ in range(2):
        _assert_same(plain, _derivatives(small_model, batch, True, atom_virial=True))
    first = cache.get(batch.key, lambda: calls.append(1))
    assert not calls and cache.bytes > 0  # made once, then reused
    assert cache.get(batch.key, lambda: calls.append(1)) is first
    full = PlanCache(max_bytes=0)
    make = lambda: plan_embeddings(batch.neighbors.index, batch.neighbors.shifts,  # noqa: E731
                                   torch.arange(len(batch.types)), batch.types, batch.neighbors.capacity)
    kept = full.get((3,), make)
    assert full.bytes == 0 and full.get((3,), make) is not kept  # over budget: not stored
