"""nnpot.explore: building the training set by active learning (``nnpot explore``).

An ensemble (:mod:`nnpot.potentials.ensemble`) explores with MD; frames where its members
disagree (DP-GEN's trust window, :mod:`nnpot.explore.selection`) are labelled by a reference
method through any ASE calculator (:mod:`nnpot.explore.labelling`), appended to the dataset
with their provenance, and the ensemble is fine-tuned (:mod:`nnpot.explore.loop`). It sits
above training and MD and uses only their public APIs.
"""

from nnpot.explore.config import ExploreConfig
from nnpot.explore.labelling import Labeller
from nnpot.explore.loop import Explorer

__all__ = ["ExploreConfig", "Explorer", "Labeller"]
