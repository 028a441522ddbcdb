"""The HDF5 format, the readers and converters, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnpot.cli import main
from nnpot.data import Frame, H5Dataset, convert, read_npz, split, validate_frame, write_extxyz
from nnpot.errors import DatasetError

from .conftest import WATER


def write_deepmd(folder: Path, ds: H5Dataset, frames: range, virial: bool = False, nopbc: bool = False,
                 sets: int = 2) -> Path:
    """A DeePMD-kit npy system (float32 arrays, as DeePMD-kit ships them) from bundled frames."""
    folder.mkdir(parents=True)
    first = ds[frames[0]]
    type_map = ["O", "H"]
    types = np.where(first.numbers == 8, 0, 1)
    (folder / "type.raw").write_text("\n".join(map(str, types)) + "\n")
    (folder / "type_map.raw").write_text("\n".join(type_map) + "\n")
    if nopbc:
        (folder / "nopbc").write_text("")
    chunks = np.array_split(np.array(list(frames)), sets)
    for k, idx in enumerate(chunks):
        s = folder / f"set.{k:03d}"
        s.mkdir()
        fr = [ds[int(i)] for i in idx]
        np.save(s / "coord.npy", np.stack([f.positions.reshape(-1) for f in fr]).astype(np.float32))
        np.save(s / "force.npy", np.stack([f.forces.reshape(-1) for f in fr]).astype(np.float32))
        np.save(s / "energy.npy", np.array([f.energy for f in fr], dtype=np.float32))
        if not nopbc:
            np.save(s / "box.npy", np.stack([f.cell.reshape(-1) for f in fr]).astype(np.float32))
        if virial:
            rng = np.random.default_rng(k)
            np.save(s / "virial.npy", rng.normal(size=(len(fr), 9)).astype(np.float32))
    return folder


def assert_no_output(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.suffix in (".h5", ".tmp") or p.name.startswith(".")]
    assert leftovers == [], leftovers


def test_bundled_water_matches_source_counts(water):
    assert len(water) == 320
    assert set(water.n_atoms) == {192}
    assert water.attrs["format"] == "nnpot-dataset" and water.attrs["energy_unit"] == "eV"
    # DeePMD-kit's water data: about -155.96 eV/atom
    assert np.mean(water.energy / 192) == pytest.approx(-155.96, abs=0.01)
    assert water[0].forces.std() == pytest.approx(0.81, abs=0.05)


def test_round_trip_deepmd_h5_extxyz_h5_is_bit_exact(tmp_path, water):
    src = write_deepmd(tmp_path / "sys", water, range(0, 10), virial=True)
    n = convert([src], tmp_path / "a.h5")
    assert n == 10
    a = H5Dataset(tmp_path / "a.h5")
    write_extxyz(a, tmp_path / "a.xyz")
    convert([tmp_path / "a.xyz"], tmp_path / "b.h5")
    b = H5Dataset(tmp_path / "b.h5")
    coord = np.concatenate([np.load(p) for p in sorted(src.glob("set.*/coord.npy"))]).reshape(10, -1, 3)
    for i in range(10):
        fa, fb = a[i], b[i]
        np.testing.assert_array_equal(fa.positions, coord[i].astype(np.float64))  # float32 values kept exactly
        for key in ("positions", "forces", "cell", "virial", "numbers", "pbc"):
            np.testing.assert_array_equal(getattr(fa, key), getattr(fb, key))
        assert fa.energy == fb.energy


def test_nopbc_system_and_extxyz_readable_by_ase(tmp_path, water):
    import ase.io

    src = write_deepmd(tmp_path / "mol", water, range(0, 3), nopbc=True, sets=1)
    convert([src], tmp_path / "m.h5")
    m = H5Dataset(tmp_path / "m.h5")
    assert not m.pbc.any() and np.all(m.cell == 0)
    write_extxyz(m, tmp_path / "m.xyz")
    images = ase.io.read(tmp_path / "m.xyz", index=":")
    assert len(images) == 3
    np.testing.assert_array_equal(images[1].get_forces(), m[1].forces)


def test_merge_append_and_split(tmp_path, water):
    s1 = write_deepmd(tmp_path / "s1", water, range(0, 6))
    s2 = write_deepmd(tmp_path / "s2", water, range(6, 10))
    assert convert([s1, s2], tmp_path / "all.h5") == 10
    assert convert([s1], tmp_path / "all.h5", append=True) == 6
    ds = H5Dataset(tmp_path / "all.h5")
    assert len(ds) == 16 and len(ds.sources) == 3
    np.testing.assert_array_equal(ds[10].positions, ds[0].positions)
    counts = split(tmp_path / "all.h5", [0.75, 0.25], [tmp_path / "tr.h5", tmp_path / "va.h5"], seed=1)
    assert counts == [12, 4]
    energies = sorted(np.concatenate([H5Dataset(tmp_path / p).energy for p in ("tr.h5", "va.h5")]))
    assert energies == sorted(ds.energy)


def test_ase_db_and_npz_readers(tmp_path, water):
    import ase.db
    from ase import units

    db = ase.db.connect(tmp_path / "x.db")
    for i in range(3):
        db.write(water[i].to_atoms())
    assert convert([tmp_path / "x.db"], tmp_path / "db.h5") == 3
    np.testing.assert_allclose(H5Dataset(tmp_path / "db.h5")[2].forces, water[2].forces)
    f = [water[i] for i in range(4)]
    kcal = units.kcal / units.mol
    np.savez(tmp_path / "md17.npz", R=np.stack([x.positions for x in f]), z=f[0].numbers,
             E=np.array([[x.energy / kcal] for x in f]), F=np.stack([x.forces / kcal for x in f]))
    frames = list(read_npz(tmp_path / "md17.npz", energy_unit="kcal/mol"))
    assert len(frames) == 4 and frames[0].energy == pytest.approx(f[0].energy, rel=1e-12)


def test_info_json_and_cli(tmp_path, capsys):
    assert main(["data", "info", str(WATER), "--json", "--rcut", "6.0", "--max-frames", "5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 320 and info["atoms"] == 320 * 192
    assert info["elements"] == {"H": 128 * 320, "O": 64 * 320}
    nb = info["neighbors"]["per_center"]
    # the DeePMD-kit water example uses sel [46, 92]: the measured maxima must fit in it
    assert nb["O"]["O"]["max"] <= 46 and nb["O"]["H"]["max"] <= 92
    assert 25 < nb["O"]["O"]["mean"] < 35


def test_ase_ioformat_plugin_reads_h5():
    import ase.io

    atoms = ase.io.read(WATER, index=5, format="nnpot-h5")
    assert len(atoms) == 192
    assert atoms.get_potential_energy() == pytest.approx(H5Dataset(WATER).energy[5])


# --- bad input: one-line message naming file and frame, no output left behind -----------------


def _bad_convert(tmp_path, source, match):
    out = tmp_path / "out" / "x.h5"
    out.parent.mkdir(exist_ok=True)
    with pytest.raises(DatasetError, match=match):
        convert([source], out)
    assert_no_output(out.parent)


def test_missing_key(tmp_path, water):
    src = write_deepmd(tmp_path / "s", water, range(2), sets=1)
    (src / "set.000" / "force.npy").unlink()
    _bad_convert(tmp_path, src, r"set\.000: force\.npy is missing")


def test_inconsistent_shapes(tmp_path, water):
    src = write_deepmd(tmp_path / "s", water, range(4), sets=1)
    np.save(src / "set.000" / "force.npy", np.zeros((3, 192 * 3), np.float32))
    _bad_convert(tmp_path, src, r"force\.npy has shape \(3, 576\), expected 4 frames")


def test_nan_values_named_by_frame(tmp_path, water):
    src = write_deepmd(tmp_path / "s", water, range(4), sets=1)
    e = np.load(src / "set.000" / "energy.npy")
    e[2] = np.nan
    np.save(src / "set.000" / "energy.npy", e)
    _bad_convert(tmp_path, src, r"set\.000: frame 2: energy contains NaN or inf")


def test_inf_forces_in_extxyz(tmp_path, water):
    write_extxyz([water[0], water[1]], tmp_path / "a.xyz")
    text = (tmp_path / "a.xyz").read_text().splitlines()
    parts = text[2 + 194 + 3].split()
    parts[-1] = "inf"
    text[2 + 194 + 3] = " ".join(parts)
    (tmp_path / "a.xyz").write_text("\n".join(text) + "\n")
    _bad_convert(tmp_path, tmp_path / "a.xyz", r"a\.xyz: frame 1: forces contains NaN or inf")


def test_unknown_element(tmp_path, water):
    src = write_deepmd(tmp_path / "s", water, range(2), sets=1)
    (src / "type_map.raw").write_text("Ox\nH\n")
    _bad_convert(tmp_path, src, r"unknown element symbol 'Ox'")


def test_truncated_h5(tmp_path):
    data = WATER.read_bytes()
    (tmp_path / "t.h5").write_bytes(data[: len(data) // 3])
    _bad_convert(tmp_path, tmp_path / "t.h5", r"t\.h5: (not a readable nnpot HDF5 file|frame \d+: unreadable)")


def test_not_hdf5(tmp_path):
    (tmp_path / "n.h5").write_text("hello")
    _bad_convert(tmp_path, tmp_path / "n.h5", r"n\.h5: not a readable nnpot HDF5 file")


def test_empty_sources(tmp_path):
    (tmp_path / "empty.xyz").write_text("")
    _bad_convert(tmp_path, tmp_path / "empty.xyz", r"empty\.xyz: (ASE cannot read it: .*Empty file|no frames)")
    (tmp_path / "emptydir").mkdir()
    with pytest.raises(DatasetError, match="no DeePMD-kit system found"):
        convert([tmp_path / "emptydir"], tmp_path / "y.h5")


def test_other_units_refused(tmp_path, water):
    write_extxyz([water[0]], tmp_path / "u.xyz")
    text = (tmp_path / "u.xyz").read_text().splitlines()
    text[1] += " energy_unit=kcal/mol"
    (tmp_path / "u.xyz").write_text("\n".join(text) + "\n")
    _bad_convert(tmp_path, tmp_path / "u.xyz", r"energy_unit='kcal/mol'")
    import shutil

    shutil.copy(WATER, tmp_path / "k.h5")  # an nnpot file claiming other units
    with h5py.File(tmp_path / "k.h5", "r+") as fh:
        fh.attrs["energy_unit"] = "kcal/mol"
    _bad_convert(tmp_path, tmp_path / "k.h5", r"energy_unit is 'kcal/mol'")


def test_singular_cell(tmp_path, water):
    f = water[0]
    f.cell = np.zeros((3, 3))
    with pytest.raises(DatasetError, match="cell is singular"):
        validate_frame(f, "x: frame 0")
    f.cell, f.pbc = np.diag([12.0, 12.0, 0.0]), np.array([True, True, False])  # a slab: fine
    validate_frame(f, "x: frame 0")
    f.cell = np.array([[12.0, 0, 0], [6.0, 0, 0], [0, 0, 20.0]])  # parallel periodic vectors
    with pytest.raises(DatasetError, match="cell is singular"):
        validate_frame(f, "x: frame 0")


def test_failed_append_keeps_old_file(tmp_path, water):
    convert([write_deepmd(tmp_path / "s", water, range(3), sets=1)], tmp_path / "a.h5")
    before = (tmp_path / "a.h5").read_bytes()
    bad = write_deepmd(tmp_path / "b", water, range(2), sets=1)
    np.save(bad / "set.000" / "energy.npy", np.array([1.0, np.inf], np.float32))
    with pytest.raises(DatasetError):
        convert([bad], tmp_path / "a.h5", append=True)
    assert (tmp_path / "a.h5").read_bytes() == before
    assert len(H5Dataset(tmp_path / "a.h5")) == 3


def test_cli_reports_one_line_error(tmp_path, capsys):
    (tmp_path / "n.h5").write_text("junk")
    assert main(["data", "convert", str(tmp_path / "n.h5"), "-o", str(tmp_path / "o.h5"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nnpot: error:") and "\n" not in err and "n.h5" in err
    assert not (tmp_path / "o.h5").exists()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n_frames=st.integers(0, 3),
    n_atoms=st.integers(0, 4),
    bad_axis=st.integers(0, 3),
    value=st.sampled_from([0.0, 1.5, -2.0, np.nan, np.inf, 1e300]),
    z=st.integers(-2, 130),
)
def test_readers_property_based(tmp_path_factory, n_frames, n_atoms, bad_axis, value, z):
    """Random shapes and values: a reader either returns valid frames or raises DatasetError."""
    tmp = tmp_path_factory.mktemp("npz")
    rng = np.random.default_rng(0)
    R = rng.normal(size=(n_frames, n_atoms + (bad_axis == 1), 3)) * 3
    F = np.full((n_frames, n_atoms, 3 + (bad_axis == 2)), value)
    E = rng.normal(size=(n_frames + (bad_axis == 3),))
    np.savez(tmp / "r.npz", R=R, z=np.full(n_atoms, z), E=E, F=F)
    try:
        frames = list(read_npz(tmp / "r.npz"))
    except DatasetError as exc:
        assert "r.npz" in str(exc) and "\n" not in str(exc)
        return
    for f in frames:
        assert isinstance(f, Frame) and np.all(np.isfinite(f.forces)) and 1 <= f.numbers.min() <= 118
        assert f.positions.shape == f.forces.shape == (f.n_atoms, 3)


def test_deepmd_export_round_trip(tmp_path, water):
    from nnpot.data import write_deepmd

    systems = write_deepmd([water[i] for i in range(5)], tmp_path / "dp", type_map=["O", "H"])
    assert len(systems) == 1 and (systems[0] / "type_map.raw").read_text().split() == ["O", "H"]
    convert([tmp_path / "dp"], tmp_path / "back.h5")
    back = H5Dataset(tmp_path / "back.h5")
    for i in range(5):
        np.testing.assert_array_equal(back[i].positions, water[i].positions)
        np.testing.assert_array_equal(back[i].forces, water[i].forces)


def test_extxyz_with_a_voigt_stress_reads_as_a_virial(tmp_path):
    """ASE writes a 6-component stress into extxyz; it becomes the virial -stress * volume."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.stress import voigt_6_to_full_3x3_stress

    from nnpot.data.readers import read_source

    atoms = bulk("Cu", "fcc", a=3.7, cubic=True)
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    stress = atoms.get_stress()
    atoms.write(tmp_path / "cu.extxyz")
    (frame,) = list(read_source(tmp_path / "cu.extxyz"))
    np.testing.assert_allclose(frame.virial, -voigt_6_to_full_3x3_stress(stress) * atoms.get_volume(), atol=1e-10)


