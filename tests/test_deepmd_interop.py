"""DeePMD-kit models in and out: nnpot's numbers against DeePMD-kit's own code.

DeePMD-kit's models are built here with its own API (``deepmd.dpmodel``). Its reference numbers
come from its own code too: the numpy backend (``DeepPot`` on the ``.dp`` file) for energies,
and the same ``dpmodel`` code run on torch arrays (it is written against the array API) so that
autograd gives its forces and virials; DeePMD-kit's compiled PyTorch backend is built for
another torch than nnpot's tests run with.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from ase import Atoms

from nnpot.cli import main
from nnpot.errors import ModelFileError
from nnpot.potentials import EnergyModel, load_model, save_model
from nnpot.potentials import testing as T
from nnpot.interop.deepmd_file import read_deepmd_file, write_deepmd_file
from nnpot.interop.deepmd_model import UnsupportedModelError, deepmd_from_model, save_deepmd_model

from .conftest import MOLECULE, small_config

dpmodel = pytest.importorskip("deepmd.dpmodel", reason="needs deepmd-kit (pip install deepmd-kit==3.2.0)")
from deepmd.dpmodel.model.base_model import BaseModel  # noqa: E402
from deepmd.dpmodel.model.model import get_model  # noqa: E402
from deepmd.dpmodel.utils.serialization import load_dp_model, save_dp_model  # noqa: E402

TYPE_MAP = ["H", "C", "O"]
TOL = {"float64": 1e-10, "float32": 2e-4}


def dp_config(type_one_side: bool, activation: str = "tanh", precision: str = "float64", **desc) -> dict:
    return {"type_map": TYPE_MAP,
            "descriptor": {"type": "se_e2_a", "sel": [36, 8, 24], "rcut": 4.5, "rcut_smth": 1.0,
                           "neuron": [8, 16, 32], "axis_neuron": 4, "resnet_dt": True, "type_one_side": type_one_side,
                           "activation_function": activation, "precision": precision, "seed": 1, **desc},
            "fitting_net": {"neuron": [24, 24], "resnet_dt": True, "activation_function": activation,
                            "precision": precision, "seed": 2}}


def dp_tree(config: dict, seed: int = 0) -> dict:
    """A DeePMD-kit model's tree with random weights and non-zero statistics and biases."""
    tree = get_model(config).serialize()
    rng = np.random.default_rng(seed)
    n, sel = len(config["type_map"]), config["descriptor"]["sel"]
    var = tree["descriptor"]["@variables"]
    dt = var["davg"].dtype
    var["davg"] = np.repeat(rng.normal(0.0, 0.2, (n, n, 4)), sel, axis=1).astype(dt)
    var["dstd"] = np.repeat(rng.uniform(0.3, 1.5, (n, n, 4)), sel, axis=1).astype(dt)
    tree["fitting"]["@variables"]["bias_atom_e"] = rng.normal(-50.0, 20.0, (n, 1)).astype(dt)
    tree["@variables"]["out_bias"] = rng.normal(0.0, 2.0, (1, n, 1)).astype(dt)
    return tree


def _as_torch(obj, seen: set) -> None:
    """Replace the numpy arrays held by a dpmodel object graph with torch tensors."""
    if id(obj) in seen or not hasattr(obj, "__dict__"):
        return
    seen.add(id(obj))
    for key, value in list(vars(obj).items()):
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            setattr(obj, key, torch.from_numpy(value.copy()))
        elif isinstance(value, (list, tuple, dict)):
            for v in value.values() if isinstance(value, dict) else value:
                _as_torch(v, seen)
        elif type(value).__module__.startswith("deepmd"):
            _as_torch(value, seen)


