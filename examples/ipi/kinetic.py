"""The quantum kinetic energy of H and O from an i-PI run against the classical value.

    python kinetic.py water_pimd.out [--skip 0.2]

Reads i-PI's properties file (columns named in its header), averages the centroid-virial
kinetic energy of each element over the run after a ``--skip`` share of equilibration, divides
by the number of atoms of that element (init.xyz) and compares with equipartition, 3/2 kT.
"""

from __future__ import annotations

import argparse
import re

import ase.io
import numpy as np
from ase import units


def columns(path: str) -> dict[str, int]:
    """Column index of each property, from i-PI's ``# column N --> name`` header lines."""
    found = {}
    for line in open(path):
        m = re.match(r"#\s*(?:column|cols\.)\s+(\d+)(?:-\d+)?\s+-->\s+(\S+)", line)
        if m:
            found[m.group(2)] = int(m.group(1)) - 1
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="i-PI properties file (water_pimd.out)")
    ap.add_argument("--structure", default="init.xyz")
    ap.add_argument("--temperature", type=float, default=300.0)
    ap.add_argument("--skip", type=float, default=0.2, help="share of the run dropped as equilibration")
    args = ap.parse_args()
    data = np.atleast_2d(np.loadtxt(args.out))
    data = data[int(args.skip * len(data)):]
    cols = columns(args.out)
    symbols = ase.io.read(args.structure).get_chemical_symbols()
    classical = 1.5 * units.kB * args.temperature
    print(f"{len(data)} samples; classical 3/2 kT = {1000 * classical:.1f} meV per atom")
    for element in ("H", "O"):
        key = next((k for k in cols if k.startswith("kinetic_cv") and k.endswith(f"({element})")), None)
        if key is None:
            continue
        per_atom = data[:, cols[key]] / symbols.count(element)
        err = per_atom.std() / np.sqrt(max(1, len(per_atom) // 10))  # ~10 correlated samples per block
        print(f"{element}: quantum kinetic energy {1000 * per_atom.mean():.1f} +- {1000 * err:.1f} meV per atom, "
              f"{per_atom.mean() / classical:.2f}x classical")


if __name__ == "__main__":
    main()
