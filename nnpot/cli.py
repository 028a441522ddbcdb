"""The ``nnpot`` command line. It parses arguments and delegates; no physics lives here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from nnpot import __version__
from nnpot.errors import NNPotError

__all__ = ["main", "build_parser"]


def _data_convert(args) -> int:
    from nnpot.data import convert

    n = convert(args.sources, args.output, append=args.append, energy_unit=args.energy_unit, progress=not args.quiet)
    print(f"{'appended' if args.append else 'wrote'} {n} frames to {args.output}")
    return 0


def _data_info(args) -> int:
    from nnpot.data.stats import dataset_info

    info = dataset_info(args.file, rcut=args.rcut, max_frames=args.max_frames)
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
    return 0


def _data_split(args) -> int:
    from nnpot.data import split

    names = args.names or (["train", "valid"] if len(args.fractions) == 2 else [f"part{k}" for k in range(len(args.fractions))])
    stem = Path(args.file)
    outputs = [stem.with_name(f"{stem.stem}.{name}.h5") for name in names]
    counts = split(args.file, args.fractions, outputs, seed=args.seed)
    for out, n in zip(outputs, counts):
        print(f"{out}: {n} frames")
    return 0


def _data_export(args) -> int:
    from nnpot.data import H5Dataset, write_deepmd, write_extxyz

    if args.format == "deepmd":
        systems = write_deepmd(H5Dataset(args.file), args.output, type_map=args.type_map)
        print(f"wrote {len(systems)} DeePMD-kit system(s) under {args.output}")
        return 0
    n = write_extxyz(H5Dataset(args.file), args.output)
    print(f"wrote {n} frames to {args.output}")
    return 0


def _train(args) -> int:
    from nnpot.potentials.train import Trainer
    from nnpot.potentials.train_config import load_train_config

    out = Path(args.out)
    if args.resume:
        out = Path(args.resume)
        config = load_train_config(str(out / "config.yaml"))
    else:
        config = load_train_config(args.config, args.set, {"data": args.data, "valid_data": args.valid_data,
                                                           "max_time": args.max_time})
    trainer = Trainer(config, out, resume=bool(args.resume), progress=not args.quiet)
    path = trainer.run()
    if not trainer.dist.main:
        return 0
    metrics = json.loads((out / "final_metrics.json").read_text())
    print(f"model: {path}  (best on validation: {out / 'best.nnp'})")
    print(f"validation: energy RMSE {metrics['energy_rmse_per_atom'] * 1e3:.2f} meV/atom, "
          f"force RMSE {metrics['force_rmse'] * 1e3:.1f} meV/A on {metrics['frames']} frames")
    return 0


def _test(args) -> int:
    from nnpot.data import H5Dataset
    from nnpot.potentials.calculator import resolve_device
    from nnpot.potentials.evaluate import error_metrics, parity_plots, predict
    from nnpot.potentials.modelfile import load_model

    model = load_model(args.model, device=resolve_device(args.device))
    ds = H5Dataset(args.data)
    frames = list(ds) if args.max_frames is None else [ds[i] for i in range(min(args.max_frames, len(ds)))]
    pred = predict(model, frames, batch_size=args.batch_size, progress=not args.quiet)
    metrics = error_metrics(pred)
    print(f"{args.data}: {metrics['frames']} frames, {metrics['atoms']} atoms")
    print(f"energy per atom  RMSE {metrics['energy_rmse_per_atom'] * 1e3:9.3f} meV   MAE {metrics['energy_mae_per_atom'] * 1e3:9.3f} meV")
    print(f"force component  RMSE {metrics['force_rmse'] * 1e3:9.3f} meV/A MAE {metrics['force_mae'] * 1e3:9.3f} meV/A")
    for el, v in metrics["force_rmse_per_element"].items():
        print(f"  force RMSE on {el:2s}   {v * 1e3:9.3f} meV/A")
    if "virial_rmse_per_atom" in metrics:
        print(f"virial per atom  RMSE {metrics['virial_rmse_per_atom'] * 1e3:9.3f} meV")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
    if args.plot:
        for p in parity_plots(pred, args.plot, title=Path(args.model).name):
            print(f"plot: {p}")
    return 0


def _md(args) -> int:
    from nnpot.md.run_config import run_md_from_config

    run_md_from_config(args.config, args.set, progress=not args.quiet)
    return 0


def _approx(args) -> int:
    import torch

    from nnpot.approx import STUDIES, study_config

    torch.set_num_threads(max(1, args.threads))
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

    data = sub.add_parser("data", help="convert, inspect and split datasets",
                          description="Work with nnpot's HDF5 dataset format.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = dsub.add_parser("convert", help="convert and merge sources into one HDF5 file",
                        description="Sources: DeePMD-kit npy systems (folders), any ASE-readable file "
                        "(extxyz, ...), ASE databases (.db), MD17-style .npz, nnpot .h5.")
    p.add_argument("sources", nargs="+", help="files or folders to read")
    p.add_argument("-o", "--output", required=True, help="output .h5 file")
    p.add_argument("--append", action="store_true", help="add to an existing output file")
    p.add_argument("--energy-unit", choices=["eV", "kcal/mol", "Hartree"], help="unit of .npz energies (default eV)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_data_convert)
    p = dsub.add_parser("info", help="frames, elements, label statistics, neighbor counts")
    p.add_argument("file")
    p.add_argument("--rcut", type=float, help="also count neighbors within this radius (Angstrom) to choose sel")
    p.add_argument("--max-frames", type=int, default=200, help="frames sampled for force/neighbor statistics")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_data_info)
    p = dsub.add_parser("split", help="split a file at random into parts")
    p.add_argument("file")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.8, 0.2], help="relative sizes (default 0.8 0.2)")
    p.add_argument("--names", nargs="+", help="part names (default train valid); output FILE.NAME.h5")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_data_split)
    p = dsub.add_parser("export", help="write an HDF5 dataset as extended XYZ or DeePMD-kit npy systems")
    p.add_argument("file")
    p.add_argument("-o", "--output", required=True, help="output .xyz/.extxyz file, or a folder for --format deepmd")
    p.add_argument("--format", choices=["extxyz", "deepmd"], default="extxyz")
    p.add_argument("--type-map", nargs="+", help="element order of DeePMD-kit types (default: sorted symbols)")
    p.set_defaults(func=_data_export)

    p = sub.add_parser("train", help="train a potential on an HDF5 dataset",
                       description="Train an se_e2_a or e3nn potential. With only --data every default applies "
                       "(DeePMD-kit's water recipe; 20%% of the file held out for validation).")
    p.add_argument("config", nargs="?", help="YAML/JSON training config (optional)")
    p.add_argument("--data", help="training HDF5 file (overrides the config's data)")
    p.add_argument("--valid-data", help="validation HDF5 file (default: split off --data)")
    p.add_argument("--out", default="runs/train", help="output folder (default runs/train)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, dotted for nested keys: --set model.fitting.neuron=[120,120]")
    p.add_argument("--max-time", help="wall-clock budget, e.g. 10m or 2h; the learning rate decays over it")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last good checkpoint")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)

    p = sub.add_parser("test", help="evaluate a model on a dataset: RMSE/MAE tables and parity plots")
    p.add_argument("-m", "--model", required=True, help="model file (.nnp)")
    p.add_argument("-d", "--data", required=True, help="HDF5 dataset")
    p.add_argument("--json", help="write the metrics to this JSON file")
    p.add_argument("--plot", metavar="DIR", help="write parity plots (PNG) into DIR")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-frames", type=int, help="evaluate only the first N frames")
    p.add_argument("--device", default="auto")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_test)

    p = sub.add_parser("approx", help="approximation-error and convergence-rate studies",
                       description="Measure an error against width, depth, samples or time step, fit the "
                       "log-log slope with a bootstrap 95%% interval, and compare it with theory.")
    p.add_argument("study", choices=["barron-mc", "random-features", "depth", "decomposition", "integrator-order",
                                          "learning-curve"])
    p.add_argument("--data", help="learning-curve: your HDF5 dataset (default: the bundled water data)")
    p.add_argument("--descriptor", choices=["se_e2_a", "e3nn"],
                   help="learning-curve: the descriptor of the potentials trained (default se_e2_a)")
    p.add_argument("--model", help="integrator-order: a trained .nnp model for the water series "
                   "(default: a small random-weight model)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the study's config, e.g. --set widths=[16,64] --set seeds=2")
    p.add_argument("--quick", action="store_true", help="the small setting (about a minute on 2 cores)")
    p.add_argument("--json", help="write the table, slope, slope_ci and theory_slope as JSON")
    p.add_argument("--plot", help="write the log-log plot with theory lines (PNG)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.set_defaults(func=_approx)

    p = sub.add_parser("md", help="run molecular dynamics from a YAML config")
    p.add_argument("config", help="YAML config: structure, model, ensemble, steps, output")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_md)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except NNPotError as exc:
        print(f"nnpot: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nnpot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
