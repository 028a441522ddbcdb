"""ASE-compatible MD drivers whose state lives on the device.

``VelocityVerlet(atoms, timestep)`` and ``Langevin(atoms, timestep, temperature_K=...,
friction=...)`` take ASE's arguments and behave like ASE's classes (``run``, ``attach``,
``get_time``, ``nsteps``, trajectory and log files), but positions, momenta and forces stay in
torch tensors between steps. ``atoms`` is updated only when an observer, the logger or the
trajectory writer needs it, and at the end of ``run``. With an :class:`NNPotCalculator` the
model runs directly on its device with a reused neighbor list (:class:`ModelForces`, an
:class:`~nnpot.potentials.evaluator.Evaluator` in the drivers' shapes); any other ASE calculator
works through the host (:class:`ASEForces`: slow, but the same integrator).

Every driver also takes a list of structures with ``model=`` (an
:class:`~nnpot.potentials.EnergyModel`): they run as one batch-first state
(:mod:`nnpot.md.state`), each with its own cell and thermostat variables, and follow the
trajectories they would have alone (:func:`~nnpot.md.replicas.Replicas` builds such a driver).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase import Atoms, units
from ase.io import Trajectory, write
from ase.stress import voigt_6_to_full_3x3_stress

from nnpot.errors import AtomsTooCloseError, ConfigError, NeighborOverflowError, NNPotError
from nnpot.md.graphs import GraphedSteps
from nnpot.md.h5md import H5MDWriter
from nnpot.md.integrators import (
    NoseHooverChain,
    bussi_step,
    langevin_baoab_step,
    nose_hoover_step,
    npt_step,
    pressure,
    velocity_verlet_step,
)
from nnpot.md.state import fixed_atoms, snapshot, state_from_atoms, write_back
from nnpot.potentials.calculator import NNPotCalculator
from nnpot.potentials.evaluator import Evaluator, check_structure

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

__all__ = ["MolecularDynamics", "VelocityVerlet", "Langevin", "Bussi", "NoseHoover", "NPT", "MDError", "ModelForces",
           "ASEForces"]

#: energies [B] (eV), forces [N, 3] (eV/A), virials [B, 3, 3] (eV)
Forces = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

class ModelForces:
    """An :class:`~nnpot.potentials.evaluator.Evaluator` in the drivers' shapes: energies
    ``[B]``, forces ``[N, 3]``, virials ``[B, 3, 3]`` for the ``B`` structures of ``images`` (one
    ``Atoms`` or a list). The evaluator (its neighbor list, staleness and overflow flags) is
    :attr:`evaluator`."""

    def __init__(self, model: torch.nn.Module, images: Atoms | Sequence[Atoms], skin: float = 2.0, chunk_size: int | None = None,
                 compile: bool = False, min_distance: float = 0.0):
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        self.evaluator = Evaluator(model, images, skin=skin, chunk_size=chunk_size, compile=compile,
                                   min_distance=min_distance)
        #: the last evaluation's full results (an ensemble's deviations among them)
        self.last: dict[str, torch.Tensor] = {}

    def evaluate_state(self, positions: torch.Tensor, cell: torch.Tensor) -> Forces:
        """Unchecked (:meth:`Evaluator.evaluate`): what a CUDA graph captures."""
        self.last = self.evaluator.evaluate(positions, cell)
        return self.last["energy"], self.last["forces"], self.last["virial"]

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> Forces:
        """Checked (:meth:`Evaluator.__call__`): rebuilds the list when needed."""
        self.last = self.evaluator(positions, cell)
        return self.last["energy"], self.last["forces"], self.last["virial"]


class ASEForces:
    """Any ASE calculator behind the same interface, for one system (positions go through the
    host)."""

    def __init__(self, calc: Calculator, atoms: Atoms, needs_virial: bool = False):
        self.calc = calc
        self.atoms = atoms.copy()
        self.atoms.calc = calc
        self.needs_virial = needs_virial  # a barostat: a missing stress is an error, never a zero
        self._warned = False

    def __call__(self, positions: torch.Tensor, cell: torch.Tensor) -> Forces:
        self.atoms.positions = positions.detach().cpu().double().numpy()
        self.atoms.cell = cell[0].detach().cpu().double().numpy()
        e = self.atoms.get_potential_energy()
        f = self.atoms.get_forces()
        virial = np.zeros((3, 3))
        if all(self.atoms.pbc):
            try:
                virial = -voigt_6_to_full_3x3_stress(self.atoms.get_stress()) * self.atoms.get_volume()
            except Exception as exc:  # noqa: BLE001  (calculators raise anything here)
                if self.needs_virial:
                    raise MDError(f"the calculator {type(self.calc).__name__} gave no stress ({type(exc).__name__}: "
                                  f"{exc}); NPT needs it (the pressure would be the kinetic part alone)") from None
                if not self._warned:
                    logging.getLogger(__name__).warning("the calculator gives no stress; the logged pressure is the "
                                                        "kinetic part alone")
                    self._warned = True
        to = lambda x: torch.as_tensor(np.asarray(x), dtype=positions.dtype, device=positions.device)  # noqa: E731
        return to([e]), to(f), to(virial)[None]


def check_settings(**settings: tuple[float, str]) -> None:
    """Raise :class:`~nnpot.errors.ConfigError` for the first setting outside its range;
    each value comes with ``">0"`` or ``">=0"``."""
    for name, (value, rule) in settings.items():
        value = float(value)
        ok = math.isfinite(value) and (value > 0 if rule == ">0" else value >= 0)
        if not ok:
            raise ConfigError(f"{name} must be {'positive' if rule == '>0' else '>= 0'}, got {value}")


class MDError(NNPotError, RuntimeError):
    """The simulation went wrong (non-finite energy, atoms too close); the last frame is saved."""


class MolecularDynamics:
    """Base driver. ``timestep`` is in ASE time units (``0.5 * ase.units.fs``), as in ASE.

    ``trajectory`` may end in ``.traj`` (ASE), ``.xyz``/``.extxyz`` or ``.h5md`` (H5MD, readable
    by other MD tools); ``logfile="-"`` prints the log.

    Keyword-only options beyond ASE's: ``skin`` (Angstrom) of the reused neighbor list (the
    fastest hydrogen atoms of a 300 K water box cover 1 A in about 30 steps of 0.5 fs; a wide
    skin costs little because each step cuts the list to the neighbors inside the cutoff);
    ``cuda_graphs`` (default: on for an nnpot model on a CUDA device with an integrator that
    allows it) replays blocks of ``graph_block`` steps from CUDA graphs
    (:mod:`nnpot.md.graphs`); ``compile`` runs the model through ``torch.compile``;
    ``min_distance`` (Angstrom) stops the run when two atoms come closer (checked on the device
    at every force call). Non-finite energies, atoms too close and neighbor overflow stop the
    run with :class:`MDError` after saving the last good frame.
    """

    #: whether :meth:`_advance` is free of host synchronisation (can be captured in a CUDA graph)
    graph_safe = False
    #: whether the integrator uses the virial (a barostat): a calculator without stress is refused
    needs_virial = False

    def __init__(self, atoms: Atoms | Sequence[Atoms], timestep: float, trajectory: str | os.PathLike[str] | None = None,
                 logfile: str | os.PathLike[str] | None = None, loginterval: int = 1, *, skin: float = 2.0,
                 cuda_graphs: bool | None = None, graph_block: int = 10, compile: bool = False,
                 min_distance: float = 0.5, model: torch.nn.Module | None = None, chunk_size: int | None = None):
        self.images = list(atoms) if isinstance(atoms, (list, tuple)) else [atoms]
        if not self.images:
            raise ConfigError("no structure to run")
        calc = self.images[0].calc
        if model is None and isinstance(calc, NNPotCalculator):
            model, chunk_size = calc.model, calc.chunk_size
        if model is None and (calc is None or len(self.images) > 1):
            raise NNPotError("atoms has no nnpot calculator; set atoms.calc = NNPotCalculator('model.nnp') first "
                             "(or give model= for a batch of structures)")
        if len(self.images) > 1 and (trajectory is not None or logfile is not None):
            raise ConfigError("trajectory and logfile are for one structure; attach an observer to a batch")
        check_settings(timestep=(timestep, ">0"), loginterval=(loginterval, ">0"), skin=(skin, ">=0"),
                       graph_block=(graph_block, ">0"), min_distance=(min_distance, ">=0"))
        for image in self.images:  # a clear error before any step
            check_structure(image.positions, image.cell.array, image.pbc, min_distance)
        self.atoms = self.images[0]
        self.dt = float(timestep)
        self.nsteps = 0
        self.stop_reason: str | None = None
        if model is not None:
            self.force_fn = ModelForces(model, self.images, skin=skin, chunk_size=chunk_size, compile=compile,
                                        min_distance=min_distance)
            device, dtype = model.device, model.dtype
        else:
            self.force_fn = ASEForces(calc, self.atoms, needs_virial=self.needs_virial)
            device, dtype = torch.device("cpu"), torch.float64
        self.state = state_from_atoms(self.images, device, dtype)
        self.state.energy, self.state.forces, self.state.virial = self.force_fn(self.state.positions, self.state.cell)
        if self.state.free is not None:
            self.state.forces = self.state.forces * self.state.free
        self._cuda_graphs = cuda_graphs
        self._graph_block = int(graph_block)
        self._graphs = None
        self.observers: list[tuple] = []
        self._files = []
        # where a failure's last frame goes: beside the trajectory, else the log, else here
        paths = [Path(f) for f in (trajectory, logfile) if isinstance(f, (str, os.PathLike)) and str(f) != "-"]
        self._output_dir = paths[0].parent if paths else Path(".")
        if trajectory is not None:
            self._attach_trajectory(trajectory, loginterval)
        if hasattr(logfile, "write"):  # an open file: the caller owns and closes it
            self.attach(self._log, loginterval, logfile)
        elif logfile is not None:
            fh = open(logfile, "w") if str(logfile) != "-" else None
            self._files.append(fh)
            self.attach(self._log, loginterval, fh)

    # --- ASE's Dynamics interface ------------------------------------------------------------

    def attach(self, function: Callable, interval: int = 1, *args, **kwargs) -> None:
        """Call ``function(*args, **kwargs)`` every ``interval`` steps (``atoms`` is synced first)."""
        self.observers.append((function, int(interval), args, kwargs))

    def get_time(self) -> float:
        """Simulated time in ASE units."""
        return self.nsteps * self.dt

    def run(self, steps: int = 50) -> bool:
        """Advance ``steps`` steps; returns True like ASE's ``run`` does when it completes, False
        when an observer stopped it early (:meth:`request_stop`)."""
        for _ in self.irun(steps):
            pass
        return self.stop_reason is None

    def irun(self, steps: int = 50):
        """:meth:`run` as a generator, as ASE's ``Dynamics.irun``: it yields True after the first
        observer call and after each block of steps up to the next observer (``atoms`` is in sync
        whenever an observer ran), and False once when an observer stopped the run."""
        self.stop_reason = None
        if self.nsteps == 0:
            self._call_observers()
        yield True
        left = int(steps)
        while left > 0:
            k = min(left, self._steps_to_observer())
            self._advance_steps(k)
            left -= k
            self._call_observers()
            if self.stop_reason is not None:  # an observer asked to stop (e.g. DeviationMonitor)
                self.write_back()
                yield False
                return
            yield True
        self.write_back()

    def todict(self) -> dict:
        """The driver's settings, as ASE's ``Dynamics.todict`` (what a trajectory's header keeps)."""
        settings = {k: v for k, v in vars(self).items()
                    if k in ("temperature_K", "friction", "taut", "taup", "pressure_au", "compressibility")}
        return {"type": "molecular-dynamics", "md-type": type(self).__name__, "timestep": self.dt, **settings}

    def __enter__(self) -> MolecularDynamics:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def request_stop(self, reason: str) -> None:
        """Stop :meth:`run` after the current observers (it then returns False);
        :attr:`stop_reason` says why. A later :meth:`run` continues."""
        self.stop_reason = reason

    def write_back(self) -> None:
        """Copy positions, momenta and cells from the device into the ``Atoms`` objects."""
        for b, image in enumerate(self.images):
            write_back(self.state, image, b)

    def potential_energies(self) -> np.ndarray:
        """eV, one per structure."""
        return self.state.energy.detach().cpu().double().numpy()

    def kinetic_energies(self) -> np.ndarray:
        """eV, one per structure."""
        return self.state.kinetic_energy().detach().cpu().double().numpy()

    def step(self) -> None:
        """One integrator step (eager; ``run`` may use CUDA graphs instead)."""
        self._advance(self.state, self.force_fn)

    def _advance(self, state, force_fn) -> None:
        raise NotImplementedError

    def _seeded_generator(self, seed: int | None) -> torch.Generator:
        """A generator on the state's device (what a CUDA graph can draw from); ``seed=None``
        seeds it from the operating system's entropy."""
        generator = torch.Generator(device=self.state.positions.device)
        generator.manual_seed(np.random.SeedSequence(seed).generate_state(1)[0].item() if seed is None else seed)
        return generator

    def _use_graphs(self) -> bool:
        if self._cuda_graphs is False or not self.graph_safe or not isinstance(self.force_fn, ModelForces):
            return False
        return self.state.positions.device.type == "cuda"

    def _advance_steps(self, k: int) -> None:
        try:
            self._advance_unchecked(k)
        except (FloatingPointError, AtomsTooCloseError, NeighborOverflowError) as exc:
            self._fail(str(exc))

    def _advance_unchecked(self, k: int) -> None:
        if self._use_graphs():
            if self._graphs is None:
                self._graphs = GraphedSteps(self.state, self.force_fn, self._advance, self._graph_block,
                                            generator=getattr(self, "generator", None))
            self._graphs.run(k)
            self.nsteps += k
            return
        for _ in range(k):
            self.step()
            self.nsteps += 1
            self._check()

    def _steps_to_observer(self) -> int:
        intervals = [o[1] for o in self.observers if o[1] > 0]
        return min((i - self.nsteps % i for i in intervals), default=1 << 62)

    def close(self) -> None:
        for fh in self._files:
            if fh is not None:
                fh.close()

    # --- helpers ------------------------------------------------------------------------------

    def _call_observers(self) -> None:
        due = [o for o in self.observers if o[1] > 0 and self.nsteps % o[1] == 0]
        if not due:
            return
        self.write_back()
        for function, _, args, kwargs in due:
            function(*args, **kwargs)

    def _check(self) -> None:
        if not bool(torch.isfinite(self.state.energy).all()) or not bool(torch.isfinite(self.state.positions).all()):
            self._fail(f"non-finite energy or positions at step {self.nsteps}")

    def _fail(self, reason: str) -> None:
        # beside the trajectory when there is one, else in the working directory
        path = self._output_dir / f"md_failure_step{self.nsteps}.xyz"

        write(path, [snapshot(self.state, image, b) for b, image in enumerate(self.images)], format="extxyz")
        raise MDError(f"{reason}; last good frame saved to {path}")

    def _attach_trajectory(self, trajectory, interval: int) -> None:
        if hasattr(trajectory, "write") and not isinstance(trajectory, (str, os.PathLike)):
            # an open ase.io.Trajectory (or any writer with write(atoms)): the caller owns and closes it
            self.attach(lambda: trajectory.write(snapshot(self.state, self.atoms)), interval)
        elif str(trajectory).endswith((".h5md", ".h5")):
            writer = H5MDWriter(trajectory, self.atoms)
            self._files.append(writer)
            self.attach(lambda: writer.write(snapshot(self.state, self.atoms), self.nsteps, self.get_time()), interval)
        elif str(trajectory).endswith((".xyz", ".extxyz")):
            fh = open(trajectory, "w")
            self._files.append(fh)
            self.attach(lambda: snapshot(self.state, self.atoms).write(fh, format="extxyz"), interval)
        else:
            traj = Trajectory(trajectory, "w")
            self._files.append(traj)
            self.attach(lambda: traj.write(snapshot(self.state, self.atoms)), interval)

    def _log(self, fh) -> None:
        s = self.state
        epot = float(s.energy)
        ekin = float(s.kinetic_energy())
        n = len(self.atoms)
        periodic = bool(all(self.atoms.pbc))
        if self.nsteps == 0:
            header = (f"{'Time[ps]':>10} {'Etot/N[eV]':>12} {'Epot/N[eV]':>12} {'Ekin/N[eV]':>12} {'T[K]':>8}"
                      + (f" {'P[bar]':>10}" if periodic else "") + "\n")
            fh.write(header) if fh else print(header, end="")
        line = (f"{self.get_time() / (1000 * units.fs):10.4f} {(epot + ekin) / n:12.6f} {epot / n:12.6f} "
                f"{ekin / n:12.6f} {float(s.temperature()):8.1f}"
                + (f" {float(pressure(s)) / units.bar:10.1f}" if periodic else "") + "\n")
        if fh is None:
            print(line, end="")
        else:
            fh.write(line)
            fh.flush()


class VelocityVerlet(MolecularDynamics):
    """NVE velocity Verlet, ``VelocityVerlet(atoms, timestep, trajectory=None, logfile=None, loginterval=1)``."""

    graph_safe = True

    def _advance(self, state, force_fn) -> None:
        velocity_verlet_step(state, force_fn, self.dt)


class Langevin(MolecularDynamics):
    """NVT Langevin dynamics (BAOAB). ``friction`` in 1/(ASE time), as in ASE's Langevin
    (e.g. ``0.01 / ase.units.fs``)."""

    def __init__(self, atoms: Atoms | Sequence[Atoms], timestep: float, temperature_K: float, friction: float, *, seed: int | None = None,
                 **kwargs):
        check_settings(temperature_K=(temperature_K, ">=0"), friction=(friction, ">=0"))
        super().__init__(atoms, timestep, **kwargs)
        self.temperature_K = float(temperature_K)
        self.friction = float(friction)
        self.generator = self._seeded_generator(seed)

    graph_safe = True

    def _advance(self, state, force_fn) -> None:
        langevin_baoab_step(state, force_fn, self.dt, units.kB * self.temperature_K, self.friction,
                            generator=self.generator)


def _n_dof(images) -> list[int]:
    """Degrees of freedom per structure: 3N, less 3 when the total momentum is conserved (no
    external forces); with fixed atoms, 3 per free atom."""
    counts = []
    for a in images:
        fixed = int(fixed_atoms(a).sum())
        counts.append(3 * (len(a) - fixed) if fixed else (3 * len(a) - 3 if len(a) > 1 else 3))
    return counts


class Bussi(MolecularDynamics):
    """NVT by stochastic velocity rescaling (Bussi et al. 2007). ``taut`` in ASE time units,
    as in ASE's ``Bussi(atoms, timestep, temperature_K, taut)``."""

    def __init__(self, atoms: Atoms | Sequence[Atoms], timestep: float, temperature_K: float, taut: float, *, seed: int | None = None,
                 **kwargs):
        check_settings(temperature_K=(temperature_K, ">=0"), taut=(taut, ">0"))
        super().__init__(atoms, timestep, **kwargs)
        self.temperature_K, self.taut = float(temperature_K), float(taut)
        self.generator = self._seeded_generator(seed)
        self.n_dof = _n_dof(self.images)

    graph_safe = True

    def _advance(self, state, force_fn) -> None:
        bussi_step(state, force_fn, self.dt, units.kB * self.temperature_K, self.taut, self.n_dof, self.generator)


class NoseHoover(MolecularDynamics):
    """NVT by a Nose-Hoover chain. ``tdamp`` (the chain's period scale) in ASE time units, as in
    ASE's ``NoseHooverChainNVT(atoms, timestep, temperature_K, tdamp, tchain=3)``."""

    def __init__(self, atoms: Atoms | Sequence[Atoms], timestep: float, temperature_K: float, tdamp: float, tchain: int = 3, **kwargs):
        check_settings(temperature_K=(temperature_K, ">=0"), tdamp=(tdamp, ">0"), tchain=(tchain, ">0"))
        super().__init__(atoms, timestep, **kwargs)
        self.temperature_K = float(temperature_K)
        self.chain = NoseHooverChain(self.state, _n_dof(self.images), units.kB * self.temperature_K, float(tdamp),
                                     tchain)

    graph_safe = True

    def _advance(self, state, force_fn) -> None:
        nose_hoover_step(state, force_fn, self.dt, self.chain)

    def conserved_energy(self) -> float:
        """Potential + kinetic + chain energy (eV); constant up to integration error."""
        s = self.state
        return float((s.energy + s.kinetic_energy() + self.chain.energy(s)).sum())


class NPT(MolecularDynamics):
    """Isotropic NPT: Bussi's thermostat and stochastic cell rescaling (Bernetti & Bussi 2020).

    ``NPT(atoms, timestep, temperature_K, pressure_au, taut, taup, compressibility_au)`` with
    ASE's units and argument names (as ASE's ``NPTBerendsen``): ``pressure_au`` in eV/A^3
    (``1.01325 * units.bar`` for 1 atm), ``compressibility_au`` in A^3/eV (water:
    ``4.5e-5 / units.bar``), ``taut`` and ``taup`` in ASE time. Needs a periodic cell; the cell
    and volume after ``run`` are in ``atoms``.
    """

    def __init__(self, atoms: Atoms | Sequence[Atoms], timestep: float, temperature_K: float, pressure_au: float, taut: float, taup: float,
                 compressibility_au: float, *, seed: int | None = None, **kwargs):
        images = list(atoms) if isinstance(atoms, (list, tuple)) else [atoms]
        if not all(all(a.pbc) for a in images):
            raise NNPotError("NPT needs a cell periodic in all three directions")
        if any(a.constraints for a in images):
            raise ConfigError("NPT does not take constraints: the cell rescaling moves every atom (fixed ones too); "
                              "remove the FixAtoms constraint, or run NVT")
        check_settings(temperature_K=(temperature_K, ">=0"), taut=(taut, ">0"), taup=(taup, ">0"),
                       compressibility_au=(compressibility_au, ">0"))
        super().__init__(atoms, timestep, **kwargs)
        self.temperature_K, self.pressure_au = float(temperature_K), float(pressure_au)
        self.taut, self.taup, self.compressibility = float(taut), float(taup), float(compressibility_au)
        self.generator = self._seeded_generator(seed)
        self.n_dof = _n_dof(self.images)

    graph_safe = True
    needs_virial = True

    def _advance(self, state, force_fn) -> None:
        npt_step(state, force_fn, self.dt, units.kB * self.temperature_K, self.pressure_au, self.taut, self.taup,
                 self.compressibility, self.n_dof, self.generator)

    def pressure(self) -> float:
        """Instantaneous pressure, eV/A^3."""
        return float(pressure(self.state))
