"""First-order (FO): the model linearised around eta = 0."""

import jax.numpy as jnp

from .base import AbstractMethod, linearized_ofv


class FO(AbstractMethod):
    name = "fo"
    interaction = False
    estimates_eta = False

    def ofv_from_pieces(self, model, p, eta, subject, opts, omega_inv, logdet_omega):
        return linearized_ofv(model, p, jnp.zeros_like(eta), subject, omega_inv, logdet_omega)
