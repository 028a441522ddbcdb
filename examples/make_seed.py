"""Starting data for ``nnpot explore``: a seed structure and rattled copies of it, labelled.

    python examples/make_seed.py copper runs/cu_seed    # Cu slab, (111) surface + vacancy; EMT
    python examples/make_seed.py ethanol runs/eth_seed  # ethanol in vacuum; GFN2-xTB (pip install tblite)

Each writes OUT/seed.xyz and OUT/start.h5 (20 copies rattled by 0.02-0.035 A), the inputs of
examples/active_learning.yaml and examples/active_learning_ethanol.yaml.
"""

import sys
from pathlib import Path

from ase import Atoms
from ase.build import fcc111, molecule

from nnpot.data import Frame, write_h5
from nnpot.explore import Labeller


def slab_with_vacancy() -> Atoms:
    slab = fcc111("Cu", size=(3, 3, 4), vacuum=6.0, periodic=True)
    del slab[len(slab) // 2]
    return slab


def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


#: system name -> (seed structure, labeller)
SYSTEMS = {
    "copper": (slab_with_vacancy, Labeller("emt")),
    "ethanol": (ethanol, Labeller("tblite", {"method": "GFN2-xTB", "verbosity": 0})),
}


def rattled_frames(seed: Atoms, labeller: Labeller, n: int = 20) -> list[Frame]:
    """``n`` copies of ``seed`` rattled by 0.02-0.035 A (seeds 0..n-1), labelled."""
    frames = []
    for k in range(n):
        a = seed.copy()
        a.rattle(0.02 + 0.005 * (k % 4), seed=k)
        frames.append(labeller.label(a).frame)
    return frames


def main(system: str = "copper", out: str = "runs/cu_seed") -> None:
    if system not in SYSTEMS:
        sys.exit(f"usage: python examples/make_seed.py {{{','.join(SYSTEMS)}}} OUT_FOLDER (got {system!r})")
    make, labeller = SYSTEMS[system]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    make().write(folder / "seed.xyz")
    frames = rattled_frames(make(), labeller)
    write_h5(frames, folder / "start.h5")
    print(f"wrote {folder / 'seed.xyz'} and {folder / 'start.h5'} ({len(frames)} frames labelled by {labeller.name})")


if __name__ == "__main__":
    main(*sys.argv[1:])
