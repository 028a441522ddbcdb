"""Active learning (nnpot explore) on EMT copper with a vacancy: trust window, labelling with
failures, a two-iteration loop end to end, and a resume that labels nothing twice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.io import read

from nnpot.data import H5Dataset
from nnpot.data.readers import read_ase  # noqa: F401  (the loop's reader of label files)
from nnpot.explore import ExploreConfig, Explorer, Labeller
from nnpot.explore.selection import farthest_point, select, trust_window

CALLS = {"n": 0}


class CountingEMT(EMT):
    """EMT that counts its calculations (a labeller must not repeat one after a resume)."""

    def calculate(self, *args, **kwargs):
        CALLS["n"] += 1
        super().calculate(*args, **kwargs)


class FlakyEMT(CountingEMT):
    """EMT whose second calculation fails, as a non-converging SCF would."""

    def calculate(self, *args, **kwargs):
        if CALLS["n"] == 1:
            CALLS["n"] += 1
            raise RuntimeError("SCF did not converge")
        super().calculate(*args, **kwargs)


def copper_with_vacancy():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    del atoms[0]
    return atoms


@pytest.fixture(scope="module")
def copper_data(tmp_path_factory):
    from nnpot.data import write_h5

    root = tmp_path_factory.mktemp("cu")
    rng = np.random.default_rng(0)
    frames = []
    for k in range(12):
        a = copper_with_vacancy()
        a.rattle(0.03 + 0.01 * (k % 3), seed=k)
        a.set_cell(a.cell * (1 + rng.uniform(-0.01, 0.01)), scale_atoms=True)
        result = Labeller("emt").label(a)
        frames.append(result.frame)
    write_h5(frames, root / "cu.h5")
    copper_with_vacancy().write(root / "seed.xyz")
    return root


def _config(root, out, labeller: str | Labeller = "emt", **kw) -> ExploreConfig:
    c = ExploreConfig(data=str(root / "cu.h5"), structures=[str(root / "seed.xyz")], out=str(out),
                      labeller=Labeller(labeller) if isinstance(labeller, str) else labeller,
                      ensemble=2, train_time="4s", finetune_time="2s",
                      temperatures_K=[800.0], replicas=1, steps=12, sample_every=3, trust_lo=0.0, trust_hi=1e6,
                      max_select=3, max_iterations=2, accurate_threshold=1.0, device="cpu",
                      train={"model.descriptor.rcut": 4.0, "model.descriptor.rcut_smth": 1.0,
                             "model.descriptor.neuron": [4, 8], "model.descriptor.axis_neuron": 2,
                             "model.fitting.neuron": [8], "stat_frames": 4, "valid_frames": 2, "valid_freq": 5})
    for key, value in kw.items():
        setattr(c, key, value)
    return c


def test_trust_window_classes_frames_exactly():
    devi = [0.01, 0.05, 0.0499, 0.2, 0.35, 0.3499, 1.0]
    assert trust_window(devi, 0.05, 0.35).tolist() == [0, 1, 0, 1, 2, 1, 2]
    frames = [copper_with_vacancy() for _ in devi]
    for k, a in enumerate(frames):
        a.rattle(0.05, seed=k)
    classes, chosen = select(frames, devi, 0.05, 0.35, max_select=2)
    assert set(chosen) <= {1, 3, 5} and len(chosen) == 2 and chosen[0] == 5  # most uncertain candidate first
    assert sorted(select(frames, devi, 0.05, 0.35, max_select=10)[1]) == [1, 3, 5]  # never beyond the window


def test_frames_after_a_replicas_failed_frame_count_as_failed():
    """Two replicas sampled three times; replica 0 fails at the second sample (deviation 0.5 >=
    hi 0.35): its third frame, back inside the window, is marked and classed failed; replica 1's
    frames keep their own classes."""
    import torch

    from nnpot.explore.loop import _sample

    class Sampled:  # what _sample reads of a Replicas driver
        images = [copper_with_vacancy(), copper_with_vacancy()]
        force_fn = type("F", (), {"last": {}})()
        nsteps = 0

    dyn, left, frames = Sampled(), np.zeros(2, dtype=bool), []
    assert _sample(dyn, 300.0, None, left, 0.35) == []  # nothing at step 0
    for step, devi in ((10, [0.1, 0.1]), (20, [0.5, 0.2]), (30, [0.2, 0.2])):
        dyn.nsteps, dyn.force_fn.last = step, {"max_devi_f": torch.tensor(devi), "avg_devi_f": torch.tensor(devi) / 2}
        frames += _sample(dyn, 300.0, None, left, 0.35)
    assert [a.info["after_failure"] for a in frames] == [False, False, False, False, True, False]
    assert left.tolist() == [True, False]
    devi = [np.inf if a.info["after_failure"] else a.info["max_devi_f"] for a in frames]  # as Explorer.select
    assert trust_window(devi, 0.05, 0.35).tolist() == [1, 1, 2, 1, 2, 1]


def test_selection_spreads_over_the_most_uncertain_candidates():
    """Of 30 candidates, 3 are chosen among the pool x 3 = 6 most uncertain, however far the
    others lie in fingerprint space (here: the unrattled seed, a fingerprint outlier)."""
    frames = [copper_with_vacancy() for _ in range(30)]
    for k, a in enumerate(frames[1:], 1):
        a.rattle(0.05, seed=k)
    devi = np.linspace(0.10, 0.30, 30)  # the unrattled frame 0 the least uncertain
    _, chosen = select(frames, devi, 0.05, 0.35, max_select=3, pool=2.0)
    assert chosen[0] == 29 and set(chosen) <= set(range(24, 30)) and len(set(chosen)) == 3
    _, spread = select(frames, devi, 0.05, 0.35, max_select=3, pool=float("inf"))
    assert 0 in spread  # over all candidates, farthest-point sampling reaches for the outlier
    # ranked by another measure (rank_by: avg_devi_f) the pool is that measure's top 6, while the
    # trust window still classes by max_devi_f: frame 0 is ranked first but frame 1 is failed
    rank = devi[::-1].copy()
    classes, chosen = select(frames, np.r_[0.10, 0.40, devi[2:]], 0.05, 0.35, max_select=3, pool=2.0, rank=rank)
    assert classes[1] == 2 and chosen[0] == 0 and set(chosen) <= {0, 2, 3, 4, 5, 6} and len(set(chosen)) == 3


def test_farthest_point_spreads_the_choice():
    x = np.array([[0.0], [0.1], [0.2], [5.0], [10.0]])
    assert farthest_point(x, 3, first=0) == [0, 4, 3]


def test_a_labeller_that_fails_on_one_frame_keeps_every_other():
    CALLS["n"] = 0
    frames = [copper_with_vacancy() for _ in range(4)]
    for k, a in enumerate(frames):
        a.rattle(0.02, seed=k)
    results = Labeller("tests.test_explore:FlakyEMT").label_all(frames)
    assert [r.frame is None for r in results] == [False, True, False, False]
    assert "SCF did not converge" in results[1].error
    assert all(np.isfinite(r.frame.forces).all() for r in results if r.frame is not None)


def test_two_iterations_end_to_end_and_resume_without_relabelling(copper_data, tmp_path):
    CALLS["n"] = 0
    out = tmp_path / "al"
    config = _config(copper_data, out, labeller="tests.test_explore:CountingEMT")
    explorer = Explorer(config, progress=False)
    explorer.run(stop_after="label")  # killed after labelling, before appending and training
    labelled = CALLS["n"]
    assert labelled == 3 and json.loads((out / "state.json").read_text())["stage"] == "append"
    with pytest.raises(Exception, match="--resume"):
        Explorer(config, progress=False)
    state = Explorer(config, progress=False, resume=True).run()
    assert CALLS["n"] == labelled  # nothing labelled twice; iteration 1 then stops at max_iterations
    assert state["stage"] == "done" and state["iteration"] == 1
    data = H5Dataset(out / "dataset.h5")
    assert len(data) == 12 + 3
    source = [s for s in data.sources if s.get("explore_iteration") == 0]
    assert len(source) == 1 and source[0]["labeller"] == "tests.test_explore:CountingEMT" and source[0]["frames"] == 3
    assert len(H5Dataset(copper_data / "cu.h5")) == 12  # the user's file is untouched
    rows = json.loads((out / "summary.json").read_text())
    assert [r["iteration"] for r in rows] == [0, 1] and all("accurate_fraction" in r for r in rows)
    assert (out / "summary.png").stat().st_size > 1000
    assert (out / "iter_001" / "ensemble" / "ensemble.json").exists()
    import yaml

    first, tuned = (yaml.safe_load((out / f"iter_00{k}" / "ensemble" / "member_0" / "config.yaml").read_text())
                    for k in (0, 1))
    assert (first["start_lr"], first["loss"]["start_pref_f"]) == (1e-3, 1000.0)  # from scratch: the recipe's
    assert (tuned["start_lr"], tuned["loss"]["start_pref_f"]) == (1e-3, 1000.0)  # fine-tuning: the same by default


def test_continue_runs_picks_each_replica_up_where_it_stopped(copper_data, tmp_path):
    """With continue_runs, iteration 1's replicas start from iteration 0's last frames (one per
    replica and temperature), not from the seed."""
    config = _config(copper_data, tmp_path / "al", continue_runs=True, temperatures_K=[600.0, 900.0], replicas=2,
                     steps=24, sample_every=3, max_select=2)
    Explorer(config, progress=False).run()
    ends, starts = {}, {}
    for k, store in ((0, ends), (1, starts)):
        for a in read(tmp_path / "al" / f"iter_00{k}" / "explored.extxyz", ":"):
            key = (a.info["temperature_K"], a.info["replica"])
            if (k == 0 and a.info["step"] == 24) or (k == 1 and a.info["step"] == 3):
                store[key] = a.positions
    assert set(ends) == set(starts) and len(ends) == 4
    seed = read(copper_data / "seed.xyz").positions
    for key, start in starts.items():
        moved_from_end = np.sqrt(((start - ends[key]) ** 2).sum(axis=1).mean())
        moved_from_seed = np.sqrt(((start - seed) ** 2).sum(axis=1).mean())
        assert moved_from_end < 0.5 * moved_from_seed, (key, moved_from_end, moved_from_seed)


def test_finetuning_takes_dp_gens_gentler_start_when_set(copper_data, tmp_path):
    """finetune_start_lr/_pref_e/_pref_f reach iteration 1's training configs, not iteration 0's."""
    import yaml

    out = tmp_path / "al"
    config = _config(copper_data, out, finetune_start_lr=1e-4, finetune_start_pref_e=0.1, finetune_start_pref_f=100.0,
                     train_time="2s", finetune_time="1s")
    Explorer(config, progress=False).run()
    first, tuned = (yaml.safe_load((out / f"iter_00{k}" / "ensemble" / "member_0" / "config.yaml").read_text())
                    for k in (0, 1))
    assert (first["start_lr"], first["loss"]["start_pref_e"], first["loss"]["start_pref_f"]) == (1e-3, 0.02, 1000.0)
    assert (tuned["start_lr"], tuned["loss"]["start_pref_e"], tuned["loss"]["start_pref_f"]) == (1e-4, 0.1, 100.0)
    with pytest.raises(Exception, match="finetune_start_lr"):
        _config(copper_data, tmp_path / "bad", finetune_start_lr=0.0).validate()
    from nnpot.configio import load_config
    from nnpot.errors import ConfigError

    # YAML reads 1e-4 as a string; an unset-by-default number still comes out a float, or an error
    assert load_config(ExploreConfig, None, ["finetune_start_lr=1e-4"]).finetune_start_lr == 1e-4
    assert load_config(ExploreConfig, None, ["finetune_start_lr=null"]).finetune_start_lr is None
    with pytest.raises(ConfigError, match="finetune_start_lr: expected a number"):
        load_config(ExploreConfig, None, ["finetune_start_lr=abc"])


def test_tblite_labels_a_small_molecule():
    """GFN2-xTB through tblite's ASE calculator (optional extra nnpot[label])."""
    pytest.importorskip("tblite.ase")
    from ase.build import molecule

    mol = molecule("CH3OH")
    result = Labeller("tblite", {"method": "GFN2-xTB", "verbosity": 0}).label(mol)
    assert result.frame is not None, result.error
    assert result.frame.energy < -100  # eV: about -13.5 Hartree for methanol in GFN2-xTB
    assert np.abs(result.frame.forces.sum(axis=0)).max() < 1e-6  # no net force on a free molecule


