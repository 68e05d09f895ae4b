"""Estimation: the population objective, its optimisation and the covariance step.

Layered from the inside out:

* ``likelihood``: one subject's -2 log-likelihood pieces (predictions, their eta
  derivatives, residual variances, the M3 term for BLQ records).
* ``methods``: FO, FOCE, FOCE-I, Laplace: how the pieces make a subject's OFV.
* ``inner``: each subject's eta mode (damped Newton, vmapped over subjects).
* ``objective``: the OFV of the unconstrained parameter vector, its exact gradient
  (implicit-function term for the modes), and ``gradient_program``, what one
  evaluation of the fit's loop computes.
* ``outer``: one L-BFGS step with a backtracking line search (pure functions of a state).
* ``settings``: ``FitSettings`` (tolerances and limits), ``RESULTS`` (why a fit
  stopped, with its message) and ``verdict``.
* ``engine``: ``fit_program``, the one compiled fit of one dataset (optimisation, then
  the covariance step's points, in one bounded loop).
* ``covariance``: R, S and the sandwich on the user's scale (host side).
* ``fit``: ``pkmix.fit`` and ``pkmix.evaluate``, wrappers around the engine
  (``pkmix.batch.fit_batch`` vmaps and shards it over replicates).
"""
