"""MD drivers against ASE, integrator order, energy conservation."""

from __future__ import annotations

import numpy as np
import pytest
from ase import units
from ase.calculators.lj import LennardJones
from ase.md.verlet import VelocityVerlet as AseVelocityVerlet

from nnpot import NNPotCalculator
from nnpot.md import Langevin, VelocityVerlet
from nnpot.md.state import thermalize


def _start(water, n=None, T=300.0):
    atoms = water[0].to_atoms()
    atoms.calc = None
    thermalize(atoms, T, 1)
    return atoms


def _lj():
    return LennardJones(sigma=0.7, epsilon=0.005, rc=5.0, smooth=True)


def test_velocity_verlet_reproduces_ase_with_same_calculator(water):
    a, b = _start(water), _start(water)
    a.calc, b.calc = _lj(), _lj()
    VelocityVerlet(a, 0.5 * units.fs).run(100)
    AseVelocityVerlet(b, 0.5 * units.fs).run(100)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.get_momenta(), b.get_momenta(), rtol=0, atol=1e-10)


def test_model_path_reproduces_ase_with_nnpot_calculator(water, small_model):
    a, b = _start(water), _start(water)
    a.calc, b.calc = NNPotCalculator(small_model, device="cpu"), NNPotCalculator(small_model, device="cpu")
    dyn = VelocityVerlet(a, 0.5 * units.fs, skin=0.5)
    dyn.run(20)
    AseVelocityVerlet(b, 0.5 * units.fs).run(20)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-10)
    assert dyn.nsteps == 20 and dyn.get_time() == pytest.approx(10 * units.fs)


def test_langevin_without_friction_is_velocity_verlet(water):
    a, b = _start(water), _start(water)
    a.calc, b.calc = _lj(), _lj()
    Langevin(a, 0.5 * units.fs, temperature_K=300, friction=0.0).run(50)
    VelocityVerlet(b, 0.5 * units.fs).run(50)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-12)


def test_verlet_second_order_and_time_reversible():
    """Harmonic dimer: global error falls as dt^2; running back returns to the start."""
    from ase import Atoms
    from ase.calculators.harmonic import SpringCalculator

    def final(dt_fs, steps, back=False):
        atoms = Atoms("H", positions=[[1.0, 0, 0]], cell=[20, 20, 20])
        atoms.set_momenta([[0.0, 0.0, 0.0]])
        atoms.calc = SpringCalculator(ideal_positions=np.zeros((1, 3)), k=1.0)
        dyn = VelocityVerlet(atoms, dt_fs * units.fs)
        dyn.run(steps)
        if back:
            atoms.set_momenta(-atoms.get_momenta())
            VelocityVerlet(atoms, dt_fs * units.fs).run(steps)
        return atoms.positions[0, 0]

    omega = np.sqrt(1.0 / 1.008)  # k = 1 eV/A^2, H mass
    t_end = 40 * units.fs
    errors, dts = [], [1.0, 0.5, 0.25, 0.125]
    for dt in dts:
        steps = int(round(40 / dt))
        errors.append(abs(final(dt, steps) - np.cos(omega * t_end)))
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert slope == pytest.approx(2.0, abs=0.05)
    assert abs(final(0.5, 80, back=True) - 1.0) < 1e-12


def test_nve_energy_conservation_small_model(water, small_model):
    atoms = _start(water)
    atoms.calc = NNPotCalculator(small_model, device="cpu")
    dyn = VelocityVerlet(atoms, 0.25 * units.fs, min_distance=0)  # the untrained model pulls O-H to ~0.5 A
    etot = []
    dyn.attach(lambda: etot.append(float(dyn.state.energy + dyn.state.kinetic_energy())), 5)
    dyn.run(60)
    drift = (max(etot) - min(etot)) / len(atoms)
    assert drift < 2e-5  # eV/atom over 15 fs


def test_trajectory_and_log_written(tmp_path, water):
    from ase.io import read

    atoms = _start(water)
    atoms.calc = _lj()
    dyn = VelocityVerlet(atoms, 0.5 * units.fs, trajectory=tmp_path / "t.traj", logfile=tmp_path / "md.log",
                         loginterval=5)
    dyn.run(10)
    dyn.close()
    frames = read(tmp_path / "t.traj", index=":")
    assert len(frames) == 3  # steps 0, 5, 10
    np.testing.assert_allclose(frames[-1].positions, atoms.positions)
    assert len((tmp_path / "md.log").read_text().splitlines()) == 4