def test_a_molecule_loop_labels_with_gfn2_xtb_and_records_it(tmp_path):
    """One iteration on methanol in vacuum with tblite: the frames appended are non-periodic,
    carry GFN2-xTB's own energies and forces, and the dataset names the labeller and its settings."""
    pytest.importorskip("tblite.ase")
    from ase.build import molecule

    from nnpot.data import write_h5

    labeller = Labeller("tblite", {"method": "GFN2-xTB", "verbosity": 0})
    frames = []
    for k in range(6):
        mol = molecule("CH3OH")
        mol.rattle(0.03, seed=k)
        frames.append(labeller.label(mol).frame)
    write_h5(frames, tmp_path / "start.h5")
    molecule("CH3OH").write(tmp_path / "seed.xyz")
    config = _config(tmp_path, tmp_path / "al", data=str(tmp_path / "start.h5"),
                     structures=[str(tmp_path / "seed.xyz")], labeller=labeller, max_iterations=2,
                     temperatures_K=[600.0], timestep_fs=0.5, train_steps=20, finetune_steps=10)
    state = Explorer(config, progress=False).run()
    assert state["stage"] == "done"
    data = H5Dataset(tmp_path / "al" / "dataset.h5")
    assert len(data) == 6 + 3
    source = next(s for s in data.sources if s.get("explore_iteration") == 0)
    assert source["labeller"] == "tblite" and source["settings"] == {"method": "GFN2-xTB", "verbosity": 0}
    new = list(data)[6:]
    assert all(not f.pbc.any() for f in new)
    check = labeller.label(new[0].to_atoms())  # the stored labels are the method's own
    assert check.frame.energy == pytest.approx(new[0].energy, abs=1e-6)
    np.testing.assert_allclose(check.frame.forces, new[0].forces, atol=1e-6)


