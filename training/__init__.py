"""nnpot.training: fitting an :class:`~nnpot.potentials.EnergyModel` to labelled data.

:class:`Trainer` runs DeePMD-kit's recipe (:mod:`nnpot.training.config`) on one process or
data-parallel under torchrun (:mod:`nnpot.training.distributed`), with the model's settings
completed from the data (:mod:`nnpot.training.auto_config`). Ensembles train member by member
(:mod:`nnpot.training.ensemble`). The per-element energy re-fit (:mod:`nnpot.training.bias`)
serves the trainer and ``nnpot change-bias``; :mod:`nnpot.training.metrics` and
:mod:`nnpot.training.plots` turn predictions into errors, parity plots and learning curves.
"""

from nnpot.training.bias import bias_is_determined, change_bias, energy_bias_shift
from nnpot.training.config import LossConfig, TrainConfig, load_train_config, parse_duration
from nnpot.training.ensemble import train_ensemble
from nnpot.training.metrics import error_metrics
from nnpot.training.trainer import Trainer, TrainingError

__all__ = ["Trainer", "TrainingError", "TrainConfig", "LossConfig", "load_train_config", "parse_duration",
           "train_ensemble", "energy_bias_shift", "bias_is_determined", "change_bias", "error_metrics"]