def _argon(seed=0):
    from ase.build import bulk

    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))  # 32 atoms
    atoms.calc = LennardJones(sigma=3.4, epsilon=0.0104, rc=8.0, smooth=True)
    thermalize(atoms, 60, seed)
    return atoms


@pytest.mark.slow
@pytest.mark.parametrize("thermostat", ["langevin", "bussi", "nose-hoover"])
def test_thermostats_sample_the_canonical_kinetic_energy(thermostat):
    """Mean temperature and the width of its distribution, sqrt(2 / N_dof) relative (chi-square)."""
    from nnpot.md import Bussi, NoseHoover

    target = 60.0
    atoms = _argon()
    dt = 5 * units.fs
    if thermostat == "langevin":
        dyn = Langevin(atoms, dt, temperature_K=target, friction=0.02 / units.fs, seed=1)
    elif thermostat == "bussi":
        dyn = Bussi(atoms, dt, temperature_K=target, taut=100 * units.fs, seed=1)
    else:
        dyn = NoseHoover(atoms, dt, temperature_K=target, tdamp=100 * units.fs)
    temps = []
    dyn.run(400)  # equilibrate
    dyn.attach(lambda: temps.append(float(dyn.state.kinetic_energy()) * 2 / (3 * 31 * units.kB)), 5)
    dyn.run(6000)
    temps = np.array(temps[1:])
    rel_width = temps.std() / temps.mean()
    assert temps.mean() == pytest.approx(target, rel=0.06)
    assert rel_width == pytest.approx(np.sqrt(2 / (3 * 31)), rel=0.25)


def test_nose_hoover_conserved_quantity(water):
    from nnpot.md import NoseHoover

    atoms = _argon()
    dyn = NoseHoover(atoms, 2 * units.fs, temperature_K=120, tdamp=50 * units.fs)
    values = []
    dyn.attach(lambda: values.append(dyn.conserved_energy()), 10)
    dyn.run(1000)
    kinetic_scale = 1.5 * len(atoms) * units.kB * 120
    assert (max(values) - min(values)) < 1e-3 * kinetic_scale
    temps = []
    dyn.attach(lambda: temps.append(float(dyn.state.temperature())), 10)
    dyn.run(500)
    assert abs(np.mean(temps) - 120) < 40  # moved from 60 K towards the 120 K target


def test_h5md_trajectory(tmp_path, water):
    import h5py

    atoms = _start(water)
    atoms.calc = _lj()
    dyn = VelocityVerlet(atoms, 0.5 * units.fs, trajectory=tmp_path / "t.h5md", loginterval=4)
    dyn.run(8)
    dyn.close()
    with h5py.File(tmp_path / "t.h5md") as fh:
        assert list(fh["h5md"].attrs["version"]) == [1, 1]
        pos = fh["particles/all/position"]
        assert pos["value"].shape == (3, 192, 3) and list(pos["step"][:]) == [0, 4, 8]
        np.testing.assert_allclose(pos["value"][-1], atoms.positions)
        assert pos["time"][-1] == pytest.approx(8 * 0.5e-3)  # ps
        np.testing.assert_array_equal(fh["particles/all/species"][:], atoms.numbers)


