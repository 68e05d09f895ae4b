"""Closed-form linear compartment models (NONMEM ADVAN1-4, 11, 12).

The disposition part (central + 0-2 peripheral compartments) is a linear system
dA/dt = K A whose matrix exponential we write through its eigenvalues and spectral
projectors (Sylvester's formula): exp(K t) = sum_i exp(lambda_i t) P_i. For mammillary
models with every Q > 0 the eigenvalues are real, negative and always distinct (K is
similar to a symmetric arrowhead matrix), so the projectors are well defined.

First-order absorption from a depot is handled apart from the eigen-decomposition:
its contribution is a divided difference (e^{a t} - e^{b t})/(a - b) of two rates,
written as t e^{a t} phi1(-(a - b) t) with phi1(x) = expm1(x)/x. That form is exact and
smooth when ka equals a disposition eigenvalue (ka = k), where the textbook formula
is 0/0.
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
    return jnp.stack([lam_fast, lam_slow])


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
    roots = jnp.stack([m * jnp.cos(theta - 2.0 * math.pi * k / 3.0) for k in range(3)]) - a2 / 3.0
    for _ in range(2):
        f = ((roots + a2) * roots + a1) * roots + a0
        fp = (3.0 * roots + 2.0 * a2) * roots + a1
        roots = roots - f / fp
    return roots


def _projectors(K, lam):
    """Spectral projectors P_i = prod_{j != i} (K - lam_j I)/(lam_i - lam_j)."""
    n = lam.shape[0]
    eye = jnp.eye(n, dtype=K.dtype)
    projectors = []
    for i in range(n):
        P = eye
        for j in range(n):
            if j != i:
                P = P @ (K - lam[j] * eye) / (lam[i] - lam[j])
        projectors.append(P)
    return jnp.stack(projectors)


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
        n = self.n_disposition
        if n == 1:
            k10 = ip["cl"] / ip["v"]
            K = -k10.reshape(1, 1)
            lam = -k10.reshape(1)
            P = jnp.ones((1, 1, 1), dtype=K.dtype)
        elif n == 2:
            k10, k12, k21 = ip["cl"] / ip["v1"], ip["q"] / ip["v1"], ip["q"] / ip["v2"]
            K = jnp.array([[-(k10 + k12), k21], [k12, -k21]])
            lam = _eigen_2(k10, k12, k21)
            P = _projectors(K, lam)
        else:
            k10 = ip["cl"] / ip["v1"]
            k12, k21 = ip["q2"] / ip["v1"], ip["q2"] / ip["v2"]
            k13, k31 = ip["q3"] / ip["v1"], ip["q3"] / ip["v3"]
            K = jnp.array([[-(k10 + k12 + k13), k21, k31], [k12, -k21, 0.0], [k13, 0.0, -k31]])
            lam = _eigen_3(k10, k12, k21, k13, k31)
            P = _projectors(K, lam)
        ka = ip["ka"] if self.depot else jnp.zeros((), dtype=lam.dtype)
        return {"lam": lam, "P": P, "ka": ka}

    def propagate(self, state, rates, t0, dt, prepared):
        del t0  # time-invariant between events
        lam, P, ka = prepared["lam"], prepared["P"], prepared["ka"]
        if self.depot:
            a_depot, a_disp = state[0], state[1:]
            r_depot, r_disp = rates[0], rates[1:]
        else:
            a_disp, r_disp = state, rates
        decay = jnp.exp(lam * dt)  # [n]
        h = exp_integral(lam, dt)  # zero-order input integrals
        # sum_i P_i (e^{lam_i dt} A + h_i R)
        new_disp = jnp.einsum("i,ijk,k->j", decay, P, a_disp) + jnp.einsum("i,ijk,k->j", h, P, r_disp)
        if not self.depot:
            return new_disp
        # Depot -> central input, the divided difference of e^{lam_i t} and e^{-ka t}.
        g = exp_divided_difference(lam, -ka, dt)
        # Amount entering from the depot's initial content, and from an infusion into the
        # depot (its content then is R (1 - e^{-ka s})/ka, flowing out at ka times that).
        weight = ka * a_depot * g + r_depot * (h - g)
        new_disp = new_disp + jnp.einsum("i,ij->j", weight, P[:, :, 0])
        new_depot = a_depot * jnp.exp(-ka * dt) + r_depot * exp_integral(-ka, dt)
        return jnp.concatenate([new_depot[None], new_disp])


def one_compartment(*, depot: bool = False) -> LinearCompartmentModel:
    """One compartment (CL, V), IV or (``depot=True``) first-order absorption (KA)."""
    return LinearCompartmentModel(n_disposition=1, depot=depot)


def two_compartment(*, depot: bool = False) -> LinearCompartmentModel:
    """Two compartments (CL, V1, Q, V2), IV or (``depot=True``) first-order absorption."""
    return LinearCompartmentModel(n_disposition=2, depot=depot)


def three_compartment(*, depot: bool = False) -> LinearCompartmentModel:
    """Three compartments (CL, V1, Q2, V2, Q3, V3), IV or with a depot (KA)."""
    return LinearCompartmentModel(n_disposition=3, depot=depot)
