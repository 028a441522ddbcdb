"""nnpot.approx: approximation-error and convergence-rate studies on the shared network core.

Each study is a plain function ``study(config=None, quick=True) -> StudyResult`` with a typed
config dataclass; the result holds the measured errors per series, a fitted log-log slope with
a bootstrap confidence interval (:mod:`nnpot.approx.rates`), the theoretical slope, a table and
a plot. ``nnpot approx STUDY`` runs one from the command line.
"""

from nnpot.approx.barron import BarronConfig, RandomFeaturesConfig, barron_mc, random_features
from nnpot.approx.decomposition import DecompositionConfig, decomposition
from nnpot.approx.depth import DepthConfig, depth_study, yarotsky_square
from nnpot.approx.integrators import IntegratorConfig, integrator_order
from nnpot.approx.learning import LearningCurveConfig, learning_curve
from nnpot.approx.rates import RateFit, fit_rate, fit_with_floor
from nnpot.approx.result import Series, StudyResult

STUDIES = {
    "barron-mc": barron_mc,
    "random-features": random_features,
    "depth": depth_study,
    "integrator-order": integrator_order,
    "learning-curve": learning_curve,
    "decomposition": decomposition,
}

__all__ = [
    "STUDIES",
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