def test_further_deepmd_labels_survive_convert_and_export(tmp_path):
    """spin.npy (per atom), fparam.npy (per frame) and aparam.npy come through nnpot's HDF5 and
    back to DeePMD-kit files unchanged; a file whose size fits no layout is named, not dropped
    silently."""
    from nnpot.data import H5Dataset, write_deepmd

    src = tmp_path / "sys"
    _write_tiny_system(src)
    rng = np.random.default_rng(0)
    labels = {"spin": rng.normal(size=(2, 9)), "fparam": rng.normal(size=(2, 2)), "aparam": rng.normal(size=(2, 3))}
    for name, value in labels.items():
        np.save(src / "set.000" / f"{name}.npy", value)
    np.save(src / "set.000" / "atomic_dipole.npy", np.zeros((2, 7)))  # 7 values for 3 atoms: no layout
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "nnpot.cli", "data", "convert", str(src), "-o", str(tmp_path / "x.h5"),
                          "-q"], capture_output=True, text=True)
    assert out.returncode == 0 and "atomic_dipole.npy" in out.stderr and "not kept" in out.stderr, out.stderr
    ds = H5Dataset(tmp_path / "x.h5")
    assert ds[1].atom_labels["spin"].shape == (3, 3) and ds[1].frame_labels["fparam"].shape == (2,)
    np.testing.assert_array_equal(ds[1].atom_labels["aparam"].reshape(-1), labels["aparam"][1])
    systems = write_deepmd(ds, tmp_path / "dp")
    for name, value in labels.items():
        np.testing.assert_array_equal(np.load(systems[0] / "set.000" / f"{name}.npy"), value)


def _write_tiny_system(root):
    """A two-frame, three-atom DeePMD-kit system (when the shared data is not at hand)."""
    (root / "set.000").mkdir(parents=True)
    (root / "type.raw").write_text("0\n1\n1\n")
    (root / "type_map.raw").write_text("O\nH\n")
    (root / "nopbc").write_text("")
    coord = np.array([[0, 0, 0, 0.96, 0, 0, -0.24, 0.93, 0]] * 2, dtype=float)
    np.save(root / "set.000" / "coord.npy", coord)
    np.save(root / "set.000" / "energy.npy", np.array([-14.2, -14.3]))
    np.save(root / "set.000" / "force.npy", np.zeros((2, 9)))