def test_npt_exploration_moves_the_cell_of_bulk_seeds_and_keeps_molecules_nvt(copper_data, tmp_path):
    """With pressures_bar, bulk seeds are explored NPT at each pressure (their cell breathes and
    the frames carry the pressure); a non-periodic seed is explored NVT alongside."""
    from ase import Atoms

    Atoms("Cu3", positions=[[0, 0, 0], [0, 0, 2.4], [0, 2.3, 1.2]]).write(tmp_path / "cluster.xyz")
    config = _config(copper_data, tmp_path / "npt", structures=[str(copper_data / "seed.xyz"), str(tmp_path / "cluster.xyz")],
                     pressures_bar=[1.0, 5e4], taup_fs=20.0, taut_fs=10.0, steps=12, sample_every=4)
    explorer = Explorer(config, progress=False)
    explorer.run(stop_after="explore")
    frames = read(tmp_path / "npt" / "iter_000" / "explored.extxyz", ":")
    seed_volume = copper_with_vacancy().get_volume()
    by_kind = {}
    for a in frames:
        by_kind.setdefault((len(a), a.info.get("pressure_bar")), []).append(a)
    assert set(by_kind) == {(3, None), (31, 1.0), (31, 5e4)}  # the cluster NVT only, the bulk at both pressures
    assert all(len(v) == 3 for v in by_kind.values())  # steps 4, 8, 12 (not the seed at step 0)
    assert all(not a.pbc.any() for a in by_kind[(3, None)])
    squeezed = [a.get_volume() for a in by_kind[(31, 5e4)]]
    ambient = [a.get_volume() for a in by_kind[(31, 1.0)]]
    assert max(squeezed) < seed_volume and np.mean(squeezed) < np.mean(ambient)  # 50 kbar compresses


