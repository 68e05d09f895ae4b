"""FOCE with interaction (NONMEM METHOD=1 INTERACTION).

OFV_i = l(eta) + log|H~|, H~ = Omega^-1 + sum_j [a_j'a_j/R_j + 1/2 (dR_j/deta)'(dR_j/deta)/R_j^2]
at the eta mode (the expected-information form of 1/2 the eta-Hessian of l). BLQ
records (M3) enter H~ through 1/2 of their exact eta-Hessian, as under Laplace.
"""

import jax

from ..likelihood import blq_m2ll, expected_information, m2ll, pieces
from ..._linalg import spd_logdet
from .base import AbstractMethod


class FOCEI(AbstractMethod):
    name = "focei"
    interaction = True
    supports_blq = True

    def pieces_suffice(self, opts):
        return not opts.has_blq  # the M3 term enters H~ through its exact eta-Hessian

    def ofv_from_pieces(self, model, p, eta, subject, opts, omega_inv, logdet_omega):
        l = m2ll(model, None, eta, subject, opts, omega_inv, logdet_omega, p)
        # log|H~| by Cholesky: NaN (reported as a failed evaluation) if H~ is not SPD.
        return l + spd_logdet(expected_information(p, subject, omega_inv))

    def subject_ofv(self, model, values, eta, subject, opts, omega_inv, logdet_omega):
        if not opts.has_blq:
            return super().subject_ofv(model, values, eta, subject, opts, omega_inv, logdet_omega)
        p = pieces(model, values, eta, subject, opts)
        l = m2ll(model, values, eta, subject, opts, omega_inv, logdet_omega, p)
        H = expected_information(p, subject, omega_inv)
        H = H + 0.5 * jax.jacfwd(jax.jacfwd(lambda e: blq_m2ll(model, values, e, subject, opts)))(eta)
        return l + spd_logdet(H)
