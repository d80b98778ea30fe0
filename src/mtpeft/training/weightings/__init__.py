"""Loss weightings: how the per-task losses of a step become one loss; one file per weighting.

equal, learned_softmax (the study's), uncertainty (Kendall et al.), loss_normalized (the study's
code: previous epoch's mean losses), gradnorm (Chen et al. 2018), famo (Liu et al. 2023).
Options come from ``training.weighting_options``.
"""

from mtpeft.training.weightings import equal, famo, gradnorm, learned_softmax, loss_normalized, uncertainty  # noqa: F401  (registration)
from mtpeft.training.weightings.base import LossWeighting
from mtpeft.training.weightings.registry import WEIGHTINGS, build_weighting

__all__ = ["LossWeighting", "WEIGHTINGS", "build_weighting"]