def test_replicas_equal_single_runs(water, small_model):
    """Three replicas (different cells and starts) in one batch follow their single-run trajectories."""
    from nnpot.md import Replicas

    starts = []
    for k in range(3):
        a = water[k].to_atoms()
        a.calc = None
        thermalize(a, 300, k, stationary=False)
        starts.append(a)
    reps = Replicas([a.copy() for a in starts], small_model, 0.5 * units.fs, device="cpu")
    reps.run(15)
    for a, b in zip(starts, reps.images):
        a.calc = NNPotCalculator(small_model, device="cpu")
        VelocityVerlet(a, 0.5 * units.fs).run(15)
        np.testing.assert_allclose(b.positions, a.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(b.get_momenta(), a.get_momenta(), rtol=0, atol=1e-10)
    assert reps.potential_energies().shape == (3,) and reps.kinetic_energies().shape == (3,)


def test_tight_neighbor_blocks_keep_the_energy(water, small_model):
    """The MD list (skin, blocks cut to the largest count) gives the calculator's energy and forces."""
    import torch

    from nnpot.md import ModelForces

    atoms = water[0].to_atoms()
    calc = NNPotCalculator(small_model, device="cpu")
    atoms.calc = calc
    fn = ModelForces(small_model, atoms, skin=1.0)
    pos = torch.as_tensor(atoms.positions)
    e, f, w = fn(pos, torch.as_tensor(atoms.cell.array)[None])  # batch-first: energies [B], cells [B, 3, 3]
    assert e.shape == (1,) and w.shape == (1, 3, 3)
    assert sum(fn.evaluator.nlist.capacity) < sum(small_model.sel) * ((small_model.cutoff + 1.0) / small_model.cutoff) ** 3
    assert float(e) == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(f.numpy(), atoms.get_forces(), atol=1e-10)


@pytest.mark.gpu
@pytest.mark.parametrize("tabulate", [False, True])
def test_cuda_graph_steps_match_eager(water, small_model, tabulate):
    """CUDA-graph replay (blocks, device-side rebuild decision, rollbacks) equals the eager loop."""
    import torch

    from nnpot.potentials import EnergyModel

    gpu = EnergyModel(small_model.config)
    gpu.load_state_dict(small_model.state_dict())
    gpu = gpu.to("cuda")
    a, b = _start(water, T=1500.0), _start(water, T=1500.0)  # hot: several rebuilds in 60 steps
    a.calc = NNPotCalculator(gpu, device="cuda", tabulate=tabulate)
    b.calc = NNPotCalculator(gpu, device="cuda", tabulate=tabulate)
    # the random small model lets hot atoms come very close; this test is about bookkeeping
    fast = VelocityVerlet(a, 1.0 * units.fs, skin=0.3, graph_block=7, min_distance=0)
    slow = VelocityVerlet(b, 1.0 * units.fs, skin=0.3, cuda_graphs=False, min_distance=0)
    fast.run(60)
    slow.run(60)
    assert fast._graphs is not None and fast.force_fn.evaluator.nlist.n_builds > 1
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.get_momenta(), b.get_momenta(), rtol=0, atol=1e-9)
    lang = Langevin(a, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs, seed=3, min_distance=0)
    lang.run(30)
    assert np.isfinite(a.positions).all() and lang._graphs is not None
    torch.cuda.synchronize()


@pytest.mark.gpu
def test_cuda_graph_thermostats_match_eager(water, small_model):
    """Nose-Hoover, Bussi and NPT in CUDA graphs equal their eager runs: the chain variables,
    the cell and the device generator's state are part of the replayed state (the capture's
    warm-up step gives its draws back)."""
    from nnpot.md import NPT, Bussi, NoseHoover
    from nnpot.potentials import EnergyModel

    gpu = EnergyModel(small_model.config)
    gpu.load_state_dict(small_model.state_dict())
    gpu = gpu.to("cuda")
    a, b = _start(water, T=300.0), _start(water, T=300.0)
    a.calc, b.calc = NNPotCalculator(gpu, device="cuda"), NNPotCalculator(gpu, device="cuda")
    common = dict(min_distance=0)
    makers = [
        lambda atoms, **kw: NoseHoover(atoms, 1.0 * units.fs, temperature_K=300, tdamp=20 * units.fs, **common, **kw),
        lambda atoms, **kw: Bussi(atoms, 0.5 * units.fs, temperature_K=600, taut=5 * units.fs, seed=3, **common, **kw),
        lambda atoms, **kw: NPT(atoms, 0.5 * units.fs, temperature_K=600, pressure_au=1e4 * units.bar,
                                taut=5 * units.fs, taup=50 * units.fs, compressibility_au=4.5e-5 / units.bar, seed=3,
                                **common, **kw),
    ]
    volume = a.get_volume()
    for k, make in enumerate(makers):
        fast, slow = make(a, graph_block=5), make(b, cuda_graphs=False)
        fast.run(40)
        slow.run(40)
        assert fast._graphs is not None and np.isfinite(a.positions).all()
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-8)
        np.testing.assert_allclose(a.get_momenta(), b.get_momenta(), rtol=0, atol=1e-8)
        np.testing.assert_allclose(a.cell.array, b.cell.array, rtol=0, atol=1e-10)
        if k == 0:
            assert fast.conserved_energy() == pytest.approx(slow.conserved_energy(), abs=1e-8)
    assert a.get_temperature() > 400 and a.get_volume() != volume  # heated towards 600 K, box moved


