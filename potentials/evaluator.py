"""The one evaluation path: a model, the structures it is applied to, and their neighbor list.

Everything that evaluates a model on structures (the ASE calculator, the MD drivers and their
replicas, ``nnpot test``, approximation studies) goes through :class:`Evaluator`, which owns a
:class:`~nnpot.potentials.neighbor_list.NeighborList` (:attr:`Evaluator.nlist`, reused with a
skin) and calls :func:`~nnpot.potentials.derivatives.derivatives` on it.

When the list is rechecked (the one rule): every checked call (:meth:`Evaluator.__call__`)
first measures how far the list is from going stale (:meth:`NeighborList.displacement`) and
rebuilds it when some atom has moved more than ``skin / 2`` since the build (the cell's affine
deformation included), then evaluates, then rebuilds and evaluates again if the inner blocks
overflowed. :meth:`Evaluator.evaluate` skips the checks (nothing waits on the device, so a
CUDA graph can capture it); its caller checks the list's ``max_displacement`` and
``overflow`` itself.

Around it: :func:`check_structure`, which a calculator or driver calls on a structure first, so
that a user gets an error that names the problem and the atoms instead of NaNs (non-finite
positions or cell, a periodic cell whose periodic vectors span no volume, atoms closer than
``min_distance``); :func:`resolve_device`, what a user's ``device`` setting means; and
:func:`predict`, the evaluator over a labelled dataset (``nnpot test``, validation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ase.stress import full_3x3_to_voigt_6_stress
from tqdm.auto import tqdm

from nnpot.data.frame import periodic_volume
from nnpot.errors import AtomsTooCloseError, ConfigError, InvalidStructureError
from nnpot.potentials.batch import AtomsBatch, make_batch, types_from_numbers
from nnpot.potentials.derivatives import chunk_slices, derivatives
from nnpot.potentials.neighbor_list import NeighborList
from nnpot.potentials.neighbors import neighbor_pairs

__all__ = ["Evaluator", "stress_from_virial", "check_structure", "resolve_device", "predict", "predict_energies"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` means CUDA when available, else CPU; a device that does not exist here is a
    :class:`~nnpot.errors.ConfigError` naming the ones that do."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0 or (dev.index or 0) >= n:
            raise ConfigError(f"device: {device!r} is not available here ({n} CUDA device(s)); use auto or cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device: {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return dev


def check_structure(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, min_distance: float = 0.0) -> None:
    """Raise :class:`~nnpot.errors.InvalidStructureError` or
    :class:`~nnpot.errors.AtomsTooCloseError` for a structure no model can evaluate.

    Args:
        positions: ``[n, 3]`` Angstrom.
        cell: ``[3, 3]`` Angstrom, rows are cell vectors.
        pbc: ``[3]`` bool.
        min_distance: Angstrom; two atoms (or an atom and a periodic image) closer than this
            are an error. 0 skips the search.
    """
    positions, cell = np.asarray(positions, dtype=np.float64), np.asarray(cell, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1:] != (3,) or len(positions) == 0:
        raise InvalidStructureError(f"the structure holds no atoms (positions of shape {positions.shape})")
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        raise InvalidStructureError(f"atom {int(bad[0])} has a non-finite position {positions[bad[0]].tolist()}"
                                    + (f" ({bad.size} atoms in all)" if bad.size > 1 else ""))
    if not np.isfinite(cell).all():
        raise InvalidStructureError(f"the cell is not finite: {cell.tolist()}")
    if periodic_volume(cell, pbc) < 1e-6:
        raise InvalidStructureError(f"the cell is singular: its periodic vectors (pbc {np.asarray(pbc).tolist()}) "
                                    f"span no volume: {cell.tolist()}")
    if min_distance <= 0 or (len(positions) < 2 and not np.any(pbc)):
        return
    i, j, s = neighbor_pairs(torch.from_numpy(positions), torch.from_numpy(cell), torch.as_tensor(np.asarray(pbc)),
                             min_distance)
    if len(i):
        d = np.linalg.norm(positions[j] + s.numpy() @ cell - positions[i], axis=1)
        k = int(np.argmin(d))
        raise AtomsTooCloseError(f"atoms {int(i[k])} and {int(j[k])} are {d[k]:.3f} A apart, closer than "
                                 f"min_distance {min_distance} A (overlapping atoms?)")


def stress_from_virial(virial: np.ndarray, cell: np.ndarray) -> np.ndarray | None:
    """Voigt stress ``-virial / volume`` (eV/A^3, xx yy zz yz xz xy), or None when the cell
    spans no volume. The one rule for when nnpot reports a stress."""
    volume = abs(float(np.linalg.det(np.asarray(cell, dtype=np.float64))))
    if volume <= 1e-10:
        return None
    return full_3x3_to_voigt_6_stress(-np.asarray(virial, dtype=np.float64) / volume)


class Evaluator:
    """Energy, forces and virial of an :class:`~nnpot.potentials.EnergyModel` on device tensors,
    for one structure or several independent ones evaluated together.

    The neighbor list is built on the model's device with cutoff ``rcut + skin`` and reused
    until it may be stale (see the module docstring). Each type's block of slots is cut to the
    largest count found plus a fraction ``margin`` (rounded up to 8) instead of padding to
    ``sel``; descriptors correct exactly for any slot count, so energies are those of the
    model's ``sel`` as long as no atom has more than ``sel[t]`` neighbors of type ``t`` inside
    ``rcut`` (checked at every build, :class:`~nnpot.errors.NeighborOverflowError` otherwise).
    Each evaluation cuts the list to the neighbors inside ``rcut``, keeping per type the
    ``inner[t]`` nearest, so the model works on about as many slots however large the skin.

    The index buffers keep their addresses from build to build while the slot counts fit, so
    a CUDA graph that captured :meth:`evaluate` stays valid; :attr:`layout_version` changes
    when they had to grow.

    Args:
        model: the potential (its device and dtype are used).
        structures: ASE ``Atoms`` or :class:`~nnpot.data.Frame` objects (anything with
            ``numbers`` and ``pbc``); their cells may differ.
        skin: Angstrom; 0 rebuilds the list whenever an atom moved.
        chunk_size: evaluate this many atoms at a time (bounds memory; local models only).
        margin: spare slots per type, as a fraction of the largest count at a build.
        compile: evaluate the model through ``torch.compile``.
        min_distance: Angstrom; every evaluation records the closest pair on the device
            (:attr:`closest`) and :meth:`__call__` raises
            :class:`~nnpot.errors.AtomsTooCloseError` below it (0: no check).
        ghosts: the last ``ghosts`` atoms of the (single, non-periodic) structure are ghost
            atoms: neighbors of the others, with no energy of their own here (domain
            decomposition: another process owns them, :mod:`nnpot.lammps`). Results then hold
            the energy and virial of the other atoms' energies and the forces on every atom,
            ghosts included. A message-passing model evaluates ghosts too, for the features
            they send (the ghost shell must then reach its receptive field), and counts only
            the owned atoms' energies.
        senders: of the ghosts, how many (the first) a message-passing model evaluates: those
            whose features reach an owned atom (default all of them; 0 for a local model).
    """

    def __init__(self, model: torch.nn.Module, structures: Sequence, skin: float = 1.0,
                 chunk_size: int | None = None, margin: float = 0.1, compile: bool = False,
                 min_distance: float = 0.0, ghosts: int = 0, senders: int | None = None):
        self.model = model
        self.chunk_size = chunk_size if model.is_local else None  # message passing sees the whole system
        device = model.device
        self.sizes = [len(s.numbers) for s in structures]
        numbers = np.concatenate([np.asarray(s.numbers) for s in structures])
        if ghosts and (len(structures) != 1 or any(np.any(s.pbc) for s in structures)):
            raise ValueError("ghost atoms need one non-periodic structure")
        # a local model needs no rows for ghosts; a message-passing one needs the senders' features
        senders = 0 if model.is_local else int(ghosts) if senders is None else int(senders)
        if not 0 <= senders <= int(ghosts):
            raise ValueError(f"senders must lie in 0..{int(ghosts)}, not {senders}")
        self.n_centers = len(numbers) - int(ghosts) + senders
        self.counted = len(numbers) - int(ghosts) if senders else None
        self.types = torch.as_tensor(types_from_numbers(numbers, model.type_map), device=device)
        self.frame = torch.repeat_interleave(torch.arange(len(self.sizes), device=device),
                                             torch.as_tensor(self.sizes, device=device))
        self.groups = [model.type_groups(self.types[sl]) for sl in chunk_slices(self.n_centers, self.chunk_size)]
        #: the neighbor list, allocated and updated apart from the model (:mod:`nnpot.potentials.neighbor_list`)
        self.nlist = NeighborList(structures, self.types, self.frame, model.type_map, model.cutoff, model.sel,
                                  skin=skin, margin=margin, n_centers=self.n_centers, min_distance=min_distance,
                                  dtype=model.dtype)
        self.compiled = torch.compile(model, dynamic=False) if compile else None

    @property
    def n_structures(self) -> int:
        return len(self.sizes)

    # --- evaluation ---------------------------------------------------------------------------

    def evaluate(self, positions: torch.Tensor, cells: torch.Tensor,
                 displacement: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Energies ``[B]`` (eV), forces ``[N, 3]`` (eV/A), virials ``[B, 3, 3]`` (eV) and atom
        energies ``[N]`` with the current list, unchecked: never waits on the device. Tracks
        :attr:`max_displacement` (``displacement``: :meth:`displacement` at these positions,
        when the caller has it already), :attr:`overflow` and :attr:`closest`."""
        nlist = self.nlist
        nlist.track(nlist.displacement(positions, cells) if displacement is None else displacement)
        batch = AtomsBatch(positions, self.types, self.frame, cells, nlist.pbc_all, nlist.neighbors, groups=self.groups,
                           counted=self.counted)
        batch.neighbors = nlist.inner(batch.edge_vectors())
        if self.compiled is not None:
            return derivatives(self.compiled, batch, chunk_size=self.chunk_size)
        return self.model.evaluate_batch(batch, chunk_size=self.chunk_size)

    def __call__(self, positions: torch.Tensor, cells: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`evaluate` with the checks of the module docstring: the list is rebuilt before
        the evaluation when it may be stale and after it when the inner blocks overflowed, and
        atoms closer than ``min_distance`` raise :class:`~nnpot.errors.AtomsTooCloseError`."""
        nlist = self.nlist
        moved = None if nlist.neighbors is None else nlist.displacement(positions, cells)
        if moved is None or bool(moved > 0.5 * nlist.skin):
            nlist.build(positions, cells)
            moved = None  # measured against the new list
        out = self.evaluate(positions, cells, moved)
        overflow, close = torch.stack([nlist.overflow, nlist.closest < nlist.min_distance]).tolist()
        if close:
            self.raise_too_close()
        if overflow:
            nlist.build(positions, cells)
            out = self.evaluate(positions, cells)
        return out

    def raise_too_close(self) -> None:
        raise AtomsTooCloseError(f"two atoms came {float(self.nlist.closest):.3f} A apart, closer than min_distance "
                                 f"{self.nlist.min_distance} A (the structure is collapsing, or the time step is too long)")


def predict(model: torch.nn.Module, frames: Sequence, batch_size: int = 4, progress: bool = False,
            chunk_size: int | None = 8192, desc: str = "evaluating") -> dict[str, np.ndarray]:
    """Reference and predicted labels for ``frames`` (:class:`~nnpot.data.Frame` objects).

    Returns arrays ``energy``/``energy_ref`` ``[B]``, ``forces``/``forces_ref`` ``[N, 3]``,
    ``numbers`` ``[N]``, ``n_atoms`` ``[B]``, and ``virial``/``virial_ref`` ``[B', 3, 3]`` for
    the frames that carry a virial label.
    """
    out = {k: [] for k in ("energy", "energy_ref", "forces", "forces_ref", "numbers", "n_atoms", "virial", "virial_ref", "virial_n_atoms")}
    frames = list(frames)
    for a in tqdm(range(0, len(frames), batch_size), desc=desc, disable=not progress, unit=" batches"):
        chunk = frames[a:a + batch_size]
        tensor = lambda x: torch.as_tensor(np.asarray(x), dtype=model.dtype, device=model.device)  # noqa: E731
        res = Evaluator(model, chunk, skin=0.0, chunk_size=chunk_size)(
            tensor(np.concatenate([f.positions for f in chunk])), tensor(np.stack([f.cell for f in chunk])))
        out["energy"].append(res["energy"].detach().double().cpu().numpy())
        out["forces"].append(res["forces"].detach().double().cpu().numpy())
        vir = res["virial"].detach().double().cpu().numpy()
        for b, f in enumerate(chunk):
            out["energy_ref"].append(np.array([f.energy]))
            out["forces_ref"].append(f.forces)
            out["numbers"].append(f.numbers)
            out["n_atoms"].append(np.array([f.n_atoms]))
            if f.virial is not None:
                out["virial"].append(vir[b][None])
                out["virial_ref"].append(np.asarray(f.virial)[None])
                out["virial_n_atoms"].append(np.array([f.n_atoms]))
    return {k: (np.concatenate(v) if v else np.zeros((0, 3, 3) if k.startswith("virial_r") or k == "virial" else 0))
            for k, v in out.items()}


@torch.no_grad()
def predict_energies(model: torch.nn.Module, frames: Sequence, batch_size: int = 4, progress: bool = False,
                     desc: str = "energies") -> dict[str, np.ndarray]:
    """Reference and predicted energies (eV) ``energy``/``energy_ref`` ``[B]`` and ``n_atoms``
    ``[B]`` of ``frames``, by the forward pass alone: no forces, so about half the cost of
    :func:`predict` (what an energy re-fit needs)."""
    frames = list(frames)
    if not hasattr(model, "atomic_energies"):  # an ensemble: its mean energy through the full path
        pred = predict(model, frames, batch_size=batch_size, progress=progress)
        return {k: pred[k] for k in ("energy", "energy_ref", "n_atoms")}
    energy = []
    for a in tqdm(range(0, len(frames), batch_size), desc=desc, disable=not progress, unit=" batches", leave=False):
        chunk = frames[a:a + batch_size]
        batch = make_batch(chunk, model.type_map, model.cutoff, model.sel, device=model.device, dtype=model.dtype,
                           tight=True)
        e_atom = model.atomic_energies(batch)
        e = torch.zeros(batch.n_frames, dtype=e_atom.dtype, device=e_atom.device).index_add(0, batch.frame, e_atom)
        energy.append(e.double().cpu().numpy())
    return {"energy": np.concatenate(energy) if energy else np.zeros(0),
            "energy_ref": np.array([f.energy for f in frames], dtype=float),
            "n_atoms": np.array([f.n_atoms for f in frames])}
