"""First-order (FO): the model linearised around eta = 0."""

import jax.numpy as jnp

from ..._linalg import spd_inv
from .base import AbstractMethod, linearized_ofv


class FO(AbstractMethod):
    name = "fo"
    interaction = False
    estimates_eta = False

    def subject_ofv(self, model, values, eta, subject, opts, omega_inv, logdet_omega):
        omega = spd_inv(omega_inv)
        return linearized_ofv(model, values, jnp.zeros_like(eta), subject, opts, omega, omega_inv, logdet_omega)
