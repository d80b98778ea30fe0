"""Kept so that ``from mtpeft.training.weighting import ...`` (older code, branches in flight) still
works; the weightings live in ``mtpeft.training.weightings``, one file each."""

from mtpeft.training.weightings import WEIGHTINGS, LossWeighting, build_weighting  # noqa: F401
