"""``FitResult``: estimates, uncertainty, diagnostics and timing of a fit or evaluation."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field

import jax
import numpy as np
import pandas as pd

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class FitResult:
    """What a fit returns. The contract (DESIGN.md): ``.ofv``, ``.theta``, ``.omega``,
    ``.sigma``, ``.se``, ``.etas``, ``.table()``, ``.to_json(path)``, a readable print."""

    model_name: str
    method: str
    n_subjects: int
    n_observations: int
    ofv: float
    theta: dict
    omega: pd.DataFrame  # variances/covariances, rows and columns by eta name
    iov: dict
    sigma: dict
    se: dict
    rse_percent: dict
    covariance_matrix: pd.DataFrame | None
    correlation: pd.DataFrame | None
    condition_number: float | None
    covariance_message: str
    etas: pd.DataFrame
    subject_ofv: pd.DataFrame
    shrinkage_percent: dict
    epsilon_shrinkage_percent: float | None
    converged: bool
    message: str
    iterations: int
    timing: dict
    device: str
    n_estimated: int
    inner_converged: np.ndarray
    gradient: np.ndarray | None = None
    _table: pd.DataFrame | None = field(default=None, repr=False)
    model: object = field(default=None, repr=False)
    dataset: object = field(default=None, repr=False)
    values: object = field(default=None, repr=False)
    # The fit's iterations: iteration, ofv and every parameter by name (pkmix.fit; None
    # for evaluate and results read back from a run folder).
    history: pd.DataFrame | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ summaries
    @property
    def minus2ll(self) -> float:
        """-2 log-likelihood with the constant n log(2 pi), n the Gaussian observations
        (a likelihood record's term, ``pkmix.bernoulli`` ..., has all its constants)."""
        error = getattr(self.model, "error", None)
        if error is None or not error.non_gaussian or self.dataset is None:
            return self.ofv + self.n_observations * LOG_2PI
        return self.ofv + error.gaussian_observations(self.dataset.frame) * LOG_2PI

    @property
    def estimated(self) -> bool:
        """Whether this is a fit (False: ``pkmix.evaluate``, which has no covariance step
        and reports ``iterations = 0``)."""
        return self.covariance_message != "not requested" or self.iterations > 0 or self.gradient is not None

    @property
    def aic(self) -> float:
        return self.minus2ll + 2 * self.n_estimated

    @property
    def bic(self) -> float:
        return self.minus2ll + self.n_estimated * math.log(max(self.n_observations, 1))

    def table(self) -> pd.DataFrame:
        """One row per record: ID, TIME, DV, PRED, IPRED, RES, IRES, WRES, CWRES, IWRES, NPDE (when
        the fit was asked for it: ``npde=True``), etas."""
        if self._table is None:
            raise ValueError("this result has no diagnostics table (diagnostics=False)")
        return self._table

    def _scales(self):
        """(back-transformed names by theta, exponential etas or None), read once from the
        model's individual() (``pkmix._scales``)."""
        if "_scales_cache" not in self.__dict__:
            from ._scales import back_transformed, exponential_etas

            self.__dict__["_scales_cache"] = (back_transformed(self.model, self.values, self.dataset),
                                              exponential_etas(self.model, self.values, self.dataset))
        return self.__dict__["_scales_cache"]

    def omega_summary(self) -> pd.DataFrame:
        """Each eta's variance, SD, CV% (sqrt(exp(var) - 1): only for an exponential,
        log-normal eta; empty for an additive one, whose SD is its spread) and shrinkage."""
        exponential = self._scales()[1]
        rows = []
        for name in self.omega.index:
            var = float(self.omega.loc[name, name])
            lognormal = exponential is None or name in exponential
            rows.append({
                "eta": name, "variance": var, "sd": math.sqrt(var),
                "cv_percent": 100.0 * math.sqrt(math.expm1(var)) if lognormal else None,
                "shrinkage_percent": self.shrinkage_percent.get(name),
            })
        return pd.DataFrame(rows)

    def parameters(self) -> pd.DataFrame:
        """The parameter table: estimate, SE, RSE%, 95% CI; for a theta that enters
        individual() as exp(theta + ...), the back-transformed parameter (``CL``), its
        value exp(theta) and CI (the theta's CI exponentiated).

        CIs: estimate ± 1.96 SE for thetas and OMEGA covariances; on the log scale,
        estimate × exp(± 1.96 SE / estimate), for variances (OMEGA diagonal, IOV) and
        sigmas, which cannot go below zero.
        """
        z = 1.959964
        back = self._scales()[0]
        rows = []

        def add(name, kind, value, positive=False):
            se = self.se.get(name)
            lo = hi = None
            if se is not None and math.isfinite(se):
                if positive and value > 0:
                    lo, hi = value * math.exp(-z * se / value), value * math.exp(z * se / value)
                else:
                    lo, hi = value - z * se, value + z * se
            bt = back.get(name) if kind == "theta" else None
            rows.append({
                "parameter": name, "type": kind, "estimate": value, "se": se,
                "rse_percent": self.rse_percent.get(name), "ci_lower": lo, "ci_upper": hi,
                "back_transformed": bt, "bt_estimate": math.exp(value) if bt else None,
                "bt_ci_lower": math.exp(lo) if bt and lo is not None else None,
                "bt_ci_upper": math.exp(hi) if bt and hi is not None else None,
            })

        for n, v in self.theta.items():
            add(n, "theta", v)
        names = list(self.omega.index)
        for i, a in enumerate(names):
            for b in names[: i + 1]:
                v = float(self.omega.loc[a, b])
                if i == names.index(b) or v != 0.0:
                    add(f"omega({a},{b})", "omega", v, positive=a == b)
        for n, v in self.iov.items():
            add(f"omega({n},{n})", "iov", v, positive=True)
        for n, v in self.sigma.items():
            add(n, "sigma", v, positive=True)
        return pd.DataFrame(rows)

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict:
        from . import __version__

        def clean(x):
            if x is None:
                return None
            x = float(x)
            return x if math.isfinite(x) else None

        return {
            "pkmix_version": __version__,
            "model": self.model_name,
            "method": self.method,
            "n_subjects": self.n_subjects,
            "n_observations": self.n_observations,
            "ofv": clean(self.ofv),
            # IMP's Monte Carlo standard error of the OFV (null for the other methods).
            "ofv_mc_se": clean(getattr(self, "ofv_mc_se", None)),
            "minus2ll": clean(self.minus2ll),
            "aic": clean(self.aic),
            "bic": clean(self.bic),
            "converged": self.converged,
            "message": self.message,
            "iterations": self.iterations,
            "theta": {k: clean(v) for k, v in self.theta.items()},
            "omega": {"names": list(self.omega.index),
                      "matrix": [[clean(v) for v in row] for row in self.omega.to_numpy()]},
            "iov": {k: clean(v) for k, v in self.iov.items()},
            "sigma": {k: clean(v) for k, v in self.sigma.items()},
            "se": {k: clean(v) for k, v in self.se.items()},
            "rse_percent": {k: clean(v) for k, v in self.rse_percent.items()},
            "shrinkage_percent": {k: clean(v) for k, v in self.shrinkage_percent.items()},
            "epsilon_shrinkage_percent": clean(self.epsilon_shrinkage_percent),
            "covariance_step": {
                "message": self.covariance_message,
                "condition_number": clean(self.condition_number),
                "correlation": None if self.correlation is None else {
                    "names": list(self.correlation.index),
                    "matrix": [[clean(v) for v in row] for row in self.correlation.to_numpy()]},
            },
            "timing": {k: clean(v) for k, v in self.timing.items()},
            "device": self.device,
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            # A fresh checkout has no out/ folder yet: make the missing parents.
            os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
            with open(path, "w") as fh:
                fh.write(text + "\n")
        return text

    def __str__(self) -> str:
        se = getattr(self, "ofv_mc_se", None)
        mc_se = f" (Monte Carlo SE {se:.4f})" if se is not None and math.isfinite(se) else ""
        lines = [
            f"pkmix {self.method.upper()} {'fit' if self.estimated else 'evaluation'} of {self.model_name}: "
            f"{self.n_subjects} subjects, {self.n_observations} observations",
            f"  {self.message} after {self.iterations} iterations" if self.estimated
            else "  evaluated at the given parameters (no estimation, as MAXEVAL=0)",
            f"  OFV {self.ofv:.4f}{mc_se}   -2LL {self.minus2ll:.4f}   AIC {self.aic:.4f}   BIC {self.bic:.4f}",
            f"  covariance: {self.covariance_message}",
            "",
        ]
        table = self.parameters()
        fmt = table[["parameter", "type", "estimate", "se", "rse_percent", "ci_lower", "ci_upper"]].copy()
        blank = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
        for col in ("estimate", "se", "ci_lower", "ci_upper"):
            fmt[col] = [("" if blank(v) else f"{v:.6g}") for v in table[col]]
        fmt["rse_percent"] = ["" if blank(v) else f"{v:.1f}" for v in table["rse_percent"]]
        if table["back_transformed"].notna().any():
            # nlmixr2's "Back-transformed (95% CI)": exp(theta) beside a log-scale theta.
            fmt["back-transformed (95% CI)"] = [
                "" if blank(n) else f"{n} {e:.4g}" + ("" if blank(lo) else f" ({lo:.4g}, {hi:.4g})")
                for n, e, lo, hi in zip(table["back_transformed"], table["bt_estimate"], table["bt_ci_lower"],
                                        table["bt_ci_upper"])]
        lines.append(fmt.to_string(index=False))
        lines.append("")
        summary = self.omega_summary()
        summary["cv_percent"] = ["" if blank(v) else f"{v:.4g}" for v in summary["cv_percent"]]
        summary["shrinkage_percent"] = ["" if blank(v) else f"{v:.4g}" for v in summary["shrinkage_percent"]]
        lines.append(summary.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        t = self.timing
        lines.append("")
        lines.append(f"  time: total {t.get('total_s', 0):.2f} s (compile {t.get('compile_s', 0):.2f} s, "
                     f"estimation {t.get('estimation_s', 0):.2f} s, covariance {t.get('covariance_s', 0):.2f} s)"
                     f" on {self.device}")
        return "\n".join(lines)

    __repr__ = __str__


def _device() -> str:
    d = jax.devices()[0]
    return f"{d.platform}:{getattr(d, 'device_kind', d.platform)}"


def build_result(*, model, method, dataset, batch, values, transform, ofv, subject_ofvs, modes, diagnostics,
                 converged, message, iterations, covariance, timing, gradient=None, history=None) -> FitResult:
    s = model.spec
    theta = {n: float(v) for n, v in zip(s.theta_names, np.asarray(values.theta))}
    omega = pd.DataFrame(np.asarray(values.omega), index=list(s.eta_names), columns=list(s.eta_names))
    iov = {n: float(v) for n, v in zip(s.iov_names, np.asarray(values.iov))}
    sigma = {n: float(v) for n, v in zip(s.sigma_names, np.asarray(values.sigma))}
    se, rse, cov_df, corr_df, cond, cov_msg = {}, {}, None, None, None, "not requested"
    if covariance is not None:
        cov_msg = covariance.message
        if covariance.se is not None:
            for n, est, e in zip(covariance.names, covariance.estimates, covariance.se):
                se[n] = float(e)
                rse[n] = float(100.0 * e / abs(est)) if est != 0 else float("nan")
            cov_df = pd.DataFrame(covariance.covariance, index=covariance.names, columns=covariance.names)
            corr_df = pd.DataFrame(covariance.correlation, index=covariance.names, columns=covariance.names)
            cond = covariance.condition_number

    eta = np.asarray(modes.eta)
    ids = np.asarray(dataset.ids)
    n_occ = batch.n_occasions
    eta_cols = list(s.eta_names) + [f"{n}_occ{k + 1}" for k in range(n_occ if s.iov_names else 0)
                                     for n in s.iov_names]
    etas = pd.DataFrame(eta, columns=eta_cols)
    etas.insert(0, "ID", ids)
    subject_ofv = pd.DataFrame({"ID": ids, "OFV": subject_ofvs, "eta_converged": np.asarray(modes.converged)})

    shrink = {}
    for i, n in enumerate(s.eta_names):
        var = float(np.asarray(values.omega)[i, i])
        shrink[n] = float(100.0 * (1.0 - np.std(eta[:, i], ddof=1) / math.sqrt(var))) if eta.shape[0] > 1 else None

    table = None
    eps_shrink = None
    if diagnostics:
        mask = np.asarray(batch.record_mask)
        frame = dataset.frame
        table = pd.DataFrame({
            "ID": frame["ID"].to_numpy(), "TIME": frame["TIME"].to_numpy(), "DV": frame["DV"].to_numpy(),
            "EVID": frame["EVID"].to_numpy(), "MDV": frame["MDV"].to_numpy(), "BLQ": frame["BLQ"].to_numpy(),
        })
        obs = batch.rows(batch.obs_mask)
        # NPDE is computed on request only (fit(..., npde=True)): no column otherwise.
        columns = [key for key in ("PRED", "IPRED", "WRES", "CWRES", "IWRES", "NPDE") if key in diagnostics]
        for key in columns:
            table[key] = batch.rows(diagnostics[key])
        table["RES"] = np.where(obs, table["DV"] - table["PRED"], np.nan)
        table["IRES"] = np.where(obs, table["DV"] - table["IPRED"], np.nan)
        subject_index = np.repeat(np.arange(len(ids)), mask.sum(axis=1))
        for j, n in enumerate(s.eta_names):
            table[n] = eta[subject_index, j]
        order = ["ID", "TIME", "DV", "EVID", "MDV", "BLQ", "PRED", "IPRED", "RES", "IRES", "WRES", "CWRES",
                 "IWRES"] + (["NPDE"] if "NPDE" in columns else []) + list(s.eta_names)
        table = table[order]
        iw = table["IWRES"].to_numpy()
        iw = iw[np.isfinite(iw)]
        eps_shrink = float(100.0 * (1.0 - np.std(iw, ddof=1))) if iw.size > 1 else None

    return FitResult(
        model_name=model.name, method=method.name, n_subjects=dataset.n_subjects,
        n_observations=dataset.n_observations, ofv=float(ofv), theta=theta, omega=omega, iov=iov,
        sigma=sigma, se=se, rse_percent=rse, covariance_matrix=cov_df, correlation=corr_df,
        condition_number=cond, covariance_message=cov_msg, etas=etas, subject_ofv=subject_ofv,
        shrinkage_percent=shrink, epsilon_shrinkage_percent=eps_shrink, converged=converged,
        message=message, iterations=iterations, timing=timing, device=_device(),
        n_estimated=transform.size, inner_converged=np.asarray(modes.converged), gradient=gradient,
        _table=table, model=model, dataset=dataset, values=values, history=history,
    )
