"""Batched Langevin NVT of several water boxes at once in torch-sim, with an nnpot model exported
to metatomic. torch-sim keeps the whole batch on the device between steps.

    nnpot convert runs/water/model.nnp -o water.pt --format metatomic
    python examples/torchsim_nvt.py water.pt --steps 2000 [--device cuda]

Needs Python >= 3.12 and ``pip install torch-sim-atomistic metatomic-torchsim`` (nnpot itself is
not needed to run the exported file). Prints the temperature of each box.
"""

from __future__ import annotations

import argparse

import torch
import torch_sim as ts
from metatomic_torchsim import MetatomicModel

from nnpot.bundled import bundled_dataset
from nnpot.data import H5Dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a metatomic file (nnpot convert ... --format metatomic)")
    ap.add_argument("--boxes", type=int, default=4, help="water boxes in the batch (frames of the bundled data)")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--timestep-fs", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=300.0, help="K")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    data = H5Dataset(bundled_dataset("water"))
    boxes = [data[i * (len(data) // args.boxes)].to_atoms() for i in range(args.boxes)]
    model = MetatomicModel(args.model, device=args.device)
    final = ts.integrate(system=boxes, model=model, integrator=ts.Integrator.nvt_langevin, n_steps=args.steps,
                         temperature=args.temperature, timestep=args.timestep_fs * 1e-3, pbar=True)  # ps
    temperature = ts.quantities.calc_temperature(masses=final.masses, momenta=final.momenta,
                                                 system_idx=final.system_idx)
    for k, t in enumerate(temperature.tolist()):
        print(f"box {k}: {len(boxes[k])} atoms, T = {t:.0f} K after {args.steps} steps")


if __name__ == "__main__":
    main()
