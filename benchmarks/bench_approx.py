"""The approximation studies in their full setting: one JSON and one PNG per study, and a summary
table (every series' fitted slope, its 95% interval, the theory slope) with wall times.

    python benchmarks/bench_approx.py                      # all studies except learning-curve
    python benchmarks/bench_approx.py --studies depth barron-mc
    python benchmarks/bench_approx.py --studies integrator-order --model runs/water/best.nnp

Results go to benchmarks/results/approx/ (``--out``): STUDY.json, STUDY.png and summary.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from nnpot.approx import STUDIES, study_config
from nnpot.atomic import atomic_path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ["depth", "barron-mc", "random-features", "decomposition", "integrator-order"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", nargs="+", default=DEFAULT, choices=list(STUDIES))
    ap.add_argument("--quick", action="store_true", help="the quick settings (a smoke run)")
    ap.add_argument("--model", help="integrator-order: trained .nnp model for the water series")
    ap.add_argument("--set", action="append", default=[], metavar="STUDY.KEY=VALUE",
                    help="override one study's config field, e.g. --set learning-curve.steps=4000")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "approx"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    for study in args.studies:
        overrides = [item.split(".", 1)[1] for item in args.set if item.startswith(study + ".")]
        if study == "integrator-order" and args.model:
            overrides.append(f"water_model={args.model}")
        config = study_config(study, args.quick, overrides)
        print(f"== {study} ({'quick' if args.quick else 'full'} setting)", flush=True)
        result = STUDIES[study](config, quick=args.quick)
        print(result.table(), flush=True)
        result.write_json(out / f"{study}.json")
        result.plot(out / f"{study}.png")
        summary[study] = {
            "wall_s": result.wall_s, "quick": args.quick, "overrides": overrides,
            "machine": f"{platform.node()} {torch.get_num_threads()} torch threads",
            "series": [{"label": s.label, "slope": s.fit.slope, "slope_ci": list(s.fit.slope_ci),
                        "theory_slope": s.theory_slope, "metric": s.metric} for s in result.series],
            "notes": result.notes}
        with atomic_path(summary_path) as tmp:
            tmp.write_text(json.dumps(summary, indent=2))
    print(f"\n{'study':18s} {'series':58s} {'slope':>7s} {'95% CI':>17s} {'theory':>7s} {'wall s':>7s}")
    for study, entry in summary.items():
        for k, s in enumerate(entry["series"]):
            theory = "" if s["theory_slope"] is None else f"{s['theory_slope']:+.3f}"
            wall = f"{entry['wall_s']:.0f}" if k == 0 else ""
            print(f"{study if k == 0 else '':18s} {s['label'][:58]:58s} {s['slope']:+7.3f} "
                  f"[{s['slope_ci'][0]:+.3f}, {s['slope_ci'][1]:+.3f}] {theory:>7s} {wall:>7s}")
    print(f"written: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
