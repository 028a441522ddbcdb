"""``nnpot md CONFIG.yaml``: a typed MD run configuration and the function that runs it."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import ase.io
import numpy as np
from ase import units
from tqdm.auto import tqdm

from nnpot.configio import load_config
from nnpot.data import H5Dataset
from nnpot.errors import ConfigError
from nnpot.md.ensembles import ENSEMBLES, ensemble_names
from nnpot.md.state import thermalize
from nnpot.potentials.calculator import NNPotCalculator
from nnpot.potentials.evaluator import resolve_device
from nnpot.potentials.modelfile import load_model

if TYPE_CHECKING:
    from nnpot.md.driver import MolecularDynamics

__all__ = ["MDConfig", "prepare_md", "run_md", "summarise", "plot_md", "run_md_from_config"]


@dataclass
class MDConfig:
    structure: str = ""  #: any ASE-readable file, or an nnpot .h5 (frame `frame`)
    frame: int = 0
    model: str = ""  #: .nnp model file, or a DeePMD-kit .dp/.yaml
    ensemble: str = "nve"  #: a name in :data:`nnpot.md.ensembles.ENSEMBLES`: nve, langevin, bussi, nose-hoover, npt
    timestep_fs: float = 0.5
    steps: int = 1000
    temperature_K: float = 300.0  #: initial Maxwell-Boltzmann temperature and thermostat target
    friction_per_fs: float = 0.01  #: Langevin friction
    tau_fs: float = 100.0  #: Bussi / Nose-Hoover time constant
    pressure_bar: float = 1.01325  #: npt: target pressure
    taup_fs: float = 1000.0  #: npt: barostat time constant
    compressibility_per_bar: float = 4.5e-5  #: npt: the barostat's compressibility (water: 4.5e-5 / bar)
    trajectory: str = "md.traj"  #: file name in `output`: .traj, .extxyz or .h5md
    replicate: list[int] = field(default_factory=lambda: [1, 1, 1])  #: e.g. [2, 2, 2] for a supercell
    device: str = "auto"
    dtype: str = "float64"
    skin: float = 2.0
    tabulate: bool = True  #: se_e2_a on CUDA: quintic-table embedding nets (DeePMD-kit's compression), ~1e-12 relative
    seed: int = 0
    output: str = "runs/md"  #: folder for md.traj, md.log, thermo.json and md.png
    loginterval: int = 10

    def validate(self) -> MDConfig:
        """Raise :class:`~nnpot.errors.ConfigError` naming the first bad setting."""

        ensembles = ensemble_names()
        if self.ensemble not in ensembles:
            raise ConfigError(f"ensemble: {self.ensemble!r}; allowed: {', '.join(map(repr, ensembles))}")
        positive = ("timestep_fs", "tau_fs", "taup_fs", "compressibility_per_bar")
        for name in positive:
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value}")
        for name in ("temperature_K", "friction_per_fs", "skin"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number >= 0, got {value}")
        if not math.isfinite(self.pressure_bar):
            raise ConfigError(f"pressure_bar must be a finite number, got {self.pressure_bar}")
        for name in ("steps", "loginterval"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if len(self.replicate) != 3 or any(r < 1 for r in self.replicate):
            raise ConfigError(f"replicate must be three whole numbers >= 1, got {self.replicate}")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"dtype: {self.dtype!r}; allowed: 'float32', 'float64'")
        if not self.structure or not self.model:
            raise ConfigError("'structure' and 'model' are required")
        if not self.trajectory.endswith(TRAJECTORY_SUFFIXES) or "/" in self.trajectory:
            raise ConfigError(f"trajectory: {self.trajectory!r}; give a file name (no folder) ending in "
                              f"{', '.join(TRAJECTORY_SUFFIXES)}")
        return self


#: the trajectory formats the drivers write (ASE's, extended XYZ, H5MD)
TRAJECTORY_SUFFIXES = (".traj", ".extxyz", ".xyz", ".h5md")

#: what ``run_md`` writes into its output folder besides the trajectory
MD_OUTPUTS = ("md.log", "thermo.json", "md.png")


def _structure(config: MDConfig):
    path = Path(config.structure)
    if not path.is_file():
        raise ConfigError(f"structure: {path} is not a file")
    if path.suffix in (".h5", ".hdf5"):
        ds = H5Dataset(path)
        if not -len(ds) <= config.frame < len(ds):
            raise ConfigError(f"frame: {config.frame} is out of range for the {len(ds)} frames of {path}")
        atoms = ds[config.frame].to_atoms()
        atoms.calc = None
    else:
        try:
            atoms = ase.io.read(path, index=config.frame)
        except IndexError:
            raise ConfigError(f"frame: {config.frame} is out of range for {path}") from None
        except Exception as exc:  # ASE raises many types for unreadable files
            raise ConfigError(f"structure: {path} is not a structure file ASE can read: {exc}") from None
    if len(atoms) == 0:
        raise ConfigError(f"structure: {path} (frame {config.frame}) holds no atoms")
    if config.replicate != [1, 1, 1]:
        atoms = atoms.repeat(tuple(config.replicate))
    return atoms


def prepare_md(config: MDConfig, force: bool = False) -> MolecularDynamics:
    """The driver ``config`` describes, on its structure with the model attached (outputs in
    ``config.output``). An output folder that holds an earlier run's files is refused unless
    ``force``; a bad structure stops before any output is written."""
    config.validate()
    out = Path(config.output)
    existing = [name for name in (config.trajectory, *MD_OUTPUTS) if (out / name).exists()]
    if existing and not force:
        raise ConfigError(f"output: {out} already holds {', '.join(existing)}; choose another output folder, or "
                          "give --force to replace them")
    atoms = _structure(config)
    thermalize(atoms, config.temperature_K, config.seed)
    model = load_model(config.model)
    on_cuda = resolve_device(config.device).type == "cuda"  # the CPU table path is no faster than the nets
    tabulate = config.tabulate and on_cuda and model.descriptor.can_tabulate
    atoms.calc = NNPotCalculator(model, device=config.device, dtype=config.dtype, tabulate=tabulate)
    atoms.get_potential_energy()  # a bad structure (elements, overlaps, neighbor overflow) stops before any output
    out.mkdir(parents=True, exist_ok=True)
    return _driver(config, atoms, {"trajectory": str(out / config.trajectory), "logfile": str(out / "md.log"),
                                   "loginterval": config.loginterval, "skin": config.skin})


def _driver(config: MDConfig, atoms, common: dict):

    ensemble = ENSEMBLES[config.ensemble]
    return ensemble.driver(atoms, config.timestep_fs * units.fs, **ensemble.settings(config), **common)


def run_md(config: MDConfig, progress: bool = True, force: bool = False) -> dict:
    """Run the simulation ``config`` describes (:func:`prepare_md`); write ``thermo.json`` beside
    the trajectory and return its summary (:func:`summarise`) with the thermodynamic series."""

    dyn = prepare_md(config, force)
    thermo = []
    dyn.attach(lambda: thermo.append((dyn.get_time() / units.fs, float(dyn.state.energy), float(dyn.state.kinetic_energy()),
                                      float(dyn.state.temperature()))), config.loginterval)
    bar = tqdm(total=config.steps, disable=not progress, unit=" steps")
    t0 = time.perf_counter()
    done = 0
    while done < config.steps:
        n = min(config.loginterval, config.steps - done)
        dyn.run(n)
        done += n
        bar.update(n)
        bar.set_postfix(T=f"{thermo[-1][3]:.0f}K", refresh=False)
    bar.close()
    dyn.close()
    summary = summarise(config, thermo, len(dyn.atoms), time.perf_counter() - t0, dyn.force_fn.evaluator.nlist.n_builds)
    (Path(config.output) / "thermo.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "series"},
                                                                indent=2))
    return summary


def summarise(config: MDConfig, thermo: list[tuple[float, float, float, float]], n_atoms: int, wall: float,
              neighbor_builds: int) -> dict:
    """Speed, mean temperature and the total-energy drift (eV/atom/ps, a linear fit) of a run
    whose ``thermo`` rows are (time fs, potential eV, kinetic eV, temperature K)."""
    t, epot, ekin, temp = (np.array(c) for c in zip(*thermo))
    etot = (epot + ekin) / n_atoms
    slope = float(np.polyfit(t / 1000.0, etot, 1)[0]) if len(t) > 2 else float("nan")
    return {"atoms": n_atoms, "steps": config.steps, "wall_s": wall, "steps_per_s": config.steps / wall,
            "us_per_atom_step": wall / config.steps / n_atoms * 1e6, "mean_T_K": float(temp.mean()),
            "drift_eV_per_atom_per_ps": slope, "neighbor_builds": neighbor_builds, "config": asdict(config),
            "series": {"time_fs": t, "epot_per_atom": epot / n_atoms, "etot_per_atom": etot, "temperature_K": temp}}


def plot_md(summary: dict, png: str | Path) -> Path:
    """Energy change and temperature against time (PNG) from :func:`run_md`'s summary."""
    s = summary["series"]
    _plot(s["time_fs"], s["epot_per_atom"], s["etot_per_atom"], s["temperature_K"], Path(png))
    return Path(png)


def _plot(t, epot, etot, temp, png: Path) -> None:
    import matplotlib  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it

    fig, axes = plt.subplots(2, 1, figsize=(7, 5), dpi=120, sharex=True)
    axes[0].plot(t, (etot - etot[0]) * 1e3, label="total")
    axes[0].plot(t, (epot - epot[0]) * 1e3, label="potential", alpha=0.7)
    axes[0].set_ylabel("energy change (meV/atom)")
    axes[0].legend()
    axes[1].plot(t, temp, color="C3")
    axes[1].set_ylabel("temperature (K)")
    axes[1].set_xlabel("time (fs)")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def run_md_from_config(path: str, overrides: list[str] | None = None, progress: bool = True,
                       force: bool = False) -> dict:
    """Read a YAML config (with ``key=value`` overrides), run it and plot it."""
    config = load_config(MDConfig, path, overrides or ())
    summary = run_md(config, progress=progress, force=force)
    plot_md(summary, Path(config.output) / "md.png")
    return summary
