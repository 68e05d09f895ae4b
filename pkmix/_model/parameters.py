"""Declarations of population parameters (THETA, OMEGA, SIGMA) and their values.

A model declares its parameters with these small objects; the estimator works on the
flat vector of the free ones through the transforms in ``pkmix._model.transforms``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Sequence

import jax
import numpy as np

from .errors import ModelError


@dataclass(frozen=True)
class Theta:
    """A fixed effect: initial value, optional bounds, optionally fixed.

    >>> Theta(0.0047, lower=0)          # positive, as NONMEM's (0, 0.0047)
    >>> Theta(0.1, lower=-0.99)         # THETA3 > -0.99
    >>> Theta(1.0, fixed=True)
    """

    init: float
    lower: float = -math.inf
    upper: float = math.inf
    fixed: bool = False


@dataclass(frozen=True)
class Block:
    """A block of correlated etas: ``Block(["eta_cl", "eta_v"], [0.1, 0.01, 0.1])``.

    ``values`` is either the lower triangle by rows (NONMEM's ``$OMEGA BLOCK(2)`` order)
    or the full symmetric matrix. Values are variances and covariances.
    """

    names: Sequence[str]
    values: Sequence
    fixed: bool = False


@dataclass(frozen=True)
class Eta:
    """A single eta's variance, optionally fixed: ``Eta(0.04, fixed=True)``."""

    variance: float
    fixed: bool = False


@dataclass(frozen=True)
class IOV:
    """Inter-occasion variability: one eta per occasion (from the ``occasion`` column),
    all sharing one variance. ``IOV(kappa_cl=0.05, occasion="OCC")``.

    In ``individual`` the name gives the eta of the record's own occasion.
    """

    variances: Mapping[str, float]
    occasion: str = "OCC"
    fixed: bool = False

    def __init__(self, occasion: str = "OCC", fixed: bool = False, **variances: float):
        object.__setattr__(self, "variances", dict(variances))
        object.__setattr__(self, "occasion", occasion)
        object.__setattr__(self, "fixed", fixed)


@dataclass(frozen=True)
class Sigma:
    """A residual-error parameter. ``scale="sd"`` (nlmixr2's add.sd, prop.sd) or
    ``scale="variance"`` (NONMEM's $SIGMA). Reported on the declared scale.
    ``lower``/``upper`` bound it on that scale (default: above 0)."""

    init: float
    scale: str = "sd"
    fixed: bool = False
    lower: float = 0.0
    upper: float = math.inf

    def __post_init__(self):
        if self.scale not in ("sd", "variance"):
            raise ModelError(f"Sigma scale must be 'sd' or 'variance', got {self.scale!r}")


def SD(init: float, fixed: bool = False, *, lower: float = 0.0, upper: float = math.inf) -> Sigma:
    """A residual standard deviation (nlmixr2 style), optionally bounded:
    ``SD(0.1, lower=0.01)``, ``SD(0.2, upper=1)``."""
    return Sigma(init, "sd", fixed, lower, upper)


def Variance(init: float, fixed: bool = False, *, lower: float = 0.0, upper: float = math.inf) -> Sigma:
    """A residual variance (NONMEM's $SIGMA), optionally bounded."""
    return Sigma(init, "variance", fixed, lower, upper)


class ParameterValues(NamedTuple):
    """Values of all population parameters (a pytree the estimator differentiates).

    theta: [n_theta]; omega: [n_eta, n_eta] (variances, between-subject etas);
    iov: [n_iov] (variances); sigma: [n_sigma] (on each Sigma's declared scale).
    """

    theta: jax.Array
    omega: jax.Array
    iov: jax.Array
    sigma: jax.Array


@dataclass(frozen=True)
class ParameterSpec:
    """The parsed parameter declarations of a model."""

    theta_names: tuple[str, ...]
    thetas: tuple[Theta, ...]
    eta_names: tuple[str, ...]
    omega_init: np.ndarray
    omega_fixed: np.ndarray  # bool [n_eta, n_eta]
    omega_structure: np.ndarray  # bool [n_eta, n_eta]: True where a (co)variance is estimated or fixed non-zero
    iov_names: tuple[str, ...]
    iov_init: np.ndarray
    iov_fixed: bool
    occasion_column: str | None
    sigma_names: tuple[str, ...]
    sigmas: tuple[Sigma, ...] = field(default=())

    @property
    def n_eta(self) -> int:
        return len(self.eta_names)

    def initial_values(self) -> ParameterValues:
        import jax.numpy as jnp

        return ParameterValues(
            theta=jnp.asarray([t.init for t in self.thetas], dtype=jnp.float64).reshape(-1),
            omega=jnp.asarray(self.omega_init, dtype=jnp.float64).reshape(self.n_eta, self.n_eta),
            iov=jnp.asarray(self.iov_init, dtype=jnp.float64).reshape(-1),
            sigma=jnp.asarray([s.init for s in self.sigmas], dtype=jnp.float64).reshape(-1),
        )


def _as_theta(name, value) -> Theta:
    if isinstance(value, Theta):
        theta = value
    elif isinstance(value, (int, float)):
        theta = Theta(float(value))
    else:
        raise ModelError(f"theta '{name}': expected a number or pkmix.Theta, got {type(value).__name__}")
    if not math.isfinite(theta.init):
        raise ModelError(f"theta '{name}': initial value {theta.init} is not finite")
    if not theta.lower < theta.upper:
        raise ModelError(f"theta '{name}': lower bound {theta.lower} is not below upper bound {theta.upper}")
    if not (theta.lower < theta.init < theta.upper) and not theta.fixed:
        raise ModelError(
            f"theta '{name}': initial value {theta.init} is outside its bounds ({theta.lower}, {theta.upper})"
        )
    return theta


def _lower_triangle_to_matrix(name_list, values):
    n = len(name_list)
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 2:
        if arr.shape != (n, n):
            raise ModelError(f"OMEGA block {list(name_list)}: matrix is {arr.shape}, expected {(n, n)}")
        if not np.allclose(arr, arr.T):
            raise ModelError(f"OMEGA block {list(name_list)}: matrix is not symmetric")
        return arr
    if arr.size != n * (n + 1) // 2:
        raise ModelError(
            f"OMEGA block {list(name_list)}: {arr.size} values given, a lower triangle of {n} etas "
            f"needs {n * (n + 1) // 2}"
        )
    m = np.zeros((n, n))
    m[np.tril_indices(n)] = arr
    return m + np.tril(m, -1).T


def parse_parameters(theta, omega, sigma, iov) -> ParameterSpec:
    theta = dict(theta or {})
    thetas = tuple(_as_theta(n, v) for n, v in theta.items())

    # OMEGA: a dict (diagonal; values numbers or Eta), a Block, or a list of those.
    blocks: list[tuple[list[str], np.ndarray, bool]] = []
    items = omega if isinstance(omega, (list, tuple)) else [omega] if omega is not None else []
    for item in items:
        if isinstance(item, Block):
            names = list(item.names)
            blocks.append((names, _lower_triangle_to_matrix(names, item.values), item.fixed))
        elif isinstance(item, Mapping):
            for name, value in item.items():
                if isinstance(value, Eta):
                    blocks.append(([name], np.array([[value.variance]], dtype=float), value.fixed))
                elif isinstance(value, (int, float)):
                    blocks.append(([name], np.array([[float(value)]]), False))
                else:
                    raise ModelError(f"omega '{name}': expected a variance or pkmix.Eta, got {type(value).__name__}")
        else:
            raise ModelError(f"omega: expected a dict of variances or pkmix.Block, got {type(item).__name__}")
    eta_names = [n for names, _, _ in blocks for n in names]
    n_eta = len(eta_names)
    omega_init = np.zeros((n_eta, n_eta))
    omega_fixed = np.zeros((n_eta, n_eta), dtype=bool)
    omega_structure = np.zeros((n_eta, n_eta), dtype=bool)
    i = 0
    for names, m, fixed in blocks:
        k = len(names)
        eig = np.linalg.eigvalsh(m)
        if not np.all(np.isfinite(m)) or eig.min() <= 0:
            label = names[0] if k == 1 else "block " + ", ".join(names)
            raise ModelError(f"omega {label}: not positive definite (eigenvalues {np.round(eig, 6).tolist()})")
        omega_init[i:i + k, i:i + k] = m
        omega_fixed[i:i + k, i:i + k] = fixed
        omega_structure[i:i + k, i:i + k] = True
        i += k

    iov_names: tuple[str, ...] = ()
    iov_init = np.zeros(0)
    occasion = None
    iov_fixed = False
    if iov is not None:
        if not isinstance(iov, IOV):
            raise ModelError(f"iov: expected pkmix.IOV, got {type(iov).__name__}")
        iov_names = tuple(iov.variances)
        iov_init = np.array([float(v) for v in iov.variances.values()])
        for n, v in zip(iov_names, iov_init):
            if not v > 0:
                raise ModelError(f"iov '{n}': variance {v} is not positive")
        occasion = iov.occasion
        iov_fixed = iov.fixed

    sigma = dict(sigma or {})
    sigmas = []
    for name, value in sigma.items():
        s = value if isinstance(value, Sigma) else Sigma(float(value)) if isinstance(value, (int, float)) else None
        if s is None:
            raise ModelError(f"sigma '{name}': expected a number or pkmix.Sigma/SD/Variance")
        if not s.init > 0:
            raise ModelError(f"sigma '{name}': initial value {s.init} must be positive")
        if not 0 <= s.lower < s.upper:
            raise ModelError(f"sigma '{name}': bounds ({s.lower}, {s.upper}) must satisfy 0 <= lower < upper")
        if not (s.lower < s.init < s.upper) and not s.fixed:
            raise ModelError(f"sigma '{name}': initial value {s.init} is outside its bounds ({s.lower}, {s.upper})")
        sigmas.append(s)

    names = list(theta) + eta_names + list(iov_names) + list(sigma)
    seen = set()
    for n in names:
        if n in seen:
            raise ModelError(f"parameter name '{n}' is declared twice")
        seen.add(n)
    return ParameterSpec(
        theta_names=tuple(theta),
        thetas=thetas,
        eta_names=tuple(eta_names),
        omega_init=omega_init,
        omega_fixed=omega_fixed,
        omega_structure=omega_structure,
        iov_names=iov_names,
        iov_init=iov_init,
        iov_fixed=iov_fixed,
        occasion_column=occasion,
        sigma_names=tuple(sigma),
        sigmas=tuple(sigmas),
    )
