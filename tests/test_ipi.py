"""i-PI drives an nnpot model over its socket (`nnpot ipi`): a short PIMD run ends cleanly, and a
one-bead NVE run reproduces nnpot's own velocity Verlet energies step for step."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import units

pytest.importorskip("ipi")

from nnpot import save_model  # noqa: E402
from nnpot.cli import main  # noqa: E402

BIN = Path(sys.executable).parent
INPUT = """<simulation verbosity='low'>
  <output prefix='sim'>
    <properties stride='1' filename='out'> [ step, potential{{electronvolt}}, conserved{{electronvolt}},
      kinetic_cv{{electronvolt}}(H) ] </properties>
  </output>
  <total_steps> {steps} </total_steps>
  <prng> <seed> 7 </seed> </prng>
  <ffsocket name='nnpot' mode='unix' pbc='false'> <address> {address} </address> </ffsocket>
  <system>
    <initialize nbeads='{beads}'>
      <file mode='ase'> init.xyz </file>
      {velocities}
    </initialize>
    <forces> <force forcefield='nnpot'> </force> </forces>
    <motion mode='dynamics'>
      <dynamics mode='{ensemble}'>
        <timestep units='femtosecond'> 0.5 </timestep>
        {thermostat}
      </dynamics>
    </motion>
    <ensemble> <temperature units='kelvin'> 300 </temperature> </ensemble>
  </system>
</simulation>
"""


def run_ipi(tmp: Path, model: Path, atoms, beads: int, steps: int, nvt: bool) -> np.ndarray:
    """i-PI's properties (step, potential, conserved, kinetic_cv(H)) after a run against `nnpot ipi`."""
    atoms.write(tmp / "init.xyz", format="extxyz")
    address = f"nnpot-test-{os.getpid()}-{beads}"
    (tmp / "input.xml").write_text(INPUT.format(
        steps=steps, address=address, beads=beads, ensemble="nvt" if nvt else "nve",
        velocities="<velocities mode='thermal' units='kelvin'> 300 </velocities>" if nvt else "",
        thermostat="<thermostat mode='pile_l'> <tau units='femtosecond'> 100 </tau> </thermostat>" if nvt else ""))
    server = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=tmp, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        client = subprocess.run([str(BIN / "nnpot"), "ipi", str(model), str(tmp / "init.xyz"), "--unix", address,
                                 "--device", "cpu", "--wait", "120"], capture_output=True, text=True, timeout=600)
        out, _ = server.communicate(timeout=300)
    finally:
        server.kill()
    assert client.returncode == 0, client.stderr[-2000:]
    assert server.returncode == 0, out[-2000:]
    assert "i-PI ended the run after" in client.stderr
    return np.atleast_2d(np.loadtxt(tmp / "sim.out"))


def test_pimd_four_beads_ends_cleanly(tmp_path, small_model, water):
    model = save_model(small_model, tmp_path / "m.nnp")
    atoms = water[3].to_atoms()
    atoms.calc = None
    props = run_ipi(tmp_path, model, atoms, beads=4, steps=4, nvt=True)
    assert props.shape == (5, 4) and np.isfinite(props).all()
    n_h = atoms.get_chemical_symbols().count("H")
    assert 0 < props[:, 3].mean() / n_h < 1.0  # eV per H atom: a kinetic energy of the right kind


def test_one_bead_nve_matches_nnpot_velocity_verlet(tmp_path, small_model, water):
    """From rest, with i-PI's masses: the potential energy of each step agrees with nnpot's own
    VelocityVerlet (unit conversions through Bohr and Hartree cost ~1e-9 relative)."""
    from ipi.utils.units import Constants, Elements

    from nnpot.md import VelocityVerlet

    plain = copy.deepcopy(small_model)
    with torch.no_grad():
        plain.energy_bias.zero_()  # i-PI prints ~9 digits: without the ~3e4 eV offsets they resolve 1e-7 eV
    model = save_model(plain, tmp_path / "m.nnp")
    atoms = water[3].to_atoms()
    atoms.calc = None
    props = run_ipi(tmp_path, model, atoms.copy(), beads=1, steps=10, nvt=False)
    atoms.set_masses([Elements.mass(s) / Constants.amu for s in atoms.get_chemical_symbols()])
    ours = []
    dyn = VelocityVerlet(atoms, 0.5 * units.fs, model=plain)
    dyn.attach(lambda: ours.append(dyn.state.energy.item()), 1)
    dyn.run(10)
    ipi_pot = props[:, 1]
    assert len(ours) == len(ipi_pot) == 11
    drop = ipi_pot[0] - ipi_pot[-1]
    assert drop > 1e-3  # the atoms moved: from rest the potential energy falls
    np.testing.assert_allclose(np.array(ours) - ours[0], ipi_pot - ipi_pot[0], atol=1e-6 * max(1.0, drop))


def test_no_server_and_bad_arguments_are_one_line_errors(tmp_path, small_model, water, capsys):
    model = save_model(small_model, tmp_path / "m.nnp")
    atoms = water[3].to_atoms()
    atoms.calc = None
    atoms.write(tmp_path / "init.xyz", format="extxyz")
    assert main(["ipi", str(model), str(tmp_path / "init.xyz"), "--unix", f"nobody-{os.getpid()}", "--wait", "1"]) == 2
    assert "no i-PI server at unix socket" in capsys.readouterr().err
    assert main(["ipi", str(model), str(tmp_path / "missing.xyz"), "--unix", "x", "--wait", "1"]) == 2
    assert "missing.xyz: no such structure file" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a structure\n")
    assert main(["ipi", str(model), str(tmp_path / "notes.txt"), "--unix", "x", "--wait", "0"]) == 2
    assert "not a structure ASE can read" in capsys.readouterr().err
    (tmp_path / "c.xyz").write_text("1\n\nC 0 0 0\n")
    assert main(["ipi", str(model), str(tmp_path / "c.xyz"), "--unix", "x", "--wait", "0"]) == 2
    assert "element(s) C not known to the model" in capsys.readouterr().err
    assert main(["ipi", str(model), str(tmp_path / "init.xyz"), "--unix", "x", "--wait", "-5"]) == 2
    assert "--wait must be a number of seconds >= 0" in capsys.readouterr().err
