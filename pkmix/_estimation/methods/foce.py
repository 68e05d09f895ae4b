"""FOCE without interaction: linearised around each subject's eta mode, with the
residual variance evaluated at eta = 0 (NONMEM METHOD=1)."""

from .base import AbstractMethod, linearized_ofv


class FOCE(AbstractMethod):
    name = "foce"
    interaction = False

    def ofv_from_pieces(self, model, p, eta, subject, opts, omega_inv, logdet_omega):
        return linearized_ofv(model, p, eta, subject, omega_inv, logdet_omega)