def test_inner_block_overflow_triggers_a_rebuild(water, small_model):
    """Too few inner slots for the neighbors inside rcut is detected on the device and repaired."""
    import torch

    from nnpot.md import ModelForces

    atoms = water[0].to_atoms()
    atoms.calc = NNPotCalculator(small_model, device="cpu")
    fn = ModelForces(small_model, atoms, skin=1.0)
    pos, cell = torch.as_tensor(atoms.positions), torch.as_tensor(atoms.cell.array)[None]
    fn(pos, cell)
    fn.evaluator.nlist.inner_capacity = (8, 8)  # as if atoms had crowded in since the build
    builds = fn.evaluator.nlist.n_builds
    e, f, _ = fn(pos, cell)
    assert fn.evaluator.nlist.n_builds == builds + 1 and not bool(fn.evaluator.nlist.overflow)
    assert float(e) == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
    np.testing.assert_allclose(f.numpy(), atoms.get_forces(), atol=1e-10)


def test_block_replay_bookkeeping_matches_the_eager_loop(water, small_model):
    """The CUDA-graph runner's logic (blocks, displacement tracking, ahead-of-time rebuilds,
    rollbacks, eager remainder), replayed eagerly on the CPU, follows the plain loop."""
    from nnpot.md.graphs import GraphedSteps

    a, b = _start(water, T=3000.0), _start(water, T=3000.0)  # hot, so the list is rebuilt often
    a.calc, b.calc = NNPotCalculator(small_model, device="cpu"), NNPotCalculator(small_model, device="cpu")
    fast = VelocityVerlet(a, 1.0 * units.fs, skin=0.4, min_distance=0)  # hot random model: close contacts
    runner = GraphedSteps(fast.state, fast.force_fn, fast._advance, block=4, capture=False)
    runner.run(43)  # ten blocks and an eager remainder of three
    fast.nsteps = 43
    from nnpot.md.state import write_back

    write_back(fast.state, a)
    VelocityVerlet(b, 1.0 * units.fs, skin=0.4, min_distance=0).run(43)
    assert fast.force_fn.evaluator.nlist.n_builds > 2
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.get_momenta(), b.get_momenta(), rtol=0, atol=1e-9)


@pytest.mark.parametrize("thermostat", ["nose-hoover", "bussi", "npt"])
def test_thermostat_blocks_match_the_eager_loop(water, small_model, thermostat):
    """Bussi, Nose-Hoover and NPT run in the CUDA-graph runner (here replayed eagerly on the
    CPU) and follow the eager loop exactly, through rollbacks: the chain variables and the
    generator's state are saved and restored with the state (a redone block draws the same
    numbers), and NPT's cell is part of the replayed state."""
    from nnpot.md import NPT, Bussi, NoseHoover
    from nnpot.md.graphs import GraphedSteps
    from nnpot.md.state import write_back

    a, b = _start(water, T=3000.0), _start(water, T=3000.0)  # hot: the list goes stale inside blocks
    volume = a.get_volume()
    a.calc, b.calc = NNPotCalculator(small_model, device="cpu"), NNPotCalculator(small_model, device="cpu")
    common = dict(skin=0.4, min_distance=0)

    def make(atoms):
        if thermostat == "nose-hoover":
            return NoseHoover(atoms, 1.0 * units.fs, temperature_K=300, tdamp=20 * units.fs, **common)
        if thermostat == "npt":
            return NPT(atoms, 1.0 * units.fs, temperature_K=600, pressure_au=1e4 * units.bar, taut=10 * units.fs,
                       taup=500 * units.fs, compressibility_au=4.5e-5 / units.bar, seed=3, **common)
        return Bussi(atoms, 1.0 * units.fs, temperature_K=600, taut=10 * units.fs, seed=3, **common)

    fast, slow = make(a), make(b)
    assert fast.graph_safe
    runner = GraphedSteps(fast.state, fast.force_fn, fast._advance, block=4, capture=False,
                          generator=getattr(fast, "generator", None))
    runner.run(43)
    write_back(fast.state, a)
    slow.run(43)
    assert runner.n_rollbacks > 0
    if thermostat == "nose-hoover":
        np.testing.assert_allclose(fast.state.thermostat.chain_xi.numpy(), slow.state.thermostat.chain_xi.numpy(),
                                   rtol=0, atol=1e-10)
        assert fast.conserved_energy() == pytest.approx(slow.conserved_energy(), abs=1e-8)
    else:
        assert fast.generator.get_state().equal(slow.generator.get_state())  # same number of draws
    if thermostat == "npt":
        assert abs(a.get_volume() / volume - 1) > 1e-4  # the box moved
        np.testing.assert_allclose(a.cell.array, b.cell.array, rtol=0, atol=1e-10)
    np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=1e-9)
    np.testing.assert_allclose(a.get_momenta(), b.get_momenta(), rtol=0, atol=1e-9)


