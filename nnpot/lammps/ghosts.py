"""Forces on ghost atoms, sent back to the processes that own them (LAMMPS's reverse
communication, done over MPI by atom tag).

Each process evaluates the energies of its own atoms with a shell of ghost atoms around them.
A ghost's position enters those energies, so the process holds a force on it that belongs to
the ghost's owner: another process, or itself when the ghost is a periodic image of one of its
own atoms. :class:`GhostForces` finds every ghost's owner once per neighbor-list rebuild (a
rendezvous: the owner of tag ``t`` is registered with process ``t % P``) and then moves the
forces with one ``Alltoallv`` per step.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GhostForces"]


def _lookup(keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Index of each query in ``keys`` (unique), or -1 where absent."""
    if not len(keys):
        return np.full(len(queries), -1, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    pos = np.searchsorted(keys[order], queries).clip(max=len(keys) - 1)
    found = keys[order][pos] == queries
    return np.where(found, order[pos], -1)


class GhostForces:
    """Adds the forces on ghost atoms to their owners' local atoms.

    Args:
        comm: an mpi4py communicator (LAMMPS's), or None for a single process.
    """

    def __init__(self, comm=None):
        self.comm = comm
        self.size = 1 if comm is None else comm.Get_size()
        self.rank = 0 if comm is None else comm.Get_rank()
        self.image_ghost = self.image_local = np.zeros(0, dtype=np.int64)
        self.send_order = np.zeros(0, dtype=np.int64)
        self.send_counts = np.zeros(self.size, dtype=np.int64)
        self.recv_counts = np.zeros(self.size, dtype=np.int64)
        self.recv_local = np.zeros(0, dtype=np.int64)

    def _alltoallv(self, data: np.ndarray, counts: np.ndarray, recv_counts: np.ndarray | None = None):
        """Send ``data`` (rows grouped by destination, ``counts`` rows each); the rows received,
        grouped by source, and how many came from each."""
        from mpi4py import MPI  # lazy: optional dependency (the lammps extra)

        counts = np.asarray(counts, dtype=np.int64)
        if recv_counts is None:
            recv_counts = np.zeros(self.size, dtype=np.int64)
            self.comm.Alltoall(counts, recv_counts)
        width = int(np.prod(data.shape[1:]))
        out = np.empty((int(recv_counts.sum()),) + data.shape[1:], dtype=data.dtype)
        kind = MPI.DOUBLE if data.dtype == np.float64 else MPI.INT64_T
        send_displ = np.concatenate([[0], np.cumsum(counts)[:-1]]) * width
        recv_displ = np.concatenate([[0], np.cumsum(recv_counts)[:-1]]) * width
        self.comm.Alltoallv([np.ascontiguousarray(data), (counts * width, send_displ), kind],
                            [out, (recv_counts * width, recv_displ), kind])
        return out, recv_counts

    def plan(self, local_tags: np.ndarray, ghost_tags: np.ndarray) -> None:
        """Find each ghost's owner (collective: every process calls it after a rebuild).
        Raises ValueError when some ghost has no owner (atoms out of sync)."""
        local_tags = np.asarray(local_tags, dtype=np.int64)
        ghost_tags = np.asarray(ghost_tags, dtype=np.int64)
        own = _lookup(local_tags, ghost_tags)
        self.image_ghost = np.nonzero(own >= 0)[0]
        self.image_local = own[self.image_ghost]
        remote = np.nonzero(own < 0)[0]
        if self.size == 1:
            if len(remote):
                raise ValueError(f"{len(remote)} ghost atoms have tags that no atom owns")
            return
        # 1. the directory: process t % P learns the owner of tag t
        dest = local_tags % self.size
        order = np.argsort(dest, kind="stable")
        reg, reg_from = self._alltoallv(local_tags[order], np.bincount(dest, minlength=self.size))
        reg_owner = np.repeat(np.arange(self.size), reg_from)
        # 2. ask the directory for the owners of the remote ghosts
        q_tags = ghost_tags[remote]
        q_dest = q_tags % self.size
        q_order = np.argsort(q_dest, kind="stable")
        q_counts = np.bincount(q_dest, minlength=self.size)
        asked, asked_from = self._alltoallv(q_tags[q_order], q_counts)
        where = _lookup(reg, asked)
        if np.any(where < 0):
            raise ValueError("some ghost atoms have tags that no process owns")
        answer, _ = self._alltoallv(reg_owner[where], asked_from, recv_counts=q_counts)
        owner = np.empty(len(remote), dtype=np.int64)
        owner[q_order] = answer
        # 3. tell each owner which of its atoms the forces it will receive belong to
        send = np.argsort(owner, kind="stable")
        self.send_order = remote[send]
        self.send_counts = np.bincount(owner, minlength=self.size)
        tags_in, self.recv_counts = self._alltoallv(ghost_tags[self.send_order], self.send_counts)
        self.recv_local = _lookup(local_tags, tags_in)
        if np.any(self.recv_local < 0):
            raise ValueError("a process sent forces for atoms this process does not own")

    def fold(self, local_forces: np.ndarray, ghost_forces: np.ndarray) -> np.ndarray:
        """Local forces ``[n_local, 3]`` plus every ghost force ``[n_ghost, 3]`` owned here, from
        this process and the others (collective when there are several processes)."""
        out = np.array(local_forces, dtype=np.float64)
        np.add.at(out, self.image_local, ghost_forces[self.image_ghost])
        if self.size > 1:
            got, _ = self._alltoallv(np.asarray(ghost_forces[self.send_order], dtype=np.float64),
                                     self.send_counts, recv_counts=self.recv_counts)
            np.add.at(out, self.recv_local, got)
        return out
