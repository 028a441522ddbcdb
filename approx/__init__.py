"""nnpot.approx: approximation-error and convergence-rate studies on the shared network core.

Each study is a plain function ``study(config=None, quick=True) -> StudyResult`` with a typed
config dataclass; the result holds the measured errors per series, a fitted log-log slope with
a bootstrap confidence interval (:mod:`nnpot.approx.rates`), the theoretical slope, a table and
a plot. ``nnpot approx STUDY`` runs one from the command line.
"""

import dataclasses
from typing import Any

from nnpot.approx.barron import BarronConfig, RandomFeaturesConfig, barron_mc, random_features
from nnpot.approx.decomposition import DecompositionConfig, decomposition
from nnpot.approx.depth import DepthConfig, depth_study, yarotsky_square
from nnpot.approx.integrators import IntegratorConfig, integrator_order
from nnpot.approx.learning import LearningCurveConfig, learning_curve
from nnpot.approx.rates import RateFit, fit_rate, fit_with_floor
from nnpot.approx.result import Series, StudyResult
from nnpot.configio import load_config
from nnpot.errors import ConfigError

CONFIGS = {
    "barron-mc": BarronConfig,
    "random-features": RandomFeaturesConfig,
    "depth": DepthConfig,
    "integrator-order": IntegratorConfig,
    "learning-curve": LearningCurveConfig,
    "decomposition": DecompositionConfig,
}

STUDIES = {
    "barron-mc": barron_mc,
    "random-features": random_features,
    "depth": depth_study,
    "integrator-order": integrator_order,
    "learning-curve": learning_curve,
    "decomposition": decomposition,
}


def study_config(study: str, quick: bool = False, overrides: list[str] | None = None) -> Any:
    """The typed config of ``study`` (its quick or full setting) with ``KEY=VALUE`` overrides,
    each value read as YAML (``widths=[16, 64]``, ``steps=500``, ``water_model=model.nnp``) and
    checked against the field's type like every other nnpot config."""

    cls = CONFIGS[study]
    tree = dataclasses.asdict(cls.quick() if quick else cls())
    for item in overrides or []:
        if "=" not in item or item.partition("=")[0].strip() not in tree:
            raise ConfigError(f"{study}: cannot set {item!r}; the config keys are {', '.join(sorted(tree))}")
    return load_config(cls, overrides=overrides or (), base=tree)


__all__ = [
    "CONFIGS",
    "STUDIES",
    "study_config",
    "BarronConfig",
    "RandomFeaturesConfig",
    "DepthConfig",
    "DecompositionConfig",
    "decomposition",
    "IntegratorConfig",
    "LearningCurveConfig",
    "learning_curve",
    "barron_mc",
    "random_features",
    "depth_study",
    "yarotsky_square",
    "integrator_order",
    "RateFit",
    "fit_rate",
    "fit_with_floor",
    "Series",
    "StudyResult",
]
