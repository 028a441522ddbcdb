"""Starting data for examples/active_learning.yaml: a copper slab with a (111) surface and a
vacancy, and 20 rattled copies labelled by EMT.

    python examples/make_copper_seed.py runs/cu_seed
"""

import sys
from pathlib import Path

from ase.build import fcc111

from nnpot.data import write_h5
from nnpot.explore import Labeller


def slab_with_vacancy():
    slab = fcc111("Cu", size=(3, 3, 4), vacuum=6.0, periodic=True)
    del slab[len(slab) // 2]
    return slab


def main(out: str = "runs/cu_seed") -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    seed = slab_with_vacancy()
    seed.write(folder / "cu_slab_vacancy.xyz")
    labeller = Labeller("emt")
    frames = []
    for k in range(20):
        a = seed.copy()
        a.rattle(0.02 + 0.005 * (k % 4), seed=k)
        frames.append(labeller.label(a).frame)
    write_h5(frames, folder / "cu_start.h5")
    print(f"wrote {folder / 'cu_slab_vacancy.xyz'} and {folder / 'cu_start.h5'} ({len(frames)} frames)")


if __name__ == "__main__":
    main(*sys.argv[1:])