def test_bad_explore_inputs_fail_before_anything_is_written(copper_data, tmp_path):
    """Missing or unreadable inputs, elements the data lacks and unknown labellers are refused
    before the out folder exists."""
    from ase import Atoms

    from nnpot.errors import NNPotError

    (tmp_path / "empty.xyz").write_text("")
    Atoms("Au2", positions=[[0, 0, 0], [0, 0, 2.5]]).write(tmp_path / "gold.xyz")
    cases = [({"data": str(tmp_path / "missing.h5")}, "missing.h5"),
             ({"structures": [str(tmp_path / "empty.xyz")]}, "cannot read"),
             ({"structures": [str(tmp_path / "gold.xyz")]}, "Au do not occur"),
             ({"labeller": "no_such_code"}, "built-in name"),
             ({"rank_by": "min_devi_f"}, "rank_by must be"),
             ({"structures": [str(tmp_path / "cu_molecule.xyz")], "pressures_bar": [1.0]}, "periodic in all three")]
    Atoms("Cu2", positions=[[0, 0, 0], [0, 0, 2.3]]).write(tmp_path / "cu_molecule.xyz")
    for changes, message in cases:
        out = tmp_path / "out"
        with pytest.raises(NNPotError, match=message):
            Explorer(_config(copper_data, out, **changes), progress=False)
        assert not out.exists()


