"""What an estimation method is: how it approximates a subject's marginal likelihood."""

from __future__ import annotations

import abc

import jax.numpy as jnp

from ..._linalg import cho_solve, cholesky
from ..likelihood import Options, Pieces, pieces


class AbstractMethod(abc.ABC):
    """A method turns one subject's data, parameters and eta mode into that subject's
    contribution to the OFV (-2 log marginal likelihood without 2 pi constants).

    Most methods need only the predictions and their first eta-derivatives at the mode
    (``Pieces``): they define ``ofv_from_pieces``, and the estimator then builds the
    OFV's exact gradient from one second-order pass over the predictions
    (``objective.subject_ofvs_and_jacobian``). A method that needs more (Laplace's exact
    eta-Hessian, the M3 term's) overrides ``subject_ofv`` and ``pieces_suffice``.
    """

    name: str
    interaction: bool  # residual variance evaluated at eta (True) or at eta = 0
    estimates_eta: bool = True  # FO evaluates everything at eta = 0
    supports_blq: bool = False  # M3 needs the conditional likelihood (FOCE-I, Laplace)
    # A per-record likelihood (non-Gaussian data) needs the conditional density itself:
    # Laplace, AGQ, IMP (and SAEM); FO, FOCE and FOCE-I linearise a Gaussian residual.
    supports_likelihood: bool = False

    def __repr__(self) -> str:
        # Stable across processes: part of the exported-program cache's key (_compile).
        return f"{type(self).__name__}()"

    def options(self, has_steady_state, covariate_rule, has_blq=False, has_infusions=True) -> Options:
        return Options(self.interaction, has_steady_state, covariate_rule, has_blq, has_infusions)

    def check_etas(self, n_eta: int) -> None:
        """Raise ValueError when the method cannot take ``n_eta`` etas a subject (AGQ)."""

    def check_model(self, model) -> None:
        """Raise ModelError when the method cannot estimate ``model`` (a likelihood model
        under a method that needs a Gaussian residual)."""
        if model.non_gaussian and not self.supports_likelihood:
            from ..._model.errors import ModelError

            raise ModelError(
                f"method '{self.name}' needs a Gaussian residual error model, and this model's observations "
                f"follow a likelihood ({type(model.error).__name__}): use method='laplace', 'agq' or 'imp'")

    def pieces_suffice(self, opts: Options) -> bool:
        """Whether ``ofv_from_pieces`` gives the whole OFV under these options."""
        return True

    def ofv_from_pieces(self, model, p: Pieces, eta, subject, opts, omega_inv, logdet_omega):
        """The subject's OFV from the predictions and their eta-derivatives ``p`` at the
        mode ``eta`` (differentiable in all of them)."""
        raise NotImplementedError(f"method {self.name!r} defines neither ofv_from_pieces nor subject_ofv")

    def subject_ofv(self, model, values, eta, subject, opts, omega_inv, logdet_omega):
        """The subject's OFV at its eta mode ``eta`` (differentiable in values and eta)."""
        return self.ofv_from_pieces(model, pieces(model, values, eta, subject, opts), eta, subject, opts, omega_inv,
                                    logdet_omega)

    def __repr__(self):
        return self.name


def linearized_ofv(model, p: Pieces, eta, subject, omega_inv, logdet_omega):
    """FO/FOCE: the OFV of the model linearised in eta around ``eta``, with the residual
    variance at eta = 0:  log|C| + r' C^-1 r,  C = G Omega G' + R0,  r = y - f + G eta.

    Computed in eta space with the matrix determinant lemma and Woodbury's identity, so
    the cost is q x q per subject, not records x records.
    """
    obs = subject.obs_mask
    y = model.error.transform(jnp.where(obs, subject.dv, 1.0))
    r = jnp.where(obs, y - p.ft + p.a @ eta, 0.0)
    inv_var = jnp.where(obs, 1.0 / p.var, 0.0)
    G = p.a * obs[:, None]
    M = omega_inv + (G.T * inv_var[None, :]) @ G  # q x q
    chol = cholesky(M)
    logdet_M = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    logdet_C = jnp.sum(jnp.where(obs, jnp.log(p.var), 0.0)) + logdet_omega + logdet_M
    u = G.T @ (inv_var * r)
    w = cho_solve(chol, u)
    quad = jnp.sum(inv_var * r**2) - u @ w
    return logdet_C + quad
