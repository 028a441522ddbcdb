"""The result of a convergence study: measured errors per series, fitted rates, theory, plot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nnpot.approx.rates import RateFit, fit_rate
from nnpot.atomic import atomic_path

__all__ = ["Series", "StudyResult"]


@dataclass
class Series:
    """One curve: errors at each parameter value, over seeds, with its fitted and theoretical rate."""

    label: str
    params: list[float]
    errors: list[list[float]]  #: [len(params)][n_seeds]
    theory_slope: float | None
    drop: int = 0  #: leading points declared pre-asymptotic
    metric: str = "RMSE"
    fit: RateFit | None = None
    xlabel: str | None = None  #: this series' x axis when it differs from the study's; one plot panel per x axis

    def fit_rate(self) -> RateFit:
        self.fit = fit_rate(np.array(self.params)[:, None] * np.ones((1, len(self.errors[0]))),
                            np.array(self.errors), drop=self.drop, metric=self.metric)
        return self.fit

    def to_dict(self) -> dict:
        e = np.array(self.errors)
        return {"label": self.label, "params": self.params, "error_mean": e.mean(1).tolist(),
                "error_std": e.std(1).tolist(), "errors": self.errors, "theory_slope": self.theory_slope,
                "drop": self.drop, "metric": self.metric, "xlabel": self.xlabel,
                "fit": self.fit.to_dict() if self.fit else None}


@dataclass
class StudyResult:
    study: str
    parameter: str  #: what the x axis is ("width m", "samples n", "1/dt", ...)
    series: list[Series]
    wall_s: float = 0.0
    quick: bool = True
    notes: dict = field(default_factory=dict)

    @property
    def primary(self) -> Series:
        return self.series[0]

    def to_dict(self) -> dict:
        p = self.primary
        return {"study": self.study, "parameter": self.parameter, "quick": self.quick, "wall_s": self.wall_s,
                "slope": p.fit.slope, "slope_ci": list(p.fit.slope_ci), "theory_slope": p.theory_slope,
                "metric": p.metric, "series": [s.to_dict() for s in self.series], "notes": self.notes}

    def table(self) -> str:
        lines = [f"study {self.study} ({'quick' if self.quick else 'full'} setting, {self.wall_s:.1f} s)"]
        for s in self.series:
            e = np.array(s.errors)
            lines.append(f"  {s.label}: {s.metric} against {s.xlabel or self.parameter}")
            for k, (x, m, sd) in enumerate(zip(s.params, e.mean(1), e.std(1))):
                mark = "  (pre-asymptotic, not fitted)" if k < s.drop else ""
                lines.append(f"    {x:>12.6g}   {m:.4e} +- {sd:.1e}{mark}")
            theory = "n/a" if s.theory_slope is None else f"{s.theory_slope:+.3f}"
            lines.append(f"    slope {s.fit.slope:+.3f}  95% CI [{s.fit.slope_ci[0]:+.3f}, {s.fit.slope_ci[1]:+.3f}]"
                         f"  theory {theory}")
        return "\n".join(lines)

    def write_json(self, path: str | Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2))

    def plot(self, path: str | Path) -> Path:
        import matplotlib  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # lazy: matplotlib adds ~0.4 s of start-up; only plots need it

        panels: dict[str, list[Series]] = {}
        for s in self.series:
            panels.setdefault(s.xlabel or self.parameter, []).append(s)
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), dpi=120, squeeze=False)
        k = 0
        for ax, (xlabel, group) in zip(axes[0], panels.items()):
            for s in group:
                x, e = np.array(s.params), np.array(s.errors)
                ax.errorbar(x, e.mean(1), yerr=e.std(1), fmt="o", color=f"C{k}", ms=4,
                            label=f"{s.label}: slope {s.fit.slope:+.2f}")
                xs = x[s.drop:]
                ax.plot(xs, s.fit.prefactor * xs ** s.fit.slope, "-", color=f"C{k}", lw=1)
                if s.theory_slope is not None:
                    x0, y0 = xs[0], s.fit.prefactor * xs[0] ** s.fit.slope
                    ax.plot(xs, y0 * (xs / x0) ** s.theory_slope, "--", color=f"C{k}", lw=0.8, alpha=0.7)
                k += 1
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(group[0].metric)
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3, which="both")
        fig.suptitle(f"{self.study}  (dashed: theory)", fontsize=10)
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        return Path(path)
