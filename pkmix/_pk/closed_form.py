"""Closed-form linear compartment models (NONMEM ADVAN1-4, 11, 12).

The disposition part (central + 0-2 peripheral compartments) is a linear system
dA/dt = K A whose matrix exponential we write through its eigenvalues and spectral
projectors (Sylvester's formula): exp(K t) = sum_i exp(lambda_i t) P_i. For mammillary
models with every Q > 0 the eigenvalues are real, negative and always distinct (K is
similar to a symmetric arrowhead matrix), so each projector is rank one,
P_i = u_i w_i^T / (w_i^T u_i), with the right and left eigenvectors in closed form:
u_i = (1, k12/(lambda_i + k21), k13/(lambda_i + k31)) and
w_i = (1, k21/(lambda_i + k21), k31/(lambda_i + k31)).

First-order absorption from a depot is handled apart from the eigen-decomposition:
its contribution is a divided difference (e^{a t} - e^{b t})/(a - b) of two rates,
written as t e^{a t} phi1(-(a - b) t) with phi1(x) = expm1(x)/x. That form is exact and
smooth when ka equals a disposition eigenvalue (ka = k), where the textbook formula
is 0/0.

Everything is written on scalars (eigenvalues and eigenvector entries are lists of
scalars, not small arrays): under ``vmap`` over records and subjects every quantity is
then an array over records and subjects, which XLA vectorises well, whereas arrays
with a trailing axis of length 1-4 are slow on CPU.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from .base import AbstractStructure


def phi1(x: Float[Array, "..."]) -> Float[Array, "..."]:
    """expm1(x)/x, smooth through x = 0 (double-where so gradients stay finite)."""
    small = jnp.abs(x) < 1e-6
    safe_x = jnp.where(small, 1.0, x)
    series = 1.0 + x / 2.0 + x * x / 6.0
    return jnp.where(small, series, jnp.expm1(safe_x) / safe_x)


def exp_integral(lam: Float[Array, "..."], dt: Float[Array, ""]) -> Float[Array, "..."]:
    """int_0^dt exp(lam (dt - s)) ds = (e^{lam dt} - 1)/lam, finite at lam = 0."""
    return dt * phi1(lam * dt)


def exp_divided_difference(a, b, dt):
    """(e^{a dt} - e^{b dt})/(a - b) = int_0^dt e^{a (dt-s)} e^{b s} ds, stable as a -> b.

    Written around the larger of the two rates so nothing overflows when they differ
    by a lot, and symmetric in (a, b) so the kink of max/min does not show.
    """
    hi = jnp.maximum(a, b)
    lo = jnp.minimum(a, b)
    return dt * jnp.exp(hi * dt) * phi1(-(hi - lo) * dt)


def _eigen_2(k10, k12, k21):
    # Eigenvalues of [[-(k10+k12), k21], [k12, -k21]]; the discriminant is written as a
    # sum of non-negative terms, and the smaller root through the product, to avoid
    # cancellation when the two rates differ by orders of magnitude.
    s = k10 + k12 + k21
    disc = jnp.sqrt((k10 - k21) ** 2 + k12 * (k12 + 2.0 * k10 + 2.0 * k21))
    lam_fast = -(s + disc) / 2.0
    lam_slow = k10 * k21 / lam_fast
    return [lam_fast, lam_slow]


def _eigen_3(k10, k12, k21, k13, k31):
    # Roots of det(lambda I - K) = lambda^3 + a2 lambda^2 + a1 lambda + a0 (ADVAN11's
    # cubic), by the trigonometric formula, then polished by Newton steps on the cubic
    # because the formula loses digits on the smallest root.
    a2 = k10 + k12 + k13 + k21 + k31
    a1 = k10 * k21 + k10 * k31 + k12 * k31 + k13 * k21 + k21 * k31
    a0 = k10 * k21 * k31
    p = a1 - a2 * a2 / 3.0
    q = 2.0 * a2**3 / 27.0 - a2 * a1 / 3.0 + a0
    p = jnp.minimum(p, -1e-300)  # p < 0 whenever the three roots are real and distinct
    m = 2.0 * jnp.sqrt(-p / 3.0)
    arg = jnp.clip(3.0 * q / (p * m), -1.0, 1.0)
    theta = jnp.arccos(arg) / 3.0
    roots = [m * jnp.cos(theta - 2.0 * math.pi * k / 3.0) - a2 / 3.0 for k in range(3)]
    for _ in range(2):
        roots = [r - (((r + a2) * r + a1) * r + a0) / ((3.0 * r + 2.0 * a2) * r + a1) for r in roots]
    return roots


class LinearCompartmentModel(AbstractStructure):
    """1-, 2- or 3-compartment linear disposition, optionally with a first-order
    absorption depot.

    Compartments (NONMEM numbering): with a depot ``depot``(1), ``central``(2),
    ``peripheral``(3) for two compartments or ``peripheral1``(3), ``peripheral2``(4)
    for three; without a depot the same names from CMT 1.

    Individual parameters (case-insensitive): ``cl``, ``v`` (1-cmt); ``cl``, ``v1``,
    ``q``, ``v2`` (2-cmt); ``cl``, ``v1``, ``q2``, ``v2``, ``q3``, ``v3`` (3-cmt); plus
    ``ka`` with a depot.
    """

    n_disposition: int
    depot: bool

    def __check_init__(self):
        if self.n_disposition not in (1, 2, 3):
            raise ValueError(f"n_disposition must be 1, 2 or 3, got {self.n_disposition}")

    @property
    def compartment_names(self):
        disposition = {
            1: ("central",),
            2: ("central", "peripheral"),
            3: ("central", "peripheral1", "peripheral2"),
        }[self.n_disposition]
        return (("depot",) if self.depot else ()) + disposition

    @property
    def default_dose_compartment(self) -> int:
        return 0

    @property
    def required_parameters(self):
        names = {1: ("cl", "v"), 2: ("cl", "v1", "q", "v2"), 3: ("cl", "v1", "q2", "v2", "q3", "v3")}[
            self.n_disposition
        ]
        return names + (("ka",) if self.depot else ())

    def prepare(self, ip):
        """Eigenvalues ``lam`` of the disposition matrix, the rate constants ``k_in``
        (central to peripheral) and ``k_out`` (back) of each peripheral compartment, and
        ``ka``. (The eigenvectors are a few divisions; ``propagate`` forms them, so that
        only this small set travels through the event engine's scans.)"""
        n = self.n_disposition
        if n == 1:
            k10 = ip["cl"] / ip["v"]
            lam, k_in, k_out = [-k10], [], []
        elif n == 2:
            k10, k12, k21 = ip["cl"] / ip["v1"], ip["q"] / ip["v1"], ip["q"] / ip["v2"]
            lam, k_in, k_out = _eigen_2(k10, k12, k21), [k12], [k21]
        else:
            k10 = ip["cl"] / ip["v1"]
            k12, k21 = ip["q2"] / ip["v1"], ip["q2"] / ip["v2"]
            k13, k31 = ip["q3"] / ip["v1"], ip["q3"] / ip["v3"]
            lam, k_in, k_out = _eigen_3(k10, k12, k21, k13, k31), [k12, k13], [k21, k31]
        ka = ip["ka"] if self.depot else jnp.zeros_like(lam[0])
        return {"lam": lam, "k_in": k_in, "k_out": k_out, "ka": ka}

    def propagate_components(self, state, rates, dt, prepared):
        """``propagate`` on lists of scalars (one per compartment): the form the event
        engine uses, free of small arrays."""
        lam, k_in, k_out, ka = prepared["lam"], prepared["k_in"], prepared["k_out"], prepared["ka"]
        if self.depot:
            a_depot, a_disp = state[0], state[1:]
            r_depot, r_disp = rates[0], rates[1:]
        else:
            a_disp, r_disp = state, rates
        coef, vectors = [], []
        for l in lam:
            # Right (u) and left (w) eigenvectors, central entry 1; P = u w^T / (w^T u).
            ratio = [1.0 / (l + k) for k in k_out]
            u = [k * x for k, x in zip(k_in, ratio)]
            w = [k * x for k, x in zip(k_out, ratio)]
            norm = 1.0 / (1.0 + sum(a * b for a, b in zip(u, w)))
            w = [1.0] + w
            # Along the eigenvector, the amounts decay and the rates accumulate
            # (h = int_0^dt e^{lam s} ds).
            along_a = norm * sum(wb * x for wb, x in zip(w, a_disp))
            along_r = norm * sum(wb * x for wb, x in zip(w, r_disp))
            h = exp_integral(l, dt)
            c = jnp.exp(l * dt) * along_a + h * along_r
            if self.depot:
                # Depot -> central input, the divided difference of e^{lam t} and
                # e^{-ka t}: from the depot's content, and from an infusion into the depot
                # (its content then is R (1 - e^{-ka s})/ka, flowing out at ka times that).
                g = exp_divided_difference(l, -ka, dt)
                c = c + norm * (ka * g * a_depot + (h - g) * r_depot)
            coef.append(c)
            vectors.append(u)
        out = [sum(coef)] + [sum(u[p] * c for u, c in zip(vectors, coef)) for p in range(len(k_in))]
        if self.depot:
            out = [a_depot * jnp.exp(-ka * dt) + r_depot * exp_integral(-ka, dt)] + out
        return out

    def propagate(self, state, rates, t0, dt, prepared):
        del t0  # time-invariant between events
        n = self.n_compartments
        return jnp.stack(self.propagate_components([state[k] for k in range(n)],
                                                   [rates[k] for k in range(n)], dt, prepared))


def one_compartment(*, depot: bool = False) -> LinearCompartmentModel:
    """One compartment (CL, V), IV or (``depot=True``) first-order absorption (KA)."""
    return LinearCompartmentModel(n_disposition=1, depot=depot)


def two_compartment(*, depot: bool = False) -> LinearCompartmentModel:
    """Two compartments (CL, V1, Q, V2), IV or (``depot=True``) first-order absorption."""
    return LinearCompartmentModel(n_disposition=2, depot=depot)


def three_compartment(*, depot: bool = False) -> LinearCompartmentModel:
    """Three compartments (CL, V1, Q2, V2, Q3, V3), IV or with a depot (KA)."""
    return LinearCompartmentModel(n_disposition=3, depot=depot)
