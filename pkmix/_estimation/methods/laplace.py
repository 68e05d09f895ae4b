"""Laplace (NONMEM METHOD=1 LAPLACIAN INTERACTION): OFV_i = l(eta) + log|1/2 d2l/deta2|
at the mode, with the exact eta-Hessian (needed for M3 BLQ and non-Gaussian terms)."""

import jax

from ..likelihood import m2ll
from ..._linalg import spd_logdet
from .base import AbstractMethod


class Laplace(AbstractMethod):
    name = "laplace"
    interaction = True
    supports_blq = True
    supports_likelihood = True

    def pieces_suffice(self, opts):
        return False  # the OFV needs the exact eta-Hessian of l, not only first derivatives

    def subject_ofv(self, model, values, eta, subject, opts, omega_inv, logdet_omega):
        def l_fn(e):
            return m2ll(model, values, e, subject, opts, omega_inv, logdet_omega)

        H = 0.5 * jax.jacfwd(jax.jacfwd(l_fn))(eta)
        # NaN (a failed evaluation) when the eta-Hessian is not positive definite.
        return l_fn(eta) + spd_logdet(H)