def deepmd_eval(tree: dict, atoms: Atoms) -> dict[str, np.ndarray]:
    """Energy, atom energies, forces and virial by DeePMD-kit's dpmodel code (on torch arrays)."""
    model = BaseModel.deserialize(tree)
    _as_torch(model, set())
    types = torch.tensor([[tree["type_map"].index(s) for s in atoms.get_chemical_symbols()]])
    strain = torch.zeros(3, 3, dtype=torch.float64, requires_grad=True)
    deform = torch.eye(3, dtype=torch.float64) + strain
    pos = torch.tensor(atoms.positions, requires_grad=True)
    coord = (pos @ deform).reshape(1, -1)
    box = (torch.tensor(atoms.cell.array) @ deform).reshape(1, 9) if atoms.pbc.any() else None
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # constants DeePMD-kit makes with xp.asarray, as in numpy
    try:
        out = model.call(coord, types, box)
    finally:
        torch.set_default_dtype(default)
    energy = out["energy"].sum()
    g_pos, g_strain = torch.autograd.grad(energy, (pos, strain))
    return {"energy": energy.item(), "atom_energy": out["atom_energy"].detach().reshape(-1).numpy(),
            "forces": -g_pos.numpy(), "virial": -g_strain.numpy()}


def structures() -> dict[str, Atoms]:
    """A periodic water frame, a small triclinic cell and a non-periodic molecule."""
    from nnpot.bundled import bundled_dataset
    from nnpot.data import H5Dataset

    water = H5Dataset(bundled_dataset("water"))[3].to_atoms()
    rng = np.random.default_rng(7)
    cell = np.array([[5.2, 0.0, 0.0], [1.1, 4.9, 0.0], [-0.7, 0.9, 5.4]])
    frac = rng.uniform(size=(10, 3))
    tri = Atoms("C2O3H5", scaled_positions=frac, cell=cell, pbc=True)
    tri.positions += rng.normal(0, 0.01, tri.positions.shape)
    while min(tri.get_all_distances(mic=True)[np.triu_indices(10, 1)]) < 0.9:  # no overlapping atoms
        frac = rng.uniform(size=(10, 3))
        tri.set_scaled_positions(frac)
    mol = H5Dataset(MOLECULE)[0].to_atoms()
    mol.pbc, mol.cell = False, np.zeros((3, 3))
    for atoms in (water, tri, mol):
        atoms.calc = None
    return {"water": water, "triclinic": tri, "molecule": mol}


STRUCTURES = structures()


def _compare(model: EnergyModel, ref: dict, atoms: Atoms, tol: float) -> None:
    got = T.evaluate(model, [atoms])
    scale = max(1.0, abs(ref["energy"]))
    assert abs(got["energy"][0] - ref["energy"]) <= tol * scale
    np.testing.assert_allclose(got["atom_energy"].reshape(-1), ref["atom_energy"], rtol=0, atol=tol * 100)
    np.testing.assert_allclose(got["forces"], ref["forces"], rtol=0, atol=tol)
    np.testing.assert_allclose(got["virial"][0], ref["virial"], rtol=0, atol=tol * 10)


@pytest.mark.parametrize("one_side", [True, False], ids=["type_one_side", "two_side"])
def test_imported_model_equals_deepmd_kit(one_side, tmp_path):
    """Energies, atom energies, forces and virials of an imported model equal DeePMD-kit's to
    1e-10 (float64) on three structures."""
    tree = dp_tree(dp_config(one_side))
    save_dp_model(str(tmp_path / "m.dp"), {"model": tree, "model_def_script": dp_config(one_side)})
    model = load_model(tmp_path / "m.dp")
    assert model.config.descriptor.type_one_side is one_side and model.type_map == TYPE_MAP
    from deepmd.infer import DeepPot

    numpy_backend = DeepPot(str(tmp_path / "m.dp"))
    for name, atoms in STRUCTURES.items():
        ref = deepmd_eval(tree, atoms)
        _compare(model, ref, atoms, TOL["float64"])
        types = [TYPE_MAP.index(s) for s in atoms.get_chemical_symbols()]
        cell = atoms.cell.array.reshape(1, 9) if atoms.pbc.any() else None
        e_np = numpy_backend.eval(atoms.positions.reshape(1, -1), cell, types)[0]
        assert abs(float(e_np.ravel()[0]) - ref["energy"]) <= 1e-10 * abs(ref["energy"]), name


@pytest.mark.parametrize("activation", ["gelu", "gelu_tf", "relu", "relu6", "softplus", "sigmoid", "silu",
                                        "silut", "custom_silu:2.5", "linear", "none"])
