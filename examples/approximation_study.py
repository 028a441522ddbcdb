"""Run an approximation study from Python and fit a rate of your own.

    python examples/approximation_study.py [OUT_DIR]

1. The Monte Carlo rate in Barron space (the quick setting, about 15 s on 2 cores): sampled and
   trained two-layer networks against width for d = 2, 10, 100, next to grid interpolation.
2. Your own convergence data: fit_rate gives the log-log slope with a bootstrap interval.
The command-line equivalent of 1 is ``nnpot approx barron-mc --quick --plot barron.png``.
"""

import sys
from pathlib import Path

import numpy as np

from nnpot.approx import barron_mc, fit_rate, study_config

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/approx")
out.mkdir(parents=True, exist_ok=True)

# 1. a study: typed config (quick setting, fewer widths), run, table, JSON and plot
config = study_config("barron-mc", quick=True, overrides=["widths=[16, 64, 256]", "dims=[2, 100]"])
result = barron_mc(config, quick=True)
print(result.table())
result.write_json(out / "barron.json")
print("plot:", result.plot(out / "barron.png"))
for series in result.series:
    if series.label.startswith("sampled"):
        lo, hi = series.fit.slope_ci
        print(f"{series.label}: slope {series.fit.slope:+.3f} in [{lo:+.3f}, {hi:+.3f}], theory -0.5")

# 2. your own measurements, e.g. force RMSE against training-set size (3 seeds each)
frames = np.array([50, 100, 200, 400, 800])
rmse = 0.9 * frames[:, None] ** -0.3 * np.exp(np.random.default_rng(0).normal(0, 0.03, (5, 3)))
fit = fit_rate(frames, rmse)
print(f"your data: error ~ n^{fit.slope:+.3f} (95% CI {fit.slope_ci[0]:+.3f} .. {fit.slope_ci[1]:+.3f})")
