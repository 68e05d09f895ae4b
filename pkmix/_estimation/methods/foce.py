"""FOCE without interaction: linearised around each subject's eta mode, with the
residual variance evaluated at eta = 0 (NONMEM METHOD=1)."""

import jax.numpy as jnp

from ..._linalg import spd_inv
from .base import AbstractMethod, linearized_ofv


class FOCE(AbstractMethod):
    name = "foce"
    interaction = False

    def subject_ofv(self, model, values, eta, subject, opts, omega_inv, logdet_omega):
        omega = spd_inv(omega_inv)
        return linearized_ofv(model, values, eta, subject, opts, omega, omega_inv, logdet_omega)