def test_every_deepmd_activation(activation, tmp_path):
    config = dp_config(False, activation)
    tree = dp_tree(config, seed=1)
    write_deepmd_file(tmp_path / "m.yaml", {"model": tree, "model_def_script": config})
    model = load_model(tmp_path / "m.yaml")
    atoms = STRUCTURES["triclinic"]
    _compare(model, deepmd_eval(tree, atoms), atoms, TOL["float64"])


def test_float32_model_imports_as_float32(tmp_path):
    """A float32 DeePMD-kit model stays float32, with its weights unchanged, and agrees with
    DeePMD-kit's evaluation of the same weights to float32 precision."""
    config = dp_config(True, precision="float32")
    tree = dp_tree(config)
    save_dp_model(str(tmp_path / "m.dp"), {"model": tree, "model_def_script": config})
    model = load_model(tmp_path / "m.dp")
    assert model.dtype == torch.float32
    w = tree["descriptor"]["embeddings"]["networks"][1]["layers"][2]["@variables"]["w"]
    assert torch.equal(model.descriptor.embeddings[1].layers[2].weight, torch.from_numpy(w.T.copy()))
    as64 = load_dp_model(str(tmp_path / "m.dp"))["model"]  # the same weights, evaluated in float64
    for node in _nodes(as64):
        node.update({k: v.astype(np.float64) for k, v in node.items() if isinstance(v, np.ndarray)})
        if node.get("precision") == "float32":
            node["precision"] = "float64"
    atoms = STRUCTURES["molecule"]
    ref, got = deepmd_eval(as64, atoms), T.evaluate(model, [atoms])
    assert np.abs(got["forces"] - ref["forces"]).max() <= TOL["float32"] * np.abs(ref["forces"]).max()


