"""Kept for ``examples/trial_simulation/run.py`` until it imports ``pkmix.batch``
(``fit_batch`` moved there, into the public API); nothing in pkmix imports this."""

from .batch import fit_batch as fit_batch  # noqa: F401
from .batch import likelihood_ratio_test as likelihood_ratio_test  # noqa: F401