@pytest.mark.slow
def test_npt_cell_rescaling_reaches_the_target_pressure():
    """Stochastic cell rescaling + Bussi: the mean pressure matches the target (statistical
    tolerance: the pressure's spread is ~400 bar for 32 argon atoms), and the box shrinks when
    the target rises."""
    from nnpot.md import NPT

    def run(p_bar):
        atoms = _argon()
        dyn = NPT(atoms, 5 * units.fs, temperature_K=60, pressure_au=p_bar * units.bar, taut=100 * units.fs,
                  taup=500 * units.fs, compressibility_au=1e-4 / units.bar, seed=1)
        p, v = [], []
        dyn.attach(lambda: (p.append(dyn.pressure() / units.bar), v.append(atoms.get_volume())), 5)
        dyn.run(2000)
        return np.mean(p[len(p) // 3:]), np.mean(v[len(v) // 3:]), atoms

    p0, v0, atoms = run(0.0)
    p1, v1, _ = run(2000.0)
    assert abs(p0 - 0.0) < 250 and abs(p1 - 2000.0) < 250
    assert v1 < 0.97 * v0
    assert atoms.get_volume() != pytest.approx(_argon().get_volume(), rel=1e-6)  # the cell came back into atoms


def test_atoms_too_close_stop_the_run_and_save_the_frame(water, small_model, tmp_path, monkeypatch):
    """Two atoms driven at each other: a clear MDError naming the distance, last frame saved."""
    from nnpot.md.driver import MDError

    monkeypatch.chdir(tmp_path)
    atoms = water[3].to_atoms()
    atoms.calc = NNPotCalculator(small_model, device="cpu")
    o, h = 0, int(np.nonzero(atoms.numbers == 1)[0][5])
    d = atoms.get_distance(o, h, mic=True, vector=True)
    momenta = np.zeros((len(atoms), 3))
    momenta[h] = -d / np.linalg.norm(d) * 1.0 * atoms.get_masses()[h]  # 1 A per ASE time unit, at the O atom
    atoms.set_momenta(momenta)
    start = atoms.copy()
    (tmp_path / "run").mkdir()
    dyn = VelocityVerlet(atoms, 0.5 * units.fs, trajectory=tmp_path / "run" / "md.xyz", min_distance=0.7)
    with pytest.raises(MDError, match="closer than min_distance 0.7"):
        dyn.run(200)
    saved = list((tmp_path / "run").glob("md_failure_step*.xyz"))  # beside the trajectory
    assert len(saved) == 1 and not list(tmp_path.glob("md_failure_step*.xyz"))
    # the block runner (the CUDA-graph logic, replayed eagerly here) stops too, at a block start
    from nnpot.errors import AtomsTooCloseError
    from nnpot.md.graphs import GraphedSteps

    start.calc = NNPotCalculator(small_model, device="cpu")
    dyn = VelocityVerlet(start, 0.5 * units.fs, min_distance=0.7)
    runner = GraphedSteps(dyn.state, dyn.force_fn, dyn._advance, block=4, capture=False)
    with pytest.raises(AtomsTooCloseError):
        runner.run(200)
    assert float(dyn.force_fn.evaluator.nlist.closest) < 0.7


def test_nose_hoover_chains_in_a_batch_equal_single_runs(water, small_model):
    """The batch-first state: each system of a batch has its own chain ([B, M] variables in
    state.thermostat) and follows the trajectory it has when run alone; sizes may differ."""
    from nnpot.md import NoseHoover

    starts = []
    for k, reps in enumerate([(1, 1, 1), (1, 1, 1), (1, 1, 2)]):
        a = water[k].to_atoms().repeat(reps)
        a.calc = None
        thermalize(a, 300 + 100 * k, k)
        starts.append(a)
    batch = [a.copy() for a in starts]
    dyn = NoseHoover(batch, 0.5 * units.fs, temperature_K=300, tdamp=20 * units.fs, model=small_model)
    assert dyn.state.thermostat.chain_xi.shape == (3, 3) and dyn.state.energy.shape == (3,)
    dyn.run(12)
    for k, a in enumerate(starts):
        a.calc = NNPotCalculator(small_model, device="cpu")
        alone = NoseHoover(a, 0.5 * units.fs, temperature_K=300, tdamp=20 * units.fs)
        alone.run(12)
        np.testing.assert_allclose(batch[k].positions, a.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(dyn.state.thermostat.chain_xi[k].numpy(),
                                   alone.state.thermostat.chain_xi[0].numpy(), rtol=0, atol=1e-12)
    assert dyn.potential_energies().shape == (3,) and np.all(np.isfinite(dyn.kinetic_energies()))
