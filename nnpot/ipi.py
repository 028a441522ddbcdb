"""An nnpot model as an i-PI force provider (``nnpot ipi``), for path-integral MD.

i-PI (``pip install ipi``) keeps the ring polymer, the integrators and the thermostats, and asks
a socket client for the energy, forces and virial of each bead's positions. nnpot answers
through ASE's :class:`~ase.calculators.socketio.SocketClient` with an
:class:`~nnpot.potentials.calculator.NNPotCalculator` (its neighbor list with a skin is kept
from one request to the next). ASE converts i-PI's atomic units (Bohr, Hartree) to Angstrom and
eV; the structure file gives the elements, in i-PI's atom order (the same file as i-PI's
``<initialize>``). Several clients on the same address share the beads between them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ase.io
from ase.calculators.socketio import SocketClient, actualunixsocketname

from nnpot.errors import ConfigError, NNPotError
from nnpot.potentials.batch import types_from_numbers
from nnpot.potentials.calculator import NNPotCalculator

__all__ = ["serve", "IPIError"]


class IPIError(NNPotError, RuntimeError):
    """No i-PI server to talk to, or it hung up mid-request."""


def _connect(address: str | None, host: str, port: int | None, wait: float) -> SocketClient:
    """A socket client, retrying for ``wait`` seconds while i-PI opens its socket."""
    where = f"unix socket {actualunixsocketname(address)}" if address else f"{host}:{port}"
    deadline = time.monotonic() + wait
    while True:
        try:
            return SocketClient(host=host, port=port, unixsocket=address)
        except (ConnectionRefusedError, FileNotFoundError, OSError) as exc:
            if time.monotonic() >= deadline:
                raise IPIError(f"no i-PI server at {where} after {wait:g} s ({exc.strerror or exc}); start "
                               "`i-pi input.xml` first, with an <ffsocket> of the same address") from None
            time.sleep(0.5)


def serve(model: str | os.PathLike[str], structure: str | os.PathLike[str], address: str | None = None,
          port: int | None = None, host: str = "localhost", device: str = "auto", dtype: str | None = None,
          wait: float = 60.0) -> int:
    """Answer i-PI's force requests until it ends the run; returns the number answered.

    Args:
        model: an nnpot model file (or any format :func:`~nnpot.potentials.modelfile.load_model` reads).
        structure: the structure i-PI starts from (any ASE-readable file; elements and order).
        address: i-PI's unix-socket address (``<ffsocket mode='unix'><address>``), or None for
            ``host:port`` (``mode='inet'``).
        wait: seconds to wait for the server's socket to appear.
    """
    if (address is None) == (port is None):
        raise ConfigError("give either a unix-socket address or a port of i-PI's <ffsocket>")
    if not Path(structure).is_file():
        raise ConfigError(f"{structure}: no such structure file")
    if not wait >= 0:
        raise ConfigError(f"--wait must be a number of seconds >= 0, got {wait}")
    try:
        atoms = ase.io.read(structure)
    except Exception as exc:  # noqa: BLE001  (ASE's readers raise anything on a file of another kind)
        raise ConfigError(f"{structure}: not a structure ASE can read ({type(exc).__name__}: {exc})") from None
    atoms.calc = NNPotCalculator(model, device=device, dtype=dtype)
    types_from_numbers(atoms.numbers, atoms.calc.model.type_map)  # an element the model lacks, before i-PI starts
    client = _connect(address, host, port, wait)
    answered = 0
    try:
        for _ in client.irun(atoms, use_stress=bool(any(atoms.pbc))):
            answered += 1
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise IPIError(f"i-PI closed the connection after {answered} requests ({exc})") from None
    return answered