def _nodes(tree):
    if isinstance(tree, dict):
        yield tree
        for v in tree.values():
            yield from _nodes(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _nodes(v)


def _random_nnpot_model(one_side: bool) -> EnergyModel:
    config = small_config()
    config.type_map = TYPE_MAP
    config.descriptor.sel = [36, 8, 24]
    config.descriptor.rcut, config.descriptor.rcut_smth = 4.5, 1.0
    config.descriptor.resnet_dt = True
    config.descriptor.type_one_side = one_side
    model = EnergyModel(config)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        model.descriptor.davg.normal_(0.0, 0.2, generator=g)
        model.descriptor.dstd.uniform_(0.3, 1.5, generator=g)
        model.energy_bias.normal_(-50.0, 20.0, generator=g)
    return model.eval()


@pytest.mark.parametrize("one_side", [True, False], ids=["type_one_side", "two_side"])
@pytest.mark.parametrize("suffix", [".dp", ".yaml"])
def test_export_then_import_keeps_every_bit(one_side, suffix, tmp_path):
    model = _random_nnpot_model(one_side)
    save_deepmd_model(model, tmp_path / f"m{suffix}")
    back = load_model(tmp_path / f"m{suffix}")
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("one_side", [True, False], ids=["type_one_side", "two_side"])
def test_exported_model_runs_in_deepmd_kit_with_the_same_numbers(one_side, tmp_path):
    """DeePMD-kit reads nnpot's .dp file, builds the model from its model_def_script too, and
    evaluates it to nnpot's numbers."""
    model = _random_nnpot_model(one_side)
    save_deepmd_model(model, tmp_path / "m.dp")
    data = load_dp_model(str(tmp_path / "m.dp"))
    for atoms in STRUCTURES.values():
        _compare(model, deepmd_eval(data["model"], atoms), atoms, TOL["float64"])
    # the model_def_script is an input DeePMD-kit accepts, and it builds the same architecture
    fresh = get_model(data["model_def_script"]).serialize()
    shapes = lambda t: {k: np.shape(v) for k, v in _flat(t)}  # noqa: E731
    assert shapes(fresh) == shapes(data["model"])


def _flat(tree, prefix=""):
    """``(path, array)`` of every array in a tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flat(v, f"{prefix}/{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _flat(v, f"{prefix}/{i}")
    elif isinstance(tree, np.ndarray):
        yield prefix, tree


def _unsupported_trees() -> dict[str, dict]:
    """DeePMD-kit models nnpot cannot represent, built by DeePMD-kit where its API is simple."""
    base = dp_config(True)
    trees = {}
    trees["se_atten"] = get_model({**base, "descriptor": {"type": "se_atten", "sel": 40, "rcut": 4.5, "rcut_smth": 1.0,
                                                          "neuron": [4, 8], "axis_neuron": 2, "attn_layer": 0}}).serialize()
    trees["hybrid"] = get_model({**base, "descriptor": {"type": "hybrid", "list": [base["descriptor"],
                                                                                   base["descriptor"]]}}).serialize()
    trees["exclude_types"] = get_model({**base, "descriptor": {**base["descriptor"], "exclude_types": [[0, 1]]}}).serialize()
    trees["pair_exclude_types"] = get_model({**base, "pair_exclude_types": [[0, 2]]}).serialize()
    trees["atom_exclude_types"] = get_model({**base, "atom_exclude_types": [1]}).serialize()
    trees["frame parameters"] = get_model({**base, "fitting_net": {**base["fitting_net"], "numb_fparam": 2}}).serialize()
    trees["atomic parameters"] = get_model({**base, "fitting_net": {**base["fitting_net"], "numb_aparam": 1}}).serialize()
    trees["dipole"] = get_model({**base, "fitting_net": {**base["fitting_net"], "type": "dipole"}}).serialize()
    good = get_model(base).serialize()
    trees["dpa2"] = {**good, "descriptor": {**good["descriptor"], "type": "dpa2"}}
    trees["dpa3"] = {**good, "descriptor": {**good["descriptor"], "type": "dpa3"}}
    trees["spin"] = {**good, "type": "spin_ener"}
    trees["newer version"] = {**good, "descriptor": {**good["descriptor"], "@version": 99}}
    trees["dpa2 of a newer version"] = {**good, "descriptor": {**good["descriptor"], "type": "dpa2", "@version": 99}}
    return trees


def test_every_unsupported_feature_gets_its_error_and_no_file(tmp_path, capsys):
    for name, tree in _unsupported_trees().items():
        src = tmp_path / f"{name.replace(' ', '_')}.dp"
        save_dp_model(str(src), {"model": tree, "model_def_script": {}})
        with pytest.raises(ModelFileError) as info:
            load_model(src)
        message = str(info.value)
        if name == "newer version":
            assert "newer than this nnpot reads" in message
        else:
            assert isinstance(info.value, UnsupportedModelError), name
            assert "se_e2_a energy models" in message, name  # names what is supported
        out = tmp_path / f"{src.stem}.nnp"
        assert main(["convert", str(src), "-o", str(out)]) == 2
        assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
        assert "error" in capsys.readouterr().err


def test_convert_cli_round_trip_refuses_overwrite_and_backend_files(tmp_path, capsys):
    model = _random_nnpot_model(False)
    save_model(model, tmp_path / "a.nnp")
    assert main(["convert", str(tmp_path / "a.nnp"), "-o", str(tmp_path / "a.dp")]) == 0
    assert main(["convert", str(tmp_path / "a.dp"), "-o", str(tmp_path / "b.yaml")]) == 0
    assert main(["convert", str(tmp_path / "b.yaml"), "-o", str(tmp_path / "b.nnp")]) == 0
    back = load_model(tmp_path / "b.nnp")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))
    before = (tmp_path / "a.dp").read_bytes()
    assert main(["convert", str(tmp_path / "b.nnp"), "-o", str(tmp_path / "a.dp")]) == 2
    assert "--force" in capsys.readouterr().err and (tmp_path / "a.dp").read_bytes() == before
    assert main(["convert", str(tmp_path / "m.pth"), "-o", str(tmp_path / "m.nnp")]) == 2
    assert "dp convert-backend" in capsys.readouterr().err


def test_damaged_deepmd_files_get_a_clear_error(tmp_path):
    model = _random_nnpot_model(True)
    save_deepmd_model(model, tmp_path / "m.dp")
    data = (tmp_path / "m.dp").read_bytes()
    (tmp_path / "cut.dp").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.yaml").write_text("model: [1, 2\n")
    tree = read_deepmd_file(tmp_path / "m.dp")
    tree["model"]["descriptor"]["@variables"]["davg"][0, 0, 0] = np.nan
    write_deepmd_file(tmp_path / "nan.dp", tree)
    for name in ("cut.dp", "text.yaml", "nan.dp"):
        with pytest.raises(ModelFileError):
            load_model(tmp_path / name)


def test_calculator_and_tabulated_path_take_deepmd_files(tmp_path):
    """NNPotCalculator runs a .dp file directly, also tabulated (DeePMD-kit's compression)."""
    from nnpot import NNPotCalculator

    tree = dp_tree(dp_config(False))
    save_dp_model(str(tmp_path / "m.dp"), {"model": tree, "model_def_script": {}})
    atoms = STRUCTURES["water"].copy()
    ref = deepmd_eval(tree, atoms)
    for tabulate, tol in ((False, 1e-10), (True, 1e-6)):
        atoms.calc = NNPotCalculator(str(tmp_path / "m.dp"), tabulate=tabulate)
        assert atoms.get_potential_energy() == pytest.approx(ref["energy"], rel=tol)
        np.testing.assert_allclose(atoms.get_forces(), ref["forces"], atol=tol * 10)
    assert deepmd_from_model(load_model(tmp_path / "m.dp"))["model"]["descriptor"]["type_one_side"] is False


def test_nnpot_md_runs_a_deepmd_file(tmp_path):
    """`nnpot md` takes a DeePMD-kit file as its model (NVE conserves energy with it)."""
    import yaml

    tree = dp_tree(dp_config(False))
    save_dp_model(str(tmp_path / "m.dp"), {"model": tree, "model_def_script": {}})
    STRUCTURES["molecule"].write(tmp_path / "mol.xyz")
    config = {"structure": str(tmp_path / "mol.xyz"), "model": str(tmp_path / "m.dp"), "ensemble": "nve",
              "timestep_fs": 0.2, "steps": 40, "temperature_K": 100, "output": str(tmp_path / "md"), "device": "cpu"}
    (tmp_path / "md.yaml").write_text(yaml.safe_dump(config))
    assert main(["md", str(tmp_path / "md.yaml"), "-q"]) == 0
    import json

    summary = json.loads((tmp_path / "md" / "thermo.json").read_text())
    assert summary["steps"] == 40 and abs(summary["drift_eV_per_atom_per_ps"]) < 1e-4


def test_fitting_scale_is_folded_into_the_exported_output_layer(tmp_path):
    """nnpot's ``fitting.scale`` has no DeePMD-kit counterpart: the export multiplies the output
    layers by it, so the imported model (scale 1) gives the same energies and forces."""
    from ase.build import molecule

    from nnpot.potentials.calculator import NNPotCalculator

    model = _random_nnpot_model(True)
    scaled_config = copy.deepcopy(model.config)
    scaled_config.fitting.scale = 3.7
    scaled = EnergyModel(scaled_config)
    scaled.load_state_dict(model.state_dict())
    save_deepmd_model(scaled, tmp_path / "m.dp")
    back = load_model(tmp_path / "m.dp")
    assert back.config.fitting.scale == 1.0
    atoms = molecule("CH3CH2OH")
    atoms.center(vacuum=3.0)
    results = []
    for m in (model, scaled, back):
        atoms.calc = NNPotCalculator(m)
        results.append((atoms.get_potential_energy(), atoms.get_forces()))
    bias = float(model.energy_bias[[model.type_map.index(s) for s in atoms.get_chemical_symbols()]].sum())
    assert results[1][0] - bias == pytest.approx(3.7 * (results[0][0] - bias), rel=1e-10)  # the nets' part scales
    assert results[2][0] == pytest.approx(results[1][0], rel=1e-12)
    np.testing.assert_allclose(results[2][1], results[1][1], rtol=1e-9, atol=1e-10)