@pytest.mark.parametrize("name", ["active_learning.yaml", "active_learning_ethanol.yaml"])
def test_example_configs_are_valid(name):
    from pathlib import Path

    from nnpot.configio import load_config

    path = Path(__file__).resolve().parents[1] / "examples" / name
    config = load_config(ExploreConfig, str(path)).validate()
    assert config.max_iterations > 1 and config.trust_lo < config.trust_hi


def test_example_seed_script_writes_labelled_start_data(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        import make_seed
    finally:
        sys.path.pop(0)
    make_seed.main("copper", str(tmp_path))
    frames = list(H5Dataset(tmp_path / "start.h5"))
    assert len(frames) == 20 and len(read(tmp_path / "seed.xyz")) == 35
    assert all(np.isfinite(f.forces).all() and f.virial is not None for f in frames)


def test_force_replaces_only_the_explorations_own_files(copper_data, tmp_path):
    """--force never removes the out folder wholesale: the user's files there stay, a user's own
    dataset.h5 is not overwritten, and an input inside the earlier run's files is refused."""
    import shutil

    from nnpot.errors import NNPotError

    out = tmp_path / "al"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    shutil.copy(copper_data / "cu.h5", out / "dataset.h5")  # the user's own file, by the name explore uses
    user_bytes = (out / "dataset.h5").read_bytes()
    with pytest.raises(NNPotError, match="not written by nnpot explore"):
        Explorer(_config(copper_data, out), progress=False, force=True)
    assert (out / "dataset.h5").read_bytes() == user_bytes
    (out / "dataset.h5").unlink()
    first = Explorer(_config(copper_data, out), progress=False)
    first.run(stop_after="train")
    assert (out / "iter_000").is_dir()
    with pytest.raises(NNPotError, match="an input of this exploration"):  # data read from the earlier run's copy
        Explorer(_config(copper_data, out, data=str(out / "dataset.h5")), progress=False, force=True)
    assert (out / "iter_000").is_dir()
    Explorer(_config(copper_data, out), progress=False, force=True)  # a fresh start in the same folder
    assert (out / "notes.txt").read_text() == "mine\n" and not (out / "iter_000").exists()
    assert json.loads((out / "state.json").read_text())["iteration"] == 0


class BrokenInit(EMT):
    def __init__(self, **kwargs):
        raise RuntimeError("licence server unreachable")


class WrongShape(EMT):
    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results["forces"] = self.results["forces"][:-1]


class Exits(EMT):
    def calculate(self, *args, **kwargs):
        import sys

        sys.exit(3)


@pytest.mark.parametrize("name, words", [("BrokenInit", "licence server"), ("WrongShape", "shape"),
                                         ("Exits", "SystemExit")])
def test_a_misbehaving_labeller_fails_its_frames_and_the_loop_goes_on(name, words):
    atoms = [copper_with_vacancy(), copper_with_vacancy()]
    results = Labeller(f"tests.test_explore:{name}").label_all(atoms)
    assert len(results) == 2 and all(r.frame is None and words in r.error for r in results)


def test_unknown_labeller_setting_is_refused():
    from nnpot.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown setting"):
        Labeller("emt", {"encut": 400}).factory()
