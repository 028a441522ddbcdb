"""Write water_1536.data: the bundled 192-atom water frame repeated 2x2x2 (1,536 atoms,
O = type 1, H = type 2) as a LAMMPS data file for in.water."""

import ase.io

from nnpot.bundled import bundled_dataset
from nnpot.data import H5Dataset

atoms = H5Dataset(bundled_dataset("water"))[0].to_atoms().repeat((2, 2, 2))
atoms.calc = None
ase.io.write("water_1536.data", atoms, format="lammps-data", specorder=["O", "H"], masses=True, units="metal")
print(f"wrote water_1536.data: {len(atoms)} atoms, box {atoms.cell.lengths().round(3)} A")
